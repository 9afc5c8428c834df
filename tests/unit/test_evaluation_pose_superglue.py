import numpy as np
import pytest

from matchrepro.evaluation.pose_superglue import (
    epipolar_precision, estimate_relative_pose, focal_for_threshold, pose_errors,
)
from matchrepro.geometry.epipolar import epipolar_line_distance_px


@pytest.mark.parametrize("mode", ["reference", "corrected"])
def test_exact_matches_recover_the_pose(two_view_scene, mode):
    p0, p1, K0, K1, T = two_view_scene
    est = estimate_relative_pose(p0, p1, K0, K1, recover_pose=mode)
    err_R, err_t, err = pose_errors(est, T)
    assert err < 0.05
    assert est.inliers.sum() > 0


def test_outliers_are_rejected(two_view_scene):
    p0, p1, K0, K1, T = two_view_scene
    rng = np.random.default_rng(0)
    p1 = p1.copy()
    p1[:60] = rng.uniform(0, 600, (60, 2))
    est = estimate_relative_pose(p0, p1, K0, K1)
    assert pose_errors(est, T)[2] < 0.5


def test_too_few_matches_is_a_failure(two_view_scene):
    p0, p1, K0, K1, T = two_view_scene
    est = estimate_relative_pose(p0[:4], p1[:4], K0, K1)
    assert est.R is None
    assert pose_errors(est, T) == (np.inf, np.inf, np.inf)


def test_focal_mean_formulas():
    K0 = np.diag([100.0, 200.0, 1.0])
    K1 = np.diag([300.0, 400.0, 1.0])
    assert focal_for_threshold(K0, K1, "superglue") == pytest.approx((100 + 400) / 2)
    assert focal_for_threshold(K0, K1, "all") == pytest.approx(250.0)
    with pytest.raises(ValueError):
        focal_for_threshold(K0, K1, "median")


def test_epipolar_precision_with_planted_outliers(two_view_scene):
    p0, p1, K0, K1, T = two_view_scene
    p1 = p1.copy()
    p1[:30] += [0, 40.0]  # 40 px off the epipolar line (mostly)
    prec, n_correct, d = epipolar_precision(p0, p1, K0, K1, T)
    line = epipolar_line_distance_px(p0, p1, K0, K1, T)
    assert n_correct == int(np.sum(d < 5e-4))
    assert np.all(d[30:] < 1e-12) and np.all(line[30:] < 1e-6)
    assert prec == pytest.approx(n_correct / len(p0))
    assert 270 <= n_correct < 300
    assert epipolar_precision(p0[:0], p1[:0], K0, K1, T)[:2] == (0.0, 0)


def test_reference_recover_pose_quirk_collapses_mask_in_far_scenes():
    """protocols.md §7.1: the reference call keeps OpenCV's 50-baseline cheirality limit, so
    far points drop out of the returned mask; the corrected mode keeps them."""
    rng = np.random.default_rng(5)
    X = rng.uniform([-30, -20, 20], [30, 20, 200], (300, 3))
    K = np.array([[800.0, 0, 320], [0, 800, 240], [0, 0, 1]])
    T = np.eye(4)
    T[:3, 3] = [-1.0, 0, 0]
    p0 = X @ K.T
    X1 = X + T[:3, 3]
    p1 = X1 @ K.T
    p0, p1 = p0[:, :2] / p0[:, 2:], p1[:, :2] / p1[:, 2:]
    ref = estimate_relative_pose(p0, p1, K, K, recover_pose="reference")
    cor = estimate_relative_pose(p0, p1, K, K, recover_pose="corrected")
    assert cor.inliers.sum() > ref.inliers.sum()
    assert pose_errors(cor, T)[2] < 1.0


def test_imp_protocol_recovers_the_pose(two_view_scene):
    from matchrepro.evaluation.pose_superglue import estimate_relative_pose_magsac

    p0, p1, K0, K1, T = two_view_scene
    rng = np.random.default_rng(1)
    p1 = p1.copy()
    p1[:40] = rng.uniform(0, 600, (40, 2))
    est = estimate_relative_pose_magsac(p0, p1, K0, K1, threshold_px=1.0)
    assert pose_errors(est, T)[2] < 1.0
    assert est.inliers[40:].mean() > 0.9 and est.inliers[:40].mean() < 0.2
    assert estimate_relative_pose_magsac(p0[:4], p1[:4], K0, K1).R is None


def test_imp_decomposition_picks_the_cheiral_candidate(two_view_scene):
    from matchrepro.evaluation.pose_superglue import decompose_essential_imp
    from matchrepro.geometry.epipolar import essential_from_pose

    p0, p1, K0, _, T = two_view_scene
    # same K in both views, so IMP's averaged-K normalisation is exact
    X1 = np.c_[np.linalg.inv(K0) @ np.c_[p0, np.ones(len(p0))].T].T
    p1_same = ((X1 * 5) @ T[:3, :3].T + T[:3, 3]) @ K0.T
    E = essential_from_pose(T)
    R, t = decompose_essential_imp(E, p0, p1_same[:, :2] / p1_same[:, 2:], K0, K0)
    assert np.allclose(R, T[:3, :3], atol=1e-6)
    assert np.allclose(t, T[:3, 3] / np.linalg.norm(T[:3, 3]), atol=1e-6)


def test_imp_precision(two_view_scene):
    from matchrepro.evaluation.pose_superglue import epipolar_precision_imp

    p0, p1, K0, K1, T = two_view_scene
    assert epipolar_precision_imp(p0, p1, K0, K1, T) == (1.0, len(p0))
    bad = p1 + [0, 60.0]  # ~0.1 normalised units off the line for most points
    prec, n = epipolar_precision_imp(p0, bad, K0, K1, T)
    assert prec < 0.1 and epipolar_precision_imp(p0[:0], p1[:0], K0, K1, T) == (0.0, 0)
