"""``python -m matchrepro ...`` run inside the test process, for quick CLI calls whose cost as a
subprocess is mostly interpreter start-up (about 3 s each, most of it importing torch).

The same entry point (:func:`matchrepro.cli.main`) with its stdout/stderr captured; torch's
thread count, which ``--threads`` sets for the process, is restored afterwards. Use it for the
toy training runs of the loop tests; runs that are killed, signalled or launched under torchrun
stay subprocesses (tests/integration/test_training_ddp.py).
"""

from __future__ import annotations

import contextlib
import io
import subprocess


def run_cli(argv: list[str]) -> subprocess.CompletedProcess:
    """``argv`` as after ``python -m matchrepro``; returns (returncode, stdout, stderr) as
    :func:`subprocess.run` would."""
    import torch

    from matchrepro import cli

    out, err = io.StringIO(), io.StringIO()
    threads = torch.get_num_threads()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                rc = cli.main(argv)
            except SystemExit as e:  # argparse errors, and the verbs that exit with a status
                rc = e.code if isinstance(e.code, int) else 1
    finally:
        torch.set_num_threads(threads)
    return subprocess.CompletedProcess(["matchrepro", *argv], rc, out.getvalue(), err.getvalue())
