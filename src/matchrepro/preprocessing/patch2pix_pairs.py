"""Patch2Pix training pairs from one MegaDepth scene (patch2pix.md §3.1), seeded.

A pair (i, j) is kept when ``min_overlap <= overlap[i, j] < 1``, both images are landscape
(``w >= h`` with ``w, h = 2 * principal point``), both aspect ratios lie in ``aspect_range`` and
the mean Sampson distance of their shared SfM points under the ground-truth F is at most
``max_sampson``. Images are cropped from the bottom/right to exactly ``target_aspect``
(principal point unchanged). Valid pairs are shuffled with a seeded generator (the original is
unseeded) and at most ``max_pairs`` are kept per scene.

Output ``.npz`` per scene: ``im1``, ``im2`` (names relative to ``Undistorted_SfM``), ``overlap``,
``K1``, ``K2`` (N, 3, 3), ``R`` (N, 3, 3) and ``t`` (N, 3) with ``R = R2 R1^T``,
``t = R2 (c1 - c2)`` (cam1 -> cam2, not normalised), ``crop1``, ``crop2`` (N, 2) = (dw, dh).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from matchrepro.datasets.megadepth import read_scene_info
from matchrepro.geometry.epipolar import skew
from matchrepro.io import atomic_path

DEFAULTS = {
    "min_overlap": 0.35,
    "aspect_range": [1.3, 1.7],
    "target_aspect": 1.5,
    "max_sampson": 1.0,
    "max_pairs": 500,
    "exclude_scenes": ["0024", "0021", "0025", "1589", "0019", "0008", "0032", "0063"],
    "seed": 1,
}


def crop_to_aspect(w: float, h: float, target: float = 1.5) -> tuple[float, float]:
    """(dw, dh) to remove from the right/bottom so that the image is exactly ``target``:1."""
    r = w / h
    if r > target:
        dh = h % 2
        return w - (h - dh) * target, dh
    if r < target:
        dw = w % 3
        return dw, h - (w - dw) / target
    return 0.0, 0.0


def fundamental(K1, K2, R, t) -> np.ndarray:
    """F with ``x2^T F x1 = 0`` for pixels: ``K2^-T [t]_x R K1^-1``."""
    return np.linalg.inv(K2).T @ skew(t) @ R @ np.linalg.inv(K1)


def sampson(F: np.ndarray, x1: np.ndarray, x2: np.ndarray) -> np.ndarray:
    """(N,) Sampson distances (pixels squared) of correspondences x1 (N, 2) <-> x2 (N, 2)."""
    a = np.concatenate([x1, np.ones((len(x1), 1))], 1)
    b = np.concatenate([x2, np.ones((len(x2), 1))], 1)
    Fa, Ftb = a @ F.T, b @ F
    num = np.sum(b * Fa, 1) ** 2
    return num / (Fa[:, 0] ** 2 + Fa[:, 1] ** 2 + Ftb[:, 0] ** 2 + Ftb[:, 1] ** 2)


def select_pairs(scene_info_file: str | Path, params: dict) -> dict[str, np.ndarray]:
    p = {**DEFAULTS, **params}
    info = read_scene_info(scene_info_file)
    ov = info.overlap_matrix
    valid = info.valid
    lo_ar, hi_ar = p["aspect_range"]
    sizes, crops, ok_img = {}, {}, np.zeros(len(valid), bool)
    for i in np.flatnonzero(valid):
        K = info.intrinsics[i]
        w, h = 2 * K[0, 2], 2 * K[1, 2]
        if w >= h and lo_ar <= w / h <= hi_ar:
            ok_img[i] = True
            sizes[i] = (w, h)
            crops[i] = crop_to_aspect(w, h, p["target_aspect"])
    id2d = info.extra.get("points3D_id_to_2D")
    cand = [(i, j) for i, j in zip(*np.nonzero((ov >= p["min_overlap"]) & (ov < 1)))
            if i != j and ok_img[i] and ok_img[j]]
    rng = np.random.default_rng([int(p["seed"]), int("".join(c for c in info.scene if c.isdigit()) or 0)])
    order = rng.permutation(len(cand))
    rows = []
    for k in order:
        if len(rows) >= p["max_pairs"]:
            break
        i, j = cand[k]
        T1, T2 = info.poses[i], info.poses[j]
        R = T2[:3, :3] @ T1[:3, :3].T
        c1, c2 = -T1[:3, :3].T @ T1[:3, 3], -T2[:3, :3].T @ T2[:3, 3]
        t = T2[:3, :3] @ (c1 - c2)
        K1, K2 = info.intrinsics[i], info.intrinsics[j]
        if id2d is not None:
            shared = sorted(set(id2d[i]) & set(id2d[j]))
            if shared:
                x1 = np.array([id2d[i][s] for s in shared], np.float64)
                x2 = np.array([id2d[j][s] for s in shared], np.float64)
                if np.mean(sampson(fundamental(K1, K2, R, t), x1, x2)) > p["max_sampson"]:
                    continue
        strip = lambda s: s.split("Undistorted_SfM/", 1)[-1]  # noqa: E731
        rows.append((strip(info.image_paths[i]), strip(info.image_paths[j]), ov[i, j], K1, K2, R, t,
                     crops[i], crops[j]))
    cols = list(zip(*rows)) if rows else [[] for _ in range(9)]
    return {
        "im1": np.array(cols[0], dtype=str), "im2": np.array(cols[1], dtype=str),
        "overlap": np.array(cols[2], np.float64),
        "K1": np.array(cols[3], np.float64).reshape(-1, 3, 3), "K2": np.array(cols[4], np.float64).reshape(-1, 3, 3),
        "R": np.array(cols[5], np.float64).reshape(-1, 3, 3), "t": np.array(cols[6], np.float64).reshape(-1, 3),
        "crop1": np.array(cols[7], np.float64).reshape(-1, 2), "crop2": np.array(cols[8], np.float64).reshape(-1, 2),
        "num_candidates": np.array(len(cand)),
    }


def run(scene_info_file: str | Path, params: dict, out: str | Path) -> int:
    """Select the pairs of one scene and write them to ``out`` (.npz); returns the count."""
    res = select_pairs(scene_info_file, params)
    with atomic_path(out, suffix=".npz") as tmp:
        np.savez(tmp, **res)
    return len(res["im1"])
