"""Evaluation on real layouts (issue: evaluation on real layouts), each on a small fixture built
here in the real format: pydegensac for the paper-era homography protocol, LoFTR-layout ScanNet
intrinsics, SuperGlue's EXIF order for the intrinsics, compared-only-when-published status,
glue-factory's ScanNet-1500 layout, and clear refusals of LoFTR's MegaDepth-1500 scene_info."""

from __future__ import annotations

import pickle

import cv2
import numpy as np
import pandas as pd
import pytest
import yaml

from matchrepro.errors import ConfigError, DatasetError
from tests.conftest import REPO


# ---------------------------------------------------------------------------------------------
# 1. pydegensac
# ---------------------------------------------------------------------------------------------

def _homography_pairs(n_pairs=4, seed=0):
    from matchrepro.datasets.benchmark import Pair

    g = np.random.default_rng(seed)
    pairs, preds = [], {}
    for i in range(n_pairs):
        H = np.array([[1 + g.normal(0, 0.05), g.normal(0, 0.05), g.normal(0, 20)],
                      [g.normal(0, 0.05), 1 + g.normal(0, 0.05), g.normal(0, 20)],
                      [g.normal(0, 1e-4), g.normal(0, 1e-4), 1.0]])
        k0 = g.uniform(0, [640, 480], (300, 2))
        q = np.c_[k0, np.ones(300)] @ H.T
        k1 = q[:, :2] / q[:, 2:] + g.normal(0, 0.7, (300, 2))
        k1[:90] = g.uniform(0, [640, 480], (90, 2))  # 30 % outliers
        pairs.append(Pair(i, f"s/{i}a.ppm", f"s/{i}b.ppm", H_0to1=H, group="v"))
        preds[i] = {"keypoints0": k0.astype(np.float32), "keypoints1": k1.astype(np.float32),
                    "matches": np.stack([np.arange(300)] * 2, 1), "scores": np.ones(300, np.float32),
                    "image_size0": np.array([640, 480]), "scale0": np.ones(2), "scale1": np.ones(2)}
    return pairs, preds


def test_paper_homography_protocol_runs_the_real_pydegensac():
    from matchrepro.config import load_config
    from matchrepro.evaluation.evaluate import evaluate_homography
    from matchrepro.reporting.tables import protocol_knobs

    for cfg in (load_config(REPO / "config.yaml"), load_config(REPO / "configs/paper.yaml")):
        proto = cfg["protocols"]["homography_patch2pix_paper"]
        assert proto["solver"] == "pydegensac" and proto["threshold_px"] == 2.0
        assert protocol_knobs(proto).startswith("pydegensac 2px") and "seed=0" in protocol_knobs(proto)
    pairs, preds = _homography_pairs()
    proto = {**proto, "frame": "original", "corners": "fixed"}
    a = evaluate_homography(pairs, preds, proto)
    assert (a.corner_error_px < 4.0).all() and a.corner_error_px.median() < 1.0
    b = evaluate_homography(pairs, preds, proto)
    assert np.array_equal(a.corner_error_px.to_numpy(), b.corner_error_px.to_numpy())  # seeded
    cv = evaluate_homography(pairs, preds, {**proto, "solver": "opencv_lo_ransac"})  # the named stand-in
    assert (cv.corner_error_px < 4.0).all() and not np.array_equal(cv.corner_error_px, a.corner_error_px)


# ---------------------------------------------------------------------------------------------
# 2. ScanNet in LoFTR's layout
# ---------------------------------------------------------------------------------------------

K640 = np.array([[577.59, 0, 318.9], [0, 578.73, 242.68], [0, 0, 1]])


def _loftr_scannet(root, stored_wh, K=K640):
    rel = np.array([[1, 0, 0, 0.1, 0, 1, 0, 0.2, 0, 0, 1, 0.3]], np.float32)
    np.savez(root / "test.npz", name=np.array([[707, 0, 15, 30]], np.uint16), rel_pose=rel)
    np.savez(root / "intrinsics.npz", scene0707_00=K)
    for f in (15, 30):
        d = root / "scans_test" / "scene0707_00" / "color"
        d.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(d / f"{f}.jpg"), np.zeros((stored_wh[1], stored_wh[0], 3), np.uint8))
    return {"name": "scannet", "format": "loftr_scannet", "root": str(root), "pairs_file": "test.npz",
            "intrinsics_file": "intrinsics.npz", "image_dir": "scans_test", "intrinsics_frame": None}


@pytest.mark.parametrize("stored", [(1296, 968), (640, 480)])
def test_loftr_intrinsics_are_for_640x480_frames_whatever_the_stored_size(tmp_path, stored):
    from matchrepro.datasets.benchmark import open_benchmark
    from matchrepro.geometry.camera import scale_intrinsics

    b = open_benchmark(_loftr_scannet(tmp_path, stored))
    p = b.pairs[0]
    sx, sy = stored[0] / 640, stored[1] / 480
    assert np.allclose(p.K0, np.diag([sx, sy, 1]) @ K640) and np.allclose(p.K1, p.K0)
    # resized to 640 x 480 (LoFTR's frame) the evaluation's K is the file's K again
    assert np.allclose(scale_intrinsics(p.K0, (sx, sy)), K640)
    assert p.K0[0, 0] > 575 * sx - 1  # not the doubly scaled 284 px of a 1296-px frame


