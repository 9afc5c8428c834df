"""IMP training data from one MegaDepth scene (imp.md §3.1): keypoints + ground-truth matches.

Step 1: features for every valid image at full stored resolution (no resize), with the depth
sampled at ``(int(y), int(x))`` of each keypoint. Step 2: candidate pairs with
``min_overlap <= overlap[i, j] <= max_overlap`` (directional, see
:func:`~matchrepro.preprocessing.imp_pairs.candidate_pairs`), at least ``min_shared_points``
shared SfM points, ``min_keypoints`` keypoints in both images and more than ``min_depth_points``
keypoints with depth; ground truth by reprojection:

1. lift keypoints of image 1 with valid depth to 3D (``pixel_center: colmap`` adds 0.5 before
   applying K^-1, as the release does, since MegaDepth K follows COLMAP's convention);
2. transform by ``T_w2c2 @ inv(T_w2c1)``, project with K2 (and subtract 0.5 again);
3. nearest keypoint of image 2 within ``max_error_px`` (5 px);
4. cycle check: the matched keypoint of image 2, lifted with its own depth, reprojects within
   ``max_error_px`` of the keypoint of image 1;
5. greedy one-to-one filter in keypoint order of image 1.

``procedure: released`` (the default) is dump/dump_megadepth.py as it runs: the nearest keypoint
of step 3 is searched among the image-2 keypoints *with depth* only; every ordered pair (i, j) is
a candidate; the pair is kept when more than ``min_inliers`` matches pass step 4 (before the
one-to-one filter); images are decoded in colour and converted with BGR2GRAY. ``corrected`` (this
project's earlier reading) searches all image-2 keypoints and drops a match whose nearest one has
no depth, takes i < j only, counts ``min_inliers`` after step 5 and decodes to grayscale directly.

Output HDF5 per scene: ``images/<name>/{keypoints (N, 2), scores (N,), descriptors (N, D),
depth (N,)}`` with attribute ``image_size`` (w, h) (names relative to ``Undistorted_SfM``, '/' -> '|') and ``pairs/<k>/{matches (M, 2)}``
with attributes ``name1``, ``name2``, ``K1``, ``K2``, ``T_w2c1``, ``T_w2c2``, ``overlap``.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
from tqdm import tqdm

from matchrepro.datasets.megadepth import read_depth, read_scene_info
from matchrepro.features import get_extractor
from matchrepro.io import atomic_path, image_key, read_image
from matchrepro.preprocessing.imp_pairs import candidate_pairs, check_procedure

DEFAULTS = {
    "min_overlap": 0.1,
    "max_overlap": 0.8,
    "min_shared_points": 20,
    "min_keypoints": 1024,
    "min_depth_points": 20,
    "min_inliers": 20,
    "max_error_px": 5.0,
    "pixel_center": "colmap",
    "procedure": "released",
}


def _lift(kpts: np.ndarray, depth: np.ndarray, K: np.ndarray, shift: float) -> np.ndarray:
    """3-D camera points of pixels with z-depth; K may be any invertible 3x3 (a warped view's
    ``S H S⁻¹ K`` too), so rays are scaled to z = 1 before the depth is applied."""
    xy = kpts.astype(np.float64) + shift
    rays = np.concatenate([xy, np.ones((len(xy), 1))], 1) @ np.linalg.inv(K).T
    return rays / rays[:, 2:3] * depth[:, None]


def _project(X: np.ndarray, K: np.ndarray, shift: float) -> tuple[np.ndarray, np.ndarray]:
    uvw = X @ K.T
    with np.errstate(divide="ignore", invalid="ignore"):
        return uvw[:, :2] / uvw[:, 2:3] - shift, uvw[:, 2]


def _nearest(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each row of a (N, 2): index of and distance to the nearest row of b (M, 2)."""
    d2 = (a[:, None, 0] - b[None, :, 0]) ** 2 + (a[:, None, 1] - b[None, :, 1]) ** 2
    idx = np.argmin(d2, axis=1)
    return idx, np.sqrt(d2[np.arange(len(a)), idx])


