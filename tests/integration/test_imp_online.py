"""Online IMP training pairs: augmentations keep the ground truth consistent, draws replay, and
a training run on online pairs works through the CLI."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from matchrepro.config import demo_settings
from matchrepro.datasets import augment
from matchrepro.datasets.imp_online import IMPOnlinePairs
from matchrepro.datasets.megadepth import read_depth
from matchrepro.demo import builders
from matchrepro.preprocessing import imp_pairs, scene_info_path
from matchrepro.preprocessing.imp_dump import _lift, _project
from tests.cli_in_process import run_cli
from tests.conftest import REPO

SIFT = {"type": "sift", "max_keypoints": 1024, "root_sift": True, "contrast_threshold": 0.04}


PROCEDURE = "corrected"  # one direction per pair keeps this fixture's 9 pairs (the augmentation is under test)


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("online")
    root = tmp / "megadepth"
    builders.build_megadepth(root, demo_settings(kind="megadepth", seed=11, scenes=1, images_per_scene=5,
                                                 size=[640, 480], photometric=2.0))
    assert imp_pairs.run(scene_info_path(root, "9000"), {"procedure": PROCEDURE}, tmp / "9000.npz") >= 4
    index = tmp / "index.json"
    index.write_text(json.dumps({"preprocessing": {"kind": "imp_pairs"}, "scenes": {"9000": str(tmp / "9000.npz")}}))
    return tmp, root, index


def test_the_warp_moves_image_content_where_H_moves_points():
    rng = np.random.default_rng(0)
    img = np.zeros((480, 640), np.float32)
    pts = rng.uniform([80, 80], [560, 400], (40, 2))
    yy, xx = np.mgrid[:480, :640]
    for x, y in pts:
        img += 200 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 1.5 ** 2))
    H = augment.random_homography(640, 480, 0.15, rng)
    assert np.abs(H - np.eye(3)).max() > 0.05  # a real perspective change
    warped = augment.warp(img, H)
    for p in augment.apply_homography(H, pts):
        x0, y0 = np.rint(p).astype(int)
        win = warped[y0 - 4:y0 + 5, x0 - 4:x0 + 5].astype(np.float64)
        wy, wx = np.mgrid[y0 - 4:y0 + 5, x0 - 4:x0 + 5]
        c = np.array([(win * wx).sum(), (win * wy).sum()]) / win.sum()
        assert np.linalg.norm(c - p) < 0.5, (c, p)


def test_photometric_changes_pixels_not_geometry():
    img = np.random.default_rng(0).integers(60, 200, (60, 80)).astype(np.uint8)
    out = augment.photometric(img, 1.0, np.random.default_rng(1))
    assert out.shape == img.shape and out.dtype == np.uint8 and not np.array_equal(out, img)
    assert np.array_equal(augment.photometric(img, 0.0, np.random.default_rng(1)), img)


def _reprojection_errors(sample, pair, root, K1):
    """Pixel distance between each GT partner in image 1 and the image-0 keypoint lifted with its
    depth, moved by the GT pose and projected with camera ``K1``."""
    j = np.flatnonzero(sample["gt0"] >= 0)
    k0 = sample["keypoints0"][j].astype(np.float64)
    k1 = sample["keypoints1"][sample["gt0"][j]].astype(np.float64)
    depth = read_depth(root / pair["depth0"])
    z = depth[np.floor(k0[:, 1]).astype(int), np.floor(k0[:, 0]).astype(int)]
    T = sample["T_0to1"].astype(np.float64)
    uv, _ = _project(_lift(k0, z, pair["K0"], 0.5) @ T[:3, :3].T + T[:3, 3], np.asarray(K1, np.float64), 0.5)
    return np.linalg.norm(uv - k1, axis=1)


@pytest.mark.parametrize("radius", [5.0, 1.0])
def test_augmented_ground_truth_reprojects_within_its_radius(pairs, radius):
    tmp, root, index = pairs
    ds = IMPOnlinePairs(index, root, SIFT, num_keypoints=256, inliers_range=(16, 128), photometric=1.0,
                        perspective=0.15, max_error_px=radius)
    torch.manual_seed(0)
    errs, unwarped, warps = [], [], []
    for i in range(len(ds.pairs)):
        s = ds.sample(i)
        pair = ds.pairs[int(s["pair_index"])]  # the next pair when this one has no GT match
        errs.append(_reprojection_errors(s, pair, root, s["K1"]))
        unwarped.append(_reprojection_errors(s, pair, root, pair["K1"]))
        warps.append(np.abs(s["H1"] - np.eye(3)).max())
    e, w = np.concatenate(errs), np.concatenate(unwarped)
    # at most a third of the pairs replaced at 5 px; a 1 px radius leaves more pairs without GT
    assert min(warps) > 0.01 and (ds.replaced <= len(ds.pairs) // 3 or radius < 5)
    # every GT match reprojects within the radius in the warped frame the network sees ...
    assert len(e) >= 20 * len(ds.pairs) if radius == 5 else len(e) >= 5 * len(ds.pairs)
    assert e.max() <= radius + 1e-6
    # ... and the warp matters: with image 1's unwarped camera they are far off
    assert np.median(w) > 5 * radius


def test_draws_replay_from_the_torch_seed(pairs):
    tmp, root, index = pairs
    ds = IMPOnlinePairs(index, root, SIFT, num_keypoints=128, inliers_range=(8, 64), photometric=1.0, perspective=0.1)
    torch.manual_seed(5)
    a = ds.batch([0, 2])
    torch.manual_seed(5)
    b = ds.batch([0, 2])
    assert all(torch.equal(a[k], b[k]) for k in a)
    c = ds.batch([0, 2])
    assert not torch.equal(a["H1"], c["H1"])
    assert a["keypoints0"].shape == (2, 128, 2) and a["descriptors1"].shape == (2, 128, 128)


def _equal(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_dataloader_workers_make_the_same_batches(pairs, monkeypatch):
    """Per-step seeds: 0 and 2 workers give identical batches in the plan's order; a batch split
    over two DDP ranks (offsets 0 and 1) is the same pairs; the GPU-features mode (workers read and
    augment, this process extracts: forced here on the CPU) gives them too, from 1 worker (each
    worker pool started costs a spawn that imports torch: two pools here, not three)."""
    tmp, root, index = pairs
    ds = IMPOnlinePairs(index, root, SIFT, num_keypoints=128, inliers_range=(8, 64), photometric=1.0,
                        perspective=0.1, seed=3)
    plan = [(s, [(2 * s) % len(ds.pairs), (2 * s + 1) % len(ds.pairs)], 0) for s in range(4)]
    ref = list(ds.loader(plan, 0))
    assert len(ref) == 4 and not torch.equal(ref[0]["H1"], ref[1]["H1"])
    got = list(ds.loader(plan, 2))
    assert len(got) == 4 and all(_equal(a, b) for a, b in zip(ref, got))
    step, idx, _ = plan[2]
    halves = [ds.batch_at(step, idx[:1], 0), ds.batch_at(step, idx[1:], 1)]
    assert all(torch.equal(torch.cat([h[k] for h in halves]), ref[2][k]) for k in ref[2])
    assert not torch.equal(ds.batch_at(step + 1, idx)["H1"], ref[2]["H1"])  # the step is part of the seed
    monkeypatch.setattr(IMPOnlinePairs, "extracts_on_gpu", lambda self: True)
    got = list(ds.loader(plan, 1))
    assert len(got) == 4 and all(_equal(a, b) for a, b in zip(ref, got))


def test_training_with_workers_equals_training_without(pairs, tmp_path):
    """The same run with num_workers 0 and 2 logs the same losses and ends with equal weights;
    num_workers is not part of the run's fingerprint, and a task without DataLoader batches refuses it."""
    from matchrepro.training.imp_task import IMPTask
    from matchrepro.training.loop import run_fingerprint, train
    from matchrepro.errors import ConfigError

    tmp, root, index = pairs
    params = {"num_keypoints": 128, "inliers_range": [8, 64], "pairs_per_scene": 4, "batch_size": 2, "steps": 4,
              "lr": 1e-4, "init_mode": "identity", "augment_photometric": 1.0, "augment_perspective": 0.1,
              "checkpoint_every": 100}
    runs = {}
    for workers in (0, 2):
        task = IMPTask("online", "imp", {**params, "num_workers": workers}, index, dataset_root=root, features=SIFT)
        train(task, {**params, "num_workers": workers}, tmp_path / str(workers))
        runs[workers] = (pd.read_csv(tmp_path / str(workers) / "log.csv"),
                         torch.load(tmp_path / str(workers) / "final.pth", weights_only=False)["model"])
    (log0, w0), (log2, w2) = runs[0], runs[2]
    assert log0.loss.tolist() == log2.loss.tolist() and np.isfinite(log0.loss).all()
    assert all(torch.equal(w0[k], w2[k]) for k in w0)
    assert run_fingerprint("imp", params, None, None, None) == run_fingerprint("imp", {**params, "num_workers": 2},
                                                                                None, None, None)
    from matchrepro.training.toy import ToyTask

    with pytest.raises(ConfigError, match="num_workers: ToyTask makes its batches in the training process"):
        train(ToyTask(), {"steps": 1, "num_workers": 1}, tmp_path / "toy")


