"""The procedures around the networks as released (issue: procedures as released), each pinned on
a small hand-built case, beside the ``corrected`` variant it replaces:

* IMP's iterative evaluation (imp.md §1.5, §4.3): the returned mask keeps MAGSAC outliers, the
  stopped pose is reported, a pose at iteration 15, no pooling under 25 matches, EIMP iterative
  without uncertainty does not pool;
* IMP's MegaDepth dump (imp.md §3.1): the nearest keypoint among depth-valid ones, directional
  pairs, ``min_inliers`` before the one-to-one filter, colour decoding;
* SuperPoint's descriptor sampling as IMP runs it (align_corners=False);
* Patch2Pix: the squared Sampson distance in float64 (the refiner's keep-all fallback is pinned in
  test_training_patch2pix.py).
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from matchrepro.evaluation.pose_superglue import PoseEstimate, estimate_relative_pose_magsac
from matchrepro.models.imp import IMP


# ---------------------------------------------------------------------------------------------
# IMP iterative evaluation
# ---------------------------------------------------------------------------------------------

def _identity_weights(tmp_path, variant="imp"):
    from matchrepro.training.imp_task import identity_init

    m = IMP(128, pooling="mask" if variant == "eimp" else None)
    identity_init(m, 0.02, 0.8)
    path = tmp_path / f"{variant}.pth"
    torch.save({"model": m.state_dict(), "variant": variant}, path)
    return path


def _features(p0, p1, extra=200, wrong=0, seed=1):
    """Features of a two-view scene: the projections with shared descriptors, ``wrong`` pairs of
    shared descriptors at unrelated positions (matchable, geometrically wrong) and ``extra``
    unmatched keypoints per image."""
    g = np.random.default_rng(seed)
    n = len(p0)
    shared = g.normal(size=(n + wrong, 128))
    feats = []
    for pts in (p0, p1):
        k = np.concatenate([pts, g.uniform(0, [640, 480], (wrong + extra, 2))]).astype(np.float32)
        d = np.concatenate([shared, g.normal(size=(extra, 128))])
        feats.append({"keypoints": k, "scores": np.full(len(k), 0.05, np.float32),
                      "descriptors": (d / np.linalg.norm(d, axis=1, keepdims=True)).astype(np.float32),
                      "image_size": np.array([640, 480])})
    return feats


def _matcher(weights, variant="imp", **kw):
    from matchrepro.matchers.imp import IMPMatcher

    return IMPMatcher({"matcher": {"type": "imp", "variant": variant, "iterative": True,
                                   "iterative_threshold_px": 1.0, **kw}}, weights)


def test_magsac_estimate_reports_the_cheirality_of_its_inliers(two_view_scene):
    p0, p1, K0, K1, _ = two_view_scene
    g = np.random.default_rng(0)
    q1 = p1.copy()
    q1[:60] = g.uniform(0, [640, 480], (60, 2))  # 60 outliers
    est = estimate_relative_pose_magsac(p0, q1, K0, K1, 1.0)
    assert est.R is not None and est.cheirality is not None
    assert not est.cheirality[~est.inliers].any()  # a subset of the MAGSAC inliers
    assert est.cheirality[est.inliers].mean() > 0.95
    released = ~est.inliers | est.cheirality
    assert released[:60].mean() > 0.9 and released.mean() > est.inliers.mean()


def test_released_stop_returns_the_magsac_outliers_and_the_stopped_pose(two_view_scene, tmp_path):
    """A pose step whose MAGSAC outliers come back marked: 40 geometrically wrong pairs with
    identical descriptors pass p = 0.1; the released stop returns them, corrected does not."""
    p0, p1, K0, K1, T = two_view_scene
    n, wrong = len(p0), 40
    feats = _features(p0, p1, wrong=wrong)
    w = _identity_weights(tmp_path)
    rel = _matcher(w)(*feats, K0, K1)
    cor = _matcher(w, iterative_variant="corrected")(*feats, K0, K1)
    assert rel["stopped_at"] == cor["stopped_at"] < 15
    wrong_ids = set(range(n, n + wrong))
    rel_ids, cor_ids = set(rel["matches"][:, 0].tolist()), set(cor["matches"][:, 0].tolist())
    assert len(wrong_ids & rel_ids) >= 0.9 * wrong  # outliers stay marked in the release's mask
    assert len(wrong_ids & cor_ids) <= 2  # the MAGSAC inliers only
    assert len(rel["matches"]) > len(cor["matches"])
    # the stopped estimate itself is the reported pose; the corrected variant leaves it to the evaluator
    R, t = rel["pose"]
    from matchrepro.evaluation.metrics import rotation_error_deg, translation_error_deg

    assert rotation_error_deg(R, T[:3, :3]) < 1.0 and translation_error_deg(t, T[:3, 3]) < 2.0
    assert cor["pose"] is None


def _scripted_poses(monkeypatch, script, n_calls):
    """Replace the matcher's MAGSAC by a script: call k returns pose ``script(k)`` with all inliers."""
    import matchrepro.matchers.imp as mi

    calls = []

    def fake(k0, k1, K0, K1, thr):
        R, t = script(len(calls))
        calls.append(len(k0))
        inl = np.ones(len(k0), bool)
        return PoseEstimate(R, t, inl, inl.copy())

    monkeypatch.setattr(mi, "estimate_relative_pose_magsac", fake)
    return calls


