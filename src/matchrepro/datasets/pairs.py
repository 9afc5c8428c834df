"""SuperGlue-format two-view pair files (YFCC100M and ScanNet-1500 test sets).

Each non-empty line has 38 whitespace-separated columns (protocols.md §2.1):
``path0 path1 rot0 rot1 K0(9, row-major) K1(9) T_0to1(16, row-major 4x4)``.
Paths are relative to the image root; K are for the stored image files; ``T_0to1`` maps
camera-0 coordinates to camera-1 coordinates; ``rot`` counts counter-clockwise quarter turns
(``np.rot90`` k) that make the stored image upright.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from matchrepro.errors import DatasetError

N_COLUMNS = 38


@dataclass(frozen=True)
class PairInfo:
    """One line of a pairs file; ``index`` is its 0-based position among the pairs."""

    index: int
    name0: str
    name1: str
    rot0: int
    rot1: int
    K0: np.ndarray
    K1: np.ndarray
    T_0to1: np.ndarray


def read_pairs(path: str | Path) -> list[PairInfo]:
    """Parse a pairs file; raise :class:`DatasetError` naming file and line on bad input."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"pairs file not found: {path}")
    pairs = []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        cols = line.split()
        if not cols:
            continue
        if len(cols) != N_COLUMNS:
            raise DatasetError(
                f"{path}:{lineno}: expected {N_COLUMNS} columns, found {len(cols)}"
            )
        try:
            rot0, rot1 = int(cols[2]), int(cols[3])
            vals = np.array([float(c) for c in cols[4:]], dtype=np.float64)
        except ValueError as e:
            raise DatasetError(f"{path}:{lineno}: not a number ({e})") from None
        if not (0 <= rot0 <= 3 and 0 <= rot1 <= 3):
            raise DatasetError(f"{path}:{lineno}: rotation flags must be 0..3")
        pairs.append(
            PairInfo(
                index=len(pairs), name0=cols[0], name1=cols[1], rot0=rot0, rot1=rot1,
                K0=vals[:9].reshape(3, 3), K1=vals[9:18].reshape(3, 3),
                T_0to1=vals[18:].reshape(4, 4),
            )
        )
    if not pairs:
        raise DatasetError(f"pairs file is empty: {path}")
    return pairs


def format_pair_line(
    name0: str, name1: str, K0: np.ndarray, K1: np.ndarray, T_0to1: np.ndarray,
    rot0: int = 0, rot1: int = 0,
) -> str:
    """One line of a pairs file (full float precision via ``repr``)."""
    nums = [*np.asarray(K0).ravel(), *np.asarray(K1).ravel(), *np.asarray(T_0to1).ravel()]
    return " ".join([name0, name1, str(rot0), str(rot1)] + [repr(float(v)) for v in nums])
