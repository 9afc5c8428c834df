"""YFCC100M as OANet's ``raw_data`` (used by IMP/SGMNet): per-image calibration and pair lists.

Layout (protocols.md §2.1): ``raw_data/yfcc100m/<scene>/test/images.txt`` and
``calibration.txt`` list relative file names (``images/<id>.jpg``,
``calibration/calibration_<id>.h5``); each calibration ``.h5`` holds ``K`` (3x3), ``R`` (3x3),
``T`` (3x1; world-to-camera, x_cam = R x_world + T) and ``imsize`` ([[w, h]]);
``raw_data/pairs/<scene>-te-<n>-pairs.pkl`` is a pickled list whose entries start with two
indices into ``images.txt``. Relative pose: ``R_rel = R_j R_i^T``, ``t_rel = T_j - R_rel T_i``.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from matchrepro.datasets.pairs import PairInfo
from matchrepro.errors import DatasetError
from matchrepro.io import read_h5_dataset


def read_calibration(path: str | Path) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """(K (3, 3), T_w2c (4, 4), (w, h)) from an OANet calibration ``.h5``."""
    K = read_h5_dataset(path, "K").astype(np.float64).reshape(3, 3)
    R = read_h5_dataset(path, "R").astype(np.float64).reshape(3, 3)
    t = read_h5_dataset(path, "T").astype(np.float64).reshape(3)
    w, h = read_h5_dataset(path, "imsize").ravel()[:2]
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, t
    return K, T, (int(w), int(h))


def _lines(path: Path) -> list[str]:
    if not path.is_file():
        raise DatasetError(f"file not found: {path}")
    return [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]


def read_scene_pairs(raw_root: str | Path, scene: str, principal_point: str = "calibration") -> list[PairInfo]:
    """Test pairs of one scene, paths relative to ``raw_data/yfcc100m``.

    Args:
        raw_root: the ``raw_data`` folder.
        principal_point: ``calibration`` keeps K as stored; ``image_centre`` overwrites the
            principal point with ((w-1)/2, (h-1)/2) as IMP's dumper does.
    """
    raw_root = Path(raw_root)
    test = raw_root / "yfcc100m" / scene / "test"
    images = _lines(test / "images.txt")
    calibs = _lines(test / "calibration.txt")
    if len(images) != len(calibs):
        raise DatasetError(f"{test}: images.txt has {len(images)} lines, calibration.txt {len(calibs)}")
    pkls = sorted((raw_root / "pairs").glob(f"{scene}-te-*-pairs.pkl"))
    if not pkls:
        raise DatasetError(f"no pair list {raw_root / 'pairs'}/{scene}-te-*-pairs.pkl")
    try:
        with open(pkls[0], "rb") as f:
            entries = pickle.load(f)
    except Exception as e:  # unpickling errors vary
        raise DatasetError(f"{pkls[0]}: cannot unpickle ({type(e).__name__}: {e})") from None
    cache: dict[int, tuple] = {}

    def calib(k: int):
        if k not in cache:
            if not 0 <= k < len(calibs):
                raise DatasetError(f"{pkls[0]}: index {k} outside images.txt ({len(images)} images)")
            K, T, (w, h) = read_calibration(test / calibs[k])
            if principal_point == "image_centre":
                K = K.copy()
                K[0, 2], K[1, 2] = (w - 1) / 2.0, (h - 1) / 2.0
            cache[k] = (K, T)
        return cache[k]

    out = []
    for e in entries:
        i, j = int(e[0]), int(e[1])
        (K0, T0), (K1, T1) = calib(i), calib(j)
        out.append(PairInfo(len(out), f"{scene}/test/{images[i]}", f"{scene}/test/{images[j]}", 0, 0,
                            K0, K1, T1 @ np.linalg.inv(T0)))
    return out
