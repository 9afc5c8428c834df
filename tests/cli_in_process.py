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
import sys


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


def run_command(cmd: list[str], check: bool = True) -> subprocess.CompletedProcess:
    """A ``[sys.executable, "-m", "matchrepro", ...]`` command (as the tests build them for
    :func:`subprocess.run`) through :func:`run_cli`; with ``check``, a non-zero exit fails the
    test with the command's output."""
    prefix = [sys.executable, "-m", "matchrepro"]
    if cmd[:3] != prefix:
        raise ValueError(f"not a `python -m matchrepro` command: {cmd[:3]}")
    r = run_cli(cmd[3:])
    if check:
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    return r
