"""IMP and EIMP matching time per pair at 1024 and 2048 keypoints per image, beside the released
code's figures, EIMP's speed-up over IMP at equal pose accuracy, and the keypoints per iteration.

    python benchmarks/imp_speed.py [--weights results/training/imp_sift_demo/model_best.pth]
                                   [--dim 256] [--repeats 5] [--pose-pairs 40] [--threads 2]
                                   [--pool-confidence 0.1] [--inlier-ratio 0.3] [--breakdown]
                                   [--iterative]

Without ``--weights`` the model is the identity start (``init_mode: identity``, a soft mutual
nearest neighbour) so that EIMP's pooling has confident and unconfident keypoints to tell apart;
random weights make every keypoint "confident" and nothing would be pruned.

Timing: a synthetic pair with ``--inlier-ratio`` of its keypoints having a noisy partner, eval
mode, no_grad, ``--repeats`` rounds after a warm-up; each round times IMP, EIMP-mask, EIMP-prune
and the released formulation (below) once each, in turn, and the script prints each one's
median and, for the ratios, the median of the round-by-round ratios. Accuracy: ``--pose-pairs``
two-view scenes (3-D points seen by two cameras, the same inlier ratio, the rest random)
matched by IMP and by EIMP-prune, pose by USAC_MAGSAC (1 px) from the matches, AUC@5/10/20 of
the pose error, and the 95 % interval of EIMP's AUC@10 minus IMP's from a paired bootstrap over
the pairs (fixed seed).
The released code's figures (issue #16, this machine kind, 2 threads, D = 256, no keypoint
pruned for EIMP) are printed beside ours with the ratio; peak RSS is this process's.

Those figures are fixed seconds from one CPU, and this machine kind comes with several, so the
script also times IMP in the released formulation in this process (``released_formulation``:
the same weights through ``nn.Conv1d`` projections, interleaved heads split by ``view(B, d, 4,
N)`` and the two ``einsum`` attention products, as the released ``MultiHeadedAttention``
computes them) and prints ours / that: a ratio on this CPU. It checks that the two give the
same matches.

``--breakdown`` also prints where the time of IMP and EIMP-prune goes: per iteration, the
self + cross layers, the matching head (EIMP needs one after every pooling iteration, IMP only
at the last) and the pooling, each the fastest of ``--repeats`` rounds of ``match`` calls (both
models in turn) with timers around the model's own ``iterate`` / ``head`` / ``pool`` (the same
loop as the timed runs). The sum of EIMP-prune's layers over IMP's whole time is the ratio its
pruning schedule allows if heads and pooling cost nothing.

``--iterative`` also runs the pose pairs through the matcher's released iterative procedure
(``IMPMatcher`` with ``iterative: true``, imp.md §1.5: MAGSAC after iterations 4, 6, ..., 14 and
15, early stop when the pose moves ≤ 1.5°; EIMP with ``pooling: prune`` and the uncertainty
θ_m), the path the release's efficient EIMP runs, and prints per pair the time of EIMP over
IMP's (median), the iterations at which they stopped and the AUC difference. The pose of a
stopped pair is the matcher's own (as IMP's protocols use it), else MAGSAC's from the matches.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import math
import resource
import statistics
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F

from matchrepro.models import imp as imp_module
from matchrepro.models import onednn_gemm
from matchrepro.models.imp import IMP, normalize_keypoints
from matchrepro.reporting.compare import paired_auc_difference_of_errors
from matchrepro.training.imp_task import identity_init
from timing import pipeline_job

RELEASED_S = {("imp", 1024): 1.07, ("imp", 2048): 7.70, ("eimp", 1024): 1.29, ("eimp", 2048): 8.24}
RELEASED_PEAK_GIB = {1024: 1.46, 2048: 2.76}


def _released_attention(q, k, v, key_mask):
    """The released ``attention`` on interleaved heads ``(B, d, 4, N)``: scores by einsum, softmax,
    messages by einsum; returns ``(B, d, 4, N)`` messages and ``(B, 4, N, M)`` probabilities."""
    scores = torch.einsum("bdhn,bdhm->bhnm", q, k) / math.sqrt(q.shape[1])
    if key_mask is not None:
        scores = scores.masked_fill(~key_mask[:, None, None, :], -torch.finfo(scores.dtype).max)
    prob = torch.softmax(scores, dim=-1)
    return torch.einsum("bhnm,bdhm->bdhn", prob, v), prob


def _heads(conv, x):
    b = x.shape[0]
    return F.conv1d(x, conv.weight, conv.bias).view(b, -1, imp_module.NUM_HEADS, x.shape[-1])


def _released_mha(self, x, source, key_mask=None):
    q, k, v = (_heads(p, t) for p, t in zip(self.proj, (x, source, source)))
    msg, prob = _released_attention(q, k, v, key_mask)
    return F.conv1d(msg.reshape(x.shape[0], self.dim, -1), self.merge.weight, self.merge.bias), prob


def _released_shared(self, x, source, prob=None, key_mask=None):
    v = _heads(self.proj, source)
    msg = torch.einsum("bhnm,bdhm->bdhn", prob, v).reshape(x.shape[0], self.dim, -1)
    return self.mlp(torch.cat([x, F.conv1d(msg, self.merge.weight, self.merge.bias)], dim=1)), prob


@contextlib.contextmanager
def released_formulation():
    """Within this block every IMP computes as the released code does: ``nn.Conv1d`` for the
    1x1 convolutions, interleaved heads, einsum attention (same weights, same results to float
    rounding). Used to time the release's formulation on this CPU."""
    saved = (imp_module.PointwiseConv.forward, imp_module.MultiHeadedAttention.forward,
             imp_module.SharedAttentionalPropagation.forward)
    imp_module.PointwiseConv.forward = torch.nn.Conv1d.forward
    imp_module.MultiHeadedAttention.forward = _released_mha
    imp_module.SharedAttentionalPropagation.forward = _released_shared
    try:
        with onednn_gemm.disabled():  # whatever is not replaced above runs on torch's products
            yield
    finally:
        (imp_module.PointwiseConv.forward, imp_module.MultiHeadedAttention.forward,
         imp_module.SharedAttentionalPropagation.forward) = saved


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


