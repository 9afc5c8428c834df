"""The training loop: DDP (gloo, 2 processes) equals one process at the same global batch, and
a killed run (single or DDP) resumes from its last checkpoint, not from zero."""

import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch

from tests.cli_in_process import run_command as run_in_process
from tests.conftest import REPO


def train_cmd(out, **params):
    spec = {"training": {"name": "toy_run", "model": "toy", "data": None, "init": None, "params": params}}
    return [sys.executable, "-m", "matchrepro", "train", "--spec", json.dumps(spec), "--out", str(out)]


def final_params(path):
    return torch.load(path, weights_only=True)["model"]


def descendants(pid: int) -> list[int]:
    """All live descendants of ``pid`` (torchrun starts its workers in sessions of their own,
    so killing the launcher's process group is not enough)."""
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d))
    out, stack = [], [pid]
    while stack:
        for c in children.get(stack.pop(), []):
            out.append(c)
            stack.append(c)
    return out


def kill_at_checkpoint(cmd: list[str], out_dir, step: int, cwd, timeout: float = 300) -> int:
    """Start a training command and SIGKILL it (and its children) as soon as ``last.pth`` holds
    step ``step`` or later; returns the step ``last.pth`` holds after the kill. Where a step takes
    far longer than this 10 ms polling (the IMP and Patch2Pix tests), that is ``step`` itself."""
    p = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    last = out_dir / "last.pth"
    deadline, seen, mtime = time.time() + timeout, None, None
    while time.time() < deadline and p.poll() is None:
        try:
            m = last.stat().st_mtime_ns
            if m != mtime:  # written (atomically, by rename) since the last look
                mtime, seen = m, torch.load(last, weights_only=True)["step"]
        except FileNotFoundError:
            pass
        if seen is not None and seen >= step:
            break
        time.sleep(0.01)
    pids = [p.pid, *descendants(p.pid)]
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    p.wait()
    deadline = time.time() + 10  # torchrun's workers are not our children: wait until they are gone
    while time.time() < deadline and any(os.path.exists(f"/proc/{pid}") for pid in pids[1:]):
        time.sleep(0.05)
    return torch.load(last, weights_only=True)["step"]


def run(cmd, timeout=300):
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=timeout)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    return r


def test_ddp_matches_single_process_at_the_same_global_batch(tmp_path):
    common = dict(steps=12, batch_size=8, lr=1e-2, checkpoint_every=100, seed=3)
    run_in_process(train_cmd(tmp_path / "single" / "w.pth", processes=1, **common))
    r = run(train_cmd(tmp_path / "ddp" / "w.pth", processes=2, **common))
    assert "processes=2" in r.stdout
    a, b = final_params(tmp_path / "single" / "w.pth"), final_params(tmp_path / "ddp" / "w.pth")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5, rtol=1e-4), k
    # and training did move the parameters
    init = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.Tanh(), torch.nn.Linear(32, 2))
    assert not torch.allclose(a["0.weight"], init[0].weight.detach())
    log = pd.read_csv(tmp_path / "ddp" / "log.csv")
    assert log.step.tolist() == list(range(1, 13))  # rank 0 logs once per step


@pytest.mark.parametrize("processes", [1, 2])
def test_killed_run_resumes_from_its_checkpoint(tmp_path, processes):
    # enough steps that the kill (once last.pth holds step 150 or later) lands before the end: a
    # toy step takes ~1 ms in one process, ~8 ms under DDP (gloo all-reduce), so a few more
    # checkpoints may pass before it does
    steps = 600 if processes == 1 else 300
    params = dict(steps=steps, batch_size=8, lr=1e-3, checkpoint_every=50, seed=5, processes=processes)
    out = tmp_path / "killed" / "w.pth"
    # SIGKILL: no chance to save, the last periodic or end-of-epoch checkpoint counts
    saved = kill_at_checkpoint(train_cmd(out, **params), out.parent, 150, REPO, timeout=120)
    assert 32 <= saved < steps and (saved % 50 == 0 or saved % 32 == 0)  # periodic or end of epoch (32 steps)
    again = run if processes > 1 else run_in_process  # only the killed run must be a process of its own
    r = again(train_cmd(out, **params))
    assert f"resumed from step {saved}" in r.stdout
    assert json.loads(r.stdout.strip().splitlines()[-1])["resumed_from"] == saved
    # the uninterrupted reference runs in this process: one process at the same global batch equals
    # DDP (test above; at these 300 steps the weights agree to 3e-8), and it skips a torchrun start
    run_in_process(train_cmd(tmp_path / "straight" / "w.pth", **{**params, "processes": 1}))
    a, b = final_params(out), final_params(tmp_path / "straight" / "w.pth")
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5, rtol=1e-4), k


