"""HPatches sequences: ``<root>/<seq>/{1..6}.ppm`` and ``H_1_2 .. H_1_6`` (3x3 text).

``H_1_k`` maps pixels of image 1 to pixels of image k. Sequence names start with ``i_``
(illumination; H is the identity) or ``v_`` (viewpoint). The D2-Net protocol drops 8
sequences with images larger than 1600x1200, leaving 52 ``i_`` + 56 ``v_`` = 108 sequences,
540 pairs (1, k), k = 2..6 (protocols.md §2.5). A folder whose counts differ from the
expected ones is refused instead of silently averaging over the wrong set.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from matchrepro.errors import DatasetError

D2NET_EXCLUDED = (
    "i_contruction", "i_crownnight", "i_dc", "i_pencils", "i_whitebuilding",
    "v_artisans", "v_astronautis", "v_talent",
)


@dataclass(frozen=True)
class HPatchesPair:
    """Pair (1, k) of a sequence; names are paths relative to the sequences root."""

    index: int
    sequence: str
    kind: str  # "i" or "v"
    name0: str
    name1: str
    H_0to1: np.ndarray


def read_homography(path: Path) -> np.ndarray:
    """Parse a 3x3 homography text file (any whitespace)."""
    try:
        H = np.array([float(v) for v in path.read_text().split()], dtype=np.float64)
    except FileNotFoundError:
        raise DatasetError(f"homography file not found: {path}") from None
    except ValueError as e:
        raise DatasetError(f"{path}: not a number ({e})") from None
    if H.size != 9:
        raise DatasetError(f"{path}: expected 9 numbers, found {H.size}")
    return H.reshape(3, 3)


def list_pairs(
    root: str | Path,
    exclude: tuple[str, ...] | list[str] = (),
    expected: dict | None = None,
    n_images: int = 6,
) -> list[HPatchesPair]:
    """All pairs (1, k) of the sequences under ``root``, sorted by sequence name.

    Args:
        root: folder holding the sequence folders (``hpatches-sequences-release``).
        exclude: sequence names to drop (the D2-Net list for the real dataset).
        expected: optional ``{"illumination": n_i, "viewpoint": n_v}``; mismatch -> error.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"HPatches folder not found: {root}")
    seqs = sorted(
        p.name for p in root.iterdir()
        if p.is_dir() and p.name[:2] in ("i_", "v_") and p.name not in set(exclude)
    )
    if not seqs:
        raise DatasetError(f"no i_*/v_* sequence folders in {root}")
    if expected:
        n_i = sum(s.startswith("i_") for s in seqs)
        n_v = len(seqs) - n_i
        want_i, want_v = expected.get("illumination"), expected.get("viewpoint")
        if (want_i is not None and n_i != want_i) or (want_v is not None and n_v != want_v):
            raise DatasetError(
                f"{root}: found {n_i} illumination + {n_v} viewpoint sequences after exclusions,"
                f" expected {want_i} + {want_v}"
            )
    pairs = []
    for seq in seqs:
        for k in range(2, n_images + 1):
            for f in ("1.ppm", f"{k}.ppm"):
                if not (root / seq / f).is_file():
                    raise DatasetError(f"missing image: {root / seq / f}")
            pairs.append(
                HPatchesPair(
                    index=len(pairs), sequence=seq, kind=seq[0],
                    name0=f"{seq}/1.ppm", name1=f"{seq}/{k}.ppm",
                    H_0to1=read_homography(root / seq / f"H_1_{k}"),
                )
            )
    return pairs