def test_loftr_intrinsics_refuse_what_cannot_be_right(tmp_path):
    from matchrepro.datasets.benchmark import open_benchmark

    K1296 = np.diag([2.025, 2.0167, 1]) @ K640  # K of the full-resolution frames in a 640x480 file
    for sub in "abc":
        (tmp_path / sub).mkdir()
    with pytest.raises(DatasetError, match=r"intrinsics\.npz: principal point .* outside the 640x480 frame"):
        open_benchmark(_loftr_scannet(tmp_path / "a", (1296, 968), K1296))
    with pytest.raises(DatasetError, match=r"15\.jpg: stored at 500x500, not a resized copy of the 640x480"):
        open_benchmark(_loftr_scannet(tmp_path / "b", (500, 500)))
    # a K file for other frames is read with its frame declared
    cfg = {**_loftr_scannet(tmp_path / "c", (1296, 968), K1296), "intrinsics_frame": [1296, 968]}
    assert np.allclose(open_benchmark(cfg).pairs[0].K0, K1296)


def test_image_size_reads_headers(tmp_path):
    from matchrepro.io import image_size

    for ext in (".jpg", ".png", ".ppm"):
        cv2.imwrite(str(tmp_path / f"x{ext}"), np.zeros((37, 53, 3), np.uint8))
        assert image_size(tmp_path / f"x{ext}") == (53, 37)


# ---------------------------------------------------------------------------------------------
# 3. SuperGlue's order for EXIF-rotated intrinsics
# ---------------------------------------------------------------------------------------------

def _superglue_reference(K, w, h, resize, rot):
    """SuperGlue's evaluation written out step by step: process_resize (long side, float), the
    scales reversed for odd turns, scale_intrinsics, then rotate_intrinsics on the rotated
    resized image's shape."""
    s = resize / max(w, h)
    w_new, h_new = int(round(w * s)), int(round(h * s))
    scales = (w / w_new, h / h_new)
    if rot % 2:
        scales = scales[::-1]
    K = np.diag([1 / scales[0], 1 / scales[1], 1]) @ K
    shape = (w_new, h_new) if rot % 2 else (h_new, w_new)  # np.rot90 of the resized (h_new, w_new) image
    hh, ww = shape[::-1] if rot % 2 else shape
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    return {1: np.array([[fy, 0, cy], [0, fx, ww - 1 - cx], [0, 0, 1]]),
            2: np.array([[fx, 0, ww - 1 - cx], [0, fy, hh - 1 - cy], [0, 0, 1]]),
            3: np.array([[fy, 0, hh - 1 - cy], [0, fx, cx], [0, 0, 1]])}[rot]


@pytest.mark.parametrize("rot", [1, 2, 3])
def test_exif_rotated_intrinsics_in_superglues_order(rot):
    from matchrepro.evaluation.pose_superglue import superglue_resized_intrinsics
    from matchrepro.geometry.camera import rotate_intrinsics, scale_intrinsics

    w, h = 640, 480  # stored
    K = np.array([[520.0, 0, 318.0], [0, 521.0, 241.0], [0, 0, 1]])
    up = (h, w) if rot % 2 else (w, h)
    s = max(w, h) / 1600
    w_new, h_new = int(round(w / s)), int(round(h / s))
    scale_up = (h / h_new, w / w_new) if rot % 2 else (w / w_new, h / h_new)
    ref = _superglue_reference(K, w, h, 1600, rot)
    ours = superglue_resized_intrinsics(K, up, scale_up, rot)
    assert np.allclose(ours, ref, atol=1e-9)
    corrected = scale_intrinsics(rotate_intrinsics(K, (w, h), rot), scale_up)
    diff = np.abs(corrected[:2, 2] - ref[:2, 2]).max()
    assert 1.0 < diff < 2.2  # 1/s - 1 px of principal point at long side 1600


# ---------------------------------------------------------------------------------------------
# 4. Compared only on the published pair set
# ---------------------------------------------------------------------------------------------

