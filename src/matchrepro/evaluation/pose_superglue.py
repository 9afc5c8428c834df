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

from matchrepro.geometry.camera import pixels_to_camera, rotate_intrinsics, scale_intrinsics
from matchrepro.geometry.epipolar import essential_from_pose, symmetric_epipolar_distance_sq
from matchrepro.evaluation.metrics import pose_error_deg, rotation_error_deg, translation_error_deg


@dataclass
class PoseEstimate:
    """R (3, 3), unit t (3,), boolean inlier mask (N,); ``None`` fields mean failure."""

    R: np.ndarray | None
    t: np.ndarray | None
    inliers: np.ndarray
    cheirality: np.ndarray | None = None  # (N,) MAGSAC inliers in front of both cameras (IMP decomposition)


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


def superglue_resized_intrinsics(K_stored: np.ndarray, size_upright, scale_upright, rot: int) -> np.ndarray:
    """K of an upright *resized* image in the order SuperGlue's evaluation computes it
    (``exif_intrinsics: reference``): the stored image's K is scaled by the scales of the
    rotated image (SuperGlue reverses them for odd turns), then rotated with ``w - 1 - cx`` of
    the *resized* stored image. The geometric order (``corrected``: rotate in the stored
    original frame, then scale) puts the principal point up to 1/s - 1 px elsewhere.

    Args:
        K_stored: (3, 3) intrinsics of the stored original image.
        size_upright: ``(w, h)`` of the upright original image (pixels).
        scale_upright: ``(sx, sy)`` = upright original / upright resized size.
        rot: EXIF quarter turns of the image (0..3).
    """
    sx, sy = (float(v) for v in scale_upright)
    K = scale_intrinsics(K_stored, (sx, sy))
    w, h = (int(round(float(a) / b)) for a, b in zip(size_upright, (sx, sy)))  # upright resized
    return rotate_intrinsics(K, (h, w) if rot % 2 else (w, h), rot)


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


# ----------------------------------------------------------------------------------------------
# IMP's own protocol (imp.md §4.1, §1.5): USAC_MAGSAC on original pixels with both K, and IMP's
# cheirality-based decomposition.
# ----------------------------------------------------------------------------------------------

def decompose_essential_imp(E: np.ndarray, kpts0: np.ndarray, kpts1: np.ndarray, K0: np.ndarray,
                            K1: np.ndarray, max_depth: float = 1000.0, return_mask: bool = False):
    """IMP's decomposition: normalise both point sets with ``(K0 + K1) / 2`` (as released),
    triangulate the four (R, +-t) candidates with P0 = [I|0] and keep the one with most points at
    0 < depth < ``max_depth`` in both views. Returns (R (3, 3), unit t (3,)), and with
    ``return_mask`` also the (N,) cheirality mask of the kept candidate."""
    Kbar = (np.asarray(K0, np.float64) + np.asarray(K1, np.float64)) / 2.0
    x0 = pixels_to_camera(kpts0, Kbar)
    x1 = pixels_to_camera(kpts1, Kbar)
    R1, R2, t = cv2.decomposeEssentialMat(E)
    t = t.ravel()
    P0 = np.eye(3, 4)
    best, best_n = None, -1
    for R, tt in ((R1, t), (R1, -t), (R2, t), (R2, -t)):
        P1 = np.concatenate([R, tt[:, None]], 1)
        X = cv2.triangulatePoints(P0, P1, x0.T, x1.T)
        with np.errstate(divide="ignore", invalid="ignore"):
            X = X[:3] / X[3]
        z0 = X[2]
        z1 = (R @ X + tt[:, None])[2]
        ok = (z0 > 0) & (z0 < max_depth) & (z1 > 0) & (z1 < max_depth)
        n = int(np.sum(ok))
        if n > best_n:
            best, best_n, best_ok = (R, tt / np.linalg.norm(tt)), n, ok
    return (*best, best_ok) if return_mask else best


def estimate_relative_pose_magsac(
    kpts0: np.ndarray, kpts1: np.ndarray, K0: np.ndarray, K1: np.ndarray,
    threshold_px: float = 1.0, confidence: float = 0.99999, min_matches: int = 5,
) -> PoseEstimate:
    """IMP protocol: ``cv2.findEssentialMat`` with both camera matrices, USAC_MAGSAC, the
    threshold in pixels (OpenCV scales it by the mean focal), then :func:`decompose_essential_imp`
    on the inliers. Fewer than ``min_matches`` matches or no E -> failure."""
    n = len(kpts0)
    if n < min_matches:
        return PoseEstimate(None, None, np.zeros(n, bool))
    k0 = np.ascontiguousarray(kpts0, np.float64)
    k1 = np.ascontiguousarray(kpts1, np.float64)
    E, mask = cv2.findEssentialMat(k0, k1, np.asarray(K0, np.float64), None, np.asarray(K1, np.float64), None,
                                   method=cv2.USAC_MAGSAC, prob=confidence, threshold=threshold_px)
    if E is None or mask is None or E.shape != (3, 3):
        return PoseEstimate(None, None, np.zeros(n, bool))
    inl = mask.ravel() > 0
    if inl.sum() < min_matches:
        return PoseEstimate(None, None, inl)
    R, t, ok = decompose_essential_imp(E, k0[inl], k1[inl], K0, K1, return_mask=True)
    cheir = np.zeros(n, bool)
    cheir[np.flatnonzero(inl)[ok]] = True
    return PoseEstimate(R, t, inl, cheir)


def epipolar_precision_imp(kpts0, kpts1, K0, K1, T_0to1, threshold: float = 0.005) -> tuple[float, int]:
    """IMP/SGMNet precision: a match is correct iff the mean of its two point-to-epipolar-line
    distances in normalised camera coordinates is below ``threshold``."""
    if len(kpts0) == 0:
        return 0.0, 0
    E = essential_from_pose(T_0to1)
    x0 = np.concatenate([pixels_to_camera(kpts0, K0), np.ones((len(kpts0), 1))], 1)
    x1 = np.concatenate([pixels_to_camera(kpts1, K1), np.ones((len(kpts1), 1))], 1)
    l1 = x0 @ E.T  # epipolar lines in image 1
    l0 = x1 @ E  # in image 0
    r = np.abs(np.sum(x1 * l1, 1))
    d = (r / np.linalg.norm(l1[:, :2], axis=1) + r / np.linalg.norm(l0[:, :2], axis=1)) / 2
    correct = d < threshold
    return float(np.mean(correct)), int(correct.sum())
