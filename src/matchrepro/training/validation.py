"""Training-time validation metrics (checkpoint selection, never a test set).

* Patch2Pix / NCNet (patch2pix.md §3.5, ``utils/train/eval_epoch_immatch.py``): per pair the
  relative pose from the predicted matches, with points centred on the principal points and
  image-0 points rescaled to image 1's focal length, ``findEssentialMat`` (RANSAC, 0.5 px) and
  ``recoverPose``; error = max(angle of R, angle of t) in degrees; pass rates at 1..10°, mean
  and median error, and the release's selection rate
  ``pose_rate = 0.34 pass@1 + 0.33 pass@5 + 0.33 pass@10``.
* IMP / EIMP: matching precision and recall against the dump's ground-truth matches, and the
  pose AUC at 5/10/20° (IMP protocol solver: MAGSAC in pixels with both K, 1 px).

Every function takes pixels (x = column) and world-to-camera relative poses ``X1 = R X0 + t``.
"""

from __future__ import annotations

import cv2
import numpy as np

from matchrepro.evaluation.metrics import pose_auc, rotation_error_deg, translation_error_deg

PASS_THRESHOLDS = tuple(range(1, 11))
# name -> "max" | "min": which direction is better, for `val_criterion`
PATCH2PIX_METRICS = {"pose_rate": "max", "median_error": "min", "mean_error": "min",
                     **{f"pass@{d}": "max" for d in PASS_THRESHOLDS}, "matches": "max"}
IMP_METRICS = {"auc@5": "max", "auc@10": "max", "auc@20": "max", "precision": "max", "recall": "max",
               "f1": "max", "matches": "max"}


def patch2pix_pose_error(k0: np.ndarray, k1: np.ndarray, K0: np.ndarray, K1: np.ndarray, R: np.ndarray,
                         t: np.ndarray, threshold_px: float = 0.5) -> float:
    """Pose error in degrees of the released validation (inf when no pose: < 5 matches or no E).

    k0, k1: (N, 2) matched pixels; K0, K1: (3, 3); R (3, 3), t (3,): ground truth image 0 -> 1."""
    if len(k0) < 5:
        return float("inf")
    f0, f1 = (K0[0, 0] + K0[1, 1]) / 2, (K1[0, 0] + K1[1, 1]) / 2
    p0 = (np.asarray(k0, np.float64) - K0[:2, 2]) * (f1 / f0)
    p1 = np.asarray(k1, np.float64) - K1[:2, 2]
    E, mask = cv2.findEssentialMat(p0, p1, focal=f1, pp=(0.0, 0.0), method=cv2.RANSAC, prob=0.999,
                                   threshold=threshold_px)
    if E is None or E.shape != (3, 3):
        return float("inf")
    _, R_est, t_est, _ = cv2.recoverPose(E, p0, p1, focal=f1, pp=(0.0, 0.0), mask=mask)
    err = max(rotation_error_deg(R_est, R), translation_error_deg(t_est, t, fold=False))
    return err if np.isfinite(err) else float("inf")


def pose_summary(errors, n_matches) -> dict:
    """Pass rates (fractions) at 1..10°, mean/median error (failures count as 180°) and
    ``pose_rate`` of per-pair pose errors in degrees."""
    e = np.where(np.isfinite(errors), np.asarray(errors, np.float64), 180.0)
    out = {f"pass@{d}": float(np.mean(e < d)) for d in PASS_THRESHOLDS}
    out |= {"mean_error": float(np.mean(e)), "median_error": float(np.median(e)),
            "matches": float(np.mean(n_matches))}
    out["pose_rate"] = 0.34 * out["pass@1"] + 0.33 * out["pass@5"] + 0.33 * out["pass@10"]
    return out


def matching_summary(pred: list[np.ndarray], gt: list[np.ndarray], pose_errors: list[float]) -> dict:
    """Precision / recall / F1 of predicted matches (``pred[i]``: (K, 2) index pairs) against
    ground-truth index pairs ``gt[i]``, pooled over pairs, and pose AUC (%) at 5/10/20°."""
    tp = sum(len({tuple(m) for m in p.tolist()} & {tuple(m) for m in g.tolist()}) for p, g in zip(pred, gt))
    n_pred, n_gt = sum(len(p) for p in pred), sum(len(g) for g in gt)
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_gt if n_gt else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    auc = pose_auc(pose_errors, (5, 10, 20))
    return {"precision": precision, "recall": recall, "f1": f1, "matches": n_pred / max(1, len(pred)),
            **{f"auc@{d}": 100 * a for d, a in zip((5, 10, 20), auc)}}