def two_view_pair(n: int, dim: int, inlier_ratio: float, seed: int):
    """A pair with a known pose: ``inlier_ratio * n`` projections of 3-D points (0.5 px noise,
    descriptors with a noisy partner), the rest random keypoints. Returns the network input,
    the pixel keypoints, K and T_0to1."""
    rng = np.random.default_rng(seed)
    K = np.array([[500.0, 0, 320], [0, 500, 240], [0, 0, 1]])
    a = np.deg2rad(rng.uniform(8, 20))
    R = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    t = np.array([-1.0, rng.uniform(-0.1, 0.1), 0.1])
    k = int(inlier_ratio * n)
    X = rng.uniform([-3, -2, 6], [3, 2, 12], (4 * k, 3))
    x0 = X @ K.T
    X1 = X @ R.T + t
    x1 = X1 @ K.T
    p0, p1 = x0[:, :2] / x0[:, 2:], x1[:, :2] / x1[:, 2:]
    ok = np.all((p0 > 0) & (p0 < [640, 480]) & (p1 > 0) & (p1 < [640, 480]), 1)
    p0, p1 = p0[ok][:k], p1[ok][:k]
    k = len(p0)
    kp0 = np.concatenate([p0, rng.uniform(0, [640, 480], (n - k, 2))]) + rng.normal(0, 0.5, (n, 2))
    kp1 = np.concatenate([p1, rng.uniform(0, [640, 480], (n - k, 2))]) + rng.normal(0, 0.5, (n, 2))
    d0 = rng.normal(size=(n, dim))
    d1 = rng.normal(size=(n, dim))
    d1[:k] = d0[:k] + 0.6 * rng.normal(size=(k, dim))
    unit = lambda d: torch.from_numpy((d / np.linalg.norm(d, axis=1, keepdims=True)).astype(np.float32))[None]  # noqa: E731
    size = torch.tensor([[640.0, 480.0]])
    kt0, kt1 = (torch.from_numpy(p.astype(np.float32))[None] for p in (kp0, kp1))
    data = {"keypoints0": normalize_keypoints(kt0, size), "keypoints1": normalize_keypoints(kt1, size),
            "scores0": torch.full((1, n), 0.05), "scores1": torch.full((1, n), 0.05),
            "descriptors0": unit(d0), "descriptors1": unit(d1)}
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, t
    return data, kp0, kp1, K, T


def magsac_pose_error_deg(kp0: np.ndarray, kp1: np.ndarray, matches: np.ndarray, K: np.ndarray,
                          T: np.ndarray) -> float:
    """Pose error (max of the rotation and translation angles, degrees; inf where the solver
    fails) of USAC_MAGSAC (1 px) on ``matches (K, 2)`` (indices into the pixel keypoints)."""
    from matchrepro.evaluation.pose_superglue import estimate_relative_pose_magsac, pose_errors

    est = estimate_relative_pose_magsac(kp0[matches[:, 0]], kp1[matches[:, 1]], K, K, 1.0)
    return pose_errors(est, T)[2]


