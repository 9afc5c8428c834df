"""ScanNet-1500 in the LoFTR and glue-factory layouts (the SuperGlue pairs file is in pairs.py).

LoFTR (protocols.md §2.2): ``test.npz`` with ``name`` (N x 4: scene id, sub id, frame0, frame1)
and ``rel_pose`` (N x 12: top 3 rows of T_0to1); ``intrinsics.npz`` maps ``sceneXXXX_XX`` to a
3x3 K *of 640 x 480 frames* (LoFTR resizes every frame to 640 x 480 and uses that K as is, whatever
the stored size); images ``<scene>/color/<frame>.jpg``. :func:`intrinsics_for_stored_frame` turns
that K into the K of the frame as stored, the frame every reader here reports K in.
glue-factory: ``pairs_calibrated.txt`` lines ``name0 name1 K0(9) K1(9) T(12 or 16)``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from matchrepro.datasets.pairs import PairInfo
from matchrepro.errors import DatasetError


def _to4x4(v: np.ndarray) -> np.ndarray:
    T = np.eye(4)
    T[:3, :] = np.asarray(v, np.float64).reshape(-1)[:12].reshape(3, 4)
    return T


def read_loftr_pairs(npz_path: str | Path, intrinsics_path: str | Path) -> list[PairInfo]:
    """Pairs from LoFTR's ``test.npz`` + ``intrinsics.npz``; names ``<scene>/color/<frame>.jpg``."""
    for p in (npz_path, intrinsics_path):
        if not Path(p).is_file():
            raise DatasetError(f"file not found: {p}")
    with np.load(npz_path) as z:
        if "name" not in z.files or "rel_pose" not in z.files:
            raise DatasetError(f"{npz_path}: expected arrays 'name' and 'rel_pose'")
        names, poses = z["name"], z["rel_pose"]
    with np.load(intrinsics_path) as z:
        Ks = {k: np.asarray(z[k], np.float64).reshape(3, 3) for k in z.files}
    out = []
    for (sid, sub, f0, f1), rel in zip(names.astype(int), poses):
        scene = f"scene{sid:04d}_{sub:02d}"
        if scene not in Ks:
            raise DatasetError(f"{intrinsics_path}: no intrinsics for {scene}")
        out.append(PairInfo(len(out), f"{scene}/color/{f0}.jpg", f"{scene}/color/{f1}.jpg", 0, 0,
                            Ks[scene], Ks[scene], _to4x4(rel)))
    return out


def intrinsics_for_stored_frame(K: np.ndarray, k_frame: tuple[int, int], stored: tuple[int, int],
                                source: str, image: str) -> np.ndarray:
    """K of a frame stored at ``stored`` = (w, h) px from a K of ``k_frame`` = (w, h) frames, as
    LoFTR's resize to ``k_frame`` implies: ``diag(w / W_k, h / H_k, 1) @ K``.

    Refuses (one line) what cannot be right: a principal point outside the K frame (the file holds
    K of another frame size: set ``intrinsics_frame``), or a stored image whose aspect ratio is
    not the K frame's (a crop, or another camera)."""
    wk, hk = k_frame
    cx, cy = float(K[0, 2]), float(K[1, 2])
    if not (0 < cx < wk and 0 < cy < hk):
        raise DatasetError(f"{source}: principal point ({cx:g}, {cy:g}) lies outside the {wk}x{hk} frame its K "
                           f"is declared for (datasets.<name>.intrinsics_frame); the file holds K of another frame size")
    w, h = stored
    if abs((w / h) / (wk / hk) - 1) > 0.02:
        raise DatasetError(f"{image}: stored at {w}x{h}, not a resized copy of the {wk}x{hk} frames that {source} "
                           "describes (aspect ratio differs); its K cannot be derived")
    return np.diag([w / wk, h / hk, 1.0]) @ np.asarray(K, np.float64)


def read_calibrated_pairs(path: str | Path) -> list[PairInfo]:
    """glue-factory ``pairs_calibrated.txt`` (T with 12 or 16 values)."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"pairs file not found: {path}")
    out = []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        c = line.split()
        if not c:
            continue
        if len(c) not in (2 + 18 + 12, 2 + 18 + 16):
            raise DatasetError(f"{path}:{lineno}: expected 32 or 36 columns, found {len(c)}")
        try:
            v = np.array([float(x) for x in c[2:]])
        except ValueError as e:
            raise DatasetError(f"{path}:{lineno}: not a number ({e})") from None
        out.append(PairInfo(len(out), c[0], c[1], 0, 0, v[:9].reshape(3, 3), v[9:18].reshape(3, 3), _to4x4(v[18:])))
    return out
