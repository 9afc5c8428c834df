"""Validation metrics by hand: the released Patch2Pix pose validation and the IMP matching /
pose summary, and the validation curves figure."""

import numpy as np
import pandas as pd
import pytest

from matchrepro.reporting.figures import plot_validation_curves
from matchrepro.training import validation


def test_patch2pix_pose_error_recovers_the_pose(two_view_scene):
    p0, p1, K0, K1, T = two_view_scene
    # the release's approximation (one focal per image: the mean of fx, fy) is exact for square
    # pixels, as in MegaDepth: re-project with fx = fy
    Kq0, Kq1 = K0.copy(), K1.copy()
    Kq0[1, 1], Kq1[1, 1] = K0[0, 0], K1[0, 0]
    p0 = (p0 - K0[:2, 2]) / np.diag(K0)[:2] * Kq0[0, 0] + K0[:2, 2]
    p1 = (p1 - K1[:2, 2]) / np.diag(K1)[:2] * Kq1[0, 0] + K1[:2, 2]
    K0, K1 = Kq0, Kq1
    err = validation.patch2pix_pose_error(p0, p1, K0, K1, T[:3, :3], T[:3, 3])
    assert err < 0.5
    # a wrong pose is far off; fewer than 5 matches is a failure
    assert validation.patch2pix_pose_error(p0, p1, K0, K1, np.eye(3), np.array([0.0, 1.0, 0.0])) > 20
    assert validation.patch2pix_pose_error(p0[:4], p1[:4], K0, K1, T[:3, :3], T[:3, 3]) == np.inf


def test_pose_summary_by_hand():
    s = validation.pose_summary([0.5, 3.0, 7.0, np.inf], [10, 20, 30, 40])
    assert s["pass@1"] == 0.25 and s["pass@5"] == 0.5 and s["pass@10"] == 0.75 and s["pass@4"] == 0.5
    assert s["pose_rate"] == pytest.approx(0.34 * 0.25 + 0.33 * 0.5 + 0.33 * 0.75)
    assert s["median_error"] == pytest.approx(5.0) and s["mean_error"] == pytest.approx((0.5 + 3 + 7 + 180) / 4)
    assert s["matches"] == 25


def test_matching_summary_by_hand():
    pred = [np.array([[0, 1], [2, 3], [4, 4]]), np.zeros((0, 2), int)]
    gt = [np.array([[0, 1], [2, 2]]), np.array([[1, 1]])]
    s = validation.matching_summary(pred, gt, [2.0, np.inf])
    assert s["precision"] == pytest.approx(1 / 3) and s["recall"] == pytest.approx(1 / 3)
    assert s["f1"] == pytest.approx(1 / 3) and s["matches"] == 1.5
    assert s["auc@10"] == pytest.approx(100 * 0.5 * (1 - 2.0 / 10 / 2) * 1.0, rel=1e-6)


def test_validation_curves_mark_the_kept_step(tmp_path):
    a = tmp_path / "run_a"
    a.mkdir()
    pd.DataFrame({"step": [2, 4, 6], "epoch": [0, 0, 1], "pose_rate": [0.1, 0.3, 0.2], "pass@1": [0, .1, .1],
                  "pass@5": [.1, .3, .2], "pass@10": [.2, .5, .3], "median_error": [30, 12, 15],
                  "best": [1, 1, 0]}).to_csv(a / "validation.csv", index=False)
    b = tmp_path / "run_b"
    b.mkdir()
    (b / "validation.csv").write_text("step\n")  # a run without validation
    out = plot_validation_curves([a / "validation.csv", b / "validation.csv"], tmp_path / "fig")
    assert sorted(p.name for p in out) == ["validation_curves.pdf", "validation_curves.png"]
    assert all(p.stat().st_size > 5000 for p in out)
    assert plot_validation_curves([b / "validation.csv"], tmp_path / "fig2") == []
