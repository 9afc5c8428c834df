"""Measure the demo: wall time and peak memory of `snakemake --cores all results/tables`.

Runs the workflow from scratch in a temporary working directory (nothing reused from
`results/` or `resources/`), samples the resident memory of the whole process tree every
0.2 s from /proc, and prints the figures. Usage: `python benchmarks/demo_runtime.py [--cores N]`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def tree_rss_bytes(pid: int) -> int:
    """Sum of VmRSS over ``pid`` and all its descendants (Linux /proc)."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/status") as f:
                fields = dict(line.split(":", 1) for line in f if ":" in line)
        except OSError:
            continue
        p = int(d)
        children.setdefault(int(fields["PPid"].strip()), []).append(p)
        rss[p] = int(fields.get("VmRSS", "0 kB").split()[0]) * 1024
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        total += rss.get(p, 0)
        stack += children.get(p, [])
    return total


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cores", default="all")
    ap.add_argument("--keep", action="store_true", help="keep the scratch directory")
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="matchrepro-demo-"))
    shutil.copy(REPO / "config.yaml", work / "config.yaml")
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(work),
           "--cores", a.cores, "results/tables"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak = 0
    stop = threading.Event()

    def sample():
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, tree_rss_bytes(proc.pid))
            time.sleep(0.2)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    _, err = proc.communicate()
    wall = time.perf_counter() - t0
    stop.set()
    th.join()
    if proc.returncode != 0:
        print(err[-3000:], file=sys.stderr)
        return proc.returncode
    n_jobs = sum(1 for line in err.splitlines() if line.startswith(("rule ", "localrule ")))
    print(f"demo results/tables: {wall:.1f} s wall, {n_jobs} jobs, cores={a.cores} (os.cpu_count()={os.cpu_count()})")
    print(f"peak resident memory of the process tree: {peak / 2**20:.0f} MiB")
    if not a.keep:
        shutil.rmtree(work)
    else:
        print(f"outputs kept in {work}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
