"""MegaDepth in the D2-Net layout (protocols.md §2.3).

``scene_info/<scene>.npz`` (``np.savez`` of object arrays, needs ``allow_pickle``) holds
``image_paths``, ``depth_paths``, ``intrinsics`` (3x3), ``poses`` (4x4 world-to-camera),
``overlap_matrix`` (N x N, -1 invalid, [i, j] = shared / points seen in i), ``scale_ratio_matrix``,
``angles`` (degrees), ``n_points3D``, ``points3D_id_to_2D``, ``points3D_id_to_ndepth``; invalid
images have ``None`` entries. Paths are relative to the MegaDepth root. Depth maps are HDF5
with dataset ``depth`` (float32, H x W as the image, 0 = invalid; z-depth up to scale).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from matchrepro.errors import DatasetError
from matchrepro.io import read_h5_dataset

REQUIRED_KEYS = ("image_paths", "depth_paths", "intrinsics", "poses", "overlap_matrix")


@dataclass
class SceneInfo:
    """Contents of one scene_info file; ``valid`` marks images with all of path/depth/K/pose."""

    scene: str
    image_paths: list
    depth_paths: list
    intrinsics: list
    poses: list
    overlap_matrix: np.ndarray
    extra: dict

    @property
    def valid(self) -> np.ndarray:
        return np.array(
            [p is not None and d is not None and k is not None and T is not None
             for p, d, k, T in zip(self.image_paths, self.depth_paths, self.intrinsics, self.poses)]
        )


def read_scene_info(path: str | Path) -> SceneInfo:
    """Load a D2-Net scene_info ``.npz`` with a one-line error on missing file or keys."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"scene_info not found: {path}")
    try:
        z = np.load(path, allow_pickle=True)
    except Exception as e:  # zipfile/pickle errors vary
        raise DatasetError(f"{path}: cannot read scene_info ({type(e).__name__}: {e})") from None
    if isinstance(z, dict):  # a pickled dict, not an .npz archive
        kind = ("LoFTR's MegaDepth-1500 test scene_info (a pickled dict with 'pair_infos')"
                if "pair_infos" in z else f"a pickled dict with keys {sorted(map(str, z))[:8]}")
        raise DatasetError(f"{path}: this is {kind}, not a D2-Net scene_info .npz archive with "
                           f"{', '.join(REQUIRED_KEYS)} (the megadepth_d2net format reads D2-Net's "
                           "preprocessed scene_info; MegaDepth-1500 is not read as a test set here)")
    if not hasattr(z, "files"):
        raise DatasetError(f"{path}: a {type(z).__name__}, not a D2-Net scene_info .npz archive")
    try:
        with z:
            data = {k: z[k] for k in z.files}
    except Exception as e:
        raise DatasetError(f"{path}: cannot read scene_info ({type(e).__name__}: {e})") from None
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        raise DatasetError(f"{path}: missing keys {missing} (not a D2-Net scene_info)")
    return SceneInfo(
        scene=path.name.split(".")[0],
        image_paths=list(data["image_paths"]),
        depth_paths=list(data["depth_paths"]),
        intrinsics=[None if k is None else np.asarray(k, np.float64) for k in data["intrinsics"]],
        poses=[None if T is None else np.asarray(T, np.float64) for T in data["poses"]],
        overlap_matrix=np.asarray(data["overlap_matrix"], np.float64),
        extra={k: v for k, v in data.items() if k not in REQUIRED_KEYS},
    )


def read_depth(path: str | Path) -> np.ndarray:
    """(H, W) float32 depth from a MegaDepth ``.h5`` (dataset ``depth``; 0 = invalid)."""
    return read_h5_dataset(path, "depth").astype(np.float32)
