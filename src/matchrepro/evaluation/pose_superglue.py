"""Relative pose with the SuperGlue protocol (protocols.md §1.1, §1.2, §7).

The estimator works on camera-normalised coordinates with OpenCV's RANSAC on the essential
matrix. ``recover_pose="reference"`` reproduces the reference code as it runs (the 1e9 passed
positionally is not a distance threshold in the Python bindings, and ``recoverPose`` shrinks
the shared inlier mask in place, so later E candidates never win); ``"corrected"`` scores each
candidate on a fresh copy of the RANSAC mask with an explicit distance threshold.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from matchrepro.geometry.camera import pixels_to_camera
from matchrepro.geometry.epipolar import essential_from_pose, symmetric_epipolar_distance_sq
from matchrepro.evaluation.metrics import pose_error_deg, rotation_error_deg, translation_error_deg


@dataclass
class PoseEstimate:
    """R (3, 3), unit t (3,), boolean inlier mask (N,); ``None`` fields mean failure."""

    R: np.ndarray | None
    t: np.ndarray | None
    inliers: np.ndarray


def focal_for_threshold(K0: np.ndarray, K1: np.ndarray, focal_mean: str) -> float:
    """Focal length (pixels) that divides the RANSAC threshold.

    ``superglue``: mean(fx0, fy1, fx0, fy1), the reference code's typo (zju3dv/LoFTR#165);
    ``all``: mean(fx0, fy0, fx1, fy1) as in glue-factory and immatch.
    """
    if focal_mean == "superglue":
        return float(np.mean([K0[0, 0], K1[1, 1], K0[0, 0], K1[1, 1]]))
    if focal_mean == "all":
        return float(np.mean([K0[0, 0], K0[1, 1], K1[0, 0], K1[1, 1]]))
    raise ValueError(f"unknown focal_mean {focal_mean!r} (expected 'superglue' or 'all')")


def estimate_relative_pose(
    kpts0: np.ndarray,
    kpts1: np.ndarray,
    K0: np.ndarray,
    K1: np.ndarray,
    threshold_px: float = 1.0,
    confidence: float = 0.99999,
    max_iters: int = 1000,
    focal_mean: str = "superglue",
    recover_pose: str = "reference",
    min_matches: int = 5,
    distance_thresh: float = 1e9,
) -> PoseEstimate:
    """Estimate ``T_0to1`` (R, unit t) from matched pixels of the frame K belongs to.

    Args:
        kpts0, kpts1: (N, 2) matched pixels (x, y) in image 0 and image 1.
        K0, K1: (3, 3) intrinsics of those images.
        threshold_px: RANSAC threshold in pixels, divided by the focal of ``focal_mean``.
        distance_thresh: cheirality depth limit (normalised units), ``corrected`` mode only.
    Returns:
        A :class:`PoseEstimate`; fewer than ``min_matches`` matches or no E -> failure.
    """
    n = len(kpts0)
    if n < min_matches:
        return PoseEstimate(None, None, np.zeros(n, bool))
    x0 = pixels_to_camera(kpts0, K0)
    x1 = pixels_to_camera(kpts1, K1)
    thr = threshold_px / focal_for_threshold(K0, K1, focal_mean)
    E, mask = cv2.findEssentialMat(
        x0, x1, np.eye(3), method=cv2.RANSAC, prob=confidence, threshold=thr, maxIters=max_iters
    )
    if E is None or mask is None:
        return PoseEstimate(None, None, np.zeros(n, bool))
    best_n, best = 0, None
    for E_j in np.split(E, len(E) // 3):
        if recover_pose == "reference":
            n_j, R, t, _ = cv2.recoverPose(E_j, x0, x1, np.eye(3), 1e9, mask=mask)
            cand_mask = mask
        elif recover_pose == "corrected":
            m = mask.copy()
            n_j, R, t, cand_mask, _ = cv2.recoverPose(
                E_j, x0, x1, np.eye(3), distanceThresh=distance_thresh, mask=m
            )
        else:
            raise ValueError(f"unknown recover_pose {recover_pose!r}")
        if n_j > best_n:
            best_n, best = n_j, (R, t[:, 0], cand_mask.ravel() > 0)
    if best is None:
        return PoseEstimate(None, None, np.zeros(n, bool))
    return PoseEstimate(best[0], best[1], best[2])


def pose_errors(est: PoseEstimate, T_0to1: np.ndarray, fold: bool = True) -> tuple[float, float, float]:
    """(err_R, err_t, err_pose) in degrees; failures give +inf, NaN (degenerate GT) gives +inf."""
    if est.R is None:
        return float("inf"), float("inf"), float("inf")
    err_R = rotation_error_deg(est.R, T_0to1[:3, :3])
    err_t = translation_error_deg(est.t, T_0to1[:3, 3], fold=fold)
    err_t = float("inf") if np.isnan(err_t) else err_t
    return err_R, err_t, pose_error_deg(err_R, err_t)


def epipolar_precision(
    kpts0: np.ndarray, kpts1: np.ndarray, K0: np.ndarray, K1: np.ndarray, T_0to1: np.ndarray,
    threshold: float = 5e-4,
) -> tuple[float, int, np.ndarray]:
    """(precision, number correct, per-match squared symmetric epipolar errors).

    A match is correct iff its squared symmetric epipolar distance in normalised coordinates
    is strictly below ``threshold``; precision is 0 for a pair without matches.
    """
    if len(kpts0) == 0:
        return 0.0, 0, np.zeros(0)
    d = symmetric_epipolar_distance_sq(
        pixels_to_camera(kpts0, K0), pixels_to_camera(kpts1, K1), essential_from_pose(T_0to1)
    )
    correct = d < threshold
    return float(np.mean(correct)), int(np.sum(correct)), d