def _rot_z(deg):
    a = np.deg2rad(deg)
    return np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])


def test_released_estimates_a_pose_at_iteration_15_and_stops_there(two_view_scene, tmp_path, monkeypatch):
    """Poses 3° apart at 4, 6, ..., 14; the pose after iteration 15 is within 1.5° of the one at 14:
    the release stops at 15 with that pose and the masked p = 0.1 matches; corrected ends at 15
    with the p = 0.2 head and no pose."""
    p0, p1, K0, K1, _ = two_view_scene
    feats = _features(p0, p1)
    w = _identity_weights(tmp_path)
    t = np.array([1.0, 0, 0])
    script = lambda k: (_rot_z(3.0 * k if k < 6 else 3.0 * 5 + 0.5), t)  # noqa: E731  call 6 = iteration 15
    calls = _scripted_poses(monkeypatch, script, 7)
    rel = _matcher(w)(*feats, K0, K1)
    assert len(calls) == 7 and rel["stopped_at"] == 15
    assert np.allclose(rel["pose"][0], _rot_z(15.5))
    n01 = calls[-1]  # the p = 0.1 matches of iteration 15, all kept by the scripted mask
    assert len(rel["matches"]) == n01
    calls.clear()
    cor = _matcher(w, iterative_variant="corrected")(*feats, K0, K1)
    assert len(calls) == 6 and cor["stopped_at"] == 15 and cor["pose"] is None  # no pose at 15
    plain = _matcher(w, iterative=False)(*feats)
    assert np.array_equal(cor["matches"], plain["matches"])  # the p = 0.2 head of iteration 15


def test_released_does_not_pool_on_a_pose_iteration_with_fewer_than_25_matches(tmp_path):
    """EIMP iterative with uncertainty, 20 true matches among 400 keypoints per image: every pose
    iteration has < 25 matches, so the release never pools; corrected pools with θ_m 0.2."""
    g = np.random.default_rng(3)
    n, true = 400, 20
    K = np.array([[500.0, 0, 320], [0, 500, 240], [0, 0, 1]])
    d0 = g.normal(size=(n, 128))
    d1 = g.normal(size=(n, 128))
    d1[:true] = d0[:true]
    feats = [{"keypoints": g.uniform(0, [640, 480], (n, 2)).astype(np.float32),
              "scores": np.full(n, 0.05, np.float32),
              "descriptors": (d / np.linalg.norm(d, axis=1, keepdims=True)).astype(np.float32),
              "image_size": np.array([640, 480])} for d in (d0, d1)]
    w = _identity_weights(tmp_path, "eimp")
    rel = _matcher(w, "eimp", uncertainty=True)(*feats, K, K)
    cor = _matcher(w, "eimp", uncertainty=True, iterative_variant="corrected")(*feats, K, K)
    assert all(r == (n, n) for r in rel["retained"])
    assert sum(cor["retained"][-1]) < 2 * n


