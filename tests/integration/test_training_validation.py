"""Training-time validation: metrics every N steps in validation.csv, the kept weights are the
best by the declared criterion, a resumed run keeps its best, validation does not change what
is trained, and the Patch2Pix / IMP validations run on held-out demo scenes."""

import json
import sys

import pandas as pd
import pytest
import torch

from matchrepro.config import demo_settings
from matchrepro.demo import builders
from matchrepro.preprocessing import imp_dump, patch2pix_pairs, scene_info_path
from matchrepro.training.toy import ToyTask
from tests.cli_in_process import run_command

TOY = dict(lr=0.05, batch_size=16, checkpoint_every=10, validate_every=4, val_samples=64, device="cpu")


def train(out, model, params, data=None, val=None, dataset=None, init=None, check=True):
    spec = {"training": {"name": f"{model}_run", "model": model, "data": None, "init": None, "params": params},
            "dataset": dataset}
    cmd = [sys.executable, "-m", "matchrepro", "train", "--spec", json.dumps(spec), "--out", str(out),
           "--val-out", str(out.parent / "val_out.csv"), "--threads", "1"]
    cmd += (["--data", str(data)] if data else []) + (["--val-data", str(val)] if val else [])
    cmd += ["--init", str(init)] if init else []
    r = run_command(cmd, check=False)  # in this process, without a 3 s interpreter start-up each
    if check:
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    return r


def toy_validate(path) -> dict:
    task = ToyTask(val_samples=64)
    model = task.build_model()
    model.load_state_dict(torch.load(path, weights_only=True)["model"])
    with torch.no_grad():
        return task.validate(model)


def test_kept_weights_are_the_best_by_the_criterion(tmp_path):
    out = tmp_path / "a" / "model_best.pth"
    r = train(out, "toy", dict(TOY, steps=40))
    val = pd.read_csv(out.parent / "validation.csv")
    assert val.step.tolist() == list(range(4, 41, 4))
    assert pd.read_csv(out.parent / "val_out.csv").equals(val)  # the declared rule output
    best = val.loc[val.mse.idxmin()]
    assert int(best.step) != 40  # this run's best is not its last step: keeping final.pth would fail
    # the kept file holds the weights of the best step: re-validated, they give its logged value
    assert toy_validate(out)["mse"] == pytest.approx(best.mse, rel=1e-5)
    assert torch.load(out, weights_only=True)["step"] == int(best.step)
    assert val.best.tolist() == [int(v < val.mse[:i].min()) if i else 1 for i, v in enumerate(val.mse)]
    assert f"kept best.pth: mse = {best.mse:.4g} at step {int(best.step)}" in r.stdout
    # another declared criterion keeps another step
    out2 = tmp_path / "b" / "model_best.pth"
    train(out2, "toy", dict(TOY, steps=40, val_criterion="max_error"))
    val2 = pd.read_csv(out2.parent / "validation.csv")
    assert torch.load(out2, weights_only=True)["step"] == int(val2.loc[val2.max_error.idxmin()].step)


def test_a_resumed_run_keeps_comparing_with_its_best(tmp_path):
    whole = tmp_path / "whole" / "model_best.pth"
    train(whole, "toy", dict(TOY, steps=40))
    parts = tmp_path / "parts" / "model_best.pth"
    train(parts, "toy", dict(TOY, steps=20))
    r = train(parts, "toy", dict(TOY, steps=40))  # more steps continue the run from last.pth
    assert "resumed from step 20" in r.stdout
    a, b = pd.read_csv(whole.parent / "validation.csv"), pd.read_csv(parts.parent / "validation.csv")
    assert a.step.tolist() == b.step.tolist() and a.best.tolist() == b.best.tolist()
    for k, v in torch.load(whole, weights_only=True)["model"].items():
        assert torch.equal(v, torch.load(parts, weights_only=True)["model"][k]), k


def test_early_stop_ends_after_validations_without_a_new_best(tmp_path):
    """early_stop 2: the run ends at the first validation that is the second in a row without a new
    best; its validations and kept weights equal the full run's up to there, the log says so, and
    running it again (last.pth at the stop) trains nothing more."""
    whole = tmp_path / "whole" / "model_best.pth"
    train(whole, "toy", dict(TOY, steps=120, val_criterion="max_error"))
    full = pd.read_csv(whole.parent / "validation.csv")
    # where early_stop 2 must end: the first validation 2 validations after the best so far
    best_step, stop = None, None
    for step, err in zip(full.step, full.max_error):
        if best_step is None or err < full.max_error[full.step == best_step].item():
            best_step = step
        elif step - best_step >= 2 * TOY["validate_every"]:
            stop = step
            break
    assert stop is not None and stop < 120  # this toy run has such a point
    out = tmp_path / "early" / "model_best.pth"
    params = dict(TOY, steps=120, val_criterion="max_error", early_stop=2)
    r = train(out, "toy", params)
    assert f"early stop at step {stop}: max_error has not improved for 2 validations" in r.stdout
    val = pd.read_csv(out.parent / "validation.csv")
    pd.testing.assert_frame_equal(val, full[full.step <= stop].reset_index(drop=True))
    assert pd.read_csv(out.parent / "log.csv").step.tolist() == list(range(1, stop + 1))
    kept = torch.load(out, weights_only=True)
    assert kept["step"] == best_step
    # the kept weights are the full run's at that step: re-validated, they give its logged value
    assert toy_validate(out)["max_error"] == pytest.approx(full.max_error[full.step == best_step].item(), rel=1e-5)
    r = train(out, "toy", params)
    assert f"stopped early at step {stop} before (best at step {best_step}): nothing to train" in r.stdout
    assert pd.read_csv(out.parent / "log.csv").step.tolist() == list(range(1, stop + 1))
    r = train(tmp_path / "e" / "w.pth", "toy", dict(steps=4, device="cpu", early_stop=2), check=False)
    assert r.returncode == 1 and "early_stop needs a validation split" in r.stderr


