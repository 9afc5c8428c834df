"""Evaluate cached predictions under a named protocol; never runs a network.

Outputs a summary JSON (metrics plus every knob that produced them) and a per-pair CSV keyed
by pair index and full relative image paths.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from tqdm import tqdm

from matchrepro.datasets.benchmark import open_benchmark, shard_of
from matchrepro.datasets.resize import describe
from matchrepro.errors import ConfigError, DatasetError
from matchrepro.evaluation import metrics
from matchrepro.evaluation.pose_superglue import (
    PoseEstimate, epipolar_precision, epipolar_precision_imp, estimate_relative_pose, estimate_relative_pose_magsac,
    pose_errors, superglue_resized_intrinsics,
)
from matchrepro.geometry.camera import rotate_intrinsics, rotate_relative_pose, scale_intrinsics
from matchrepro.geometry.homography import corner_error, warp_points
from matchrepro.io import atomic_path, write_json_atomic
from matchrepro.pipeline.match import check_predictions_config, read_predictions


def _stored_size(image_size_upright, rot: int) -> tuple[int, int]:
    w, h = (int(v) for v in image_size_upright)
    return (h, w) if rot % 2 else (w, h)


def upright_geometry(p, d: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(K0, K1, T_0to1) of a pair in the upright-original frame its predictions ``d`` are in:
    the pair file's K and T are for the stored images, rotated here by the EXIF flags."""
    K0 = rotate_intrinsics(p.K0, _stored_size(d["image_size0"], p.rot0), p.rot0)
    K1 = rotate_intrinsics(p.K1, _stored_size(d["image_size1"], p.rot1), p.rot1)
    return K0, K1, rotate_relative_pose(p.T_0to1, p.rot0, p.rot1)


def evaluate_relative_pose(pairs, preds: dict, proto: dict) -> pd.DataFrame:
    rows = []
    for p in tqdm(pairs, desc=f"evaluate {proto['name']}", unit="pair"):
        d = preds[p.index]
        K0, K1, T = upright_geometry(p, d)
        m = d["matches"]
        k0, k1 = d["keypoints0"][m[:, 0]].astype(np.float64), d["keypoints1"][m[:, 1]].astype(np.float64)
        if proto["frame"] == "resized":
            s0, s1 = np.asarray(d["scale0"]), np.asarray(d["scale1"])
            k0, k1 = k0 / s0, k1 / s1
            if proto["exif_intrinsics"] == "reference":  # SuperGlue's order: scale, then rotate
                K0 = superglue_resized_intrinsics(p.K0, d["image_size0"], s0, p.rot0)
                K1 = superglue_resized_intrinsics(p.K1, d["image_size1"], s1, p.rot1)
            else:
                K0, K1 = scale_intrinsics(K0, s0), scale_intrinsics(K1, s1)
        if proto["use_matcher_pose"] and "pose_R" in d:  # the matcher's own reported pose (IMP iterative stop)
            est = PoseEstimate(np.asarray(d["pose_R"], np.float64), np.asarray(d["pose_t"], np.float64),
                               np.ones(len(m), bool))
        elif proto["solver"] == "opencv_magsac":
            est = estimate_relative_pose_magsac(k0, k1, K0, K1, proto["threshold_px"], proto["confidence"],
                                                proto["min_matches"])
        else:
            est = estimate_relative_pose(
                k0, k1, K0, K1, threshold_px=proto["threshold_px"], confidence=proto["confidence"],
                max_iters=proto["max_iters"], focal_mean=proto["focal_mean"],
                recover_pose=proto["recover_pose"], min_matches=proto["min_matches"],
            )
        err_R, err_t, err = pose_errors(est, T, fold=proto["fold_translation"])
        if proto["precision_definition"] == "imp":
            prec, n_correct = epipolar_precision_imp(k0, k1, K0, K1, T, proto["epipolar_threshold"])
        else:
            prec, n_correct, _ = epipolar_precision(k0, k1, K0, K1, T, proto["epipolar_threshold"])
        n_kpts0 = len(d["keypoints0"])
        rows.append({
            "pair_index": p.index, "name0": p.name0, "name1": p.name1, "group": p.group,
            "num_keypoints0": n_kpts0, "num_matches": len(m), "num_inliers": int(est.inliers.sum()),
            "error_R_deg": err_R, "error_t_deg": err_t, "pose_error_deg": err,
            "precision": prec, "num_correct": n_correct,
            "matching_score": n_correct / n_kpts0 if n_kpts0 else 0.0,
            "degenerate_gt": bool(np.linalg.norm(T[:3, 3]) == 0),
        })
    return pd.DataFrame(rows)