def test_compared_only_on_the_published_pair_set():
    from matchrepro.reporting.published import compare

    pub = [{"benchmark": "scannet", "num_pairs": 1500, "label": "SP+MNN", "method": "sift_mnn",
            "protocol": "pose_superglue", "metrics": {"auc@5deg": 9.4}, "source": "x", "tag": "code"}]

    def row(n, sha=None):
        return pd.DataFrame([{"method": "sift_mnn", "dataset": "scannet", "source": "local",
                              "protocol": "pose_superglue", "auc@5deg": 10.0, "num_pairs": n, "pairs_sha256": sha}])

    sub = compare(row(15), pub, "scannet", "scannet").iloc[0]
    assert sub.status == "not compared: ours is on 15 pairs, the published number on 1500"
    assert np.isnan(sub.difference) and sub.our_pairs == 15 and sub.published_pairs == 1500
    full = compare(row(1500), pub, "scannet", "scannet").iloc[0]
    assert full.status == "compared" and full.difference == pytest.approx(0.6)
    pub[0]["pairs_sha256"] = "ab" * 32
    other = compare(row(1500, "cd" * 32), pub, "scannet", "scannet").iloc[0]
    assert other.status.startswith("not compared: ours is on another pair file")
    same = compare(row(1500, "ab" * 32), pub, "scannet", "scannet").iloc[0]
    assert same.status == "compared"


def test_every_published_entry_names_its_pair_count():
    entries = yaml.safe_load((REPO / "report/published.yaml").read_text())
    want = {"yfcc": 4000, "scannet": 1500, "hpatches": 540}
    assert all(e["num_pairs"] == want[e["benchmark"]] for e in entries)


# ---------------------------------------------------------------------------------------------
# 5. ScanNet-1500 from glue-factory's mirror
# ---------------------------------------------------------------------------------------------

def _gluefactory_scannet1500(root):
    """scannet1500.zip as it unpacks: scannet1500/pairs_calibrated.txt and <scene>/color/<n>.jpg."""
    d = root / "scannet1500"
    (d / "scene0707_00" / "color").mkdir(parents=True)
    K = " ".join(str(v) for v in K640.ravel())
    T = " ".join(str(v) for v in np.eye(4).ravel())
    (d / "pairs_calibrated.txt").write_text(f"scene0707_00/color/15.jpg scene0707_00/color/585.jpg {K} {K} {T}\n")
    for f in (15, 585):
        cv2.imwrite(str(d / "scene0707_00" / "color" / f"{f}.jpg"), np.zeros((480, 640, 3), np.uint8))
    return root


def test_scannet1500_config_agrees_with_the_archive_layout(tmp_path):
    from matchrepro.config import load_config
    from matchrepro.datasets.benchmark import open_benchmark
    from matchrepro.datasets.pairs import format_pair_line
    from matchrepro.pipeline.fetch import check_layout

    root = _gluefactory_scannet1500(tmp_path)
    ds = load_config(REPO / "configs/paper.yaml")["datasets"]["scannet"]
    check_layout(ds, root)  # the shipped config fits the archive
    b = open_benchmark({**ds, "root": str(root)})
    assert b.pairs[0].name0 == "scene0707_00/color/15.jpg" and np.allclose(b.pairs[0].K0, K640)
    # SuperGlue's pairs file on this archive fails at the check, naming the difference
    line = format_pair_line("scans_test/scene0707_00/sens/frame-000015.color.jpg",
                            "scans_test/scene0707_00/sens/frame-000585.color.jpg", K640, K640, np.eye(4), 0, 0)
    (root / "scannet_test_pairs_with_gt.txt").write_text(line + "\n")
    sg = {"name": "scannet", "format": "superglue_pairs", "pairs_file": "scannet_test_pairs_with_gt.txt",
          "image_dir": "."}
    with pytest.raises(ConfigError, match=r"names 'scans_test/scene0707_00/sens/frame-000015\.color\.jpg', which "
                                          r"is not under image_dir '\.' \(the folder has e\.g\. "
                                          r"'scannet1500/scene0707_00/color/15\.jpg'\)"):
        check_layout(sg, root)


# ---------------------------------------------------------------------------------------------
# 7. Neighbouring formats: LoFTR's MegaDepth-1500 scene_info
# ---------------------------------------------------------------------------------------------

def test_loftr_megadepth1500_scene_info_is_named_for_what_it_is(tmp_path):
    from matchrepro.datasets.megadepth import read_scene_info
    from matchrepro.preprocessing import scene_ids, scene_info_path

    d = tmp_path / "scene_info"
    d.mkdir()
    with open(d / "0015_0.1_0.3.npz", "wb") as f:
        pickle.dump({"image_paths": [], "depth_paths": [], "intrinsics": [], "poses": [],
                     "pair_infos": [((0, 1), 0.3, None)]}, f)
    assert scene_ids(tmp_path) == ["0015_0"]
    path = scene_info_path(tmp_path, "0015_0")
    assert path.name == "0015_0.1_0.3.npz"
    with pytest.raises(DatasetError, match=r"0015_0\.1_0\.3\.npz: this is LoFTR's MegaDepth-1500 test scene_info "
                                           r"\(a pickled dict with 'pair_infos'\), not a D2-Net scene_info"):
        read_scene_info(path)
    np.savez(d / "x.npz", image_paths=np.array(["a"]))
    with pytest.raises(DatasetError, match=r"x\.npz: missing keys .* \(not a D2-Net scene_info\)"):
        read_scene_info(d / "x.npz")