def test_eimp_iterative_without_uncertainty_does_not_pool(two_view_scene, tmp_path):
    p0, p1, K0, K1, _ = two_view_scene
    feats = _features(p0, p1, extra=300)
    w = _identity_weights(tmp_path, "eimp")
    plain = _matcher(w, "eimp", uncertainty=False)(*feats, K0, K1)
    pooled = _matcher(w, "eimp", uncertainty=True)(*feats, K0, K1)
    n = len(feats[0]["keypoints"])
    assert all(r == (n, n) for r in plain["retained"])
    assert sum(pooled["retained"][-1]) < 2 * n


def test_evaluator_uses_the_matchers_pose_when_the_protocol_says_so():
    from matchrepro.evaluation.evaluate import evaluate_relative_pose

    class P:  # a pair record with the fields the evaluator reads
        index, name0, name1, group, rot0, rot1 = 0, "a.jpg", "b.jpg", "s", 0, 0
        K0 = K1 = np.array([[500.0, 0, 320], [0, 500, 240], [0, 0, 1]])
        T_0to1 = np.eye(4)

    P.T_0to1 = np.eye(4)
    P.T_0to1[:3, :3], P.T_0to1[:3, 3] = _rot_z(10), [1.0, 0, 0]
    d = {"keypoints0": np.zeros((3, 2), np.float32), "keypoints1": np.zeros((3, 2), np.float32),
         "matches": np.zeros((0, 2), np.int64), "image_size0": np.array([640, 480]), "image_size1": np.array([640, 480]),
         "scale0": np.ones(2), "scale1": np.ones(2), "pose_R": _rot_z(12), "pose_t": np.array([1.0, 0, 0])}
    proto = {"name": "p", "frame": "original", "solver": "opencv_magsac", "threshold_px": 1.0, "confidence": 0.99999,
             "min_matches": 5, "fold_translation": True, "precision_definition": "imp", "epipolar_threshold": 0.005,
             "use_matcher_pose": True}
    row = evaluate_relative_pose([P], {0: d}, proto).iloc[0]
    assert row.error_R_deg == pytest.approx(2.0, abs=1e-6) and row.error_t_deg == pytest.approx(0.0, abs=1e-6)
    row = evaluate_relative_pose([P], {0: d}, {**proto, "use_matcher_pose": False}).iloc[0]
    assert np.isinf(row.pose_error_deg)  # no matches to estimate from


# ---------------------------------------------------------------------------------------------
# IMP's MegaDepth dump
# ---------------------------------------------------------------------------------------------

def test_dump_searches_the_nearest_keypoint_among_depth_valid_ones():
    """The projection of image 1's keypoint lands 1 px from a depthless keypoint and 3 px from a
    depth-valid one: the release matches the depth-valid one, corrected drops the match."""
    from matchrepro.preprocessing.imp_dump import ground_truth_matches

    K = np.array([[500.0, 0, 320], [0, 500, 240], [0, 0, 1]])
    T = np.eye(4)
    f1 = {"keypoints": np.array([[300.0, 200.0]]), "depth": np.array([5.0], np.float32)}
    # identity pose: the keypoint projects onto itself (+0.5 and -0.5 cancel)
    f2 = {"keypoints": np.array([[301.0, 200.0], [300.0, 203.0]]), "depth": np.array([0.0, 5.0], np.float32)}
    rel = ground_truth_matches(f1, f2, K, K, T, T, 5.0, 0.5, "released")
    cor = ground_truth_matches(f1, f2, K, K, T, T, 5.0, 0.5, "corrected")
    assert rel.tolist() == [[0, 1]] and cor.shape == (0, 2)