def pose_errors_deg(model: IMP, pairs) -> np.ndarray:
    """:func:`magsac_pose_error_deg` of ``model``'s matches on each two-view pair."""
    errs = []
    with torch.no_grad():
        for data, kp0, kp1, K, T in pairs:
            m0 = model.match(data)["matches0"].numpy()
            i = np.flatnonzero(m0 >= 0)
            errs.append(magsac_pose_error_deg(kp0, kp1, np.stack([i, m0[i]], 1), K, T))
    return np.asarray(errs, np.float64)


def iterative_comparison(weights: str, pairs, device: torch.device) -> str:
    """IMP and EIMP-prune in the matcher's released iterative procedure on the two-view pairs,
    each pair matched by both in turn after one warm-up pair: a line of text with EIMP's time
    over IMP's (median of the per-pair ratios), the stop iterations and the AUC difference."""
    from matchrepro.evaluation.pose_superglue import PoseEstimate, pose_errors
    from matchrepro.matchers.imp import IMPMatcher

    matchers = {"imp": IMPMatcher({"matcher": {"variant": "imp", "iterative": True}}, weights, str(device)),
                "prune": IMPMatcher({"matcher": {"variant": "eimp", "iterative": True, "pooling": "prune"}},
                                    weights, str(device))}
    times = {k: [] for k in matchers}
    errs = {k: [] for k in matchers}
    stops = {k: [] for k in matchers}
    for i, (data, kp0, kp1, K, T) in enumerate(pairs):
        feats = [{"keypoints": kp, "scores": data[f"scores{j}"][0].cpu().numpy(),
                  "descriptors": data[f"descriptors{j}"][0].cpu().numpy(), "image_size": (640, 480)}
                 for j, kp in enumerate((kp0, kp1))]
        if i == 0:
            for m in matchers.values():
                m(*feats, K, K)  # warm-up
        for name, m in matchers.items():
            t0 = time.perf_counter()
            r = m(*feats, K, K)
            times[name].append(time.perf_counter() - t0)
            stops[name].append(r["stopped_at"])
            if r["pose"] is not None:  # the stopped pose, as IMP's protocols read it
                est = PoseEstimate(np.asarray(r["pose"][0], np.float64), np.asarray(r["pose"][1], np.float64),
                                   np.ones(len(r["matches"]), bool))
                errs[name].append(pose_errors(est, T)[2])
            else:
                errs[name].append(magsac_pose_error_deg(kp0, kp1, r["matches"], K, T))
    d = paired_auc_difference_of_errors(np.asarray(errs["imp"], np.float64), np.asarray(errs["prune"], np.float64))
    r10 = d[d.threshold_deg == 10].iloc[0]
    hist = lambda v: ", ".join(f"{it}: {c}" for it, c in sorted(collections.Counter(v).items()))  # noqa: E731
    return (f"    released iterative procedure on the {len(pairs)} pairs: IMP {statistics.median(times['imp']):.3f} s, "
            f"EIMP-prune {statistics.median(times['prune']):.3f} s a pair (median), EIMP / IMP "
            f"{median_ratio(times['prune'], times['imp']):.2f} (median of the pairs); stopped at iteration "
            f"(iteration: pairs) IMP {hist(stops['imp'])}, EIMP {hist(stops['prune'])}; AUC@10 IMP {r10.auc_base:.1f}, "
            f"EIMP {r10.auc_other:.1f} (difference {r10.difference:+.1f}, 95 % interval {r10.ci_low:+.1f} to "
            f"{r10.ci_high:+.1f})")


def timed_rounds(runs: dict, repeats: int, device: torch.device) -> tuple[dict[str, list[float]], dict]:
    """Seconds of each ``runs[name]()`` call in ``repeats`` rounds, after one warm-up call each,
    and each run's last output. Each round calls every run once, in turn, so that a change in the
    machine's speed (this machine kind's moves by a fifth within minutes) falls on all of them
    alike, and the ratio of two runs is taken round by round."""
    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    with torch.no_grad():
        last = {name: fn() for name, fn in runs.items()}  # warm-up
        times: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(repeats):
            for name, fn in runs.items():
                sync()
                t0 = time.perf_counter()
                last[name] = fn()
                sync()
                times[name].append(time.perf_counter() - t0)
    return times, last


def in_released_formulation(model: IMP, data: dict):
    with released_formulation():
        return model.match(data)


def median_ratio(num: list[float], den: list[float]) -> float:
    """Median over the rounds of ``num[i] / den[i]``."""
    return statistics.median(a / b for a, b in zip(num, den))


