"""Shared fixtures: synthetic two-view scenes built in code (nothing downloaded)."""

from __future__ import annotations

import os
from pathlib import Path

# Idle OpenMP threads sleep instead of spinning, in this process and every run it starts (set
# before torch is imported). The demo run overlaps the other tests (tests/workflow/
# demo_background.py), and spinning threads of two torch processes on the 2 cores starve each
# other (docs/performance.md, "The test suite"). The wait policy changes no computed number.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def rotation(axis, angle_deg):
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    a = np.deg2rad(angle_deg)
    K = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(a) * K + (1 - np.cos(a)) * K @ K


@pytest.fixture
def two_view_scene():
    """Random 3D points seen by two cameras: (pts0, pts1, K0, K1, T_0to1), pixels in (x, y)."""
    rng = np.random.default_rng(0)
    X = rng.uniform([-2, -1.5, 4], [2, 1.5, 8], (300, 3))
    K0 = np.array([[600.0, 0, 320], [0, 610, 240], [0, 0, 1]])
    K1 = np.array([[550.0, 0, 330], [0, 545, 235], [0, 0, 1]])
    T = np.eye(4)
    T[:3, :3] = rotation([0.2, 1, 0.1], 12)
    T[:3, 3] = [-0.8, 0.05, 0.1]
    X1 = X @ T[:3, :3].T + T[:3, 3]
    p0 = X @ K0.T
    p1 = X1 @ K1.T
    return p0[:, :2] / p0[:, 2:], p1[:, :2] / p1[:, 2:], K0, K1, T


def pytest_collection_finish(session):
    """Start the long workflow runs in the background as soon as a test that needs them is
    selected, so that they overlap the rest of the suite: the SLURM test's runs, which mostly
    wait on the scheduler's polling (tests/slurm/background.py), and the demo run that the
    workflow tests share (tests/workflow/demo_background.py)."""
    from tests.slurm import background
    from tests.workflow import demo_background

    demo_background.start(session.items)
    background.start(session.items)


def pytest_sessionfinish(session, exitstatus):
    """Wait for the background runs (terminating them after Ctrl-C), so that no Snakemake run
    and no cluster daemon outlives pytest."""
    from tests.slurm import background
    from tests.workflow import demo_background

    interrupted = exitstatus == pytest.ExitCode.INTERRUPTED
    background.stop(interrupted=interrupted)
    demo_background.stop(interrupted=interrupted)
