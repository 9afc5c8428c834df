"""The workflow itself: lint, the full-scale dry run, and the demo run end to end."""

import re
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from tests.conftest import REPO
from tests.workflow import demo_background

SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def snakemake(*args, cwd=REPO, check=True, timeout=900):
    r = subprocess.run([*SNAKEMAKE, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{r.stdout[-3000:]}\n{r.stderr[-5000:]}")
    return r


def job_counts(text: str) -> dict[str, int]:
    block = text.split("Job stats:", 1)[1]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", block, re.M)}


@pytest.mark.parametrize("configfile", [None, "configs/paper.yaml"])
def test_lint_is_clean(configfile):
    args = ["--lint"] + (["--configfile", configfile] if configfile else [])
    r = snakemake(*args)
    assert "Congratulations, your workflow is in a good condition!" in r.stdout + r.stderr


def test_paper_dry_run_shows_the_whole_dag():
    r = snakemake("-n", "-p", "results/tables", "--configfile", "configs/paper.yaml")
    jobs = job_counts(r.stdout)
    # per-scene preprocessing jobs appear once MegaDepth is downloaded (a checkpoint)
    for rule in ("download_dataset", "fetch_weights", "preprocess_index", "train_model",
                 "extract_features", "match_pairs", "evaluate", "tables"):
        assert jobs.get(rule, 0) >= 1, (rule, jobs)
    assert jobs["download_dataset"] == 4
    assert "build_demo_dataset" not in jobs  # no demo block leaks into the full configuration
    # the printed commands carry the real URLs
    for url in ("https://huggingface.co/datasets/vbalnt/hpatches/resolve/main/hpatches-sequences-release.zip",
                "https://cvg-data.inf.ethz.ch/megadepth/scene_info.tar.gz",
                "https://github.com/magicleap/SuperGluePretrainedNetwork/raw/master/models/weights/superpoint_v1.pth",
                "https://cvg-data.inf.ethz.ch/scannet/scannet1500.zip"):
        assert url in r.stdout, url


def test_bad_config_key_stops_with_one_line():
    r = snakemake("-n", "--config", "sede=1", check=False)
    assert r.returncode != 0
    lines = [ln for ln in (r.stdout + r.stderr).splitlines() if "matchrepro:" in ln]
    assert lines == ["matchrepro: config.yaml: unknown key 'sede'"]


def test_missing_local_dataset_folder_is_named():
    r = snakemake("-n", "--config", 'datasets={"hpatches": {"source": "local", "root": "no/such/dir"}}',
                  check=False)
    assert r.returncode != 0
    assert "matchrepro: config.yaml: datasets.hpatches.root: dataset folder not found: no/such/dir" in r.stdout + r.stderr


def torch_threads_by_job(text: str) -> dict[str, int]:
    """``--threads`` of each printed ``match-dataset`` / ``train`` command, keyed by its output."""
    out = {}
    for line in text.splitlines():
        m = re.search(r"python -m matchrepro (match-dataset|train) .*--out (\S+).*", line)
        if m:
            out[m.group(2)] = int(re.search(r"--threads (\d+)", line).group(1))
    return out


@pytest.mark.parametrize("cores", ["1", "2"])
def test_torch_threads_come_from_the_config_not_the_cores(tmp_path, cores):
    """Every learned matcher and training job runs ``torch_threads`` torch threads (2 in the
    demo) whatever ``--cores`` says, so that its numbers do not depend on the machine; descriptor
    matching and re-thresholding a cache (``from_cache_of``) run 1; ``training.<name>.params.threads``
    overrides one run."""
    shutil.copy(REPO / "config.yaml", tmp_path / "config.yaml")
    args = ("-s", str(REPO / "Snakefile"), "--directory", str(tmp_path), "-n", "-p", "--cores", cores,
            "results/tables")
    threads = torch_threads_by_job(snakemake(*args).stdout)
    rethresholded = "results/matches/patch2pix_demo_c09/hpatches.h5"
    learned = {k: v for k, v in threads.items() if "_demo" in k and k != rethresholded}
    assert {k for k in learned if k.startswith("results/training/")} == {
        f"results/training/{m}/model_best.pth" for m in ("ncnet_demo", "patch2pix_demo", "imp_sift_demo", "eimp_sift_demo")}
    assert len(learned) >= 4 + 4 and set(learned.values()) == {2}, threads
    assert threads["results/matches/sift_mnn/yfcc.h5"] == threads[rethresholded] == 1
    if cores == "1":
        return  # the overrides below do not depend on --cores: checked once
    threads = torch_threads_by_job(snakemake(*args, "--config", "torch_threads=3").stdout)
    assert threads["results/matches/imp_sift_demo/yfcc.h5"] == 3
    assert threads["results/training/ncnet_demo/model_best.pth"] == 3
    import yaml

    cfg = yaml.safe_load((tmp_path / "config.yaml").read_text())
    cfg["training"]["ncnet_demo"]["params"]["threads"] = 1
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    threads = torch_threads_by_job(snakemake(*args).stdout)
    assert threads["results/training/ncnet_demo/model_best.pth"] == 1
    assert threads["results/training/patch2pix_demo/model_best.pth"] == 2


def test_torch_threads_must_be_positive():
    r = snakemake("-n", "--config", "torch_threads=0", check=False)
    assert r.returncode != 0
    lines = [ln for ln in (r.stdout + r.stderr).splitlines() if "matchrepro:" in ln]
    assert lines == ["matchrepro: config.yaml: torch_threads: 0 is less than the minimum of 1"]


@pytest.fixture(scope="module")
def demo_run():
    """The README's demo target (plus the preprocessed indices and the online IMP run), run in a
    scratch working directory. It starts in the background at collection time
    (tests/workflow/demo_background.py), so this waits for its end: (work, finished process)."""
    return demo_background.result()


PREPROCESSED = [t for t in demo_background.TARGETS if t.startswith("resources/preprocessed/")]


def trained_steps(work, run) -> int:
    """The steps a demo run trains: its config's ``steps``, or fewer with ``early_stop: N``: up to the
    first validation N validations after the best so far (validation.csv), as the log says."""
    import yaml

    p = yaml.safe_load((work / "config.yaml").read_text())["training"][run]["params"]
    steps, patience = p["steps"], p.get("early_stop")
    if patience is None:
        return steps
    val = pd.read_csv(work / "results" / "training" / run / "validation.csv")
    metric = {"ncnet_demo": "pose_rate", "patch2pix_demo": "pose_rate"}.get(run, "auc@10")
    every = p.get("validate_every", p["checkpoint_every"])
    best_step, best = None, None
    for step, v in zip(val.step, val[metric]):
        if best is None or v > best:
            best_step, best = step, v
        elif step - best_step >= patience * every and step < steps:
            assert f"early stop at step {step}: {metric} has not improved" in \
                (work / "logs" / "train_model" / f"{run}.log").read_text()
            return int(step)
    return steps


@pytest.mark.slow
def test_preprocessing_rules_ran_per_scene(demo_run):
    import json

    work, _ = demo_run
    # patch2pix_pairs on the demo megadepth (2 scenes), imp_dump_sift on megadepth_imp (3 scenes)
    for target, ext, n in zip(PREPROCESSED, ("npz", "h5"), (2, 3)):
        index = json.loads((work / target).read_text())
        assert sorted(index["scenes"]) == [f"{9000 + k}" for k in range(n)]
        for f in index["scenes"].values():
            assert f.endswith(ext) and (work / f).is_file()


@pytest.mark.slow
def test_demo_produces_tables_with_protocols(demo_run):
    work, _ = demo_run
    for bench in ("yfcc", "scannet", "hpatches"):
        csv = work / "results" / "tables" / f"{bench}.csv"
        md = work / "results" / "tables" / f"{bench}.md"
        assert csv.is_file() and md.is_file()
        df = pd.read_csv(csv)
        expected = {"sift_mnn", "sift_mnn_ratio"} | {
            "hpatches": {"ncnet_demo", "patch2pix_demo", "patch2pix_demo_c09", "sift_ratio_patch2pix_demo"},
            "yfcc": {"imp_sift_demo", "eimp_sift_demo"}}.get(bench, set())
        assert set(df.method) == expected
        assert (df.source == "demo").all()
        for col in ("protocol", "protocol_knobs", "resize", "num_pairs", "num_failures"):
            assert df[col].notna().all(), (bench, col)
        # the keypoint budget of detector-based rows (a refiner's is its base's); detector-free
        # rows have none (shown as –)
        free = df.method.isin(["ncnet_demo", "patch2pix_demo", "patch2pix_demo_c09"])
        assert (df[~free].max_keypoints == 2048).all() and df[free].max_keypoints.isna().all(), bench
        assert "sift_mnn" in md.read_text()
    yfcc = pd.read_csv(work / "results" / "tables" / "yfcc.csv")
    sg = yfcc[yfcc.protocol == "pose_superglue"]
    assert len(sg) == 4 and (sg.solver == "opencv_ransac").all() and (sg.threshold_px == 1.0).all()
    assert (yfcc[yfcc.protocol == "pose_imp_yfcc"].solver == "opencv_magsac").all()
    assert yfcc["auc@20deg"].between(0, 100).all() and (yfcc["auc@20deg"] > 20).all()
    hp = pd.read_csv(work / "results" / "tables" / "hpatches.csv")
    assert set(hp.protocol) == {"hpatches_mma", "homography_loftr", "homography_patch2pix_paper", "homography_corrected"}
    mma = hp[hp.protocol == "hpatches_mma"]
    assert (mma["mma@3px"] > mma["mma@1px"] - 1e-9).all()
    # per-pair results are keyed by index and full relative paths
    pairs = pd.read_csv(work / "results" / "metrics" / "sift_mnn" / "scannet" / "pose_superglue_pairs.csv")
    assert pairs.name0.str.startswith("scans_test/").all() and pairs.pair_index.is_unique


@pytest.mark.slow
def test_demo_trains_and_evaluates_imp_and_eimp(demo_run):
    """The demo trains IMP-SIFT, then EIMP-SIFT from it with pooling in the loop, and evaluates
    both on YFCC on the same RootSIFT keypoints as SIFT + MNN. IMP learned (its loss falls) and
    is a working matcher (pose AUC close to or above MNN's; measured numbers in the README);
    EIMP's pruned pooling sees fewer keypoints in later iterations than IMP, as logged."""
    import h5py

    work, _ = demo_run
    yfcc = pd.read_csv(work / "results" / "tables" / "yfcc.csv")
    sg = yfcc[yfcc.protocol == "pose_superglue"].set_index("method")
    assert sg.loc["imp_sift_demo", "auc@10deg"] > 0.8 * sg.loc["sift_mnn", "auc@10deg"], sg
    assert sg.loc["imp_sift_demo", "precision"] > sg.loc["sift_mnn", "precision"]
    assert sg.loc["eimp_sift_demo", "auc@10deg"] > 0.6 * sg.loc["imp_sift_demo", "auc@10deg"], sg
    for model in ("imp_sift_demo", "eimp_sift_demo"):
        log = pd.read_csv(work / "results" / "training" / model / "loss.csv")
        assert log.step.tolist() == list(range(1, trained_steps(work, model) + 1)) and log.loss.notna().all()
    log = pd.read_csv(work / "results" / "training" / "imp_sift_demo" / "loss.csv")
    assert log.loss.tail(20).mean() < 0.6 * log.loss.head(20).mean()
    per_it = {}
    for m in ("imp_sift_demo", "eimp_sift_demo"):
        with h5py.File(work / "results" / "matches" / m / "yfcc.h5") as f:
            per_it[m] = f.attrs["mean_keypoints_per_iteration"]
    assert len(per_it["imp_sift_demo"]) == 15 and np.ptp(per_it["imp_sift_demo"]) == 0
    assert per_it["eimp_sift_demo"][:4].tolist() == per_it["imp_sift_demo"][:4].tolist()
    assert per_it["eimp_sift_demo"][-1] < per_it["imp_sift_demo"][-1]
    assert "keypoints per iteration" in (work / "logs" / "match_pairs" / "eimp_sift_demo" / "yfcc.log").read_text()


@pytest.mark.slow
def test_demo_trains_and_evaluates_ncnet_and_patch2pix(demo_run):
    """The demo trains the NCNet stage, then Patch2Pix's regressors on it, and evaluates both on
    HPatches. Both learned: their losses fall, and their matches are far better than an untrained
    network's (whose coarse matches land within 3 px a few percent of the time)."""
    work, _ = demo_run
    hp = pd.read_csv(work / "results" / "tables" / "hpatches.csv")
    mma = hp[hp.protocol == "hpatches_mma"].set_index("method")
    for method in ("ncnet_demo", "patch2pix_demo"):
        assert mma.loc[method, "mma@3px"] > 0.3 and mma.loc[method, "mma@10px"] > 0.6, mma.loc[method]
        assert mma.loc[method, "mean_matches"] > 50
    assert (hp[hp.method == "patch2pix_demo"].resize == hp[hp.method == "ncnet_demo"].resize.iloc[0]).all()
    # the regressors refine: on the viewpoint sequences Patch2Pix (c = 0.9) has more matches within
    # 3 px than its coarse stage (0.574 against 0.358 measured, docs/demo.md)
    assert mma.loc["patch2pix_demo_c09", "viewpoint_mma@3px"] > mma.loc["ncnet_demo", "viewpoint_mma@3px"], mma
    # the loss's mean over the last 10 steps against the first 10: NCNet's correspondence loss
    # falls to about a fifth in 100 steps, the regressors' BCE + reprojection loss to 0.61 in 150
    for model, falls_to in (("ncnet_demo", 0.4), ("patch2pix_demo", 0.8)):
        log = pd.read_csv(work / "results" / "training" / model / "loss.csv")
        assert log.step.tolist() == list(range(1, trained_steps(work, model) + 1))
        assert log.loss.tail(10).mean() < falls_to * log.loss.head(10).mean(), model
    assert (work / "results" / "figures" / "training" / "loss_curves.png").stat().st_size > 5000


@pytest.mark.slow
def test_demo_jobs_run_with_the_configured_cpu_isa(demo_run):
    """config.yaml's cpu_isa reaches the jobs: the provenance step (a job like the others) ran
    with it and records the CPU, and on an AVX2 CPU torch dispatched its AVX2 kernels."""
    import json

    from matchrepro.cpu_isa import cpu_flags

    work, _ = demo_run
    cpu = json.loads((work / "results" / "provenance" / "provenance.json").read_text())["cpu"]
    assert cpu["cpu_isa"] == "avx2" and cpu["cpu_model"] and cpu["widest_vector_extension"], cpu
    if {"avx2", "fma"} <= cpu_flags():
        assert cpu["torch_cpu_capability"] == "AVX2", cpu


@pytest.mark.slow
def test_demo_validates_and_keeps_the_best_checkpoint(demo_run):
    """Every demo training run validates on held-out scenes; model_best.pth (what the matchers
    load) is the checkpoint of the best validation step by the declared criterion, the curves are
    in the report's training figures."""
    import torch

    work, _ = demo_run
    runs = {"ncnet_demo": ("pose_rate", max, 100), "patch2pix_demo": ("pose_rate", max, 150),
            "imp_sift_demo": ("auc@10", max, 50), "eimp_sift_demo": ("auc@10", max, 20)}
    for run, (metric, pick, every) in runs.items():
        val = pd.read_csv(work / "results" / "training" / run / "validation.csv")
        steps = list(range(every, trained_steps(work, run) + 1, every))
        assert val.step.tolist() == steps, run
        best = pick(val[metric])
        first_best_step = int(val[val[metric] == best].step.iloc[0])  # ties keep the earlier step
        assert torch.load(work / "results" / "training" / run / "model_best.pth", weights_only=False)["step"] == \
            first_best_step, (run, val)
        assert f"validation at step {steps[0]}: {metric}" in (work / "logs" / "train_model" / f"{run}.log").read_text()
    assert (work / "results" / "figures" / "training" / "validation_curves.png").stat().st_size > 5000


@pytest.mark.slow
def test_online_imp_training_runs_in_the_demo(demo_run):
    """IMP on online pairs with photometric and perspective augmentations, end to end through
    the workflow (pair lists -> training with validation -> weights). The shared demo run built
    it (one of demo_background.TARGETS), so asking for it again finds it up to date."""
    work, _ = demo_run
    r = snakemake("-s", str(REPO / "Snakefile"), "--directory", str(work), "--cores", "2",
                  "results/training/imp_sift_online_demo/model_best.pth")
    assert "Nothing to be done" in r.stdout + r.stderr
    out = work / "results" / "training" / "imp_sift_online_demo"
    log = pd.read_csv(out / "loss.csv")
    assert log.step.tolist() == list(range(1, 11)) and np.isfinite(log.loss).all()
    assert pd.read_csv(out / "validation.csv").step.tolist() == [5, 10]
    text = (work / "logs" / "train_model" / "imp_sift_online_demo.log").read_text()
    assert "kept best.pth" in text
    lists = sorted((work / "resources" / "preprocessed" / "imp_pairs_sift").glob("*.npz"))
    assert [f.stem for f in lists] == ["9000", "9001", "9002"]  # 9003 validates


@pytest.mark.slow
def test_second_run_has_nothing_to_do(demo_run):
    work, _ = demo_run
    r = snakemake("-s", str(REPO / "Snakefile"), "--directory", str(work), "--cores", "2", "results/tables")
    assert "Nothing to be done" in r.stdout + r.stderr
    r = snakemake("-s", str(REPO / "Snakefile"), "--directory", str(work), "--cores", "2")
    assert "Nothing to be done" in r.stdout + r.stderr


@pytest.mark.slow
def test_protocol_change_reruns_evaluation_not_matching(demo_run):
    work, _ = demo_run
    text = (work / "config.yaml").read_text()
    old = "    threshold_px: 1.0\n    confidence: 0.99999\n"  # the pose_superglue block only
    assert text.count(old) == 1
    (work / "changed.yaml").write_text(text.replace(old, old.replace("1.0", "2.0")))
    r = snakemake("-s", str(REPO / "Snakefile"), "--directory", str(work), "-n", "results/tables",
                  "--configfile", str(work / "changed.yaml"))
    jobs = job_counts(r.stdout)
    assert set(jobs) == {"evaluate", "tables", "total"}, jobs
    assert jobs["evaluate"] == 4 + 2  # pose_superglue rows: 4 YFCC methods (2 of them IMP/EIMP), 2 ScanNet


@pytest.mark.slow
def test_model_change_invalidates_cached_predictions(demo_run):
    work, _ = demo_run
    text = (work / "config.yaml").read_text()
    old = "matcher: {type: nearest_neighbour, mutual: true, ratio: 0.8}"
    assert old in text
    (work / "changed_model.yaml").write_text(text.replace(old, old.replace("0.8", "0.9")))
    r = snakemake("-s", str(REPO / "Snakefile"), "--directory", str(work), "-n", "results/tables",
                  "--configfile", str(work / "changed_model.yaml"))
    jobs = job_counts(r.stdout)
    # sift_mnn_ratio on the three benchmarks (features reused), and the Patch2Pix refiner of its
    # HPatches matches; no training, no other method
    assert jobs["match_pairs"] == 3 + 1
    assert "extract_features" not in jobs and "build_demo_dataset" not in jobs and "train_model" not in jobs
    assert jobs["evaluate"] == 2 + 2 + 4 + 4  # every protocol of sift_mnn_ratio and of its refiner


@pytest.mark.slow
def test_a_patch2pix_threshold_change_runs_no_network(demo_run):
    """``patch2pix_demo_c09`` re-thresholds ``patch2pix_demo``'s cached refined matches
    (``from_cache_of``): another threshold re-runs that one job, without weights, and its rows."""
    work, _ = demo_run
    text = (work / "config.yaml").read_text()
    old = "matcher: {type: patch2pix, threshold: 0.9}"
    assert text.count(old) == 1
    (work / "changed_c.yaml").write_text(text.replace(old, old.replace("0.9", "0.8")))
    r = snakemake("-s", str(REPO / "Snakefile"), "--directory", str(work), "-n", "-p", "results/tables",
                  "--configfile", str(work / "changed_c.yaml"))
    jobs = job_counts(r.stdout)
    assert set(jobs) == {"match_pairs", "evaluate", "tables", "total"} and jobs["match_pairs"] == 1, jobs
    assert jobs["evaluate"] == 4  # the HPatches protocols of the c = 0.9 row
    cmd = next(line for line in (r.stdout + r.stderr).splitlines() if "match-dataset" in line)
    assert "--base results/matches/patch2pix_demo/hpatches.h5" in cmd and "--weights" not in cmd, cmd


@pytest.mark.slow
def test_every_number_traces_to_a_protocol_block(demo_run):
    import yaml

    work, _ = demo_run
    protocols = yaml.safe_load((work / "config.yaml").read_text())["protocols"]
    csvs = sorted((work / "results" / "tables").glob("*.csv"))
    assert len(csvs) == 6
    for csv in csvs:
        df = pd.read_csv(csv)
        assert len(df) and df["protocol"].notna().all(), csv
        if not csv.name.endswith("_vs_published.csv"):
            assert set(df.protocol) <= set(protocols), csv
            for _, row in df.iterrows():
                block = protocols[row.protocol]
                for knob in ("solver", "threshold_px", "frame", "corners", "precision_definition"):
                    if knob in block:
                        assert row[knob] == block[knob], (csv.name, row.protocol, knob)
                assert isinstance(row.protocol_knobs, str) and row.protocol_knobs


@pytest.mark.slow
def test_figures_and_worst_pairs(demo_run):
    work, _ = demo_run
    for bench, names in (("hpatches", ["mma_curves", "corner_error_curves", "auc_bars"]),
                         ("yfcc", ["pose_error_curves", "auc_bars"]), ("scannet", ["pose_error_curves"])):
        for n in names:
            for ext in ("png", "pdf"):
                assert (work / "results" / "figures" / bench / f"{n}.{ext}").stat().st_size > 1000
        assert list((work / "results" / "figures" / bench).glob("matches_sift_mnn_pair*.png"))
    csv = work / "results" / "metrics" / "sift_mnn" / "yfcc" / "pose_superglue_pairs.csv"
    r = subprocess.run([sys.executable, "-m", "matchrepro", "worst", str(csv), "-n", "3"],
                       capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr
    df = pd.read_csv(csv)
    worst = df.sort_values("pose_error_deg", ascending=False, kind="stable").iloc[0]
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 4 and "pose_error_deg" in lines[0] and worst["name0"] in lines[1]


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (.ci/run installs Debian's chromium)")
def test_report_opens_in_headless_chromium(demo_run, tmp_path):
    work, _ = demo_run
    snakemake("-s", str(REPO / "Snakefile"), "--directory", str(work), "--report", "results/report.html")
    report = work / "results" / "report.html"
    raw = report.read_text(errors="replace")
    assert "<script src=" not in raw  # self-contained
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=15000"]
    r = subprocess.run([CHROMIUM, *flags, "--dump-dom", report.as_uri()], capture_output=True, text=True, timeout=180)
    dom = r.stdout
    # the menu is rendered by the report's JavaScript, so these prove the page ran
    for category in (">Tables<", ">Figures<", ">Provenance<"):
        assert category in dom, category
    for name in ("yfcc.html", "hpatches_vs_published.html", "mma_curves.png", "pose_error_curves.png",
                 "provenance.html"):
        assert name in dom, name
    assert "data:image/png;base64" in raw or "image/png" in raw


@pytest.mark.slow
def test_sharded_evaluation_gives_identical_tables(demo_run):
    """yfcc in 3 shards and hpatches in 2: matching and evaluation scatter and gather; the
    tables equal the unsharded ones, and sharding rebuilds no dataset and extracts nothing."""
    import yaml

    work, _ = demo_run
    before = {b: pd.read_csv(work / "results" / "tables" / f"{b}.csv") for b in ("yfcc", "scannet", "hpatches")}
    cfg = yaml.safe_load((work / "config.yaml").read_text())
    cfg["datasets"]["yfcc"]["shards"] = 3
    cfg["datasets"]["hpatches"]["shards"] = 2
    # every method shards through the same code; one is enough here (CI time)
    for b in ("yfcc", "hpatches"):
        cfg["benchmarks"][b]["methods"] = ["sift_mnn"]
        # (the tables drop columns no row fills, e.g. the IMP-only imp_iterative)
        before[b] = before[b][before[b].method == "sift_mnn"].reset_index(drop=True).dropna(axis=1, how="all")
    (work / "sharded.yaml").write_text(yaml.safe_dump(cfg))
    args = ("-s", str(REPO / "Snakefile"), "--directory", str(work), "results/tables",
            "--configfile", str(work / "sharded.yaml"))
    jobs = job_counts(snakemake("-n", *args).stdout)
    assert "build_demo_dataset" not in jobs and "extract_features" not in jobs and "match_pairs" not in jobs
    assert jobs["match_pairs_shard"] == 3 + 2 and jobs["gather_evaluation"] == 2 + 4  # shards; protocols
    snakemake("--cores", "2", *args)
    for b, df in before.items():
        # (dtype aside: without the detector-free rows max_keypoints has no NaN and reads as int)
        pd.testing.assert_frame_equal(pd.read_csv(work / "results" / "tables" / f"{b}.csv"), df, check_dtype=False)
    assert (work / "results" / "metrics" / "sift_mnn" / "yfcc" / "pose_superglue" / "shard_2-of-3_pairs.csv").is_file()


@pytest.mark.slow
def test_example_notebook_runs_headless_on_the_demo_weights(demo_run, tmp_path, monkeypatch):
    """examples/match_your_pair.ipynb, every cell, on the weights the demo trained."""
    import nbformat
    from nbclient import NotebookClient

    work, _ = demo_run
    monkeypatch.setenv("MATCHREPRO_WORKDIR", str(work))
    monkeypatch.setenv("MATCHREPRO_EXAMPLE_OUT", str(tmp_path))
    nb = nbformat.read(REPO / "examples" / "match_your_pair.ipynb", as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(work)}}).execute()
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "refined:" in text and "keypoints ->" in text
    assert any(c.outputs and any(o.get("data", {}).get("image/png") for o in c.outputs) for c in nb.cells
               if c.cell_type == "code")  # the match pictures were drawn
    saved = np.load(tmp_path / "motorcycle_left-motorcycle_right.eimp_sift_demo.npz")
    assert len(saved["matches"]) > 50
    assert (tmp_path / "motorcycle_left-motorcycle_right.eimp_sift_demo.png").is_file()
