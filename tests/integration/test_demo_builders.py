"""The demo datasets' ground truth agrees with their pixels (checked through the readers)."""

import cv2
import numpy as np
import pytest

from matchrepro.config import demo_settings
from matchrepro.datasets import hpatches, megadepth, pairs
from matchrepro.demo import builders
from matchrepro.features.sift import SIFT
from matchrepro.geometry.camera import (
    project, relative_pose, rotate_intrinsics, rotate_relative_pose, transform, unproject,
)
from matchrepro.geometry.epipolar import epipolar_line_distance_px
from matchrepro.io import read_h5_dataset, read_image
from matchrepro.matchers.nearest_neighbour import match_nearest_neighbour
from matchrepro.pipeline.extract import load_upright

SHIFTS = (-1.0, -0.5, 0.0, 0.5, 1.0)


def colmap_to_opencv(K):
    """MegaDepth K (COLMAP: top-left pixel centre at 0.5) -> pixel centres at integers."""
    K = K.copy()
    K[:2, 2] -= 0.5
    return K


def ncc_error(a, b, mask):
    a, b = a[mask].astype(np.float64), b[mask].astype(np.float64)
    a, b = (a - a.mean()) / a.std(), (b - b.mean()) / b.std()
    return 1.0 - float(np.mean(a * b))


def alignment_errors(img0, img1, map_x, map_y, mask):
    """1 - NCC between img0 and img1 sampled at (map_x + dx, map_y), for each shift dx."""
    out = []
    for dx in SHIFTS:
        w = cv2.remap(img1.astype(np.float32), (map_x + dx).astype(np.float32), map_y.astype(np.float32),
                      cv2.INTER_LINEAR)
        out.append(ncc_error(img0, w, mask))
    return np.array(out)


def assert_aligned_at_zero(errs):
    assert np.argmin(errs) == SHIFTS.index(0.0), errs
    assert errs[2] < errs[1] and errs[2] < errs[3]


@pytest.fixture(scope="module")
def megadepth_demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("md") / "megadepth"
    builders.build_megadepth(out, demo_settings(kind="megadepth", seed=3, scenes=1, images_per_scene=5,
                                                size=[240, 180], points3d=800))
    return out