BOOTSTRAP_RESAMPLES = 1000


def bootstrap_auc(errors: np.ndarray, thresholds, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0):
    """95 % percentile intervals (in %) of each pose AUC over pairs resampled with replacement
    (a fixed seed: the same errors give the same interval). Returns [(low, high), ...]."""
    errors = np.asarray(errors, np.float64)
    if len(errors) < 2:
        return [(float("nan"), float("nan"))] * len(thresholds)
    rng = np.random.default_rng(seed)
    draws = np.array([metrics.pose_auc(errors[rng.integers(0, len(errors), len(errors))], thresholds)
                      for _ in range(resamples)])
    lo, hi = np.percentile(draws, [2.5, 97.5], axis=0)
    return [(100.0 * a, 100.0 * b) for a, b in zip(lo, hi)]


def summarize_relative_pose(df: pd.DataFrame, proto: dict) -> dict:
    ths = proto["auc_thresholds_deg"]
    aucs = metrics.pose_auc(df["pose_error_deg"].to_numpy(), ths)
    summary = {f"auc@{t:g}deg": 100.0 * a for t, a in zip(ths, aucs)}
    for t, (lo, hi) in zip(ths, bootstrap_auc(df["pose_error_deg"].to_numpy(), ths)):
        summary[f"auc@{t:g}deg_ci_low"], summary[f"auc@{t:g}deg_ci_high"] = lo, hi
    summary.update({
        "precision": 100.0 * df["precision"].mean(),
        "matching_score": 100.0 * df["matching_score"].mean(),
        "mean_matches": float(df["num_matches"].mean()),
        "mean_keypoints": float(df["num_keypoints0"].mean()),
        "num_failures": int(np.sum(~np.isfinite(df["pose_error_deg"]))),
        "num_degenerate_gt": int(df["degenerate_gt"].sum()),
    })
    return summary


def evaluate_hpatches_mma(pairs, preds: dict, proto: dict) -> pd.DataFrame:
    ths = proto["thresholds_px"]
    rows = []
    for p in pairs:
        d = preds[p.index]
        m = d["matches"]
        k0, k1 = d["keypoints0"][m[:, 0]].astype(np.float64), d["keypoints1"][m[:, 1]].astype(np.float64)
        dist = np.linalg.norm(warp_points(p.H_0to1, k0) - k1, axis=1) if len(m) else np.zeros(0)
        row = {"pair_index": p.index, "name0": p.name0, "name1": p.name1, "group": p.group,
               "num_keypoints0": len(d["keypoints0"]), "num_keypoints1": len(d["keypoints1"]),
               "num_matches": len(m)}
        row.update({f"mma@{t:g}px": v for t, v in zip(ths, metrics.matched_point_accuracy(dist, ths))})
        rows.append(row)
    return pd.DataFrame(rows)


def summarize_hpatches_mma(df: pd.DataFrame, proto: dict) -> dict:
    ths = proto["thresholds_px"]
    summary = {}
    for t in ths:
        col = f"mma@{t:g}px"
        summary[col] = float(df[col].mean())
        summary[f"illumination_{col}"] = float(df.loc[df.group == "i", col].mean()) if (df.group == "i").any() else float("nan")
        summary[f"viewpoint_{col}"] = float(df.loc[df.group == "v", col].mean()) if (df.group == "v").any() else float("nan")
    summary["mean_features"] = float((df.num_keypoints0.mean() + df.num_keypoints1.mean()) / 2)
    summary["mean_matches"] = float(df.num_matches.mean())
    summary["num_illumination_pairs"] = int((df.group == "i").sum())
    summary["num_viewpoint_pairs"] = int((df.group == "v").sum())
    summary["num_failures"] = 0
    return summary


HOMOGRAPHY_SOLVERS = {"opencv_ransac": cv2.RANSAC, "opencv_magsac": cv2.USAC_MAGSAC,
                      "opencv_lo_ransac": cv2.USAC_ACCURATE}


