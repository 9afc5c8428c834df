"""Bad input gives one clear line naming the culprit, exit status 1, and no output file."""

import json
import subprocess
import sys

import pytest

from matchrepro.config import demo_settings, load_config
from matchrepro.demo import builders
from tests.conftest import REPO


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "matchrepro", *args], capture_output=True, text=True, cwd=REPO)


@pytest.fixture
def hpatches_spec(tmp_path):
    root = tmp_path / "hp"
    builders.build_hpatches(root, demo_settings(kind="hpatches", illumination=1, viewpoint=0, size=[160, 120]))
    cfg = load_config(REPO / "config.yaml")
    ds = dict(cfg["datasets"]["hpatches"], root=str(root))
    return {"dataset": ds, "features": cfg["features"]["sift"], "resize": ds["resize"]}, root


def test_extract_and_match_on_a_tiny_dataset(hpatches_spec, tmp_path):
    spec, _ = hpatches_spec
    feats = tmp_path / "f.h5"
    r = run_cli("extract", "--spec", json.dumps(spec), "--out", str(feats))
    assert r.returncode == 0, r.stderr
    cfg = load_config(REPO / "config.yaml")
    mspec = dict(spec, method=cfg["methods"]["sift_mnn"])
    r = run_cli("match-dataset", "--spec", json.dumps(mspec), "--features", str(feats), "--out", str(tmp_path / "m.h5"))
    assert r.returncode == 0, r.stderr
    espec = dict(mspec, protocol=cfg["protocols"]["hpatches_mma"], max_keypoints=2048)
    r = run_cli("evaluate", "--spec", json.dumps(espec), "--predictions", str(tmp_path / "m.h5"),
                "--out", str(tmp_path / "e.json"), "--pairs-out", str(tmp_path / "e.csv"))
    assert r.returncode == 0, r.stderr
    summary = json.loads((tmp_path / "e.json").read_text())["summary"]
    assert summary["mma@3px"] > 0.5  # identity homographies, illumination changes only
    # a cache made with another method config is refused, not silently reused
    other = json.loads(json.dumps(espec))
    other["method"]["matcher"]["ratio"] = 0.9
    r = run_cli("evaluate", "--spec", json.dumps(other), "--predictions", str(tmp_path / "m.h5"),
                "--out", str(tmp_path / "e2.json"), "--pairs-out", str(tmp_path / "e2.csv"))
    assert r.returncode == 1 and not (tmp_path / "e2.json").exists()
    assert r.stderr.strip() == (f"error: {tmp_path / 'm.h5'}: predictions were made with a different 'method' "
                                "config than this evaluation asks for; re-run matching (snakemake --forcerun match_pairs)")


def test_corrupt_image_is_named(hpatches_spec, tmp_path):
    spec, root = hpatches_spec
    bad = root / "hpatches-sequences-release" / "i_demo_astronaut_0" / "3.ppm"
    bad.write_bytes(b"this is not an image")
    out = tmp_path / "f.h5"
    r = run_cli("extract", "--spec", json.dumps(spec), "--out", str(out))
    assert r.returncode == 1
    assert r.stderr.strip().splitlines()[-1] == f"error: cannot decode image (corrupt or unsupported format): {bad}"
    assert not out.exists() and not list(tmp_path.glob(".f.h5*"))


def test_missing_dataset_folder_is_named(hpatches_spec, tmp_path):
    spec, _ = hpatches_spec
    spec["dataset"]["root"] = str(tmp_path / "nowhere")
    r = run_cli("extract", "--spec", json.dumps(spec), "--out", str(tmp_path / "f.h5"))
    assert r.returncode == 1
    assert r.stderr.strip() == f"error: dataset folder not found: {tmp_path / 'nowhere'} (config key datasets.hpatches.root)"


def test_imp_training_without_dump_names_the_key(tmp_path):
    spec = {"training": {"name": "imp_run", "model": "imp", "data": None, "init": None, "params": {}}}
    r = run_cli("train", "--spec", json.dumps(spec), "--out", str(tmp_path / "never.pth"))
    assert r.returncode == 1
    assert r.stderr.strip().splitlines()[-1].startswith("error: training.imp_run.data: the imp model trains on an imp_dump")
    bad = tmp_path / "index.json"
    bad.write_text("{}")
    r = run_cli("train", "--spec", json.dumps(spec), "--out", str(tmp_path / "never.pth"), "--data", str(bad))
    assert r.returncode == 1 and r.stderr.strip().splitlines()[-1].startswith(f"error: {bad}: not an imp_dump index")
    assert not (tmp_path / "never.pth").exists()


def test_patch2pix_training_without_pairs_names_the_key():
    spec = {"training": {"name": "p2p", "model": "patch2pix", "data": None, "init": None, "params": {}}}
    r = run_cli("train", "--spec", json.dumps(spec), "--out", "/tmp/never.pth")
    assert r.returncode == 1
    assert r.stderr.strip().splitlines()[-1].startswith("error: training.p2p.data: the patch2pix model trains on")


def test_check_config_reports_bad_file(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("datasets: {}\nfeatures: {}\nmethods: {}\nprotocols: {}\nbenchmarks: {}\nseeed: 2\n")
    r = run_cli("check-config", str(f))
    assert r.returncode == 1 and r.stderr.strip() == f"error: {f}: unknown key 'seeed'"
