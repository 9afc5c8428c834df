"""Training-time image augmentations that keep the geometry known.

``photometric``: brightness, contrast, Gaussian blur and noise; pixels do not move.
``random_homography`` + ``warp``: a perspective warp of the whole image, ``H`` (3, 3) mapping
original pixels to warped pixels (x = column, pixel centres at integers, as ``cv2.warpPerspective``),
so a point ``x`` of the original image is at ``H x`` in the warped one and a camera ``K``
becomes ``H K`` (the same centre and rotation: the epipolar geometry stays exact).
"""

from __future__ import annotations

import cv2
import numpy as np


def photometric(image: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """uint8 image (any channels) with random brightness (±40·s grey levels), contrast
    (×[1 - 0.4 s, 1 + 0.4 s] about the mean), Gaussian blur (half of the time, σ up to 2 s px)
    and Gaussian noise (σ up to 10 s grey levels); ``strength`` s in [0, 1], 0 returns the input."""
    if strength <= 0:
        return image
    x = image.astype(np.float32)
    mean = float(x.mean())
    x = (x - mean) * rng.uniform(1 - 0.4 * strength, 1 + 0.4 * strength) + mean
    x += rng.uniform(-40, 40) * strength
    if rng.random() < 0.5:
        sigma = rng.uniform(0.1, 2.0 * strength + 0.1)
        x = cv2.GaussianBlur(x, (0, 0), sigma)
    x += rng.normal(0, rng.uniform(0, 10 * strength), x.shape).astype(np.float32)
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def random_homography(width: int, height: int, strength: float, rng: np.random.Generator) -> np.ndarray:
    """H (3, 3) moving each image corner by up to ``strength`` × (width, height) in x and y
    (0 gives the identity). Maps original pixels to warped pixels."""
    if strength <= 0:
        return np.eye(3)
    src = np.array([[0, 0], [width - 1, 0], [width - 1, height - 1], [0, height - 1]], np.float32)
    move = rng.uniform(-strength, strength, (4, 2)) * np.array([width, height])
    H = cv2.getPerspectiveTransform(src, (src + move).astype(np.float32))
    return H / H[2, 2]


def warp(image: np.ndarray, H: np.ndarray) -> np.ndarray:
    """The image seen through H, same size (outside pixels black)."""
    h, w = image.shape[:2]
    return cv2.warpPerspective(image, H, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)


def apply_homography(H: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """(N, 2) pixels -> (N, 2) pixels under H (float64)."""
    p = np.concatenate([np.asarray(pts, np.float64), np.ones((len(pts), 1))], 1) @ np.asarray(H, np.float64).T
    return p[:, :2] / p[:, 2:3]
