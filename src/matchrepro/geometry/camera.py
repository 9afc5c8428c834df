"""Intrinsics and poses: scaling on resize, EXIF rotation, relative poses.

Conventions: K is 3x3 in pixels of the image it belongs to; poses are 4x4 world-to-camera;
``T_0to1`` maps camera-0 coordinates to camera-1 coordinates (x1 = R x0 + t).
"""

from __future__ import annotations

import numpy as np


def scale_intrinsics(K: np.ndarray, scale_xy: tuple[float, float]) -> np.ndarray:
    """Intrinsics of a resized image, SuperGlue convention (no half-pixel correction).

    Args:
        K: (3, 3) intrinsics of the original image.
        scale_xy: ``(sx, sy) = (w / w_new, h / h_new)``, original over resized size.
    Returns:
        (3, 3) ``diag(1/sx, 1/sy, 1) @ K``.
    """
    sx, sy = scale_xy
    return np.diag([1.0 / sx, 1.0 / sy, 1.0]) @ np.asarray(K, dtype=np.float64)


def rotate_intrinsics(K: np.ndarray, image_wh: tuple[int, int], rot: int) -> np.ndarray:
    """Intrinsics after ``np.rot90(image, k=rot)`` (counter-clockwise quarter turns).

    Args:
        K: (3, 3) intrinsics of the stored image.
        image_wh: ``(w, h)`` of the stored (unrotated) image in pixels.
        rot: number of quarter turns, 0..3.
    Returns:
        (3, 3) intrinsics of the rotated image. One turn maps pixel (x, y) to (y, w-1-x).
    """
    K = np.asarray(K, dtype=np.float64)
    w, h = image_wh
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    rot = rot % 4
    if rot == 0:
        return K.copy()
    if rot == 1:
        return np.array([[fy, 0, cy], [0, fx, w - 1 - cx], [0, 0, 1]], dtype=np.float64)
    if rot == 2:
        return np.array([[fx, 0, w - 1 - cx], [0, fy, h - 1 - cy], [0, 0, 1]], dtype=np.float64)
    return np.array([[fy, 0, h - 1 - cy], [0, fx, cx], [0, 0, 1]], dtype=np.float64)


def inplane_rotation(rot: int) -> np.ndarray:
    """4x4 transform from a camera frame to the frame of the same camera after ``rot`` turns.

    With one counter-clockwise image turn, pixel (x, y) -> (y, -x) up to offsets, so camera
    coordinates (X, Y, Z) -> (Y, -X, Z).
    """
    R1 = np.array([[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    T = np.eye(4)
    T[:3, :3] = np.linalg.matrix_power(R1, rot % 4)
    return T


def rotate_relative_pose(T_0to1: np.ndarray, rot0: int, rot1: int) -> np.ndarray:
    """Relative pose between the rotated cameras: ``Rot1 @ T_0to1 @ inv(Rot0)``."""
    return inplane_rotation(rot1) @ np.asarray(T_0to1, np.float64) @ inplane_rotation(rot0).T


def relative_pose(T_w2c0: np.ndarray, T_w2c1: np.ndarray) -> np.ndarray:
    """``T_0to1 = T_w2c1 @ inv(T_w2c0)`` for 4x4 world-to-camera poses."""
    return np.asarray(T_w2c1, np.float64) @ np.linalg.inv(np.asarray(T_w2c0, np.float64))


def pixels_to_camera(pts: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Camera-normalised coordinates ``((x - cx) / fx, (y - cy) / fy)`` (skew ignored).

    Args:
        pts: (N, 2) pixels. K: (3, 3).
    Returns:
        (N, 2) unitless coordinates on the plane z = 1.
    """
    pts = np.asarray(pts, dtype=np.float64).reshape(-1, 2)
    return (pts - K[[0, 1], [2, 2]][None]) / K[[0, 1], [0, 1]][None]


def project(points_cam: np.ndarray, K: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Project (N, 3) camera-frame points; returns (N, 2) pixels and (N,) depths z."""
    points_cam = np.asarray(points_cam, dtype=np.float64)
    z = points_cam[:, 2]
    uvw = points_cam @ np.asarray(K, np.float64).T
    with np.errstate(divide="ignore", invalid="ignore"):
        return uvw[:, :2] / uvw[:, 2:3], z


def unproject(pts: np.ndarray, depth: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Back-project (N, 2) pixels with (N,) z-depths to (N, 3) camera-frame points."""
    xy = pixels_to_camera(pts, K)
    return np.concatenate([xy, np.ones_like(xy[:, :1])], 1) * np.asarray(depth)[:, None]


def transform(T: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 4x4 rigid transform to (N, 3) points."""
    return points @ T[:3, :3].T + T[:3, 3][None]
