"""A local dataset evaluated on its own (the README's worked example), and rules that run this
checkout's code whatever else is importable."""

import shutil

import pandas as pd
import yaml

from tests.conftest import REPO
from tests.workflow.test_snakemake import job_counts, snakemake


def _local_scannet(tmp_path):
    """The README's local example pointed at a ScanNet-format folder built here (SuperGlue's pairs
    file and frames), in a scratch working directory."""
    from matchrepro.config import demo_settings
    from matchrepro.demo import builders

    data = tmp_path / "my_scannet"
    builders.build_scannet(data, demo_settings(kind="scannet", scenes=1, frames_per_scene=4, pairs_per_scene=3,
                                               size=[320, 240], pairs_file="scannet_test_pairs_with_gt.txt"))
    cfg = yaml.safe_load((REPO / "configs/local_scannet.yaml").read_text())
    cfg["datasets"]["scannet_local"]["root"] = str(data)
    work = tmp_path / "work"
    work.mkdir()
    (work / "local.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return work


def test_one_local_benchmark_runs_without_any_training_job(tmp_path):
    work = _local_scannet(tmp_path)
    args = ["-s", str(REPO / "Snakefile"), "--directory", str(work), "results/benchmarks/scannet_local",
            "--configfile", str(work / "local.yaml")]
    dry = snakemake("-n", *args)
    jobs = job_counts(dry.stdout)
    assert "train_model" not in jobs and "build_demo_dataset" not in jobs and "download_dataset" not in jobs
    assert jobs["match_pairs"] == 2 and jobs["evaluate"] == 4 and jobs["benchmark_tables"] == 1
    snakemake("--cores", "2", *args)
    t = pd.read_csv(work / "results/benchmarks/scannet_local/scannet_local.csv")
    assert set(t.method) == {"sift_mnn", "sift_mnn_ratio"} and set(t.source) == {"local"}
    n = len((tmp_path / "my_scannet/scannet_test_pairs_with_gt.txt").read_text().split("\n")) - 1
    assert n >= 2 and (t.num_pairs == n).all() and t["auc@20deg"].notna().all()
    vs = (work / "results/benchmarks/scannet_local/scannet_local_vs_published.md").read_text()
    assert "| compared |" not in vs


def test_rules_run_this_checkouts_code(tmp_path):
    """Another checkout's package first on PYTHONPATH (as a venv installed from it would put it
    on sys.path) does not run: the rules import this checkout's src/."""
    other = tmp_path / "other" / "src" / "matchrepro"
    other.mkdir(parents=True)
    (other / "__init__.py").write_text("")
    (other / "__main__.py").write_text("raise SystemExit('ran the other checkout')\n")
    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(REPO / "config.yaml", work / "config.yaml")
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(other.parent)}
    r = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(work),
                        "--cores", "1", "resources/demo/hpatches"], capture_output=True, text=True, env=env,
                       timeout=600)
    log = (work / "logs/build_demo_dataset/hpatches.log")
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-2000:], log.read_text() if log.exists() else "")
    assert (work / "resources/demo/hpatches/hpatches-sequences-release").is_dir()
