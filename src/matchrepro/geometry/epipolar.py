"""Epipolar geometry in camera-normalised coordinates."""

from __future__ import annotations

import numpy as np


def skew(v: np.ndarray) -> np.ndarray:
    """(3,) vector -> (3, 3) cross-product matrix ``[v]_x``."""
    x, y, z = v
    return np.array([[0, -z, y], [z, 0, -x], [-y, x, 0]], dtype=np.float64)


def essential_from_pose(T_0to1: np.ndarray) -> np.ndarray:
    """Essential matrix ``[t]_x R`` so that ``x1^T E x0 = 0`` for normalised points."""
    return skew(T_0to1[:3, 3]) @ T_0to1[:3, :3]


def symmetric_epipolar_distance_sq(x0n: np.ndarray, x1n: np.ndarray, E: np.ndarray) -> np.ndarray:
    """Squared symmetric epipolar distance (SuperGlue/LoFTR definition).

    Args:
        x0n, x1n: (N, 2) camera-normalised points of image 0 and image 1.
        E: (3, 3) essential matrix with ``x1^T E x0 = 0``.
    Returns:
        (N,) ``r0^2 + r1^2``: the sum of squared point-to-epipolar-line distances, in
        normalised units squared.
    """
    x0 = np.concatenate([x0n, np.ones((len(x0n), 1))], 1)
    x1 = np.concatenate([x1n, np.ones((len(x1n), 1))], 1)
    Ex0 = x0 @ E.T
    Etx1 = x1 @ E
    num = np.sum(x1 * Ex0, -1) ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        return num * (
            1.0 / (Ex0[:, 0] ** 2 + Ex0[:, 1] ** 2) + 1.0 / (Etx1[:, 0] ** 2 + Etx1[:, 1] ** 2)
        )


def epipolar_line_distance_px(
    pts0: np.ndarray, pts1: np.ndarray, K0: np.ndarray, K1: np.ndarray, T_0to1: np.ndarray
) -> np.ndarray:
    """(N,) distance in image-1 pixels from ``pts1`` to the epipolar lines of ``pts0``."""
    F = np.linalg.inv(K1).T @ essential_from_pose(T_0to1) @ np.linalg.inv(K0)
    x0 = np.concatenate([pts0, np.ones((len(pts0), 1))], 1)
    x1 = np.concatenate([pts1, np.ones((len(pts1), 1))], 1)
    lines = x0 @ F.T
    return np.abs(np.sum(lines * x1, -1)) / np.linalg.norm(lines[:, :2], axis=-1)
