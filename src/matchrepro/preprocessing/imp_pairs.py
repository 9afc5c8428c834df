"""IMP online training pairs of one MegaDepth scene: the pair list only, no features.

The same pair selection as ``imp_dump`` step 2 without its keypoint filters (imp.md §3.1):
``min_overlap <= overlap[i, j] <= max_overlap`` and at least ``min_shared_points`` shared SfM
points. A D2-Net overlap matrix is directional ([i, j] = shared points / points of i): with
``procedure: released`` (the release's dump) every ordered (i, j), i != j, is a candidate filtered
by its own direction, so (i, j) and (j, i) can both be pairs; ``corrected`` takes i < j only. The online sampler (:mod:`matchrepro.datasets.imp_online`) extracts the
features and the ground truth from depth and pose while training, so this step takes seconds
where the dump takes days at full scale.

Output ``.npz`` per scene: ``image_paths`` and ``depth_paths`` (relative to the MegaDepth root,
one per valid image), ``intrinsics`` (N, 3, 3), ``poses`` (N, 4, 4) world-to-camera, and
``pairs`` (M, 2) indices into those lists with their ``overlap`` (M,).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from matchrepro.datasets.megadepth import read_scene_info
from matchrepro.io import atomic_path

DEFAULTS = {"min_overlap": 0.1, "max_overlap": 0.8, "min_shared_points": 20, "procedure": "released"}
PROCEDURES = ("released", "corrected")


def check_procedure(p: dict) -> str:
    proc = p.get("procedure", "released")
    if proc not in PROCEDURES:
        raise ValueError(f"preprocessing params.procedure: {proc!r} (expected one of {PROCEDURES})")
    return proc


def candidate_pairs(info, indices, p: dict):
    """Yield ``(a, b)`` positions into ``indices`` (scene image indices) whose images overlap
    within [min_overlap, max_overlap] (``overlap[i, j]``, directional) and share at least
    ``min_shared_points`` SfM points: every ordered a != b (``released``) or a < b (``corrected``)."""
    id2d = info.extra.get("points3D_id_to_2D")
    ov = info.overlap_matrix
    directed = check_procedure(p) == "released"
    for a in range(len(indices)):
        for b in range(len(indices)):
            if b == a or (b < a and not directed):
                continue
            i, j = indices[a], indices[b]
            if not p["min_overlap"] <= ov[i, j] <= p["max_overlap"]:
                continue
            if id2d is not None and len(set(id2d[i]) & set(id2d[j])) < p["min_shared_points"]:
                continue
            yield a, b


def run(scene_info_file: str | Path, params: dict, out: str | Path) -> int:
    """Write the pair list of one scene to ``out`` (.npz); returns the pair count."""
    p = {**DEFAULTS, **{k: v for k, v in params.items() if k in DEFAULTS}}
    info = read_scene_info(scene_info_file)
    idx = np.flatnonzero(info.valid)
    pairs = list(candidate_pairs(info, idx, p))
    overlap = [info.overlap_matrix[idx[a], idx[b]] for a, b in pairs]
    with atomic_path(out, suffix=".npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, image_paths=np.array([str(info.image_paths[i]) for i in idx]),
                     depth_paths=np.array([str(info.depth_paths[i]) for i in idx]),
                     intrinsics=np.stack([np.asarray(info.intrinsics[i], np.float64) for i in idx]),
                     poses=np.stack([np.asarray(info.poses[i], np.float64) for i in idx]),
                     pairs=np.asarray(pairs, np.int64).reshape(-1, 2), overlap=np.asarray(overlap, np.float64))
    return len(pairs)