def test_sigterm_saves_a_checkpoint_and_exits(tmp_path):
    out = tmp_path / "t" / "w.pth"
    p = subprocess.Popen(train_cmd(out, steps=100000, batch_size=8, checkpoint_every=100000, processes=1),
                         cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = out.parent / "log.csv"
    deadline = time.time() + 60
    while time.time() < deadline and not (log.exists() and len(log.read_text().splitlines()) > 20):
        time.sleep(0.05)
    p.send_signal(signal.SIGTERM)
    stdout, _ = p.communicate(timeout=60)
    assert p.returncode == 130
    step = torch.load(out.parent / "last.pth", weights_only=True)["step"]
    assert step >= 20 and f"interrupted: checkpoint at step {step}" in stdout


def test_longer_run_continues_but_a_changed_setting_starts_over(tmp_path):
    out = tmp_path / "r" / "w.pth"
    common = dict(batch_size=8, checkpoint_every=5, seed=1, processes=1)
    run_in_process(train_cmd(out, steps=10, lr=1e-3, **common))
    r = run_in_process(train_cmd(out, steps=20, lr=1e-3, **common))  # more steps: the same run, continued
    assert "resumed from step 10" in r.stdout
    assert pd.read_csv(out.parent / "log.csv").step.tolist() == list(range(1, 21))
    r = run_in_process(train_cmd(out, steps=20, lr=5e-3, **common))  # another learning rate: a new run
    assert "saved by a different configuration: starting over" in r.stdout and "resumed from step" not in r.stdout
    assert json.loads(r.stdout.strip().splitlines()[-1])["resumed_from"] is None
    assert pd.read_csv(out.parent / "log.csv").step.tolist() == list(range(1, 21))
    assert (out.parent / "last.stale.pth").is_file()


def test_changed_initial_weights_under_the_same_path_start_over(tmp_path):
    """The fingerprint covers the contents of the run's input files, not only their paths: a
    retrained --init (e.g. Patch2Pix after its NCNet stage changed) is a new run, not a resume."""
    out = tmp_path / "r" / "w.pth"
    init = tmp_path / "init.pth"
    init.write_bytes(b"weights A")
    cmd = train_cmd(out, steps=10, batch_size=8, checkpoint_every=5, seed=1, processes=1) + ["--init", str(init)]
    run_in_process(cmd)
    assert "resumed from step 10" in run_in_process(cmd).stdout  # same contents: the finished run
    init.write_bytes(b"weights B")
    r = run_in_process(cmd)
    assert "saved by a different configuration: starting over" in r.stdout and "resumed from step" not in r.stdout


def test_early_stop_under_ddp_stops_every_rank_at_the_same_step(tmp_path):
    """Rank 0 validates and decides; both ranks stop together (no rank waits in an all-reduce), the
    logs end at the stop, and a rerun of the stopped run trains nothing on either rank."""
    import re

    out = tmp_path / "ddp" / "w.pth"
    params = dict(steps=120, batch_size=16, lr=0.05, checkpoint_every=10, validate_every=4, val_samples=64,
                  val_criterion="max_error", early_stop=2, processes=2, device="cpu")
    r = run(train_cmd(out, **params))
    m = re.search(r"early stop at step (\d+): max_error has not improved for 2 validations", r.stdout)
    assert m, r.stdout[-2000:]
    stop = int(m.group(1))
    assert stop < 120
    assert pd.read_csv(out.parent / "log.csv").step.tolist() == list(range(1, stop + 1))
    assert pd.read_csv(out.parent / "validation.csv").step.tolist()[-1] == stop
    r = run(train_cmd(out, **params))
    assert f"stopped early at step {stop} before" in r.stdout
    assert pd.read_csv(out.parent / "log.csv").step.tolist() == list(range(1, stop + 1))
