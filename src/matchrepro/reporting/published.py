"""Reproduced-versus-published tables.

Each published entry (``report/published.yaml``) is put beside our row of the same benchmark,
method and protocol. The difference (ours − published) is given only when the protocol is the
same named protocol, our row was computed on the real dataset, *and* on the published pair set
(as many pairs as the entry's ``num_pairs``, and the same pair file where the entry names its
``pairs_sha256``); otherwise the row says why it is not compared (demo data, a subset or another
pair file, protocol differs, no reproduction yet) instead of comparing.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import yaml

from matchrepro.errors import DatasetError
from matchrepro.io import atomic_path, write_text_atomic

METRIC_ORDER = ["auc@5deg", "auc@10deg", "auc@20deg", "precision", "matching_score",
                "mma@1px", "mma@2px", "mma@3px", "mma@5px", "mma@10px", "illumination_mma@3px",
                "viewpoint_mma@3px", "h_auc@3px", "h_auc@5px", "h_auc@10px", "mean_matches"]


def load_published(path: str | Path) -> list[dict]:
    try:
        entries = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as e:
        raise DatasetError(f"cannot read published numbers {path}: {e}") from None
    for k, e in enumerate(entries):
        for key in ("benchmark", "label", "protocol", "metrics", "source", "tag"):
            if key not in e:
                raise DatasetError(f"{path}: entry {k} has no '{key}'")
    return entries


def compare(ours: pd.DataFrame, published: list[dict], benchmark: str, dataset: str) -> pd.DataFrame:
    """Long table: one row per (published entry, metric) with ours, published, difference and
    a status saying whether they are compared."""
    rows = []
    mine = ours[ours.dataset == dataset] if len(ours) else ours
    for e in (p for p in published if p["benchmark"] == benchmark):
        match = mine[(mine.method == e["method"]) & (mine.protocol == e["protocol"])] if e["method"] else mine.iloc[0:0]
        same_method_other_protocol = (mine[(mine.method == e["method"])] if e["method"] else mine.iloc[0:0])
        if len(match):
            r = match.iloc[0]
            status = _status(r, e)
        elif len(same_method_other_protocol):
            r, status = None, "not compared: protocol differs (" + ", ".join(sorted(set(same_method_other_protocol.protocol))) + ")"
        elif e["method"] is None:
            r, status = None, "reference only (method not reproduced here)"
        else:
            r, status = None, "not reproduced in this run"
        for metric in [m for m in METRIC_ORDER if m in e["metrics"]]:
            pub = float(e["metrics"][metric])
            val = float(r[metric]) if r is not None and metric in r and pd.notna(r[metric]) else float("nan")
            rows.append({
                "benchmark": benchmark, "published_label": e["label"], "method": e["method"] or "–",
                "protocol": e["protocol"], "metric": metric, "published": pub, "ours": val,
                "difference": val - pub if status == "compared" else float("nan"),
                "status": status, "source": e["source"], "tag": e["tag"],
                "our_source": r["source"] if r is not None else "–",
                "published_pairs": e.get("num_pairs"),
                "our_pairs": int(r["num_pairs"]) if r is not None and "num_pairs" in r and pd.notna(r["num_pairs"]) else None,
            })
    return pd.DataFrame(rows)


def _status(r, e: dict) -> str:
    """Whether our row ``r`` evaluates what the published entry ``e`` measured."""
    if r["source"] == "demo":
        return "not compared: ours is on demo data"
    want = e.get("num_pairs")
    have = int(r["num_pairs"]) if "num_pairs" in r and pd.notna(r["num_pairs"]) else None
    if want is not None and have != want:
        return f"not compared: ours is on {have} pairs, the published number on {want}"
    sha, ours = e.get("pairs_sha256"), r.get("pairs_sha256")
    if sha and isinstance(ours, str) and ours != sha:
        return "not compared: ours is on another pair file (SHA-256 differs)"
    return "compared"


def _fmt(v: float) -> str:
    return "–" if pd.isna(v) else f"{v:.3f}" if abs(v) < 1.5 else f"{v:.2f}"


def write_comparisons(ours: pd.DataFrame, published: list[dict], benchmarks: dict[str, str], out_dir: str | Path) -> list[Path]:
    out_dir = Path(out_dir)
    written = []
    for bench, dataset in benchmarks.items():
        df = compare(ours, published, bench, dataset)
        csv, md = out_dir / f"{bench}_vs_published.csv", out_dir / f"{bench}_vs_published.md"
        with atomic_path(csv) as tmp:
            df.to_csv(tmp, index=False, float_format="%.6g")
        lines = [f"# {bench}: reproduced versus published\n\n",
                 "Cells read `ours / published (ours − published)`; the difference is given only for the "
                 "same protocol on the real dataset, and the status says why a row is not compared.\n\n"]
        if df.empty:
            lines.append("No published numbers are listed for this benchmark.\n")
        else:
            metrics = [m for m in METRIC_ORDER if m in set(df.metric)]
            lines.append("| published | method | protocol | pairs (ours / published) | status | " + " | ".join(metrics)
                         + " | source |\n")
            lines.append("|---" * (6 + len(metrics)) + "|\n")
            for (label, method, protocol, status, source, tag), g in df.groupby(
                    ["published_label", "method", "protocol", "status", "source", "tag"], sort=False):
                first = g.iloc[0]
                pairs = (f"{'–' if pd.isna(first.our_pairs) else int(first.our_pairs)} / "
                         f"{'–' if pd.isna(first.published_pairs) else int(first.published_pairs)}")
                cells = []
                by = {r.metric: r for r in g.itertuples()}
                for m in metrics:
                    if m not in by:
                        cells.append("")
                        continue
                    r = by[m]
                    cell = f"{_fmt(r.ours)} / {_fmt(r.published)}"
                    if pd.notna(r.difference):
                        cell += f" ({r.difference:+.3g})"
                    cells.append(cell)
                lines.append(f"| {label} | {method} | {protocol} | {pairs} | {status} | " + " | ".join(cells)
                             + f" | {source} [{tag}] |\n")
        write_text_atomic(md, "".join(lines))
        from matchrepro.reporting.tables import to_html

        html_path = out_dir / f"{bench}_vs_published.html"
        write_text_atomic(html_path, to_html(df, f"{bench}: reproduced versus published"))
        written += [csv, md, html_path]
    return written