def estimate_homography(k0: np.ndarray, k1: np.ndarray, proto: dict) -> np.ndarray | None:
    """H (3, 3) mapping k0 -> k1 (pixels, N >= 4) with the protocol's solver, or None on failure.

    ``pydegensac`` is DEGENSAC as the Patch2Pix paper era ran it (``findHomography(p1, p2, 2.0)``
    with its confidence and iteration defaults 0.999 / 50000, Sampson error), seeded with the
    protocol's ``seed`` (-1: unseeded, as released); the OpenCV solvers are deterministic."""
    if proto["solver"] == "pydegensac":
        import pydegensac

        H, mask = pydegensac.findHomography(np.ascontiguousarray(k0, np.float64), np.ascontiguousarray(k1, np.float64),
                                            float(proto["threshold_px"]), float(proto["confidence"]),
                                            int(proto["max_iters"]), seed=int(proto["seed"]))
        return None if H is None or not np.abs(H).sum() or not np.all(np.isfinite(H)) else H
    H, _ = cv2.findHomography(k0, k1, HOMOGRAPHY_SOLVERS[proto["solver"]], proto["threshold_px"],
                              maxIters=proto["max_iters"], confidence=proto["confidence"])
    return H


def evaluate_homography(pairs, preds: dict, proto: dict) -> pd.DataFrame:
    """Corner error of a robust homography. Knobs: ``frame`` (``original`` pixels, or the
    ``resized`` frame the method saw, with H_gt rescaled), ``corners`` (``fixed``, or ``swapped``
    as in the paper-era immatch code: (0,0), (0,w-1), (h-1,0), (h-1,w-1)), ``max_matches`` (top by
    score) and the solver."""
    rows = []
    for p in pairs:
        d = preds[p.index]
        m, scores = d["matches"], d["scores"]
        if proto["max_matches"] and len(m) > proto["max_matches"]:
            keep = np.argsort(-scores, kind="stable")[: proto["max_matches"]]
            m = m[np.sort(keep)]
        k0, k1 = d["keypoints0"][m[:, 0]].astype(np.float64), d["keypoints1"][m[:, 1]].astype(np.float64)
        w, h = (int(v) for v in d["image_size0"])
        H_gt = p.H_0to1
        if proto["frame"] == "resized":
            S0, S1 = np.diag([*d["scale0"], 1.0]), np.diag([*d["scale1"], 1.0])
            H_gt = np.linalg.inv(S1) @ H_gt @ S0
            k0, k1 = k0 / d["scale0"], k1 / d["scale1"]
            w, h = int(round(w / d["scale0"][0])), int(round(h / d["scale0"][1]))
        H = None
        if len(m) >= max(4, proto["min_matches"]):
            H = estimate_homography(k0, k1, proto)
        if proto["corners"] == "swapped":
            w, h = h, w  # the bug swaps w and h in the corner list
        rows.append({"pair_index": p.index, "name0": p.name0, "name1": p.name1, "group": p.group,
                     "num_matches": len(m), "corner_error_px": corner_error(H, H_gt, w, h)})
    return pd.DataFrame(rows)


def summarize_homography(df: pd.DataFrame, proto: dict) -> dict:
    ths = proto["thresholds_px"]
    err = df["corner_error_px"].to_numpy()
    summary = {f"h_acc@{t:g}px": 100.0 * a for t, a in zip(ths, metrics.accuracy_at(err, ths))}
    summary.update({f"h_auc@{t:g}px": 100.0 * a for t, a in zip(ths, metrics.pose_auc(err, ths))})
    for g, label in (("i", "illumination"), ("v", "viewpoint")):
        sub = df.loc[df.group == g, "corner_error_px"].to_numpy()
        if len(sub):
            summary.update({f"{label}_h_acc@{t:g}px": 100.0 * a for t, a in zip(ths, metrics.accuracy_at(sub, ths))})
    summary["num_failures"] = int(np.isnan(err).sum())
    summary["mean_matches"] = float(df.num_matches.mean())
    return summary


#: protocol type -> (per-pair rows, summary of all rows). Summaries are always computed over all
#: pairs at once (never averaged over shards), so sharded and unsharded runs agree exactly.
PROTOCOLS = {
    "relative_pose": (evaluate_relative_pose, summarize_relative_pose),
    "hpatches_mma": (evaluate_hpatches_mma, summarize_hpatches_mma),
    "homography": (evaluate_homography, summarize_homography),
}


