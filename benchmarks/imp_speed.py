"""IMP and EIMP matching time per pair at 1024 and 2048 keypoints per image, and EIMP's speed-up.

    python benchmarks/imp_speed.py [--weights results/training/imp_sift_demo/model_best.pth]
                                   [--dim 256] [--repeats 3] [--device cpu|cuda] [--threads N]

Without ``--weights`` the model is the identity start (``init_mode: identity``, a soft mutual
nearest neighbour) so that EIMP's pooling has confident and unconfident keypoints to tell apart;
random weights make every keypoint "confident" and nothing would be pruned. The synthetic pair
has ``--inlier-ratio`` of its keypoints with a noisy partner in the other image.

Prints, per keypoint count: IMP, EIMP (``mask``: the released batch form, which masks but
computes everything) and EIMP (``prune``: pruned keypoints leave the computation) seconds per
pair, EIMP-prune's speed-up over IMP, and the keypoints (both images) entering iterations 1, 5,
9 and 15.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from matchrepro.models.imp import IMP
from matchrepro.training.imp_task import identity_init


def synthetic_pair(n: int, dim: int, inlier_ratio: float, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    d0 = torch.nn.functional.normalize(torch.randn(1, n, dim, generator=g), dim=2)
    d1 = torch.nn.functional.normalize(torch.randn(1, n, dim, generator=g), dim=2)
    k = int(inlier_ratio * n)
    d1[:, :k] = torch.nn.functional.normalize(d0[:, :k] + 0.05 * torch.randn(1, k, dim, generator=g), dim=2)
    kp = torch.rand(1, n, 2, generator=g) - 0.5
    return {"keypoints0": kp, "keypoints1": kp + 0.01 * torch.randn(1, n, 2, generator=g),
            "scores0": torch.rand(1, n, generator=g), "scores1": torch.rand(1, n, generator=g),
            "descriptors0": d0, "descriptors1": d1}


def timed(model: IMP, data: dict, repeats: int, device: torch.device) -> tuple[float, list]:
    model.match(data)  # warm-up
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        r = model.match(data)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), r["retained"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", default=None)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--keypoints", type=int, nargs="+", default=[1024, 2048])
    ap.add_argument("--inlier-ratio", type=float, default=0.3)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    if a.weights:
        from matchrepro.matchers.imp import load_imp

        sd = load_imp(a.weights).state_dict()
        dim = int(sd["kenc.encoder.12.weight"].shape[0])
    else:
        dim = a.dim
        base = IMP(dim)
        identity_init(base, 0.02, 0.8)
        sd = base.state_dict()
    print(f"torch {torch.__version__}, device {dev}, threads {torch.get_num_threads()}, D={dim}, "
          f"weights {a.weights or 'identity start'}, inlier ratio {a.inlier_ratio}")
    print(f"{'keypoints':>9} {'IMP s':>8} {'EIMP-mask s':>12} {'EIMP-prune s':>13} {'speed-up':>9}  kpts in it 1/5/9/15 (prune)")
    for n in a.keypoints:
        data = {k: v.to(dev) for k, v in synthetic_pair(n, dim, a.inlier_ratio).items()}
        res = {}
        for name, pooling in (("imp", None), ("mask", "mask"), ("prune", "prune")):
            m = IMP(dim, pooling=pooling).to(dev).eval()
            m.load_state_dict(sd)
            res[name] = timed(m, data, a.repeats, dev)
        seen = [a0 + a1 for a0, a1 in res["prune"][1]]
        print(f"{n:>9} {res['imp'][0]:>8.3f} {res['mask'][0]:>12.3f} {res['prune'][0]:>13.3f} "
              f"{res['imp'][0] / res['prune'][0]:>8.2f}x  {seen[0]}/{seen[4]}/{seen[8]}/{seen[14]}")


if __name__ == "__main__":
    main()
