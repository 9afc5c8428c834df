"""Patch2Pix speed on this machine: inference per pair at 640x480 (the released architecture and
the demo's narrow one) and training iterations per second at 480x320 (released architecture:
batch 1 and ``--ptmax`` (default 100) on a CPU, the released batch 4 / ptmax 400 with
``--device cuda``, which needs the original's 48 GB; demo: the config.yaml settings).

Usage: ``python benchmarks/patch2pix_speed.py [--threads N] [--repeat N] [--device cpu|cuda]``.
The pair is a scikit-image photograph and a rotated, scaled copy of it (realistic coarse-match
counts). Weights are random: speed does not depend on them, except through the number of
coarse matches, which the refinement cost follows (printed). Prints seconds per pair, matches
per pair and iterations per second."""

from __future__ import annotations

import argparse
import resource
import statistics
import time
from pathlib import Path

import torch
import yaml

from matchrepro.models.patch2pix import Patch2Pix, corr_to_matches, filter_coarse, init_weights
from matchrepro.training import patch2pix_losses as losses
from timing import pipeline_job

REPO = Path(__file__).resolve().parents[1]


def demo_params() -> dict:
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    return cfg["training"]["patch2pix_demo"]["params"]


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()


def photo_pair(dev) -> tuple[torch.Tensor, torch.Tensor]:
    """(1, 3, 480, 640) ImageNet-normalised astronaut photo and a copy rotated by 10 degrees and
    scaled by 0.9 about the centre."""
    import cv2
    import skimage.data

    from matchrepro.matchers.patch2pix import to_tensor

    a = cv2.resize(skimage.data.astronaut(), (640, 480), interpolation=cv2.INTER_AREA)
    b = cv2.warpAffine(a, cv2.getRotationMatrix2D((320, 240), 10, 0.9), (640, 480), borderMode=cv2.BORDER_REFLECT)
    return to_tensor(a, dev), to_tensor(b, dev)


RELEASED = {500: (13.98, 1.54), 1200: (20.93, 2.63)}  # released code, this machine kind: s/pair, peak GiB


def inference(net: Patch2Pix, dev, repeat: int, n_refine: int = 1000) -> tuple[float, float, int]:
    """Seconds per pair (median of ``repeat``) of the coarse stage (backbone + NC + mutual
    matches) and of the two regressor levels on ``n_refine`` coarse matches (random weights give
    few mutual matches, so the refinement is timed on a fixed count, as the issue's figures for
    the released code: 500 and 1200). Returns (coarse s, refine s, coarse matches)."""
    im1, im2 = photo_pair(dev)
    g = torch.Generator().manual_seed(0)
    props = torch.rand(n_refine, 4, generator=g) * torch.tensor([640.0, 480, 640, 480])
    props = props.to(dev)
    with torch.no_grad():
        def coarse():
            f1 = net.extract.forward_all(im1)
            f2 = net.extract.forward_all(im2)
            corr, delta = net.coarse_volume(f1[-1], f2[-1])
            m, sc = filter_coarse(*corr_to_matches(corr, delta, 2, net.extract.strides[-1]))
            return f1, f2, m

        def regress(f1, f2):
            return net.refine_levels(f1, f2, props, [(640, 480), (640, 480)])

        f1, f2, m = coarse()
        regress(f1, f2)
        tc, tr = [], []
        for _ in range(repeat):
            sync(dev)
            t = time.perf_counter()
            f1, f2, m = coarse()
            sync(dev)
            tc.append(time.perf_counter() - t)
            t = time.perf_counter()
            regress(f1, f2)
            sync(dev)
            tr.append(time.perf_counter() - t)
    return statistics.median(tc), statistics.median(tr), len(m)


def training(net: Patch2Pix, dev, size, batch: int, ptmax: int, iters: int) -> float:
    net.ptmax = ptmax
    net.train()
    for p in list(net.extract.parameters()) + list(net.ncn.parameters()):
        p.requires_grad_(False)
    opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=5e-4)
    W, H = size
    a, b = photo_pair(dev)
    im1 = torch.nn.functional.interpolate(a, size=(H, W), mode="bilinear").repeat(batch, 1, 1, 1)
    im2 = torch.nn.functional.interpolate(b, size=(H, W), mode="bilinear").repeat(batch, 1, 1, 1)
    F = torch.tensor([[0.0, 0, 0], [0, 0, -1], [0, 1, 0]], device=dev)  # a horizontal-motion F (y2 = y1)

    def step():
        outs = net(im1, im2)
        pairs = [losses.pair_loss(o["coarse"], o["mid"], o["prob_mid"], o["fine"], o["prob_fine"], F) for o in outs]
        loss = losses.total_loss(pairs)
        opt.zero_grad()
        if loss is not None:
            loss.backward()
            opt.step()

    step()
    sync(dev)
    t = time.perf_counter()
    for _ in range(iters):
        step()
    sync(dev)
    return iters / (time.perf_counter() - t)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--ptmax", type=int, default=None, help="released-architecture training: proposals per pair")
    ap.add_argument("--no-training", action="store_true", help="inference only (peak RSS then covers inference alone)")
    a = ap.parse_args()
    print(pipeline_job(a.threads))
    dev = torch.device(a.device)
    print(f"torch {torch.__version__}, device {dev}, {a.threads} threads")
    demo = demo_params()
    for name, arch in (("released architecture", None), ("demo architecture (config.yaml)", demo["arch"])):
        torch.manual_seed(0)
        net = Patch2Pix(arch=arch)
        init_weights(net, seed=0)
        net = net.to(dev).eval()
        for n_ref in (500, 1200):
            t_c, t_r, n = inference(net, dev, a.repeat, n_ref)
            line = (f"inference 640x480, {name}, {n_ref} coarse matches: {t_c + t_r:6.3f} s/pair = coarse stage "
                    f"{t_c:.3f} s + mid/fine regressors {t_r:.3f} s")
            if arch is None:
                rel, rel_gib = RELEASED[n_ref]
                # ru_maxrss only grows: read after this workload it is the peak of the process so far,
                # which at 500 matches (run first) is that workload's own peak
                peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
                line += (f" | released code {rel:.2f} s, ratio {(t_c + t_r) / rel:.2f}; peak resident memory so far "
                         f"{peak:.2f} GiB (released code {rel_gib} GiB)")
            print(line, flush=True)
        if a.no_training:
            continue
        if arch is None:
            batch, ptmax = (4, a.ptmax or 400) if dev.type == "cuda" else (1, a.ptmax or 100)
            its = training(net, dev, (480, 320), batch, ptmax, 1)
            print(f"training  480x320 batch {batch} ptmax {ptmax}, {name}: {its:7.3f} it/s  ({1 / its:.1f} s/it)")
        else:
            net.panc = demo.get("panc", 8)
            its = training(net, dev, demo["image_size"], demo["batch_size"], demo["ptmax"], a.repeat)
            print(f"training  {demo['image_size'][0]}x{demo['image_size'][1]} batch {demo['batch_size']} "
                  f"ptmax {demo['ptmax']} panc {net.panc}, {name}: {its:7.3f} it/s  ({1 / its:.2f} s/it)")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"peak resident memory of this process: {peak:.2f} GiB (released code: {RELEASED[500][1]} GiB at 500, "
          f"{RELEASED[1200][1]} GiB at 1200 coarse matches, inference only)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
