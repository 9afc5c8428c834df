"""The demo run that the workflow tests share, started in a background thread as soon as pytest
has collected a test that uses it (the ``demo_run`` fixture), so that it overlaps the rest of
the suite.

Why: the demo is most of the suite's time (about 21 minutes of the 32 on an AVX2 Zen 3, 9 of
13 on a Zen 5), yet it keeps the 2 cores only about 1.6 busy on average. Its jobs are
2-thread torch work interleaved with single-threaded dataset building, SIFT, RANSAC and
Snakemake's own bookkeeping. Started at collection time, it runs while the unit and
integration tests use the rest of the machine. The workflow tests come last in the suite
(``tests/workflow``), and by then they only wait for the end. The run's numbers do not depend on
the load: each job's torch thread count comes from the config (``torch_threads``), not from
the cores it gets (docs/demo.md).

``start(items)`` is called from ``tests/conftest.py`` after collection; ``result()`` (the fixture)
waits for the thread and returns the working folder and the finished process; ``stop()``
(session end) waits for the run, terminating it after Ctrl-C, and removes the folder unless the
run failed.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

from tests.background_runs import failure, snakemake_command
from tests.conftest import REPO

FIXTURE = "demo_run"
# what the README's demo builds (`all`), plus the preprocessed indices and the online IMP run
# that the workflow tests inspect
TARGETS = ("all", "resources/preprocessed/patch2pix_pairs/index.json",
           "resources/preprocessed/imp_dump_sift/index.json",
           "results/training/imp_sift_online_demo/model_best.pth")
# about 21 min alone on the slowest CPU seen (2 cores), longer while the other tests run beside it
TIMEOUT_S = 3600

_thread: threading.Thread | None = None
_work: Path | None = None
_proc: subprocess.Popen | None = None
_done: subprocess.CompletedProcess | None = None
_error: str | None = None


def command(work: Path) -> list[str]:
    return snakemake_command(work, TIMEOUT_S, "--cores", "2", *TARGETS)


def _run() -> None:
    global _proc, _done, _error
    try:
        shutil.copy(REPO / "config.yaml", _work / "config.yaml")
        _proc = subprocess.Popen(command(_work), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        out, err = _proc.communicate()
        _done = subprocess.CompletedProcess(_proc.args, _proc.returncode, out, err)
    except Exception as e:  # reported by the fixture, not lost in the thread
        _error = f"{type(e).__name__}: {e}"


def start(items=None) -> None:
    """Start the run in a background thread, once, if a test among ``items`` (pytest's selected
    items; None: start unconditionally) uses the ``demo_run`` fixture."""
    global _thread, _work
    if _thread is not None:
        return
    if items is not None and not any(FIXTURE in getattr(item, "fixturenames", ()) for item in items):
        return
    _work = Path(tempfile.mkdtemp(prefix="matchrepro-demo-test-"))
    _thread = threading.Thread(target=_run, name="demo-workflow-run", daemon=True)
    _thread.start()


def result() -> tuple[Path, subprocess.CompletedProcess]:
    """Wait for the run (starting it now if collection did not) and return its working folder
    and process; raise with the end of its output if it failed."""
    start()
    _thread.join()
    if _error is not None:
        raise RuntimeError(f"the demo run could not start: {_error}")
    if _done.returncode != 0:
        raise RuntimeError(failure(f"demo run (kept in {_work})", _done))
    return _work, _done


def stop(interrupted: bool = False) -> None:
    """Session end: wait for the run (terminated first after an interrupted session) and remove
    its folder, unless it failed (then it is kept for a look; the fixture's error names it)."""
    if _thread is None:
        return
    if interrupted and _proc is not None:
        _proc.terminate()
    _thread.join()
    if _error is None and _done is not None and _done.returncode == 0:
        shutil.rmtree(_work, ignore_errors=True)
