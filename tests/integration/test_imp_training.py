"""IMP / EIMP training on a tiny demo MegaDepth scene through the CLI: the released sampling and
loss, a killed run resumes mid-epoch and ends equal to an uninterrupted one, EIMP trains with
pooling from IMP weights, and the trained files load into the workflow matcher."""

import json
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from matchrepro.config import demo_settings
from matchrepro.datasets.imp_training import IMPPairs
from matchrepro.demo import builders
from matchrepro.matchers.imp import IMPMatcher
from matchrepro.preprocessing import imp_dump, scene_info_path
from matchrepro.training import imp_losses
from tests.conftest import REPO
from tests.cli_in_process import run_command as run_in_process
from tests.integration.test_training_ddp import kill_at_checkpoint

SIFT = {"type": "sift", "max_keypoints": 600, "root_sift": True, "contrast_threshold": 0.02}


@pytest.fixture(scope="module")
def dump(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("imptrain")
    root = tmp / "megadepth"
    builders.build_megadepth(root, demo_settings(kind="megadepth", seed=5, scenes=1, images_per_scene=6,
                                                 size=[320, 240], points3d=3000))
    n = imp_dump.run(root, scene_info_path(root, "9000"), SIFT, {"min_keypoints": 96}, tmp / "9000.h5")
    assert n >= 3
    index = tmp / "index.json"
    index.write_text(json.dumps({"scenes": {"9000": str(tmp / "9000.h5")}}))
    return tmp, index


def test_sampling_follows_the_release(dump):
    data = IMPPairs(dump[1], num_keypoints=96, inliers_range=(8, 40), pairs_per_scene=2, seed=0)
    assert data.epoch_size() == 2  # 80 per scene in the release; here 2, drawn from more pairs
    order = data.epoch_indices(0)
    assert torch.equal(order, data.epoch_indices(0)) and len(order) == 2
    torch.manual_seed(0)
    for i in range(len(data.pairs)):
        s = data.sample(i)
        gt0, gt1 = s["gt0"], s["gt1"]
        assert s["keypoints0"].shape == (96, 2) and s["descriptors1"].shape == (96, 128)
        n = int((gt0 >= 0).sum())
        assert n == int((gt1 >= 0).sum()) and 1 <= n <= 96
        j = np.flatnonzero(gt0 >= 0)
        assert np.array_equal(gt1[gt0[j]], j)  # one-to-one
        # GT partners are dump GT matches: their keypoints are the dump's matched keypoints
        p = data.pairs[i]
        a, b = data.images[p["name0"]], data.images[p["name1"]]
        pairs = {(tuple(a["keypoints"][x]), tuple(b["keypoints"][y])) for x, y in p["matches"]}
        for k in j:
            assert (tuple(s["keypoints0"][k]), tuple(s["keypoints1"][gt0[k]])) in pairs


def test_loss_terms_by_hand():
    P = torch.full((3, 3), 0.5)
    P[0, 1] = 0.25
    gt0, gt1 = torch.tensor([1, -1]), torch.tensor([-1, 0])
    lp, n0, n1 = imp_losses.pair_terms(P, gt0, gt1)
    assert lp.item() == pytest.approx(-np.log(0.25 + 1e-8))
    assert n0.item() == pytest.approx(-np.log(0.5 + 1e-8)) and n1.item() == pytest.approx(-np.log(0.5 + 1e-8))
    # EIMP: a retained point whose partner was pruned goes to the dustbin
    g0, g1 = imp_losses.restrict_gt(torch.tensor([2, 0, -1]), torch.tensor([1, -1, 0]), torch.tensor([0, 1]),
                                    torch.tensor([0, 1]))
    assert g0.tolist() == [-1, 0] and g1.tolist() == [1, -1]


def test_weighted_eight_point_and_epipolar_distances():
    g = np.random.default_rng(0)
    X = g.uniform([-1, -1, 4], [1, 1, 8], (50, 3))
    a = 0.2
    R = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, [0.5, 0.1, 0.05]
    X1 = X @ R.T + T[:3, 3]
    x0 = torch.tensor(X / X[:, 2:], dtype=torch.float64)
    x1 = torch.tensor(X1 / X1[:, 2:], dtype=torch.float64)
    E = imp_losses.weighted_eight_point(x0, x1, torch.ones(50, dtype=torch.float64))
    Egt = imp_losses.essential_from_T(torch.tensor(T))
    Egt = Egt / Egt.norm()
    assert min((E - Egt).norm(), (E + Egt).norm()) < 1e-6
    assert imp_losses.symmetric_epipolar(x0, x1, Egt).max() < 1e-20
    shifted = x1.clone()
    shifted[:, 1] += 0.01
    assert imp_losses.symmetric_epipolar(x0, shifted, Egt).min() > 0


def train_cmd(out, index, model, params, init=None):
    spec = {"training": {"name": f"{model}_tiny", "model": model, "data": "imp_dump_sift", "init": None,
                         "params": params}, "dataset": None}
    cmd = [sys.executable, "-m", "matchrepro", "train", "--spec", json.dumps(spec), "--out", str(out),
           "--data", str(index), "--threads", "1"]
    return cmd + (["--init", str(init)] if init else [])


TINY = dict(num_keypoints=96, inliers_range=[8, 40], pairs_per_scene=4, batch_size=2, lr=1e-3,
            checkpoint_every=2, seed=3, init_mode="identity")


@pytest.fixture(scope="module")
def trained(dump):
    out = dump[0] / "imp" / "model_best.pth"
    r = run_in_process(train_cmd(out, dump[1], "imp", dict(TINY, steps=6, pose_loss=True, lr_schedule="exponential",
                                                        lr_decay_start=2, lr_decay_rate=0.5, lr_min=2e-4)))
    assert json.loads(r.stdout.strip().splitlines()[-1])["step"] == 6
    return out


def test_imp_trains_with_the_exponential_schedule_and_loads_as_a_matcher(trained):
    log = pd.read_csv(trained.parent / "log.csv")
    assert log.step.tolist() == list(range(1, 7)) and log.loss.notna().all()
    # lr = clamp(lr0 * 0.5^(step - 2), min 2e-4): constant, then halving, then the floor
    assert log.lr.tolist() == pytest.approx([1e-3, 1e-3, 5e-4, 2.5e-4, 2e-4, 2e-4])
    ck = torch.load(trained, weights_only=True)
    assert ck["variant"] == "imp" and ck["dim"] == 128 and len(ck["model"]) == 353
    m = IMPMatcher({"matcher": {"type": "imp", "variant": "imp", "threshold": 0.2}}, trained)
    g = np.random.default_rng(0)
    d = g.normal(size=(150, 128)).astype(np.float32)
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    feats = {"keypoints": g.uniform(0, 300, (150, 2)).astype(np.float32), "scores": g.uniform(0, 0.1, 150).astype(np.float32),
             "descriptors": d, "image_size": np.array([320, 240])}
    r = m(feats, feats)
    mt = r["matches"]
    assert mt.shape[1] == 2 and np.all((mt >= 0) & (mt < 150)) and len(set(mt[:, 1])) == len(mt)
    assert np.all((r["scores"] > 0.2) & (r["scores"] <= 1.0 + 1e-6)) and r["stopped_at"] == 15
    empty = {**feats, "keypoints": feats["keypoints"][:0], "scores": feats["scores"][:0], "descriptors": d[:0]}
    assert len(m(empty, feats)["matches"]) == 0  # no keypoints: no crash


def test_eimp_trains_with_pooling_from_imp_weights(dump):
    # IMP weights from a short run at a fine-tuning rate (the schedule fixture's 1e-3 with the pose
    # loss saturates P on this tiny dump, and a saturated P has no gradient left to train EIMP with)
    imp = dump[0] / "imp_init" / "model_best.pth"
    run_in_process(train_cmd(imp, dump[1], "imp", dict(TINY, steps=2, lr=1e-4)))
    out = dump[0] / "eimp" / "model_best.pth"
    run_in_process(train_cmd(out, dump[1], "eimp", dict(TINY, steps=2, lr=1e-4, num_keypoints=96, pool_confidence=0.1),
                             init=imp))
    ck = torch.load(out, weights_only=True)
    assert ck["variant"] == "eimp" and pd.read_csv(out.parent / "log.csv").loss.notna().all()
    assert not torch.equal(ck["model"]["final_proj.14.weight"], torch.load(imp, weights_only=True)["model"]["final_proj.14.weight"])


def test_killed_imp_run_resumes_mid_epoch(dump, tmp_path):
    """Batch 1 and 4 pairs per epoch: the checkpoint at step 2 lies inside epoch 0, so the resumed
    run must replay the rest of that epoch's pair order and go on into the next epoch."""
    steps = 6
    params = dict(TINY, steps=steps, batch_size=1)
    out = tmp_path / "killed" / "model_best.pth"
    saved = kill_at_checkpoint(train_cmd(out, dump[1], "imp", params), out.parent, 2, REPO)
    assert saved == 2
    r = run_in_process(train_cmd(out, dump[1], "imp", params))
    assert f"resumed from step {saved}" in r.stdout
    log = pd.read_csv(out.parent / "log.csv")
    assert log.step.iloc[-1] == steps and set(range(1, steps + 1)) <= set(log.step)
    epoch_of = log.drop_duplicates("step", keep="last").set_index("step").epoch
    assert epoch_of[saved] == epoch_of[saved + 1] == 0  # resumed inside epoch 0 ...
    assert epoch_of[steps] == 1  # ... and went on into epoch 1
    straight = tmp_path / "straight" / "model_best.pth"
    run_in_process(train_cmd(straight, dump[1], "imp", params))
    a, b = torch.load(out, weights_only=True)["model"], torch.load(straight, weights_only=True)["model"]
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5, rtol=1e-4), k
