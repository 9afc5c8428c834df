"""Speed of neighbourhood consensus: our conv2d formulation against the released order of
operations (a Conv4d stack per symmetric branch, here in its per-slice conv3d form) and the
original loop formulation of one layer.

Usage: ``python benchmarks/conv4d_speed.py [--threads N] [--repeat R]``. Prints seconds per call
(median of R after a warm-up), the speed-up, the largest difference, the peak resident memory of
this process, and the figure the released code took on this machine kind (issue #16: 8.42 s for
the (1, 1, 30, 40, 30, 40) volume, 2 threads), with our ratio to it."""

from __future__ import annotations

import argparse
import resource

import torch

from matchrepro.models.conv4d import Conv4d, conv4d_loop_reference
from matchrepro.models.patch2pix import NeighConsensus
from timing import median_seconds, pipeline_job

RELEASED_NC_S = 8.42  # released Patch2Pix NC on (1, 1, 30, 40, 30, 40), 2 threads, this machine kind


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()
    print(pipeline_job(a.threads))
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {a.threads} threads, median of {a.repeat}")
    nc = NeighConsensus().eval()
    with torch.no_grad():
        for name, shape in (("test 640x480 (1, 1, 30, 40, 30, 40)", (1, 1, 30, 40, 30, 40)),
                            ("train 480x320 (2, 1, 20, 30, 20, 30)", (2, 1, 20, 30, 20, 30))):
            x = torch.relu(torch.randn(shape))
            fast = median_seconds(lambda: nc(x), a.repeat)
            ref = median_seconds(lambda: nc.forward_reference(x), a.repeat)
            y, r = nc(x), nc.forward_reference(x)
            diff = float((y - r).abs().max() / r.abs().max())
            line = (f"NC {name:38s} ours {fast:6.3f} s  released order {ref:6.3f} s  speed-up {ref / fast:5.2f}x  "
                    f"max rel diff {diff:.1e}")
            if shape == (1, 1, 30, 40, 30, 40):
                line += f"  | released code {RELEASED_NC_S:.2f} s -> ratio {fast / RELEASED_NC_S:.2f}"
            print(line)
        conv = Conv4d(1, 16, 3)
        x = torch.randn(1, 1, 30, 40, 30, 40)
        loop = median_seconds(lambda: conv4d_loop_reference(x, conv.weight, conv.bias), 1)
        print(f"one layer (1 -> 16) in the original loop formulation: {loop:6.3f} s")
    print(f"peak resident memory: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
