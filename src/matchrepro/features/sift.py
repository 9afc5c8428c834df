"""SIFT / RootSIFT keypoints and descriptors through OpenCV."""

from __future__ import annotations

import cv2
import numpy as np


class SIFT:
    """OpenCV SIFT; ``root_sift`` applies RootSIFT (L1-normalise, square root), so
    descriptors are L2-unit vectors either way; keypoints are sorted by descending response.

    Config keys: ``max_keypoints`` (OpenCV ``nfeatures``, the strongest responses),
    ``root_sift``, ``contrast_threshold``.
    """

    def __init__(self, cfg: dict):
        self.cfg = cfg
        self.sift = cv2.SIFT_create(
            nfeatures=int(cfg["max_keypoints"]), contrastThreshold=float(cfg["contrast_threshold"])
        )

    def __call__(self, image: np.ndarray) -> dict:
        """Args: image (H, W) uint8 or float32 in [0, 255].
        Returns: ``keypoints`` (N, 2) float32 pixels, ``scores`` (N,), ``descriptors`` (N, 128)."""
        img = image if image.dtype == np.uint8 else np.clip(image, 0, 255).astype(np.uint8)
        kps, desc = self.sift.detectAndCompute(img, None)
        if desc is None or len(kps) == 0:
            return {
                "keypoints": np.zeros((0, 2), np.float32),
                "scores": np.zeros(0, np.float32),
                "descriptors": np.zeros((0, 128), np.float32),
            }
        # by descending response (imp.md §1.2), then the budget; ties (SIFT repeats a keypoint per
        # orientation) broken by position, size and angle, so the order never depends on the
        # order OpenCV returned them in
        order = sorted(range(len(kps)), key=lambda i: (-kps[i].response, kps[i].pt[0], kps[i].pt[1], kps[i].size,
                                                       kps[i].angle))[: int(self.cfg["max_keypoints"])]
        kps = [kps[i] for i in order]
        desc = desc[order].astype(np.float32)
        if self.cfg["root_sift"]:
            desc = np.sqrt(desc / (np.abs(desc).sum(1, keepdims=True) + 1e-8))
        else:
            desc = desc / (np.linalg.norm(desc, axis=1, keepdims=True) + 1e-8)
        return {
            "keypoints": np.array([k.pt for k in kps], np.float32),
            "scores": np.array([k.response for k in kps], np.float32),
            "descriptors": desc,
        }