def test_dump_counts_min_inliers_before_the_one_to_one_filter():
    from matchrepro.preprocessing.imp_dump import ground_truth_matches

    K = np.array([[500.0, 0, 320], [0, 500, 240], [0, 0, 1]])
    T = np.eye(4)
    f1 = {"keypoints": np.array([[300.0, 200.0], [301.0, 200.0], [100.0, 100.0]]), "depth": np.full(3, 5.0, np.float32)}
    f2 = {"keypoints": np.array([[300.5, 200.0], [100.0, 100.0]]), "depth": np.full(2, 5.0, np.float32)}
    m, n_cycle = ground_truth_matches(f1, f2, K, K, T, T, 5.0, 0.5, return_cycle_count=True)
    assert n_cycle == 3 and m.tolist() == [[0, 0], [2, 1]]


class _Info:
    def __init__(self, overlap):
        self.overlap_matrix = np.asarray(overlap, float)
        self.extra = {}


def test_pairs_follow_the_directional_overlap():
    """overlap[0, 1] = 0.05 (outside [0.1, 0.8]) but overlap[1, 0] = 0.5: the release takes (1, 0)
    alone; corrected (i < j with overlap[i, j]) takes nothing. Both directions valid: two pairs."""
    from matchrepro.preprocessing.imp_pairs import candidate_pairs

    p = {"min_overlap": 0.1, "max_overlap": 0.8, "min_shared_points": 20}
    info = _Info([[1, 0.05], [0.5, 1]])
    assert list(candidate_pairs(info, [0, 1], {**p, "procedure": "released"})) == [(1, 0)]
    assert list(candidate_pairs(info, [0, 1], {**p, "procedure": "corrected"})) == []
    info = _Info([[1, 0.3], [0.6, 1]])
    assert list(candidate_pairs(info, [0, 1], {**p, "procedure": "released"})) == [(0, 1), (1, 0)]
    assert list(candidate_pairs(info, [0, 1], {**p, "procedure": "corrected"})) == [(0, 1)]
    with pytest.raises(ValueError, match="procedure"):
        list(candidate_pairs(info, [0, 1], {**p, "procedure": "paper"}))


def test_dump_decodes_colour_then_converts_as_released(tmp_path):
    from matchrepro.io import read_image

    img = np.zeros((64, 80, 3), np.uint8)  # saturated colours: the colour path clamps after chroma upsampling
    img[:, :40], img[:, 40:], img[::8] = (255, 0, 0), (0, 0, 255), (0, 255, 0)
    path = tmp_path / "x.jpg"
    cv2.imwrite(str(path), img, [cv2.IMWRITE_JPEG_QUALITY, 80])
    released = read_image(path, grayscale=True, gray_from_color=True)
    assert np.array_equal(released, cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2GRAY))
    direct = read_image(path, grayscale=True)
    assert np.array_equal(direct, cv2.imread(str(path), cv2.IMREAD_GRAYSCALE))
    assert released.shape == direct.shape and np.abs(released.astype(int) - direct).max() >= 1


# ---------------------------------------------------------------------------------------------
# SuperPoint descriptor sampling
# ---------------------------------------------------------------------------------------------

