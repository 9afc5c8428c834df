"""Ways to compute Patch2Pix's regressor convolutions that were measured and not adopted: three
formulations of the convolutions, and the eval chunk size of the two regressor levels.

    python benchmarks/patch2pix_regressor_variants.py [--threads 2] [--repeats 5]

1. The first regressor convolution (518 -> 512, 3x3, stride 2, padding 1, 16x16 patches) and the
   second (512 -> 512, 3x3, stride 1, on 8x8), on 50-300 random patches, as
   - oneDNN's convolution on the channels-last patches (what ``FeatRegressNet`` runs);
   - im2col: the nine shifted copies side by side, then one GEMM;
   - nine tap GEMMs accumulated into one output (first convolution only).
   Each prints its milliseconds, its GFLOP/s, and its largest difference from the convolution.
2. ``refine_levels`` of the released architecture (random weights, 640x480, 500 random
   proposals) with eval chunks of 300 (the default), 100, 150 and 50 proposals, interleaved
   over ``--repeats`` rounds so the machine's drift hits each chunk alike. It prints each chunk's
   times and median, and checks that the outputs are bitwise equal.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

from timing import median_seconds, pipeline_job, released_patch2pix  # noqa: E402
from matchrepro.models import patch2pix as p2p  # noqa: E402


def im2col(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, stride: int) -> torch.Tensor:
    """3x3 convolution, padding 1, of channels-last ``x (n, H, W, C)`` as one GEMM; returns
    ``(n, C_out, H / stride, W / stride)``."""
    n, h, wd, c = x.shape
    ho, wo = h // stride, wd // stride
    xp = F.pad(x, (0, 0, 1, 1, 1, 1))
    cols = torch.empty(n, ho, wo, 9, c)
    for ky in range(3):
        for kx in range(3):
            cols[:, :, :, 3 * ky + kx] = xp[:, ky:ky + h:stride, kx:kx + wd:stride]
    wt = w.permute(2, 3, 1, 0).reshape(9 * c, -1)
    return torch.addmm(b, cols.view(n * ho * wo, 9 * c), wt).view(n, ho, wo, -1).permute(0, 3, 1, 2)


def taps(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The stride-2 convolution as nine accumulated (n 64, C) @ (C, C_out) products."""
    n, _, _, c = x.shape
    xp = F.pad(x, (0, 0, 1, 1, 1, 1))
    out = b.expand(n * 64, -1).clone()
    for ky in range(3):
        for kx in range(3):
            out.addmm_(xp[:, ky:ky + 16:2, kx:kx + 16:2].reshape(n * 64, c), w[:, :, ky, kx].T)
    return out.view(n, 8, 8, -1).permute(0, 3, 1, 2)


def formulations(repeats: int) -> None:
    g = torch.Generator().manual_seed(0)
    for n in (300, 150, 100, 50):
        for c_in, size, stride in ((518, 16, 2), (512, 8, 1)):
            x = torch.randn(n, size, size, c_in, generator=g)
            w = 0.02 * torch.randn(512, c_in, 3, 3, generator=g)
            b = torch.randn(512, generator=g)
            xv = x.permute(0, 3, 1, 2)  # the channels-last view FeatRegressNet gets
            variants = {"convolution": lambda: F.conv2d(xv, w, b, stride=stride, padding=1),
                        "im2col + GEMM": lambda: im2col(x, w, b, stride)}
            if stride == 2:
                variants["9 tap GEMMs"] = lambda: taps(x, w, b)
            gflop = 2 * n * (size // stride) ** 2 * 9 * c_in * 512 / 1e9
            with torch.no_grad():
                ref = variants["convolution"]()
                for name, fn in variants.items():
                    ms = 1e3 * median_seconds(fn, repeats)
                    diff = (fn() - ref).abs().max().item()
                    print(f"  conv {c_in}->512 stride {stride}, {n} patches, {name}: {ms:7.1f} ms "
                          f"{gflop / ms * 1e3:5.0f} GFLOP/s (max difference {diff:.1e})", flush=True)


def chunks(repeats: int) -> None:
    net, im1, im2, props = released_patch2pix(500)
    refine = p2p.refine
    times_by_chunk = {300: [], 100: [], 150: [], 50: []}
    outs = {}
    try:
        with torch.no_grad():
            f1, f2 = net.extract.forward_all(im1), net.extract.forward_all(im2)
            for _ in range(repeats + 1):  # the first round warms up
                for c, times in times_by_chunk.items():
                    p2p.refine = lambda *a, c=c, **k: refine(*a, **{**k, "chunk": c})
                    t = time.perf_counter()
                    outs[c] = net.refine_levels(f1, f2, props, [(640, 480), (640, 480)])
                    times.append(time.perf_counter() - t)
    finally:
        p2p.refine = refine
    flat = {c: torch.cat([t.flatten().float() for t in o if torch.is_tensor(t)]) for c, o in outs.items()}
    for c, times in times_by_chunk.items():
        same = torch.equal(flat[c], flat[300])
        print(f"  chunk {c:3d}: {' '.join(f'{t:.2f}' for t in times[1:])} s, median {statistics.median(times[1:]):.3f} s"
              f"{'' if c == 300 else ', outputs bitwise equal to chunk 300' if same else ', OUTPUTS DIFFER'}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    print(pipeline_job(a.threads))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, median of {a.repeats}")
    print("regressor convolutions:")
    formulations(a.repeats)
    print("both regressor levels, 500 proposals, by eval chunk size:")
    chunks(a.repeats)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
