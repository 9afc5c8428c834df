"""The demo workflow on a real single-node SLURM through the shipped profile (profiles/slurm-ci):
same tables as the local run, and the GPU rule submitted with a GPU request."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.conftest import REPO
from tests.slurm.cluster import Cluster, ClusterUnavailable

pytestmark = pytest.mark.slow

NUMERIC_EXCLUDE = ("mean_seconds",)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    state = tmp_path_factory.mktemp("slurm")
    try:
        with Cluster(state) as c:
            yield c
    except ClusterUnavailable as e:
        pytest.skip(f"no SLURM cluster: {e}")


BENCHMARKS = ("yfcc", "hpatches")  # a sharded and an unsharded benchmark


def small_config(work: Path) -> Path:
    """The demo config, smaller: YFCC in 2 shards (match_pairs_shard, evaluate_shard, gather) and
    HPatches unsharded, SIFT + mutual NN on fewer scenes/pairs, and a toy training run on the 'GPU'.
    The learned demo methods train and match locally (tests/workflow)."""
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    d = cfg["datasets"]
    d["yfcc"]["demo"].update(scenes=1, images_per_scene=4, pairs_per_scene=3, middlebury=False)
    d["yfcc"]["shards"] = 2
    d["hpatches"]["demo"].update(illumination=1, viewpoint=1)
    cfg["benchmarks"] = {k: cfg["benchmarks"][k] for k in BENCHMARKS}
    cfg["benchmarks"]["yfcc"]["protocols"] = ["pose_superglue"]
    cfg["benchmarks"]["hpatches"]["protocols"] = ["hpatches_mma", "homography_loftr"]
    cfg["methods"] = {"sift_mnn": cfg["methods"]["sift_mnn"]}
    for b in cfg["benchmarks"].values():
        b["methods"] = ["sift_mnn"]
    cfg["training"] = {"toy_gpu": {"model": "toy", "params": {"steps": 20, "gpus": 1, "threads": 1}}}
    path = work / "small.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def snakemake(work: Path, cfg: Path, *args, timeout=900):
    cmd = ["timeout", "--kill-after=30", str(timeout), sys.executable, "-m", "snakemake", "-s",
           str(REPO / "Snakefile"), "--directory", str(work), "results/tables", "results/training/toy_gpu/model_best.pth",
           "--configfile", str(cfg), *args]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-6000:]
    return r


def test_demo_on_slurm_equals_local(cluster, tmp_path):
    local, remote = tmp_path / "local", tmp_path / "slurm"
    local.mkdir()
    remote.mkdir()
    cfg = small_config(tmp_path)
    snakemake(local, cfg, "--cores", "2")
    r = snakemake(remote, cfg, "--profile", str(REPO / "profiles" / "slurm-ci"))
    log = r.stdout + r.stderr
    assert "sbatch" in log or "SLURM" in log or "slurm" in log
    # every job ran under SLURM: the plugin keeps its per-job logs
    slurm_logs = list((remote / ".snakemake" / "slurm_logs").rglob("*.log"))
    assert any("rule_match_pairs_shard" in str(p) for p in slurm_logs)
    for bench in BENCHMARKS:
        a = pd.read_csv(local / "results" / "tables" / f"{bench}.csv")
        b = pd.read_csv(remote / "results" / "tables" / f"{bench}.csv")
        pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-9)
    # the training job asked for a GPU and got the fake one
    train_log = (remote / "logs" / "train_model" / "toy_gpu.log").read_text()
    assert "CUDA_VISIBLE_DEVICES='0'" in train_log, train_log[:500]
    submitted = "\n".join(p.read_text(errors="replace") for p in slurm_logs if "rule_train_model" in str(p))
    assert submitted, "no SLURM log for the training job"