def test_superpoint_descriptor_sampling_as_superglue_and_as_imp():
    """A descriptor map whose channel 0 is the column index and channel 1 is 1: the sampled ratio
    is the continuous column grid_sample reads, which differs between the two conventions."""
    from matchrepro.models.superpoint import sample_descriptors

    h, w, s = 6, 10, 8
    desc = torch.zeros(1, 2, h, w, dtype=torch.float64)
    desc[0, 0] = torch.arange(w, dtype=torch.float64)[None].expand(h, w)
    desc[0, 1] = 1.0
    kx = torch.tensor([[12.0, 20.0], [40.0, 20.0], [70.0, 30.0]], dtype=torch.float64)
    gx = (kx[:, 0] - s / 2 + 0.5) / (w * s - s / 2 - 0.5) * 2 - 1
    for align, col in ((True, (gx + 1) / 2 * (w - 1)), (False, ((gx + 1) * w - 1) / 2)):
        d = sample_descriptors(kx, desc, s, align_corners=align)
        assert torch.allclose(d[:, 0] / d[:, 1], col.clamp(0, w - 1), atol=1e-9)
    assert not torch.allclose(sample_descriptors(kx, desc, s, True), sample_descriptors(kx, desc, s, False))


def test_superpoint_extractor_takes_the_sampling_setting(tmp_path):
    from matchrepro.features.superpoint import SuperPointExtractor
    from matchrepro.models.superpoint import SuperPoint

    torch.manual_seed(0)
    path = tmp_path / "sp.pth"
    torch.save(SuperPoint().state_dict(), path)
    img = (np.random.default_rng(0).random((96, 128)) * 255).astype(np.uint8)
    cfg = {"max_keypoints": 30, "detection_threshold": 0.0}
    a = SuperPointExtractor(cfg, path)(img)
    b = SuperPointExtractor({**cfg, "descriptor_sampling": "imp"}, path)(img)
    assert np.array_equal(a["keypoints"], b["keypoints"]) and np.array_equal(a["scores"], b["scores"])
    assert not np.allclose(a["descriptors"], b["descriptors"])
    with pytest.raises(ValueError, match="descriptor_sampling"):
        SuperPointExtractor({**cfg, "descriptor_sampling": "other"}, path)


# ---------------------------------------------------------------------------------------------
# Patch2Pix
# ---------------------------------------------------------------------------------------------

def test_sampson_distance_in_float64_at_large_values():
    from matchrepro.preprocessing.patch2pix_pairs import fundamental
    from matchrepro.training.patch2pix_losses import sampson_sq

    K1 = np.array([[400.0, 0, 240], [0, 400, 160], [0, 0, 1]])
    K2 = np.array([[380.0, 0, 236], [0, 390, 158], [0, 0, 1]])
    a = np.deg2rad(20)
    R = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    F = fundamental(K1, K2, R, np.array([0.9, 0.1, 0.2]))
    F = F / np.linalg.norm(F)
    g = np.random.default_rng(0)
    m = np.concatenate([g.uniform(0, [480, 320], (500, 2)), g.uniform(0, [480, 320], (500, 2))], 1).astype(np.float32)
    x1 = np.c_[m[:, :2].astype(np.float64), np.ones(len(m))]
    x2 = np.c_[m[:, 2:].astype(np.float64), np.ones(len(m))]
    Fx1, Ftx2 = x1 @ F.T, x2 @ F  # the float64 reference, with the loss's 1e-8 in the denominator
    ref = np.sum(x2 * Fx1, 1) ** 2 / (Fx1[:, 0] ** 2 + Fx1[:, 1] ** 2 + Ftx2[:, 0] ** 2 + Ftx2[:, 1] ** 2 + 1e-8)
    assert ref.max() > 1e4  # large distances, where float32 loses digits
    d64 = sampson_sq(torch.from_numpy(m), torch.from_numpy(F)).numpy()
    d32 = sampson_sq(torch.from_numpy(m), torch.from_numpy(F.astype(np.float32))).numpy()
    big = ref > 1e3
    assert np.allclose(d64, ref, rtol=1e-9, atol=0)
    assert np.abs(d32[big] / ref[big] - 1).max() > 1e-6  # what float32 gave before
    # the gradient reaches float32 matches
    mt = torch.from_numpy(m).requires_grad_()
    sampson_sq(mt, torch.from_numpy(F)).sum().backward()
    assert mt.grad.dtype == torch.float32 and torch.isfinite(mt.grad).all()