def test_megadepth_layout_and_reprojection(megadepth_demo):
    root = megadepth_demo
    info = megadepth.read_scene_info(root / "scene_info" / "9000.npz")
    assert info.valid.all() and len(info.image_paths) == 5
    assert info.image_paths[0].startswith("Undistorted_SfM/9000/images/")
    assert info.depth_paths[0].startswith("phoenix/S6/zl548/MegaDepth_v1/9000/dense0/depths/")
    ov = info.overlap_matrix
    assert np.all(np.diag(ov) == -1)
    i, j = np.unravel_index(np.argmax(ov), ov.shape)
    assert ov[i, j] > 0.2
    # D2-Net: depth files under 100 KB are masks, so real depth maps must be larger
    assert (root / info.depth_paths[i]).stat().st_size > 100_000
    d_i = megadepth.read_depth(root / info.depth_paths[i])
    d_j = megadepth.read_depth(root / info.depth_paths[j])
    img_i = read_image(root / info.image_paths[i], grayscale=True)
    img_j = read_image(root / info.image_paths[j], grayscale=True)
    assert d_i.shape == img_i.shape
    T = relative_pose(info.poses[i], info.poses[j])
    K_i, K_j = colmap_to_opencv(info.intrinsics[i]), colmap_to_opencv(info.intrinsics[j])
    h, w = d_i.shape
    ys, xs = np.mgrid[0:h, 0:w]
    valid = d_i > 0
    X = unproject(np.stack([xs[valid], ys[valid]], 1).astype(float), d_i[valid], K_i)
    uv, z = project(transform(T, X), K_j)
    xi, yi = np.round(uv).astype(int).T
    inside = (xi >= 0) & (yi >= 0) & (xi < d_j.shape[1]) & (yi < d_j.shape[0])
    dz = np.zeros(len(uv), np.float32)
    dz[inside] = d_j[yi[inside], xi[inside]]
    visible = (dz > 0) & (np.abs(dz - z) < 0.01 * z)
    assert visible.mean() > 0.2
    mx = np.full((h, w), -1e4, np.float32)
    my = np.full((h, w), -1e4, np.float32)
    mx[valid], my[valid] = uv[:, 0], uv[:, 1]
    mask = np.zeros((h, w), bool)
    mask[valid] = visible
    mask = cv2.erode(mask.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    assert_aligned_at_zero(alignment_errors(img_i, img_j, mx, my, mask))


def test_megadepth_points3d_reproject_within_half_pixel(megadepth_demo):
    root = megadepth_demo
    info = megadepth.read_scene_info(root / "scene_info" / "9000.npz")
    id2d = info.extra["points3D_id_to_2D"]
    ov = info.overlap_matrix
    i, j = np.unravel_index(np.argmax(ov), ov.shape)
    shared = sorted(set(id2d[i]) & set(id2d[j]))
    assert len(shared) > 20
    assert info.extra["n_points3D"][i] == len(id2d[i])
    d_i = megadepth.read_depth(root / info.depth_paths[i])
    uv_i = np.array([id2d[i][k] for k in shared]) - 0.5  # COLMAP -> pixel centres at integers
    uv_j = np.array([id2d[j][k] for k in shared]) - 0.5
    z = cv2.remap(d_i, uv_i[:, 0].astype(np.float32)[:, None], uv_i[:, 1].astype(np.float32)[:, None],
                  cv2.INTER_LINEAR)[:, 0]
    ok = z > 0
    X = unproject(uv_i[ok], z[ok], colmap_to_opencv(info.intrinsics[i]))
    uv, _ = project(transform(relative_pose(info.poses[i], info.poses[j]), X), colmap_to_opencv(info.intrinsics[j]))
    err = np.linalg.norm(uv - uv_j[ok], axis=1)
    assert np.median(err) < 0.1
    assert np.percentile(err, 90) < 0.5


def test_hpatches_homographies_align_images(tmp_path):
    out = tmp_path / "hp"
    builders.build_hpatches(out, demo_settings(kind="hpatches", seed=1, illumination=1, viewpoint=1, size=[200, 150]))
    plist = hpatches.list_pairs(out / "hpatches-sequences-release")
    assert len(plist) == 10 and {p.kind for p in plist} == {"i", "v"}
    for p in plist:
        img0 = read_image(out / "hpatches-sequences-release" / p.name0, grayscale=True)
        img1 = read_image(out / "hpatches-sequences-release" / p.name1, grayscale=True)
        h, w = img0.shape
        ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
        pts = np.stack([xs.ravel(), ys.ravel(), np.ones(xs.size)], 1) @ p.H_0to1.T
        mx = (pts[:, 0] / pts[:, 2]).reshape(h, w)
        my = (pts[:, 1] / pts[:, 2]).reshape(h, w)
        mask = (mx > 2) & (mx < w - 3) & (my > 2) & (my < h - 3)
        if p.kind == "i":
            assert np.allclose(p.H_0to1, np.eye(3))
        else:
            assert mask.mean() > 0.3
            assert_aligned_at_zero(alignment_errors(img0, img1, mx, my, mask))


def test_hpatches_builder_is_deterministic(tmp_path):
    cfg = demo_settings(kind="hpatches", seed=4, illumination=1, viewpoint=1, size=[120, 90])
    builders.build_hpatches(tmp_path / "a", cfg)
    builders.build_hpatches(tmp_path / "b", cfg)
    fa = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    fb = sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*") if p.is_file())
    assert fa == fb and len(fa) == 22
    for f in fa:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()


def _sift_epipolar_residuals(image_dir, p):
    """Median distance (px, upright frame) of SIFT matches to the GT epipolar lines."""
    sift = SIFT({"max_keypoints": 2000, "root_sift": True, "contrast_threshold": 0.04})
    im0, _, wh0 = load_upright(image_dir / p.name0, p.rot0, {"mode": "none"})
    im1, _, wh1 = load_upright(image_dir / p.name1, p.rot1, {"mode": "none"})
    f0, f1 = sift(im0), sift(im1)
    m, _ = match_nearest_neighbour(f0["descriptors"], f1["descriptors"], ratio=0.7)
    stored = lambda wh, r: (wh[1], wh[0]) if r % 2 else wh  # noqa: E731
    K0 = rotate_intrinsics(p.K0, stored(wh0, p.rot0), p.rot0)
    K1 = rotate_intrinsics(p.K1, stored(wh1, p.rot1), p.rot1)
    T = rotate_relative_pose(p.T_0to1, p.rot0, p.rot1)
    d = epipolar_line_distance_px(f0["keypoints"][m[:, 0]], f1["keypoints"][m[:, 1]], K0, K1, T)
    return len(m), d


@pytest.fixture(scope="module")
def yfcc_demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("yfcc") / "yfcc"
    builders.build_yfcc(out, demo_settings(kind="yfcc", seed=2, scenes=1, images_per_scene=4, pairs_per_scene=3,
                                           sizes=[[640, 480], [480, 640]], exif_rotated=1, middlebury=True,
                                           pairs_file="pairs.txt"))
    return out


def test_yfcc_pairs_agree_with_calibration_files(yfcc_demo):
    root = yfcc_demo / "raw_data" / "yfcc100m"
    plist = pairs.read_pairs(yfcc_demo / "pairs.txt")
    assert plist[-1].name0 == "middlebury_motorcycle/test/images/im0.jpg"
    for p in plist:
        cal = []
        for name in (p.name0, p.name1):
            scene_test, stem = name.rsplit("/images/", 1)
            h5 = root / scene_test / "calibration" / f"calibration_{stem[:-4]}.h5"
            K, R, t = (read_h5_dataset(h5, k) for k in ("K", "R", "T"))
            T = np.eye(4)
            T[:3, :3], T[:3, 3] = R, t.ravel()
            w, h = read_h5_dataset(h5, "imsize").ravel()
            img = read_image(root / name)
            assert img.shape[:2] == (h, w)
            cal.append((K, T))
        assert np.allclose(p.K0, cal[0][0]) and np.allclose(p.K1, cal[1][0])
        assert np.allclose(p.T_0to1, relative_pose(cal[0][1], cal[1][1]))
        if not p.name0.startswith("middlebury"):
            h, w = read_image(root / p.name0).shape[:2]
            assert np.allclose(p.K0[:2, 2], [(w - 1) / 2, (h - 1) / 2])  # YFCC convention
    images_txt = (root / "demo_facade_0" / "test" / "images.txt").read_text().split()
    assert len(images_txt) == 4 and images_txt[0].startswith("images/")


def test_yfcc_ground_truth_matches_image_content(yfcc_demo):
    plist = pairs.read_pairs(yfcc_demo / "pairs.txt")
    assert any(p.rot0 or p.rot1 for p in plist), "the demo must exercise EXIF rotation flags"
    for p in plist:
        n, d = _sift_epipolar_residuals(yfcc_demo / "raw_data" / "yfcc100m", p)
        assert n > 30, p.name0
        assert np.median(d) < 0.5, (p.name0, p.name1, np.median(d))


def test_scannet_ground_truth_matches_image_content(tmp_path):
    out = tmp_path / "scannet"
    builders.build_scannet(out, demo_settings(kind="scannet", seed=5, scenes=1, frames_per_scene=4, pairs_per_scene=2,
                                              size=[320, 240], pairs_file="pairs.txt"))
    plist = pairs.read_pairs(out / "pairs.txt")
    assert plist and plist[0].name0.startswith("scans_test/scene9000_00/sens/frame-")
    assert plist[0].name0.endswith(".color.jpg")
    for p in plist:
        n, d = _sift_epipolar_residuals(out, p)
        assert n > 20 and np.median(d) < 0.5


def test_middlebury_disparity_agrees_with_calibration():
    import skimage.data

    left, right, disp = skimage.data.stereo_motorcycle()
    K0, K1, T = builders.motorcycle_geometry()
    h, w = disp.shape
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    ok = np.isfinite(disp)
    # triangulate (x, y) <-> (x - d, y) with our K0, K1, T and compare to Z = f B / (d + doffs)
    c = builders.MOTORCYCLE
    x0 = (xs[ok] - K0[0, 2]) / K0[0, 0]
    x1 = (xs[ok] - disp[ok] - K1[0, 2]) / K1[0, 0]
    Z = -T[0, 3] / (x0 - x1)
    assert np.allclose(Z, c["f"] * c["baseline_mm"] / (disp[ok].astype(np.float64) + c["doffs"]), rtol=1e-9)
    # the disparity warps the right image onto the left one
    g0 = cv2.cvtColor(left, cv2.COLOR_RGB2GRAY)
    g1 = cv2.cvtColor(right, cv2.COLOR_RGB2GRAY)
    mx = np.where(ok, xs - np.nan_to_num(disp, posinf=0), -1e4)
    mask = ok & (mx > 2) & (mx < w - 3)
    assert_aligned_at_zero(alignment_errors(g0, g1, mx, ys, mask))


def test_yfcc_oanet_pairs_agree_with_superglue_file(yfcc_demo):
    """The demo's two YFCC formats (OANet raw data, SuperGlue pairs) describe the same pairs."""
    from matchrepro.datasets import yfcc_raw

    sg = pairs.read_pairs(yfcc_demo / "pairs.txt")
    oanet = yfcc_raw.read_scene_pairs(yfcc_demo / "raw_data", "demo_facade_0") + \
        yfcc_raw.read_scene_pairs(yfcc_demo / "raw_data", "middlebury_motorcycle")
    assert [(p.name0, p.name1) for p in oanet] == [(p.name0, p.name1) for p in sg]
    for a, b in zip(oanet, sg):
        assert np.allclose(a.K0, b.K0) and np.allclose(a.T_0to1, b.T_0to1)


def test_megadepth_revisits_add_nearby_views_and_leave_the_rest_unchanged(tmp_path, megadepth_demo):
    """``revisits: N`` appends N views taken from near existing cameras (same K, centre within
    about a metre, high overlap) with their own random stream: the first views, their depth and
    the SfM points are byte-identical to the scene without revisits."""
    out = tmp_path / "megadepth"
    builders.build_megadepth(out, demo_settings(kind="megadepth", seed=3, scenes=1, images_per_scene=5,
                                                size=[240, 180], points3d=800, revisits=3))
    base = megadepth.read_scene_info(megadepth_demo / "scene_info" / "9000.npz")
    more = megadepth.read_scene_info(out / "scene_info" / "9000.npz")
    assert len(more.image_paths) == 8
    for k in range(5):
        assert (megadepth_demo / base.image_paths[k]).read_bytes() == (out / more.image_paths[k]).read_bytes()
        assert np.array_equal(base.poses[k], more.poses[k]) and np.array_equal(base.intrinsics[k], more.intrinsics[k])
    centres = [-T[:3, :3].T @ T[:3, 3] for T in more.poses]
    for r in range(5, 8):
        near = int(np.argmin([np.linalg.norm(centres[r] - centres[k]) for k in range(5)]))
        assert np.linalg.norm(centres[r] - centres[near]) < 1.5
        assert np.array_equal(more.intrinsics[r], more.intrinsics[near])
        assert max(more.overlap_matrix[r, near], more.overlap_matrix[near, r]) > 0.5
