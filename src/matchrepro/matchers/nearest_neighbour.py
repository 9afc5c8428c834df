"""Mutual nearest-neighbour matching with an optional ratio test."""

from __future__ import annotations

import numpy as np


def match_nearest_neighbour(
    desc0: np.ndarray, desc1: np.ndarray, mutual: bool = True, ratio: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Match L2-normalised descriptors.

    Args:
        desc0: (N0, D), desc1: (N1, D) unit vectors.
        mutual: keep only pairs that are each other's nearest neighbour.
        ratio: Lowe's ratio on Euclidean distances (nearest / second nearest < ratio);
            ``None`` disables it.
    Returns:
        matches (K, 2) int64 indices (i0, i1), scores (K,) cosine similarity.
    """
    if len(desc0) == 0 or len(desc1) == 0:
        return np.zeros((0, 2), np.int64), np.zeros(0, np.float32)
    sim = desc0 @ desc1.T
    nn01 = np.argmax(sim, axis=1)
    keep = np.ones(len(desc0), bool)
    if mutual:
        nn10 = np.argmax(sim, axis=0)
        keep &= nn10[nn01] == np.arange(len(desc0))
    if ratio is not None and len(desc1) > 1:
        dist = np.sqrt(np.clip(2.0 - 2.0 * sim, 0.0, None))
        two = np.partition(dist, 1, axis=1)[:, :2]
        keep &= two[:, 0] < ratio * two[:, 1]
    i0 = np.flatnonzero(keep)
    return np.stack([i0, nn01[i0]], 1).astype(np.int64), sim[i0, nn01[i0]].astype(np.float32)
