"""What the suite's background workflow runs share (``tests/workflow/demo_background.py``,
``tests/slurm/background.py``): the Snakemake command line under a hard time limit, and the
message of a run that failed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO


def snakemake_command(work: Path, timeout_s: int, *args: str) -> list[str]:
    """``snakemake -s <repo>/Snakefile --directory work *args`` with this interpreter, killed after
    ``timeout_s`` seconds (SIGTERM, then SIGKILL 30 s later) so a hung run cannot hang the suite."""
    return ["timeout", "--kill-after=30", str(timeout_s), sys.executable, "-m", "snakemake", "-s",
            str(REPO / "Snakefile"), "--directory", str(work), *args]


def failure(what: str, r: subprocess.CompletedProcess) -> str:
    """``the <what> failed (exit N)`` and the end of its stdout and stderr (3000 and 6000
    characters: Snakemake's error summary is at the end of stderr)."""
    return f"the {what} failed (exit {r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-6000:]}"
