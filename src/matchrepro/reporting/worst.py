"""Find the worst pairs in a per-pair results CSV (for inspection)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from matchrepro.errors import DatasetError

#: Column to rank by and whether larger is worse, by the columns a protocol writes.
RANKING = (("pose_error_deg", True), ("corner_error_px", True), ("mma@3px", False))


def read_pairs_csv(path: str | Path) -> pd.DataFrame:
    """A per-pair results CSV (``results/metrics/<method>/<dataset>/<protocol>_pairs.csv``);
    a missing or unreadable file is a one-line :class:`DatasetError` naming it."""
    try:
        return pd.read_csv(path)
    except (OSError, pd.errors.ParserError) as e:
        raise DatasetError(f"cannot read per-pair results {path}: {e}") from None


def worst_pairs(path: str | Path, n: int = 10, by: str | None = None) -> pd.DataFrame:
    """The ``n`` worst rows: largest error (failures, +inf or NaN, first) or smallest MMA."""
    df = read_pairs_csv(path)
    if by is None:
        found = [(c, larger) for c, larger in RANKING if c in df.columns]
        if not found:
            raise DatasetError(f"{path}: no error column to rank by (give --by)")
        by, larger_worse = found[0]
    elif by not in df.columns:
        raise DatasetError(f"{path}: no column '{by}' (columns: {', '.join(df.columns)})")
    else:
        larger_worse = not by.startswith(("mma", "precision", "num_inliers", "matching_score"))
    key = df[by].astype(float).replace(np.nan, np.inf if larger_worse else -np.inf)
    order = key.sort_values(ascending=not larger_worse, kind="stable").index[:n]
    cols = [c for c in ("pair_index", "name0", "name1", by, "num_matches", "num_inliers") if c in df.columns]
    return df.loc[order, cols]