def phase_breakdown(models: dict[str, IMP], data: dict, repeats: int) -> dict[str, dict[int, dict[str, float]]]:
    """Per model, seconds per iteration of ``model.match(data)`` and phase (``layers``, ``head``,
    ``pool``), the fastest of ``repeats`` rounds after a warm-up (each round runs every model once,
    in turn, as :func:`timed_rounds`); key -1 holds what runs outside the iterations (``start``:
    descriptors plus keypoint encoding; ``extract``: the mutual matches). Pooling counts to the
    iteration after which it runs. The timers wrap the models' methods for the duration of the
    call only."""
    names = ("start", "iterate", "head", "pool", "extract")
    calls: dict[str, list[tuple[str, float]]] = {key: [] for key in models}

    def timer(log, name, fn):
        def call(*args):
            t0 = time.perf_counter()
            out = fn(*args)
            log.append((name, time.perf_counter() - t0))
            return out
        return call

    best: dict[str, dict[int, dict[str, float]]] = {key: {} for key in models}
    try:
        for key, model in models.items():
            for name in names:
                setattr(model, name, timer(calls[key], name, getattr(model, name)))
        with torch.no_grad():
            for model in models.values():
                model.match(data)  # warm-up
            for _ in range(repeats):
                for key, model in models.items():
                    calls[key].clear()
                    model.match(data)
                    per: dict[int, dict[str, float]] = {-1: {"start": 0.0, "extract": 0.0}}
                    ni = -1
                    for name, sec in calls[key]:
                        ni += name == "iterate"
                        if name in per[-1]:
                            per[-1][name] += sec
                            continue
                        phase = "layers" if name == "iterate" else name
                        per.setdefault(ni, {"layers": 0.0, "head": 0.0, "pool": 0.0})[phase] += sec
                    for i, phases in per.items():
                        b = best[key].setdefault(i, dict(phases))
                        for k, v in phases.items():
                            b[k] = min(b[k], v)
    finally:
        for model in models.values():
            for name in names:
                if name in vars(model):
                    delattr(model, name)  # back to the class's methods
    return best


