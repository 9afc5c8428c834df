"""Measure the demo: wall time and peak memory of `snakemake --cores all results/tables`.

Runs the workflow from scratch in a temporary working directory (nothing reused from
`results/` or `resources/`), samples the resident memory of the whole process tree every
0.2 s from /proc, and prints the figures and the time of every job (from the rules' Snakemake
`benchmark:` files, longest first). Usage:
`python benchmarks/demo_runtime.py [--cores N] [--keep] [--twice | --against DIR]`; `--twice` runs
the demo a second time in another scratch folder and compares the two runs' `results/tables/*.csv`
byte for byte (same inputs, same numbers); `--against DIR` compares one new run with a run kept
earlier (`--keep`). Each run also prints the SHA-256 of each table CSV (first 12 hex digits), so
runs on other machines can be compared with the digests quoted in docs/demo.md.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
from matchrepro.cpu_isa import describe_line  # noqa: E402


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


def own_cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` itself, children excluded (/proc/PID/stat)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def run_demo(cores: str) -> tuple[Path, float, float, int, str, float]:
    """One demo run from scratch: (work dir, wall s, peak RSS bytes, jobs, stderr, CPU seconds of
    the Snakemake process itself, its jobs excluded; read until shortly before it exits)."""
    work = Path(tempfile.mkdtemp(prefix="matchrepro-demo-"))
    shutil.copy(REPO / "config.yaml", work / "config.yaml")
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(work),
           "--cores", cores, "results/tables"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak, scheduler_cpu = 0, 0.0
    stop = threading.Event()

    def sample():
        nonlocal peak, scheduler_cpu
        while not stop.is_set():
            peak = max(peak, tree_rss_bytes(proc.pid))
            scheduler_cpu = max(scheduler_cpu, own_cpu_seconds(proc.pid))
            time.sleep(0.2)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    _, err = proc.communicate()
    wall = time.perf_counter() - t0
    stop.set()
    th.join()
    if proc.returncode != 0:
        print(err[-3000:], file=sys.stderr)
        raise SystemExit(proc.returncode)
    n_jobs = sum(1 for line in err.splitlines() if line.startswith(("rule ", "localrule ", "checkpoint ")))
    return work, wall, peak, n_jobs, err, scheduler_cpu


def job_times(work: Path) -> list[tuple[float, str]]:
    """(seconds, job) from the rules' benchmark files, longest first."""
    out = []
    for f in (work / "results" / "runtime").rglob("*.tsv"):
        rows = f.read_text().splitlines()
        if len(rows) >= 2:
            out.append((float(rows[1].split("\t")[0]), str(f.relative_to(work / "results" / "runtime").with_suffix(""))))
    return sorted(out, reverse=True)


def table_digests(work: Path) -> list[str]:
    """``name sha256[:12]`` of each ``results/tables/*.csv`` of a run, by name."""
    return [f"{p.name} {hashlib.sha256(p.read_bytes()).hexdigest()[:12]}"
            for p in sorted((work / "results" / "tables").glob("*.csv"))]


def compare_tables(a: Path, b: Path) -> list[str]:
    """Names of the table CSVs that differ (or exist in one run only)."""
    names = sorted({p.name for p in (a / "results/tables").glob("*.csv")} | {p.name for p in (b / "results/tables").glob("*.csv")})
    bad = []
    for n in names:
        fa, fb = a / "results/tables" / n, b / "results/tables" / n
        if not (fa.is_file() and fb.is_file() and fa.read_bytes() == fb.read_bytes()):
            bad.append(n)
    return names, bad


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cores", default="all")
    ap.add_argument("--keep", action="store_true", help="keep the scratch directories")
    ap.add_argument("--twice", action="store_true", help="run twice and compare the tables byte for byte")
    ap.add_argument("--against", type=Path, default=None,
                    help="compare this run's tables with those of a kept earlier run (its scratch folder)")
    a = ap.parse_args()
    if a.against and not (a.against / "results" / "tables").is_dir():
        ap.error(f"--against {a.against}: no results/tables in it (give the earlier run's scratch folder)")
    print(f"{describe_line()} here; the jobs: cpu_isa "
          f"{yaml.safe_load((REPO / 'config.yaml').read_text()).get('cpu_isa', 'native')} of config.yaml "
          "(tables are the same run to run on one CPU; other CPUs: docs/demo.md)")
    runs = [a.against] if a.against else []
    for k in range(2 if a.twice and not a.against else 1):
        work, wall, peak, n_jobs, _, scheduler_cpu = run_demo(a.cores)
        runs.append(work)
        print(f"run {k + 1}: demo results/tables: {wall:.1f} s wall, {n_jobs} jobs, cores={a.cores} "
              f"(os.cpu_count()={os.cpu_count()}); peak resident memory of the process tree: {peak / 2**20:.0f} MiB")
        print(f"  CPU time of the Snakemake process itself (its jobs excluded): {scheduler_cpu:.1f} s")
        times = job_times(work)
        print(f"  job times (s, longest first; {sum(t for t, _ in times):.0f} s in all):")
        for t, name in times[:25]:
            print(f"  {t:8.1f}  {name}")
        if len(times) > 25:
            print(f"  ... {len(times) - 25} more jobs, {sum(t for t, _ in times[25:]):.0f} s together")
        print(f"  tables (sha256): {', '.join(table_digests(work))}")
    bad = []
    if len(runs) == 2:
        names, bad = compare_tables(*runs)
        print(f"tables of the two runs: {len(names) - len(bad)} of {len(names)} CSV files byte-identical"
              + ("" if not bad else f"; different: {', '.join(bad)}"))
    for work in runs:
        if a.keep or work == a.against:
            print(f"outputs kept in {work}")
        else:
            shutil.rmtree(work)
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
