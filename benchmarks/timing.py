"""Helpers shared by the benchmark scripts: the threads and allocator setting of a pipeline job, a
median wall time, and the released-architecture Patch2Pix inputs that ``patch2pix_speed.py`` times."""

from __future__ import annotations

import statistics
import time

import torch

from matchrepro.allocator import OPT_OUT, keep_freed_memory
from matchrepro.cpu_isa import describe_line


def pipeline_job(threads: int) -> str:
    """Run this benchmark as a ``python -m matchrepro`` job runs: ``threads`` torch threads and
    the allocator setting (``matchrepro.allocator``); returns the lines saying which allocator it
    runs (``MATCHREPRO_MALLOC=system`` times glibc's defaults instead) and on which CPU. Call it
    before any tensor is made."""
    torch.set_num_threads(threads)
    if keep_freed_memory():
        alloc = f"allocator: large blocks from the heap, freed memory kept, as the pipeline runs ({OPT_OUT}=system: glibc's defaults)"
    else:
        alloc = "allocator: the C library's defaults"
    # machines of one kind come with different CPUs (the same code ran 1.5-1.9x slower on one), so a
    # ratio to a figure taken elsewhere mixes the code's speed with the CPU's
    return alloc + "\n" + describe_line()





def median_seconds(fn, repeats: int) -> float:
    """Median wall time of ``fn()`` over ``repeats`` calls, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def released_patch2pix(n_proposals: int = 500):
    """(eval-mode Patch2Pix with the released architecture and seeded random weights, image 1,
    image 2, ``(n_proposals, 4)`` random proposals [x1, y1, x2, y2] in pixels of 640x480):
    the inputs of ``patch2pix_speed.py``."""
    import patch2pix_speed

    torch.manual_seed(0)
    net = patch2pix_speed.Patch2Pix()
    patch2pix_speed.init_weights(net, seed=0)
    net.eval()
    im1, im2 = patch2pix_speed.photo_pair(torch.device("cpu"))
    props = torch.rand(n_proposals, 4, generator=torch.Generator().manual_seed(0)) * torch.tensor([640.0, 480, 640, 480])
    return net, im1, im2, props