def print_breakdown(imp: dict, eimp: dict, retained: list) -> None:
    def tot(b, k):
        return sum(p.get(k, 0.0) for i, p in b.items() if i >= 0)

    def whole(b):
        return sum(tot(b, k) for k in ("layers", "head", "pool")) + sum(b[-1].values())

    ms = lambda s: f"{s * 1e3:.1f}"  # noqa: E731
    print(f"    breakdown, ms (fastest of the repeats): IMP encoding + matches {ms(sum(imp[-1].values()))}, "
          f"layers {ms(tot(imp, 'layers'))}, head {ms(tot(imp, 'head'))}: {ms(whole(imp))}; EIMP-prune encoding + "
          f"matches {ms(sum(eimp[-1].values()))}, layers {ms(tot(eimp, 'layers'))}, heads {ms(tot(eimp, 'head'))}, "
          f"pooling {ms(tot(eimp, 'pool'))}: {ms(whole(eimp))} = {whole(eimp) / whole(imp):.2f}x; EIMP-prune's "
          f"layers alone = {tot(eimp, 'layers') / whole(imp):.2f}x IMP's whole")
    print("    EIMP-prune per iteration (keypoints in: layers / head / pooling ms): " + ", ".join(
        f"{i + 1} ({retained[i][0] + retained[i][1]}: {p['layers'] * 1e3:.0f}/{p['head'] * 1e3:.0f}/{p['pool'] * 1e3:.0f})"
        for i, p in sorted(eimp.items()) if i >= 0))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", default=None)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--keypoints", type=int, nargs="+", default=[1024, 2048])
    ap.add_argument("--inlier-ratio", type=float, default=0.3)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--pose-pairs", type=int, default=40)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--pool-confidence", type=float, default=0.1,
                    help="EIMP's θ_m: a keypoint with at least this matchable mass is kept (released 0.1)")
    ap.add_argument("--iterative", action="store_true",
                    help="also compare IMP and EIMP-prune in the released iterative procedure on the pose pairs")
    ap.add_argument("--breakdown", action="store_true",
                    help="print per-iteration times of IMP and EIMP-prune (layers, head, pooling)")
    a = ap.parse_args()
    print(pipeline_job(a.threads))
    dev = torch.device(a.device)
    if a.weights:
        from matchrepro.matchers.imp import load_imp

        sd = load_imp(a.weights).state_dict()
        dim = int(sd["kenc.encoder.12.weight"].shape[0])
    else:
        dim = a.dim
        torch.manual_seed(0)  # the attention weights decide EIMP's pruning (importances): same every run
        base = IMP(dim)
        identity_init(base, 0.02, 0.8)
        sd = base.state_dict()
    print(f"torch {torch.__version__}, device {dev}, threads {torch.get_num_threads()}, D={dim}, "
          f"weights {a.weights or 'identity start'}, inlier ratio {a.inlier_ratio}, median of {a.repeats}, "
          f"EIMP pool_confidence {a.pool_confidence}")
    models = {}
    for name, pooling in (("imp", None), ("mask", "mask"), ("prune", "prune")):
        m = IMP(dim, pooling=pooling, pool_confidence=a.pool_confidence).to(dev).eval()
        m.load_state_dict(sd)
        models[name] = m
    for n in a.keypoints:
        data = {k: v.to(dev) for k, v in synthetic_pair(n, dim, a.inlier_ratio).items()}
        runs = {name: (lambda m=m: m.match(data)) for name, m in models.items()}
        runs["released"] = lambda: in_released_formulation(models["imp"], data)
        times, last = timed_rounds(runs, a.repeats, dev)
        med = {name: statistics.median(t) for name, t in times.items()}
        retained = last["prune"]["retained"]
        same = torch.equal(last["released"]["matches0"], last["imp"]["matches0"])
        # ru_maxrss only grows: after the first (smallest) size it is that size's own peak, over the
        # four runs (the pose pairs below run after this reading)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        seen = [a0 + a1 for a0, a1 in retained]
        rel_imp, rel_eimp = RELEASED_S[("imp", n)] if dim == 256 and ("imp", n) in RELEASED_S else None, \
            RELEASED_S.get(("eimp", n)) if dim == 256 else None
        line = f"{n} keypoints: IMP {med['imp']:.3f} s"
        if rel_imp:
            line += f" (released {rel_imp:.2f} s, ratio {med['imp'] / rel_imp:.2f})"
        line += f" | EIMP-mask {med['mask']:.3f} s"
        if rel_eimp:
            line += f" (released EIMP {rel_eimp:.2f} s, ratio {med['mask'] / rel_eimp:.2f})"
        line += f" | EIMP-prune {med['prune']:.3f} s = {median_ratio(times['prune'], times['imp']):.2f}x IMP"
        line += (f" | IMP in the released formulation here {med['released']:.3f} s, ours / that "
                 f"{median_ratio(times['imp'], times['released']):.2f} ({'same' if same else 'DIFFERENT'} matches)")
        line += f" | peak resident memory so far {peak:.2f} GiB"
        if dim == 256 and n in RELEASED_PEAK_GIB:
            line += f" (released IMP {RELEASED_PEAK_GIB[n]} GiB)"
        print(line)
        print(f"    EIMP-prune keypoints (both images) entering iterations 1..15: {' '.join(map(str, seen))}")
        if a.breakdown:
            br = phase_breakdown({"imp": models["imp"], "prune": models["prune"]}, data, a.repeats)
            print_breakdown(br["imp"], br["prune"], retained)
        if a.pose_pairs:
            pairs = [two_view_pair(n, dim, a.inlier_ratio, seed) for seed in range(a.pose_pairs)]
            d = paired_auc_difference_of_errors(pose_errors_deg(models["imp"], pairs),
                                                pose_errors_deg(models["prune"], pairs))
            ai, ae = d.auc_base.to_numpy(), d.auc_other.to_numpy()
            r10 = d[d.threshold_deg == 10].iloc[0]
            print(f"    pose AUC@5/10/20 on {a.pose_pairs} two-view pairs: IMP {ai[0]:.1f}/{ai[1]:.1f}/{ai[2]:.1f}, "
                  f"EIMP-prune {ae[0]:.1f}/{ae[1]:.1f}/{ae[2]:.1f} (AUC@10 difference {r10.difference:+.1f}, "
                  f"95 % paired-bootstrap interval {r10.ci_low:+.1f} to {r10.ci_high:+.1f})")
            if a.iterative:
                with tempfile.TemporaryDirectory() as tmp:
                    weights = a.weights
                    if not weights:  # the matcher loads a file: the identity start's, written here
                        weights = f"{tmp}/identity_start.pth"
                        torch.save({"model": sd}, weights)
                    print(iterative_comparison(weights, pairs, dev))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    line = (f"peak resident memory of this process, everything above together (each size's own reading is on "
            f"its line): {peak:.2f} GiB")
    if dim == 256:
        line += f" (released IMP: {RELEASED_PEAK_GIB[1024]} GiB at 1024, {RELEASED_PEAK_GIB[2048]} GiB at 2048)"
    print(line)


if __name__ == "__main__":
    main()