def _setup(spec: dict):
    proto = spec["protocol"]
    if proto["type"] not in PROTOCOLS:
        raise ConfigError(f"protocols.{proto['name']}.type: unknown type {proto['type']!r}")
    bench = open_benchmark(spec["dataset"])
    want = {"relative_pose": "relative_pose", "hpatches_mma": "homography", "homography": "homography"}
    if want[proto["type"]] != bench.kind:
        raise ConfigError(f"protocol {proto['name']} ({proto['type']}) does not apply to dataset {bench.name}")
    return proto, bench


def evaluate_rows(spec: dict, predictions: str | Path, shard: tuple[int, int] | None = None) -> pd.DataFrame:
    """Per-pair rows of the pairs in ``shard`` (all pairs when None) from a predictions cache."""
    proto, bench = _setup(spec)
    check_predictions_config(predictions, spec)
    preds = dict(read_predictions(predictions))
    pairs = shard_of(bench.pairs, shard)
    missing = [p.index for p in pairs if p.index not in preds]
    if missing:
        raise DatasetError(f"{predictions}: no prediction for {len(missing)} pairs (first: {missing[0]})")
    return PROTOCOLS[proto["type"]][0](pairs, preds, proto)


def pairs_file_digest(ds: dict) -> str | None:
    """SHA-256 of the dataset's pair file (the identity of the evaluated pair set), when it has one."""
    import hashlib

    if not ds.get("pairs_file"):
        return None
    path = Path(ds["root"]) / ds["pairs_file"]
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def method_knobs(spec: dict) -> dict:
    """The procedure settings of a row's method that change its numbers beside the protocol's:
    IMP/EIMP's iterative variant (``off`` | ``released`` | ``corrected``, with ``+uncertainty``
    for EIMP's pooled iterative mode) and SuperPoint's descriptor sampling (``superglue`` |
    ``imp``); None where they do not apply."""
    m = spec["method"]["matcher"]
    f = spec.get("features") or {}
    out = {"imp_iterative": None, "superpoint_sampling": None}
    if m["type"] == "imp":
        if not m.get("iterative"):
            out["imp_iterative"] = "off"
        else:
            v = m.get("iterative_variant") or "released"
            if m.get("variant") == "eimp" and m.get("uncertainty") is not False:
                v += "+uncertainty"
            out["imp_iterative"] = f"{v} {m.get('iterative_threshold_px') or 1.0:g}px"
    if f.get("type") == "superpoint":
        out["superpoint_sampling"] = f.get("descriptor_sampling") or "superglue"
    return out


def summarize(spec: dict, df: pd.DataFrame, out_json: str | Path, out_pairs: str | Path) -> dict:
    """Summary of all per-pair rows (with every knob that produced them), written atomically."""
    proto, bench = _setup(spec)
    df = df.sort_values("pair_index", kind="stable").reset_index(drop=True)
    if sorted(df.pair_index) != [p.index for p in bench.pairs]:
        raise DatasetError(f"per-pair results cover {len(df)} of {len(bench.pairs)} pairs of {bench.name}")
    summary = PROTOCOLS[proto["type"]][1](df, proto)
    result = {
        "method": spec["method"]["name"],
        "dataset": bench.name,
        "source": spec["dataset"]["source"],
        "protocol": proto["name"],
        "protocol_config": proto,
        "resize": describe(spec["resize"]),
        "max_keypoints": spec.get("max_keypoints"),
        "method_knobs": method_knobs(spec),
        "num_pairs": len(bench.pairs),
        "pairs_sha256": pairs_file_digest(spec["dataset"]),
        "summary": summary,
        "versions": {"opencv": cv2.__version__, "numpy": np.__version__},
    }
    with atomic_path(out_pairs) as tmp:
        df.to_csv(tmp, index=False)
    write_json_atomic(out_json, result)
    return result


def evaluate(spec: dict, predictions: str | Path, out_json: str | Path, out_pairs: str | Path) -> dict:
    """``spec``: ``{"dataset", "method", "protocol", "resize", "max_keypoints"}`` blocks."""
    return summarize(spec, evaluate_rows(spec, predictions), out_json, out_pairs)
