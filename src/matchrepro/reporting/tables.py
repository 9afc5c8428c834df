"""One CSV and one Markdown table per benchmark from the evaluation summaries (JSON).

Every row names the method, the dataset source (demo or real), the protocol and all of its
knobs (solver, threshold, confidence, iterations, focal formula, frame), the resize rule, the
keypoint budget, the number of pairs and of failures.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from matchrepro.errors import DatasetError
from matchrepro.io import atomic_path, write_text_atomic

#: The knobs that apply to each protocol type (CSV columns; others stay empty).
KNOBS = {
    "relative_pose": ("solver", "threshold_px", "confidence", "max_iters", "focal_mean", "frame",
                      "recover_pose", "exif_intrinsics", "fold_translation", "min_matches", "precision_definition",
                      "epipolar_threshold"),
    "homography": ("solver", "threshold_px", "confidence", "max_iters", "min_matches", "max_matches",
                   "corners", "frame", "seed"),
    "hpatches_mma": (),
}


def protocol_knobs(proto: dict) -> str:
    """Compact string of the knobs that apply to the protocol's type, e.g.
    ``opencv_ransac 1px conf=0.99999 iters=1000 focal=superglue frame=resized``."""
    if proto["type"] == "hpatches_mma":
        return "D2-Net MMA, errors in original pixels"
    fmt = {
        "solver": "{}", "threshold_px": "{:g}px", "confidence": "conf={:g}", "max_iters": "iters={}",
        "focal_mean": "focal={}", "frame": "frame={}", "recover_pose": "recoverPose={}",
        "fold_translation": "t-fold={}", "min_matches": "min={}", "epipolar_threshold": "epi<{:g}",
        "precision_definition": "prec={}", "max_matches": "top={}", "corners": "corners={}",
        "seed": "seed={}", "use_matcher_pose": "matcher-pose={}", "exif_intrinsics": "exif-K={}",
    }
    return " ".join(fmt[k].format(proto[k]) for k in applicable_knobs(proto) if proto.get(k) is not None)


def applicable_knobs(proto: dict) -> tuple[str, ...]:
    """Knobs that change this protocol's numbers (MAGSAC ignores the SuperGlue-only ones)."""
    knobs = KNOBS[proto["type"]]
    if proto["type"] == "relative_pose" and proto.get("solver") == "opencv_magsac":
        knobs = tuple(k for k in knobs if k not in ("focal_mean", "recover_pose", "max_iters"))
    if proto["type"] == "relative_pose" and proto.get("frame") != "resized":
        knobs = tuple(k for k in knobs if k != "exif_intrinsics")
    if proto["type"] == "relative_pose" and proto.get("use_matcher_pose"):
        knobs = knobs + ("use_matcher_pose",)
    if proto["type"] == "homography" and proto.get("solver") != "pydegensac":
        knobs = tuple(k for k in knobs if k != "seed")
    return knobs


def load_results(paths: list[str | Path]) -> list[dict]:
    out = []
    for p in paths:
        try:
            out.append(json.loads(Path(p).read_text()))
        except (OSError, json.JSONDecodeError) as e:
            raise DatasetError(f"cannot read evaluation summary {p}: {e}") from None
    return out


def rows_for(results: list[dict]) -> pd.DataFrame:
    rows = []
    for r in results:
        proto = r["protocol_config"]
        row = {
            "method": r["method"], "dataset": r["dataset"], "source": r["source"],
            "protocol": r["protocol"], "protocol_type": proto["type"],
            "protocol_knobs": protocol_knobs(proto),
        }
        row.update({k: proto.get(k) for k in applicable_knobs(proto)})
        row.update(r.get("method_knobs") or {})
        row.update({"resize": r["resize"], "max_keypoints": r["max_keypoints"],
                    "num_pairs": r["num_pairs"], "num_failures": r["summary"].get("num_failures", 0),
                    "pairs_sha256": r.get("pairs_sha256")})
        row.update({k: v for k, v in r["summary"].items() if k != "num_failures"})
        rows.append(row)
    df = pd.DataFrame(rows)
    front = ["method", "dataset", "source", "protocol", "protocol_type", "protocol_knobs",
             *dict.fromkeys(k for ks in KNOBS.values() for k in ks),
             "imp_iterative", "superpoint_sampling", "resize", "max_keypoints", "num_pairs", "num_failures"]
    front = [c for c in front if c in df.columns]
    return df[front + sorted(c for c in df.columns if c not in front)]


