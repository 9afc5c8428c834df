"""Compare two methods on the same pairs: pose AUC differences with a paired bootstrap.

Two per-pair results CSVs of one dataset and protocol (``results/metrics/<method>/<dataset>/
<protocol>_pairs.csv``) are joined on the pair (``pair_index``, ``name0``, ``name1``). Each
bootstrap resample draws pairs with replacement and scores *both* methods on the same draw, so
the interval is that of the difference, narrower than comparing the two per-method intervals
of the tables (which ignore that both methods saw the same, equally hard or easy, pairs).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from matchrepro.errors import DatasetError
from matchrepro.evaluation import metrics
from matchrepro.evaluation.evaluate import BOOTSTRAP_RESAMPLES
from matchrepro.reporting.worst import read_pairs_csv

KEY = ["pair_index", "name0", "name1"]


def _read(path: str | Path) -> pd.DataFrame:
    df = read_pairs_csv(path)
    missing = [c for c in KEY + ["pose_error_deg"] if c not in df.columns]
    if missing:
        raise DatasetError(f"{path}: not relative-pose per-pair results (no column {', '.join(missing)})")
    return df


def paired_auc_difference(base: str | Path, other: str | Path, thresholds=(5, 10, 20),
                          resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> pd.DataFrame:
    """AUC (in %) of ``other`` minus ``base`` per threshold (degrees), with the 95 % percentile
    interval of the difference over pairs resampled with replacement (fixed seed) and the
    fraction of resamples in which ``other`` is not above ``base``.

    Both files must hold the same pairs (same index and image names); failures (+inf or NaN
    errors) count as failures for both, as in the tables."""
    a, b = _read(base), _read(other)
    if len(a) != len(b) or not a[KEY].sort_values(KEY).reset_index(drop=True).equals(
            b[KEY].sort_values(KEY).reset_index(drop=True)):
        raise DatasetError(f"{base} and {other} do not hold the same pairs ({len(a)} and {len(b)} rows): "
                           "compare methods on one dataset and protocol")
    j = a[KEY + ["pose_error_deg"]].merge(b[KEY + ["pose_error_deg"]], on=KEY, suffixes=("_base", "_other"))
    ea, eb = (j[f"pose_error_deg_{s}"].to_numpy(np.float64) for s in ("base", "other"))
    return paired_auc_difference_of_errors(ea, eb, thresholds, resamples, seed)


def paired_auc_difference_of_errors(ea: np.ndarray, eb: np.ndarray, thresholds=(5, 10, 20),
                                    resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> pd.DataFrame:
    """:func:`paired_auc_difference` on two arrays of pose errors (degrees; +inf or NaN for a
    failure), element i of both being the same pair."""
    ea, eb = np.asarray(ea, np.float64), np.asarray(eb, np.float64)
    if ea.shape != eb.shape or ea.ndim != 1:
        raise ValueError(f"paired errors need two 1-D arrays of one length, got {ea.shape} and {eb.shape}")
    ths = [float(t) for t in thresholds]
    auc_a, auc_b = (100.0 * np.array(metrics.pose_auc(e, ths)) for e in (ea, eb))
    rng = np.random.default_rng(seed)
    draws = np.empty((resamples, len(ths)))
    for r in range(resamples):
        i = rng.integers(0, len(ea), len(ea))
        draws[r] = 100.0 * (np.array(metrics.pose_auc(eb[i], ths)) - np.array(metrics.pose_auc(ea[i], ths)))
    lo, hi = np.percentile(draws, [2.5, 97.5], axis=0)
    return pd.DataFrame({
        "threshold_deg": ths,
        "auc_base": auc_a, "auc_other": auc_b, "difference": auc_b - auc_a,
        "ci_low": lo, "ci_high": hi,
        "not_above_fraction": (draws <= 0).mean(axis=0),
        "num_pairs": len(ea),
    })


def format_comparison(df: pd.DataFrame, base: str, other: str) -> str:
    """A header line, then one line per threshold:
    ``AUC@10deg: 49.50 - 45.59 = +3.91 (95 % CI -7.50 to +15.70; not above in 22.2 % of resamples)``."""
    lines = [f"{other} minus {base}, {int(df.num_pairs.iloc[0])} pairs, paired bootstrap over pairs:"]
    for r in df.itertuples():
        lines.append(f"  AUC@{r.threshold_deg:g}deg: {r.auc_other:.2f} - {r.auc_base:.2f} = {r.difference:+.2f} "
                     f"(95 % CI {r.ci_low:+.2f} to {r.ci_high:+.2f}; not above in {100 * r.not_above_fraction:.1f} % "
                     "of resamples)")
    return "\n".join(lines)