def ground_truth_matches(f1: dict, f2: dict, K1, K2, T1, T2, max_err: float, shift: float,
                         procedure: str = "released", return_cycle_count: bool = False):
    """(M, 2) one-to-one GT matches between keypoint sets with depth (see module docstring);
    with ``return_cycle_count`` also the number of matches that passed the cycle check (before
    the one-to-one filter), which the released dump compares with ``min_inliers``."""
    v1 = np.flatnonzero(f1["depth"] > 0)
    v2 = np.flatnonzero(f2["depth"] > 0)
    if len(v1) == 0 or len(v2) == 0:
        empty = np.zeros((0, 2), np.int64)
        return (empty, 0) if return_cycle_count else empty
    T21 = T2 @ np.linalg.inv(T1)
    X1 = _lift(f1["keypoints"][v1], f1["depth"][v1], K1, shift)
    uv, z = _project(X1 @ T21[:3, :3].T + T21[:3, 3], K2, shift)
    ok = z > 0
    # released: the nearest among image-2 keypoints with depth; corrected: among all of them
    domain = v2 if procedure == "released" else np.arange(len(f2["keypoints"]))
    idx, dist = _nearest(np.where(ok[:, None], uv, 1e9), f2["keypoints"][domain].astype(np.float64))
    cand = np.flatnonzero(ok & (dist <= max_err))
    i1, i2 = v1[cand], domain[idx[cand]]
    # cycle check with the depth of the matched keypoint in image 2
    d2 = f2["depth"][i2]
    has = d2 > 0
    i1, i2 = i1[has], i2[has]
    T12 = np.linalg.inv(T21)
    X2 = _lift(f2["keypoints"][i2], f2["depth"][i2], K2, shift)
    back, zb = _project(X2 @ T12[:3, :3].T + T12[:3, 3], K1, shift)
    keep = (zb > 0) & (np.linalg.norm(back - f1["keypoints"][i1], axis=1) <= max_err)
    i1, i2 = i1[keep], i2[keep]
    used1, used2, out = set(), set(), []
    for a, b in zip(i1.tolist(), i2.tolist()):
        if a in used1 or b in used2:
            continue
        used1.add(a)
        used2.add(b)
        out.append((a, b))
    out = np.array(out, np.int64).reshape(-1, 2)
    return (out, len(i1)) if return_cycle_count else out


def run(root: str | Path, scene_info_file: str | Path, features_cfg: dict, params: dict, out: str | Path,
        weights: str | Path | None = None) -> int:
    """Dump features and GT matches of one scene to ``out`` (.h5); returns the pair count."""
    p = {**DEFAULTS, **params}
    released = check_procedure(p) == "released"
    root = Path(root)
    info = read_scene_info(scene_info_file)
    shift = 0.5 if p["pixel_center"] == "colmap" else 0.0
    extractor = get_extractor(features_cfg, weights)
    feats: dict[int, dict] = {}
    names = {}
    for i in tqdm(np.flatnonzero(info.valid), desc=f"features {info.scene}", unit="img"):
        img = read_image(root / info.image_paths[i], grayscale=True, gray_from_color=released)
        f = extractor(img)
        f["image_size"] = np.array([img.shape[1], img.shape[0]], np.int64)  # (w, h) pixels
        depth = read_depth(root / info.depth_paths[i])
        xi = np.clip(f["keypoints"][:, 0].astype(int), 0, depth.shape[1] - 1)
        yi = np.clip(f["keypoints"][:, 1].astype(int), 0, depth.shape[0] - 1)
        f["depth"] = depth[yi, xi].astype(np.float32)
        feats[i] = f
        names[i] = info.image_paths[i].split("Undistorted_SfM/", 1)[-1]
    ov = info.overlap_matrix
    n_pairs = 0
    with atomic_path(out, suffix=".h5") as tmp, h5py.File(tmp, "w") as h:
        h.attrs["scene"] = info.scene
        for i, f in feats.items():
            g = h.create_group(f"images/{image_key(names[i])}")
            for k in ("keypoints", "scores", "descriptors", "depth"):
                g[k] = f[k]
            g.attrs["image_size"] = f["image_size"]
        idx = sorted(feats)
        for a, b in tqdm(list(candidate_pairs(info, idx, p)), desc=f"pairs {info.scene}", unit="pair"):
            i, j = idx[a], idx[b]
            f1, f2 = feats[i], feats[j]
            if min(len(f1["keypoints"]), len(f2["keypoints"])) < p["min_keypoints"]:
                continue
            if min((f1["depth"] > 0).sum(), (f2["depth"] > 0).sum()) <= p["min_depth_points"]:
                continue
            m, n_cycle = ground_truth_matches(f1, f2, info.intrinsics[i], info.intrinsics[j], info.poses[i],
                                              info.poses[j], p["max_error_px"], shift, p["procedure"],
                                              return_cycle_count=True)
            if (n_cycle if released else len(m)) <= p["min_inliers"]:
                continue
            g = h.create_group(f"pairs/{n_pairs}")
            g["matches"] = m
            g.attrs.update(name1=names[i], name2=names[j], K1=info.intrinsics[i], K2=info.intrinsics[j],
                           T_w2c1=info.poses[i], T_w2c2=info.poses[j], overlap=ov[i, j])
            n_pairs += 1
        h.attrs["num_pairs"] = n_pairs
    return n_pairs
