"""Patch2Pix training end to end on a tiny demo MegaDepth scene through the CLI: the coarse
stage (demo supervision), then the regressors with the backbone and NC frozen; a run killed
mid-epoch resumes from its checkpoint and ends equal to an uninterrupted one; the trained files
load into the workflow matcher."""

import json
import subprocess
import sys

import pandas as pd
import pytest
import torch

from matchrepro.config import demo_settings
from matchrepro.demo import builders
from matchrepro.matchers.patch2pix import load_model
from matchrepro.models.patch2pix import predict
from matchrepro.preprocessing import patch2pix_pairs, scene_info_path
from tests.conftest import REPO
from tests.cli_in_process import run_command as run_in_process
from tests.integration.test_training_ddp import kill_at_checkpoint

ARCH = {"widths": [8, 8, 16, 16, 16], "blocks": [1, 1, 1, 1]}
P2P_ARCH = {**ARCH, "regressor_conv": [16, 16], "regressor_fc": [16, 8]}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("p2ptrain")
    root = tmp / "megadepth"
    builders.build_megadepth(root, demo_settings(kind="megadepth", seed=3, scenes=1, images_per_scene=7,
                                                 size=[240, 180], points3d=3000))
    n = patch2pix_pairs.run(scene_info_path(root, "9000"), {}, tmp / "9000.npz")
    assert n >= 3
    index = tmp / "index.json"
    index.write_text(json.dumps({"scenes": {"9000": str(tmp / "9000.npz")}}))
    return tmp, root, index


def train_cmd(out, data, model, params, init=None):
    spec = {"training": {"name": f"{model}_tiny", "model": model, "data": "patch2pix_pairs", "init": None,
                         "params": params},
            "dataset": {"root": str(data[1])}}
    cmd = [sys.executable, "-m", "matchrepro", "train", "--spec", json.dumps(spec), "--out", str(out),
           "--data", str(data[2])]
    return cmd + (["--init", str(init)] if init else [])


COARSE = dict(arch=ARCH, image_size=[160, 96], steps=8, batch_size=2, lr=1e-3, checkpoint_every=4, seed=1)
P2P = dict(arch=P2P_ARCH, image_size=[160, 96], ptmax=8, batch_size=1, lr=1e-3, checkpoint_every=2, seed=2)


@pytest.fixture(scope="module")
def coarse(data):
    out = data[0] / "coarse" / "model_best.pth"
    run_in_process(train_cmd(out, data, "ncnet", COARSE))
    return out


def test_coarse_stage_trains_and_loads_as_a_matcher(coarse):
    log = pd.read_csv(coarse.parent / "log.csv")
    assert log.step.tolist() == list(range(1, 9)) and log.loss.notna().all()
    ck = torch.load(coarse, weights_only=True)
    assert ck["kind"] == "ncnet" and ck["arch"]["widths"] == ARCH["widths"]
    model = load_model("ncnet", coarse, torch.device("cpu"))
    out = predict(model, torch.randn(1, 3, 96, 160), torch.randn(1, 3, 96, 160), threshold=0.0)
    assert out["matches"].shape[1] == 4 and len(out["matches"]) > 0


def test_regressors_train_on_a_frozen_coarse_stage(data, coarse):
    out = data[0] / "p2p" / "model_best.pth"
    r = run_in_process(train_cmd(out, data, "patch2pix", dict(P2P, steps=6), init=coarse))
    assert json.loads(r.stdout.strip().splitlines()[-1])["step"] == 6
    init = torch.load(coarse, weights_only=True)["model"]
    final = torch.load(out, weights_only=True)
    sd = final["model"]
    # the frozen weights are exactly the coarse stage's; BN running statistics move, as released
    for k, v in init.items():
        if k.endswith(("weight", "bias")) and "bn" not in k and "downsample.1" not in k:
            assert torch.equal(sd[k], v), k
    assert not torch.equal(sd["extract.bn1.running_mean"], init["extract.bn1.running_mean"])
    assert final["feat_idx"] == [0, 1, 2, 3] and final["kind"] == "patch2pix"
    model = load_model("patch2pix", out, torch.device("cpu"))
    res = predict(model, torch.randn(1, 3, 96, 160), torch.randn(1, 3, 96, 160), threshold=0.5)
    assert res["matches"].shape[1] == 4


def test_wrong_initial_architecture_is_refused(data, coarse):
    bad = dict(P2P, steps=1, arch={**P2P_ARCH, "widths": [16, 16, 16, 16, 16]})
    r = subprocess.run(train_cmd(data[0] / "bad" / "w.pth", data, "patch2pix", bad, init=coarse),
                       capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines()[-1].startswith(
        "error: training.patch2pix_tiny.params.arch.widths is [16, 16, 16, 16, 16] but the initial weights")


def test_killed_patch2pix_run_resumes_mid_epoch(data, coarse, tmp_path):
    """Batch 1 over at least 3 pairs: the checkpoint at step 2 lies inside epoch 0."""
    params = dict(P2P, steps=40)
    out = tmp_path / "killed" / "model_best.pth"
    saved = kill_at_checkpoint(train_cmd(out, data, "patch2pix", params, init=coarse), out.parent, 2, REPO)
    assert saved == 2
    r = run_in_process(train_cmd(out, data, "patch2pix", params, init=coarse))
    assert f"resumed from step {saved}" in r.stdout
    assert json.loads(r.stdout.strip().splitlines()[-1])["resumed_from"] == saved
    log = pd.read_csv(out.parent / "log.csv")
    assert log.step.iloc[-1] == 40 and set(range(1, 41)) <= set(log.step)  # nothing restarted from zero
    epoch_of = log.drop_duplicates("step", keep="last").set_index("step").epoch
    assert epoch_of[saved] == epoch_of[saved + 1] == 0 and epoch_of[40] > 0  # resumed inside epoch 0
    straight = tmp_path / "straight" / "model_best.pth"
    run_in_process(train_cmd(straight, data, "patch2pix", params, init=coarse))
    a, b = torch.load(out, weights_only=True)["model"], torch.load(straight, weights_only=True)["model"]
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), atol=1e-5, rtol=1e-4), k
