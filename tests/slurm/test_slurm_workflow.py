"""The demo workflow on a real single-node SLURM through the shipped profile (profiles/slurm-ci):
same tables as the local run, and the GPU rule submitted with a GPU request."""

from __future__ import annotations

import pandas as pd
import pytest

from tests.slurm import background

pytestmark = pytest.mark.slow


def test_demo_on_slurm_equals_local():
    """The small config (background.small_config) run locally and through the CI profile on the
    cluster; both runs start in the background at collection time (tests/slurm/background.py)."""
    runs = background.result()
    if runs.unavailable:
        pytest.skip(f"no SLURM cluster: {runs.unavailable}")
    assert runs.error is None, f"{runs.error}\n(working folders kept in {runs.base})"
    local, remote = runs.local, runs.remote
    log = runs.slurm_log
    assert "sbatch" in log or "SLURM" in log or "slurm" in log
    # every job ran under SLURM: the plugin keeps its per-job logs
    slurm_logs = list((remote / ".snakemake" / "slurm_logs").rglob("*.log"))
    assert any("rule_match_pairs_shard" in str(p) for p in slurm_logs)
    for bench in background.BENCHMARKS:
        a = pd.read_csv(local / "results" / "tables" / f"{bench}.csv")
        b = pd.read_csv(remote / "results" / "tables" / f"{bench}.csv")
        pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-9)
    # the training job asked for a GPU and got the fake one
    train_log = (remote / "logs" / "train_model" / "toy_gpu.log").read_text()
    assert "CUDA_VISIBLE_DEVICES='0'" in train_log, train_log[:500]
    submitted = "\n".join(p.read_text(errors="replace") for p in slurm_logs if "rule_train_model" in str(p))
    assert submitted, "no SLURM log for the training job"
