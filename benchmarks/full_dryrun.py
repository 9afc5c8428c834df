"""How long the full-scale dry run takes (`snakemake -n results/tables --configfile
configs/paper.yaml`), with and without the SLURM profile, and the job count per rule.
Usage: ``python benchmarks/full_dryrun.py [--repeat 3]``. Goal: under 10 s."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def dry_run(extra: list[str]) -> tuple[float, str]:
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "snakemake", "-n", "results/tables", "--configfile",
                        "configs/paper.yaml", *extra], cwd=REPO, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(r.stderr[-2000:])
    return time.perf_counter() - t, r.stdout


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    for label, extra in (("no profile", []), ("--profile profiles/slurm", ["--profile", "profiles/slurm"])):
        times, out = [], ""
        for _ in range(a.repeat):
            sec, out = dry_run(extra)
            times.append(sec)
        print(f"full-scale dry run, {label}: best {min(times):.2f} s, median {sorted(times)[len(times) // 2]:.2f} s")
    block = out.split("Job stats:", 1)[1].split("\n\n", 1)[0]
    print("jobs per rule (per-scene preprocessing jobs appear once MegaDepth is downloaded):")
    for m in re.finditer(r"^(\w+)\s+(\d+)$", block, re.M):
        print(f"  {m.group(1):22s} {m.group(2)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
