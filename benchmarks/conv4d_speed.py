"""Speed of our Conv4d (first spatial dim folded into the batch: k conv3d calls) against the loop
formulation of the original code (k x h1 conv3d calls), on NC-volume sizes of Patch2Pix.

Usage: ``python benchmarks/conv4d_speed.py [--threads N]``. Prints milliseconds per call, the
speed-up and whether both agree, for both NC layers at the pooled volume of 480x320 training
images (stride 8 then 2x pooling: 20x30x20x30) and the first layer at 640x480 (30x40x30x40)."""

from __future__ import annotations

import argparse
import time

import torch

from matchrepro.models.conv4d import Conv4d, conv4d_loop_reference


def bench(fn, repeat: int) -> float:
    fn()
    t = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - t) / repeat * 1000


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    cases = [("train 480x320 (pooled 20x30x20x30)", (1, 1, 20, 30, 20, 30), 1, 16),
             ("train 480x320, layer 2", (1, 16, 20, 30, 20, 30), 16, 1),
             ("test 640x480 (pooled 30x40x30x40)", (1, 1, 30, 40, 30, 40), 1, 16)]
    print(f"torch {torch.__version__}, {a.threads} threads")
    with torch.no_grad():
        for name, shape, cin, cout in cases:
            conv = Conv4d(cin, cout, 3)
            x = torch.randn(shape)
            fast = bench(lambda: conv(x), a.repeat)
            loop = bench(lambda: conv4d_loop_reference(x, conv.weight, conv.bias), a.repeat)
            same = torch.allclose(conv(x), conv4d_loop_reference(x, conv.weight, conv.bias), atol=1e-4)
            print(f"{name:38s} fast {fast:8.1f} ms  loop {loop:8.1f} ms  speed-up {loop / fast:5.2f}x  equal={same}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