def test_validation_settings_are_checked(tmp_path):
    r = train(tmp_path / "x" / "w.pth", "toy", dict(TOY, steps=4, val_criterion="auc@10"), check=False)
    assert r.returncode == 1 and r.stderr.strip().splitlines()[-1] == (
        "error: val_criterion 'auc@10' is not a validation metric of this model; known: mse, max_error")
    r = train(tmp_path / "y" / "w.pth", "toy", dict(TOY, steps=4, val_samples=0), check=False)
    assert r.returncode == 1 and "validate_every is set but the run has no validation split" in r.stderr
    # without validation the rule's validation output is a header-only file and final.pth is kept
    out = tmp_path / "z" / "w.pth"
    train(out, "toy", dict(steps=4, device="cpu"))
    assert (out.parent / "val_out.csv").read_text() == "step\n" and not (out.parent / "best.pth").exists()


@pytest.fixture(scope="module")
def megadepth(tmp_path_factory):
    """Two demo MegaDepth scenes: 9000 trains, 9001 validates."""
    tmp = tmp_path_factory.mktemp("val")
    root = tmp / "megadepth"
    builders.build_megadepth(root, demo_settings(kind="megadepth", seed=3, scenes=2, images_per_scene=6,
                                                 size=[320, 240], points3d=3000))
    return tmp, root


def _index(tmp, name, scene, ext):
    f = tmp / f"{name}.json"
    f.write_text(json.dumps({"scenes": {scene: str(tmp / f"{name}_{scene}.{ext}")}}))
    return f


def test_patch2pix_family_pose_validation_on_a_held_out_scene(megadepth):
    tmp, root = megadepth
    for name, scene in (("train", "9000"), ("val", "9001")):
        assert patch2pix_pairs.run(scene_info_path(root, scene), {}, tmp / f"p2p_{name}_{scene}.npz") >= 2
    train_ix, val_ix = _index(tmp, "p2p_train", "9000", "npz"), _index(tmp, "p2p_val", "9001", "npz")
    arch = {"widths": [16, 16, 32, 32, 32], "blocks": [1, 1, 1, 1]}
    out = tmp / "ncnet" / "model_best.pth"
    params = dict(arch=arch, image_size=[160, 112], steps=4, batch_size=2, checkpoint_every=2, val_threshold=0.0)
    r = train(out, "ncnet", params, data=train_ix, val=val_ix, dataset={"root": str(root)})
    val = pd.read_csv(out.parent / "validation.csv")
    assert val.step.tolist() == [2, 4]
    assert {"pose_rate", "median_error", "mean_error", "pass@1", "pass@10", "matches"} <= set(val.columns)
    assert val["pass@10"].between(0, 1).all() and (val["pass@1"] <= val["pass@10"]).all()
    assert (val.matches > 0).all()
    p = val.iloc[0]
    assert p.pose_rate == pytest.approx(0.34 * p["pass@1"] + 0.33 * p["pass@5"] + 0.33 * p["pass@10"], abs=1e-5)
    assert "validation at step 2: pose_rate" in r.stdout
    # the same scene for training and validation is refused, naming the key
    r = train(tmp / "bad" / "w.pth", "ncnet", params, data=train_ix, val=train_ix, dataset={"root": str(root)},
              check=False)
    assert r.returncode == 1 and "training.ncnet_run.validation: scenes ['9000'] are also training scenes" in r.stderr


SIFT = {"type": "sift", "max_keypoints": 600, "root_sift": True, "contrast_threshold": 0.02}
# lr 1e-5: four steps stay near the identity start (a soft mutual nearest neighbour), which matches
IMP_TINY = dict(num_keypoints=96, inliers_range=[8, 40], pairs_per_scene=4, batch_size=2, lr=1e-5,
                checkpoint_every=2, seed=3, init_mode="identity", steps=4)


def test_imp_validation_and_an_unchanged_training(megadepth):
    tmp, root = megadepth
    for name, scene in (("train", "9000"), ("val", "9001")):
        n = imp_dump.run(root, scene_info_path(root, scene), SIFT, {"min_keypoints": 96}, tmp / f"imp_{name}_{scene}.h5")
        assert n >= 2
    train_ix, val_ix = _index(tmp, "imp_train", "9000", "h5"), _index(tmp, "imp_val", "9001", "h5")
    out = tmp / "imp" / "model_best.pth"
    train(out, "imp", IMP_TINY, data=train_ix, val=val_ix)
    val = pd.read_csv(out.parent / "validation.csv")
    assert val.step.tolist() == [2, 4]
    assert {"auc@5", "auc@10", "auc@20", "precision", "recall", "f1"} <= set(val.columns)
    assert val.precision.between(0, 1).all() and val.recall.between(0, 1).all() and (val.recall > 0).all()
    assert val["auc@20"].between(0, 100).all()
    kept = torch.load(out, weights_only=True)["step"]
    assert kept == int(val.loc[val["auc@10"].idxmax()].step)
    # validating draws no training randomness: the last weights equal those of a run without it
    plain = tmp / "imp_plain" / "model_best.pth"
    train(plain, "imp", IMP_TINY, data=train_ix)
    a = torch.load(out.parent / "final.pth", weights_only=True)["model"]
    b = torch.load(plain, weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
