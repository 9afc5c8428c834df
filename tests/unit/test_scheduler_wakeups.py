"""Snakemake's scheduler with one pending wake-up (matchrepro.scheduler_wakeups): a real workflow
whose ready jobs wait for the one core still runs every job, with fewer scheduling passes than
the unpatched scheduler makes, and the wake-up chain goes on one timer at a time."""

from __future__ import annotations

import subprocess
import sys
import threading

from tests.conftest import REPO

from matchrepro.scheduler_wakeups import _schedule_one_wakeup, one_pending_wakeup

SNAKEFILE = """
rule all:
    input: expand("o{i}.txt", i=range(6))

rule one:
    output: "o{i}.txt"
    shell: "sleep 0.8; touch {output}"
"""

# Counts the scheduler's passes (calls of JobScheduler.job_selector) of one real Snakemake run.
DRIVER = """
import atexit, sys
sys.path.insert(0, {src!r})
from snakemake.scheduling.job_scheduler import JobScheduler
passes = [0]
select = JobScheduler.job_selector
def counted(self, jobs):
    passes[0] += 1
    return select(self, jobs)
JobScheduler.job_selector = counted
if {patched!r}:
    from matchrepro.scheduler_wakeups import one_pending_wakeup
    assert one_pending_wakeup()
atexit.register(lambda: print("passes", passes[0]))
from snakemake.cli import main
sys.argv = ["snakemake", "-q", "--cores", "1"]
main()
"""


def scheduling_passes(tmp_path, patched: bool) -> int:
    work = tmp_path / ("patched" if patched else "plain")
    work.mkdir()
    (work / "Snakefile").write_text(SNAKEFILE)
    code = DRIVER.format(src=str(REPO / "src"), patched=patched)
    r = subprocess.run([sys.executable, "-c", code], cwd=work, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert sorted(p.name for p in work.glob("o*.txt")) == [f"o{i}.txt" for i in range(6)]
    return int(r.stdout.split("passes")[-1])


def test_a_real_workflow_runs_every_job_with_fewer_passes(tmp_path):
    plain = scheduling_passes(tmp_path, patched=False)
    patched = scheduling_passes(tmp_path, patched=True)
    # 6 jobs of 0.8 s on one core: about one pass per finished job plus one a second. Unpatched,
    # every finished job adds a 1 s timer chain while the others wait, so passes pile up.
    assert patched < plain
    assert patched <= 6 + 5 + 4, (patched, plain)


class _Scheduler:
    def __init__(self):
        self._open_jobs = threading.Semaphore(0)


def test_one_timer_pending_and_the_woken_pass_can_start_the_next():
    s = _Scheduler()
    for _ in range(5):
        _schedule_one_wakeup(s, 0.2)
    assert s._open_jobs.acquire(timeout=5)
    assert not s._open_jobs.acquire(timeout=0.5)  # five calls, one wake-up
    _schedule_one_wakeup(s, 0.05)  # the pass that wake-up started schedules the next
    assert s._open_jobs.acquire(timeout=5)


def test_installed_on_this_snakemake():
    from snakemake.scheduling.job_scheduler import JobScheduler

    assert one_pending_wakeup()
    assert JobScheduler._schedule_reevalutation is _schedule_one_wakeup
