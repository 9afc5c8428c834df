"""Homographies on pixel coordinates."""

from __future__ import annotations

import numpy as np


def warp_points(H: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Map (N, 2) pixels by a 3x3 homography and dehomogenise."""
    pts = np.asarray(pts, dtype=np.float64).reshape(-1, 2)
    xyw = np.concatenate([pts, np.ones((len(pts), 1))], 1) @ np.asarray(H, np.float64).T
    with np.errstate(divide="ignore", invalid="ignore"):
        return xyw[:, :2] / xyw[:, 2:3]


def image_corners(width: int, height: int) -> np.ndarray:
    """(4, 2) corners (0,0), (0,h-1), (w-1,0), (w-1,h-1) in (x, y), immatch's fixed order."""
    w, h = width, height
    return np.array([[0, 0], [0, h - 1], [w - 1, 0], [w - 1, h - 1]], dtype=np.float64)


def corner_error(H_est: np.ndarray | None, H_gt: np.ndarray, width: int, height: int) -> float:
    """Mean L2 distance (pixels of image 1) between the 4 corners of image 0 mapped by
    ``H_est`` and by ``H_gt``; NaN when the estimate failed (None)."""
    if H_est is None:
        return float("nan")
    c = image_corners(width, height)
    return float(np.mean(np.linalg.norm(warp_points(H_est, c) - warp_points(H_gt, c), axis=1)))
