"""Patch2Pix pair selection and IMP's ground-truth dump on a demo MegaDepth scene."""

import shutil

import h5py
import numpy as np
import pytest

from matchrepro.config import demo_settings
from matchrepro.datasets.megadepth import read_depth, read_scene_info
from matchrepro.demo import builders
from matchrepro.geometry.camera import relative_pose
from matchrepro.geometry.epipolar import epipolar_line_distance_px
from matchrepro.io import image_key
from matchrepro.preprocessing import imp_dump, patch2pix_pairs, scene_ids, scene_info_path
from tests.conftest import rotation


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    root = tmp_path_factory.mktemp("md") / "megadepth"
    builders.build_megadepth(root, demo_settings(kind="megadepth", seed=7, scenes=1, images_per_scene=7,
                                                 size=[480, 360], points3d=3000))
    return root


def test_crop_to_aspect_by_hand():
    assert patch2pix_pairs.crop_to_aspect(640, 480) == (1, 480 - 639 / 1.5)
    assert patch2pix_pairs.crop_to_aspect(1600, 900) == (1600 - 900 * 1.5, 0)
    assert patch2pix_pairs.crop_to_aspect(1500, 1000) == (0.0, 0.0)


def test_patch2pix_pairs_follow_the_rules(scene):
    assert scene_ids(scene) == ["9000"]
    info_file = scene_info_path(scene, "9000")
    res = patch2pix_pairs.select_pairs(info_file, {"exclude_scenes": []})
    n = len(res["im1"])
    assert n > 0
    info = read_scene_info(info_file)
    idx = {p.split("Undistorted_SfM/", 1)[-1]: k for k, p in enumerate(info.image_paths)}
    for k in range(n):
        i, j = idx[res["im1"][k]], idx[res["im2"][k]]
        assert 0.35 <= info.overlap_matrix[i, j] < 1 and res["overlap"][k] == info.overlap_matrix[i, j]
        T = relative_pose(info.poses[i], info.poses[j])
        assert np.allclose(res["R"][k], T[:3, :3]) and np.allclose(res["t"][k], T[:3, 3])
        w, h = 2 * res["K1"][k][0, 2], 2 * res["K1"][k][1, 2]
        assert w >= h  # landscape only
        dw, dh = res["crop1"][k]
        assert (w - dw) / (h - dh) == pytest.approx(1.5)
    # deterministic (seeded) and capped
    again = patch2pix_pairs.select_pairs(info_file, {"exclude_scenes": []})
    assert list(again["im1"]) == list(res["im1"])
    assert len(patch2pix_pairs.select_pairs(info_file, {"max_pairs": 2})["im1"]) == 2


def test_sampson_check_drops_pairs_with_a_wrong_pose(scene, tmp_path):
    info_file = scene_info_path(scene, "9000")
    good = patch2pix_pairs.select_pairs(info_file, {})
    with np.load(info_file, allow_pickle=True) as z:
        data = {k: z[k] for k in z.files}
    name = good["im1"][0]
    bad_idx = [k for k, p in enumerate(data["image_paths"]) if p.endswith(name)][0]
    T = data["poses"][bad_idx].copy()
    T[:3, :3] = rotation([0, 1, 0], 5) @ T[:3, :3]
    data["poses"][bad_idx] = T
    np.savez(tmp_path / "9000.npz", **data)
    bad = patch2pix_pairs.select_pairs(tmp_path / "9000.npz", {})
    kept_bad = {(a, b) for a, b in zip(bad["im1"], bad["im2"])}
    assert all(name not in pair for pair in kept_bad)
    assert kept_bad == {(a, b) for a, b in zip(good["im1"], good["im2"]) if name not in (a, b)}


def test_imp_dump_ground_truth(scene, tmp_path):
    out = tmp_path / "9000.h5"
    feats = {"type": "sift", "max_keypoints": 4096, "root_sift": True, "contrast_threshold": 0.04}
    n = imp_dump.run(scene, scene_info_path(scene, "9000"), feats, {"min_keypoints": 200}, out)
    assert n > 0
    info = read_scene_info(scene_info_path(scene, "9000"))
    with h5py.File(out, "r") as h:
        assert h.attrs["num_pairs"] == n
        for k in range(n):
            g = h[f"pairs/{k}"]
            m = g["matches"][()]
            assert len(m) > 20
            assert len(set(m[:, 0])) == len(m) and len(set(m[:, 1])) == len(m)  # one-to-one
            a, b = h["images"][image_key(g.attrs["name1"])], h["images"][image_key(g.attrs["name2"])]
            k0, k1 = a["keypoints"][()][m[:, 0]], b["keypoints"][()][m[:, 1]]
            assert (a["depth"][()][m[:, 0]] > 0).all() and (b["depth"][()][m[:, 1]] > 0).all()
            K1, K2 = g.attrs["K1"].copy(), g.attrs["K2"].copy()
            K1[:2, 2] -= 0.5  # COLMAP -> pixel centres at integers, as the keypoints are
            K2[:2, 2] -= 0.5
            d = epipolar_line_distance_px(k0, k1, K1, K2, relative_pose(g.attrs["T_w2c1"], g.attrs["T_w2c2"]))
            assert np.median(d) < 1.0 and np.all(d < 5.0 + 1e-6)
    # depth per keypoint is the depth map at (int(y), int(x))
    with h5py.File(out, "r") as h:
        name = info.image_paths[0].split("Undistorted_SfM/", 1)[-1]
        g = h["images"][image_key(name)]
        kp, dep = g["keypoints"][()], g["depth"][()]
    dmap = read_depth(scene / info.depth_paths[0])
    assert np.array_equal(dep, dmap[kp[:, 1].astype(int), kp[:, 0].astype(int)])


def test_scene_ids_accepts_the_dot_zero_naming(tmp_path):
    (tmp_path / "scene_info").mkdir()
    for n in ("0000.0.npz", "0001.npz", "0008.npz"):
        (tmp_path / "scene_info" / n).write_bytes(b"")
    assert scene_ids(tmp_path, exclude=["0008"]) == ["0000", "0001"]
    assert scene_info_path(tmp_path, "0000").name == "0000.0.npz"
    shutil.rmtree(tmp_path / "scene_info")
