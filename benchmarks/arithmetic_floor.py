"""The arithmetic floor of the speed targets on this machine: how long the matrix products and
convolutions of each workload take at this CPU's best measured float32 rate, beside the issue's
target. A target below its floor cannot be met without doing fewer operations (not the released
numerics) or using lower precision (not float noise).

    python benchmarks/arithmetic_floor.py [--threads 2] [--repeats 5]

FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` on the same inputs as
``patch2pix_speed.py`` (the released architecture, 640x480, 500 coarse matches through both
regressors) and ``imp_speed.py`` (D = 256, 1024 and 2048 keypoints, the identity start, no
pruning), with torch's own products (``onednn_gemm.disabled()``: the counter does not know the
oneDNN operator that IMP's inference uses). It counts only matrix products and convolutions (2
FLOPs per multiply-add); softmax, normalisations, copies and the solver are left out, so the
floor is a lower bound. The rate is
the best median over a square GEMM and the workloads' own largest products (the regressor's
first convolution, IMP's attention and 1x1 projections), each timed alone, IMP's products both
as torch computes them (MKL) and through oneDNN (``matchrepro.models.onednn_gemm``, what IMP's
inference on the CPU runs).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))

import imp_speed  # noqa: E402
import patch2pix_speed  # noqa: E402
from timing import median_seconds, pipeline_job, released_patch2pix  # noqa: E402

from matchrepro.models import onednn_gemm  # noqa: E402

# (workload, the released-code seconds, the target ratio)
TARGETS = {"patch2pix 500 coarse matches": (13.98, 0.3), "imp D=256 1024 keypoints": (1.07, 0.6),
           "imp D=256 2048 keypoints": (7.70, 0.5)}


def counted_flops(fn) -> int:
    with onednn_gemm.disabled(), FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def rates(repeats: int) -> dict[str, float]:
    """GFLOP/s of single products, each timed alone (median of ``repeats``)."""
    g = torch.Generator().manual_seed(0)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    a, b = r(2048, 2048), r(2048, 2048)
    x, w = r(300, 518, 16, 16), r(512, 518, 3, 3)  # a regressor's first conv on one eval chunk
    q, k = r(8, 1024, 64), r(8, 64, 1024)  # IMP attention scores: 2 images x 4 heads, 1024 keypoints
    h, p = r(2048, 512), r(512, 256)  # IMP 1x1 projection (both images' 1024 points, 2D -> D)
    cases = {"square GEMM 2048": lambda: a @ b,
             "conv 518->512 3x3/2 on 300 16x16 patches": lambda: F.conv2d(x, w, stride=2, padding=1),
             "attention scores (8, 1024, 64) @ (8, 64, 1024)": lambda: torch.bmm(q, k),
             "1x1 projection 2048x512 @ 512x256": lambda: h @ p}
    with torch.no_grad():
        out = {name: counted_flops(fn) / median_seconds(fn, repeats) / 1e9 for name, fn in cases.items()}
        if onednn_gemm.usable(q, k):
            w, x1 = p.t().contiguous(), h.t().contiguous()  # IMP's layout: (C_out, C_in) @ (C_in, N)
            dnn = {"attention scores, oneDNN per head": (counted_flops(lambda: torch.bmm(q, k)),
                                                         lambda: [onednn_gemm.gemm(qi, ki) for qi, ki in zip(q, k)]),
                   "1x1 projection, oneDNN 256x512 @ 512x2048": (counted_flops(lambda: w @ x1),
                                                                lambda: onednn_gemm.gemm(w, x1))}
            out |= {name: flops / median_seconds(fn, repeats) / 1e9 for name, (flops, fn) in dnn.items()}
        return out


def attention_ms(repeats: int) -> dict[int, tuple[float, float, float]]:
    """Milliseconds of one IMP attention (softmax(q k^T / 8) v, 2 images x 4 heads, d = 64) at 1024
    and 2048 keypoints: unfused (the two products and the softmax, as IMP computes it, the
    attention matrix materialised) and fused (``scaled_dot_product_attention`` on contiguous
    (B, H, N, d) inputs), with the largest difference between the two: keypoints -> (unfused ms,
    fused ms, difference)."""
    out = {}
    g = torch.Generator().manual_seed(0)
    for n in (1024, 2048):
        q, k, v = (torch.randn(2, 4, n, 64, generator=g) for _ in range(3))
        unfused = lambda: torch.matmul(torch.matmul(q * 0.125, k.transpose(2, 3)).softmax(-1), v)  # noqa: E731
        fused = lambda: F.scaled_dot_product_attention(q, k, v)  # noqa: E731
        with torch.no_grad():
            diff = (unfused() - fused()).abs().max().item()
            out[n] = (1e3 * median_seconds(unfused, repeats), 1e3 * median_seconds(fused, repeats), diff)
    return out


def workloads() -> dict:
    """name -> a no-argument function running the workload once."""
    net, im1, im2, props = released_patch2pix(500)

    def patch2pix():
        f1, f2 = net.extract.forward_all(im1), net.extract.forward_all(im2)
        corr, delta = net.coarse_volume(f1[-1], f2[-1])
        patch2pix_speed.filter_coarse(*patch2pix_speed.corr_to_matches(corr, delta, 2, net.extract.strides[-1]))
        net.refine_levels(f1, f2, props, [(640, 480), (640, 480)])

    imp = imp_speed.IMP(256)
    imp_speed.identity_init(imp, 0.02, 0.8)
    imp.eval()
    pairs = {n: imp_speed.synthetic_pair(n, 256, 0.3) for n in (1024, 2048)}
    return {"patch2pix 500 coarse matches": patch2pix,
            "imp D=256 1024 keypoints": lambda: imp.match(pairs[1024]),
            "imp D=256 2048 keypoints": lambda: imp.match(pairs[2048])}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    print(pipeline_job(a.threads))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, median of {a.repeats}")
    measured = rates(a.repeats)
    for name, rate in measured.items():
        print(f"  rate {rate:6.1f} GFLOP/s  {name}")
    peak = max(measured.values())
    print(f"best rate: {peak:.1f} GFLOP/s")
    for n, (unfused, fused, diff) in attention_ms(a.repeats).items():
        print(f"  attention (2, 4, {n}, 64): unfused {unfused:.1f} ms, fused {fused:.1f} ms "
              f"(max difference {diff:.1e})")
    with torch.no_grad():
        for name, fn in workloads().items():
            flops = counted_flops(fn)
            released, ratio = TARGETS[name]
            target, floor = released * ratio, flops / (peak * 1e9)
            verdict = "below the floor: not reachable at this rate" if target < floor else "above the floor"
            print(f"{name}: {flops / 1e9:7.1f} GFLOP in products -> floor {floor:5.2f} s at {peak:.0f} GFLOP/s; "
                  f"target {ratio}x {released} s = {target:.2f} s ({verdict})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