def _md_table(df: pd.DataFrame, cols: list[str]) -> str:
    if "auc@10deg_ci_low" in df.columns:  # the bootstrap interval beside the AUC, as one cell
        df = df.assign(**{"auc@10deg 95% CI": [
            "–" if pd.isna(a) else f"{a:.1f}–{b:.1f}" for a, b in zip(df["auc@10deg_ci_low"], df["auc@10deg_ci_high"])]})
    optional = ("imp_iterative", "superpoint_sampling")  # method knobs: shown where some row has one
    cols = [c for c in cols if c in df.columns and not (c in optional and df[c].isna().all())]
    head = "| " + " | ".join(cols) + " |\n|" + "---|" * len(cols) + "\n"
    body = ""
    for _, r in df.iterrows():
        cells = []
        for c in cols:
            v = r[c]
            if v is None:
                cells.append("–")
            elif isinstance(v, float):
                cells.append("–" if pd.isna(v) else (f"{v:.3f}" if c.startswith("mma") or "_mma" in c else f"{v:.2f}"))
            else:
                cells.append(str(v))
        body += "| " + " | ".join(cells) + " |\n"
    return head + body


MD_COLUMNS = {
    "relative_pose": ["method", "source", "protocol", "protocol_knobs", "imp_iterative", "superpoint_sampling",
                      "resize", "max_keypoints",
                      "num_pairs", "num_failures", "auc@5deg", "auc@10deg", "auc@10deg 95% CI", "auc@20deg",
                      "precision", "matching_score", "mean_matches"],
    "hpatches_mma": ["method", "source", "protocol", "resize", "max_keypoints", "num_pairs",
                     "mma@1px", "mma@2px", "mma@3px", "mma@5px", "mma@10px",
                     "illumination_mma@3px", "viewpoint_mma@3px", "mean_features", "mean_matches"],
    "homography": ["method", "source", "protocol", "protocol_knobs", "resize", "max_keypoints",
                   "num_pairs", "num_failures", "h_acc@1px", "h_acc@3px", "h_acc@5px", "h_acc@10px",
                   "h_auc@3px", "h_auc@5px", "h_auc@10px"],
}

TITLES = {"relative_pose": "Relative pose (AUC in %, exact trapezoid; P and MS in %)",
          "hpatches_mma": "HPatches mean matching accuracy (fraction)",
          "homography": "HPatches homography estimation (corner error; accuracy and AUC in %)"}


def to_html(df: pd.DataFrame, title: str) -> str:
    """A standalone HTML page with the table (for the Snakemake report)."""
    table = df.to_html(index=False, float_format=lambda v: f"{v:.4g}", na_rep="–", border=1)
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{title}</title>"
            "<style>td,th{padding:2px 6px;font:12px sans-serif}</style></head>"
            f"<body><h3>{title}</h3>{table}</body></html>\n")


def write_tables(results: list[dict], benchmarks: dict[str, str], out_dir: str | Path) -> list[Path]:
    """Write ``<benchmark>.csv`` and ``<benchmark>.md`` for each ``benchmark -> dataset``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    df_all = rows_for(results)
    written = []
    for bench, dataset in benchmarks.items():
        df = df_all[df_all.dataset == dataset] if len(df_all) else df_all
        if df.empty:
            raise DatasetError(f"no evaluation results for benchmark {bench} (dataset {dataset})")
        df = df.sort_values(["protocol", "method"]).dropna(axis=1, how="all")
        with atomic_path(out_dir / f"{bench}.csv") as tmp:
            df.to_csv(tmp, index=False, float_format="%.6g")
        md = [f"# {bench}: dataset `{dataset}` ({', '.join(sorted(df.source.unique()))})\n"]
        for ptype in ("relative_pose", "hpatches_mma", "homography"):
            part = df[df.protocol_type == ptype]
            if part.empty:
                continue
            md.append(f"\n## {TITLES[ptype]}\n\n" + _md_table(part, MD_COLUMNS[ptype]))
        write_text_atomic(out_dir / f"{bench}.md", "".join(md))
        write_text_atomic(out_dir / f"{bench}.html", to_html(df, f"{bench}: dataset {dataset}"))
        written += [out_dir / f"{bench}.csv", out_dir / f"{bench}.md", out_dir / f"{bench}.html"]
    return written
