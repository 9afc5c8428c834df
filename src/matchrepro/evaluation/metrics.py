"""Pure metric functions, defined exactly as the reference protocols define them.

See ``shared/spec/protocols.md`` §1.2-1.4, §2.5 and §7. Angles are in degrees, distances in
pixels unless a name says otherwise.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np


def rotation_error_deg(R_est: np.ndarray, R_gt: np.ndarray) -> float:
    """Angle of ``R_est^T R_gt`` in degrees: ``arccos(clip((trace - 1) / 2, -1, 1))``."""
    cos = (np.trace(np.dot(R_est.T, R_gt)) - 1.0) / 2.0
    return float(np.rad2deg(np.abs(np.arccos(np.clip(cos, -1.0, 1.0)))))


def translation_error_deg(t_est: np.ndarray, t_gt: np.ndarray, fold: bool = True) -> float:
    """Angle between translation directions in degrees.

    With ``fold`` (SuperGlue protocol) the sign ambiguity of E is removed:
    ``min(err, 180 - err)``, so the result lies in [0, 90]. A zero-length vector gives NaN.
    """
    t_est = np.asarray(t_est, np.float64).ravel()
    t_gt = np.asarray(t_gt, np.float64).ravel()
    n = np.linalg.norm(t_est) * np.linalg.norm(t_gt)
    if n == 0:
        return float("nan")
    err = float(np.rad2deg(np.arccos(np.clip(np.dot(t_est, t_gt) / n, -1.0, 1.0))))
    return min(err, 180.0 - err) if fold else err


def pose_error_deg(err_R: float, err_t: float) -> float:
    """Pose error = max(rotation error, translation error); NaN or failure -> +inf."""
    e = max(err_R, err_t)
    return float("inf") if not np.isfinite(e) else float(e)


def pose_auc(errors: Sequence[float], thresholds: Iterable[float]) -> list[float]:
    """Exact area under the recall-vs-error curve, as a fraction in [0, 1] per threshold.

    The curve starts at (0, 0), steps through the sorted errors with recall i/N and is
    extended flat to the threshold; errors equal to the threshold are excluded (strict <);
    +inf (failures) stays in N. Computed with explicit trapezoids (``np.trapz`` is gone).
    NaN errors are treated as failures.
    """
    errors = np.asarray(errors, dtype=np.float64).ravel()
    errors = np.where(np.isnan(errors), np.inf, errors)
    n = len(errors)
    out = []
    if n == 0:
        return [0.0 for _ in thresholds]
    e = np.concatenate([[0.0], np.sort(errors)])
    r = np.arange(n + 1, dtype=np.float64) / n
    for tau in thresholds:
        k = int(np.searchsorted(e, tau, side="left"))  # points (0,0)..(e_(k-1),...) below tau
        xs = np.concatenate([e[:k], [tau]])
        ys = np.concatenate([r[:k], [r[k - 1]]])
        area = float(np.sum((xs[1:] - xs[:-1]) * (ys[1:] + ys[:-1]) / 2.0))
        out.append(area / tau)
    return out


def pose_auc_closed_form(errors: Sequence[float], tau: float) -> float:
    """Closed form of :func:`pose_auc` (protocols.md §1.3), for tests and cross-checks:
    ``(1/N) sum_{i<=k} (1 - e_i/tau) + e_k / (2 N tau)`` with k errors strictly below tau."""
    e = np.sort(np.where(np.isnan(errors), np.inf, np.asarray(errors, np.float64)))
    n = len(e)
    below = e[e < tau]
    k = len(below)
    if k == 0:
        return 0.0
    return float(np.sum(1.0 - below / tau) / n + below[-1] / (2.0 * n * tau))


def accuracy_at(errors: Sequence[float], thresholds: Iterable[float]) -> list[float]:
    """Fraction of errors <= threshold (inclusive); NaN/inf count as incorrect."""
    e = np.asarray(errors, dtype=np.float64)
    e = np.where(np.isnan(e), np.inf, e)
    if len(e) == 0:
        return [0.0 for _ in thresholds]
    return [float(np.mean(e <= t)) for t in thresholds]


def matched_point_accuracy(dist: np.ndarray, thresholds: Iterable[float]) -> list[float]:
    """Per-pair MMA values: mean(dist <= t) for each t; a pair without matches scores 0."""
    dist = np.asarray(dist, dtype=np.float64).ravel()
    if len(dist) == 0:
        return [0.0 for _ in thresholds]
    return [float(np.mean(dist <= t)) for t in thresholds]