def test_online_training_through_the_cli(pairs):
    tmp, root, index = pairs
    spec = {"training": {"name": "imp_online", "model": "imp", "data": "imp_pairs", "init": None,
                         "params": {"num_keypoints": 128, "inliers_range": [8, 64], "pairs_per_scene": 4,
                                    "batch_size": 2, "steps": 3, "lr": 1e-5, "init_mode": "identity",
                                    "augment_photometric": 1.0, "augment_perspective": 0.1,
                                    "num_workers": 1}},  # a spawned worker re-imports `python -m matchrepro`
            "dataset": {"root": str(root)}, "features": SIFT}
    out = tmp / "run" / "model_best.pth"
    r = subprocess.run([sys.executable, "-m", "matchrepro", "train", "--spec", json.dumps(spec), "--out", str(out),
                        "--data", str(index), "--threads", "2"], capture_output=True, text=True, cwd=REPO, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    log = pd.read_csv(out.parent / "log.csv")
    assert log.step.tolist() == [1, 2, 3] and np.isfinite(log.loss).all()
    # augmentations without online pairs are refused, naming the key
    dump_index = tmp / "dump.json"
    dump_index.write_text(json.dumps({"preprocessing": {"kind": "imp_dump"}, "scenes": {}}))
    r = run_cli(["train", "--spec", json.dumps(spec), "--out", str(tmp / "bad" / "w.pth"), "--data", str(dump_index)])
    assert r.returncode == 1
    assert "training.imp_online.params.augment_photometric: augmentations need online pairs" in r.stderr
