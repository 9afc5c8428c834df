"""Figures (matplotlib, PNG and PDF): HPatches MMA curves, cumulative pose-error and corner-error
curves, AUC bars, match visualisations (correct matches green, wrong ones red), and training
loss curves."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

if "inline" not in matplotlib.get_backend():  # headless files, but keep a notebook's inline plots
    matplotlib.use("Agg")
import cv2  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from matchrepro.datasets.benchmark import open_benchmark  # noqa: E402
from matchrepro.errors import DatasetError  # noqa: E402
from matchrepro.evaluation.evaluate import upright_geometry  # noqa: E402
from matchrepro.geometry.epipolar import epipolar_line_distance_px  # noqa: E402
from matchrepro.geometry.homography import warp_points  # noqa: E402
from matchrepro.io import read_image  # noqa: E402
from matchrepro.pipeline.match import read_predictions  # noqa: E402

plt.rcParams.update({"figure.dpi": 110, "font.size": 9, "axes.grid": True, "grid.alpha": 0.3})


def _save(fig, out_dir: Path, name: str) -> list[Path]:
    out = [out_dir / f"{name}.png", out_dir / f"{name}.pdf"]
    for p in out:
        fig.savefig(p, bbox_inches="tight")
    plt.close(fig)
    return out


def _label(r: dict) -> str:
    return f"{r['method']} ({r['protocol']})"


def plot_mma(results: list[dict], out_dir: Path, title: str) -> list[Path]:
    """MMA versus threshold: overall, illumination and viewpoint panels, one line per method."""
    rows = [r for r in results if r["protocol_config"]["type"] == "hpatches_mma"]
    if not rows:
        return []
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.4), sharey=True)
    for ax, (prefix, name) in zip(axes, (("", "overall"), ("illumination_", "illumination"), ("viewpoint_", "viewpoint"))):
        for r in rows:
            ths = r["protocol_config"]["thresholds_px"]
            ax.plot(ths, [r["summary"].get(f"{prefix}mma@{t:g}px", np.nan) for t in ths], marker="o", ms=3,
                    label=r["method"])
        ax.set_title(name)
        ax.set_xlabel("threshold [px]")
        ax.set_ylim(0, 1)
    axes[0].set_ylabel("MMA")
    axes[-1].legend(loc="lower right", fontsize=8)
    fig.suptitle(title, y=1.04)
    return _save(fig, out_dir, "mma_curves")


def _cumulative(ax, errors: np.ndarray, xmax: float, label: str):
    e = np.sort(np.where(np.isfinite(errors), errors, np.inf))
    xs = np.linspace(0, xmax, 301)
    ax.plot(xs, [np.mean(e <= x) for x in xs], label=label)


def plot_error_curves(results: list[dict], pair_tables: dict[tuple[str, str], pd.DataFrame], out_dir: Path,
                      title: str) -> list[Path]:
    """Cumulative fraction of pairs below an error: pose error (0-30 deg) per relative-pose
    protocol, corner error (0-10 px) per homography protocol; failures never count as below."""
    out = []
    for ptype, col, xmax, unit, name in (("relative_pose", "pose_error_deg", 30, "deg", "pose_error_curves"),
                                         ("homography", "corner_error_px", 10, "px", "corner_error_curves")):
        protos = sorted({r["protocol"] for r in results if r["protocol_config"]["type"] == ptype})
        if not protos:
            continue
        fig, axes = plt.subplots(1, len(protos), figsize=(4.2 * len(protos), 3.4), squeeze=False)
        for ax, proto in zip(axes[0], protos):
            for r in results:
                if r["protocol"] == proto:
                    _cumulative(ax, pair_tables[(r["method"], proto)][col].to_numpy(float), xmax, r["method"])
            ax.set_title(proto)
            ax.set_xlabel(f"{'pose' if ptype == 'relative_pose' else 'corner'} error [{unit}]")
            ax.set_ylim(0, 1)
        axes[0][0].set_ylabel("fraction of pairs")
        axes[0][-1].legend(loc="lower right", fontsize=8)
        fig.suptitle(title, y=1.04)
        out += _save(fig, out_dir, name)
    return out


def plot_auc_bars(results: list[dict], out_dir: Path, title: str) -> list[Path]:
    """Grouped bars of the AUC columns per method and protocol, with the bootstrap 95 % interval
    over pairs as an error bar where the summary has one."""
    import re

    rows = [r for r in results if r["protocol_config"]["type"] in ("relative_pose", "homography")]
    if not rows:
        return []
    pattern = re.compile(r"^(h_)?auc@([0-9.]+)(deg|px)$")
    keys = sorted({k for r in rows for k in r["summary"] if pattern.match(k)},
                  key=lambda k: (k.split("@")[0], float(pattern.match(k).group(2))))
    fig, ax = plt.subplots(figsize=(max(5, 1.2 * len(rows)), 3.6))
    width = 0.8 / max(1, len(keys))
    for k, key in enumerate(keys):
        vals = np.array([r["summary"].get(key, np.nan) for r in rows], float)
        lo = np.array([r["summary"].get(f"{key}_ci_low", np.nan) for r in rows], float)
        hi = np.array([r["summary"].get(f"{key}_ci_high", np.nan) for r in rows], float)
        err = None if np.all(np.isnan(lo)) else np.nan_to_num(np.stack([vals - lo, hi - vals]))
        ax.bar(np.arange(len(rows)) + k * width, vals, width, label=key, yerr=err, capsize=2,
               error_kw={"elinewidth": 0.6})
    ax.set_xticks(np.arange(len(rows)) + width * (len(keys) - 1) / 2)
    ax.set_xticklabels([_label(r) for r in rows], rotation=30, ha="right", fontsize=7)
    ax.set_ylabel("AUC [%]")
    ax.legend(fontsize=7, ncol=2)
    ax.set_title(title)
    return _save(fig, out_dir, "auc_bars")


def draw_matches(img0: np.ndarray, img1: np.ndarray, k0: np.ndarray, k1: np.ndarray, colors: np.ndarray,
                 max_lines: int = 300) -> np.ndarray:
    """Side-by-side RGB picture (uint8, images top-aligned) with one line per match.

    Args:
        img0, img1: (H, W, 3) RGB uint8; k0, k1: (N, 2) matched points in their pixels (x = column).
        colors: (N, 3) RGB uint8 per match (:func:`correctness_colors`, :func:`confidence_colors`).
        max_lines: at most this many matches are drawn (a seeded random subset).
    """
    h = max(img0.shape[0], img1.shape[0])
    pad = lambda im: np.pad(im, ((0, h - im.shape[0]), (0, 0), (0, 0)))  # noqa: E731
    canvas = np.concatenate([pad(img0), pad(img1)], 1).copy()
    off = img0.shape[1]
    idx = np.arange(len(k0))
    if len(idx) > max_lines:
        idx = np.random.default_rng(0).choice(idx, max_lines, replace=False)
    for i in idx:
        c = tuple(int(v) for v in colors[i])
        p0 = tuple(int(round(v)) for v in k0[i])
        p1 = (int(round(k1[i][0])) + off, int(round(k1[i][1])))
        cv2.line(canvas, p0, p1, c, 1, cv2.LINE_AA)
        cv2.circle(canvas, p0, 2, c, -1, cv2.LINE_AA)
        cv2.circle(canvas, p1, 2, c, -1, cv2.LINE_AA)
    return canvas


def correctness_colors(correct: np.ndarray) -> np.ndarray:
    """(N,) bool -> (N, 3) RGB: green correct, red wrong."""
    return np.where(np.asarray(correct, bool)[:, None], [[40, 200, 40]], [[230, 40, 40]]).astype(np.uint8)


def confidence_colors(scores: np.ndarray, cmap: str = "RdYlGn") -> np.ndarray:
    """(N,) match confidences in [0, 1] (clipped) -> (N, 3) RGB of ``cmap`` (red low, green high)."""
    rgba = plt.get_cmap(cmap)(np.clip(np.asarray(scores, np.float64), 0.0, 1.0))
    return (rgba[:, :3] * 255).round().astype(np.uint8).reshape(-1, 3)


def match_correctness(bench, pair, d: dict, k0: np.ndarray, k1: np.ndarray, threshold_px: float = 3.0) -> np.ndarray:
    """Ground-truth correctness of matches (upright-original pixels): distance to the epipolar
    line (relative pose) or to the homography projection (HPatches) at most ``threshold_px``."""
    if len(k0) == 0:
        return np.zeros(0, bool)
    if bench.kind == "homography":
        return np.linalg.norm(warp_points(pair.H_0to1, k0) - k1, axis=1) <= threshold_px
    K0, K1, T = upright_geometry(pair, d)
    return epipolar_line_distance_px(k0, k1, K0, K1, T) <= threshold_px


def plot_match_examples(dataset_cfg: dict, predictions: dict[str, str], out_dir: Path, n_pairs: int = 2) -> list[Path]:
    """For the first ``n_pairs`` pairs of the dataset, one picture per method."""
    bench = open_benchmark(dataset_cfg)
    out = []
    for method, path in predictions.items():
        preds = dict(read_predictions(path))
        for pair in bench.pairs[:n_pairs]:
            d = preds[pair.index]
            m = d["matches"]
            k0, k1 = d["keypoints0"][m[:, 0]].astype(float), d["keypoints1"][m[:, 1]].astype(float)
            ok = match_correctness(bench, pair, d, k0, k1)
            imgs = []
            for name, rot in ((pair.name0, pair.rot0), (pair.name1, pair.rot1)):
                im = read_image(bench.image_dir / name)
                imgs.append(np.ascontiguousarray(np.rot90(im, k=rot)) if rot else im)
            pic = draw_matches(imgs[0], imgs[1], k0, k1, correctness_colors(ok))
            fig, ax = plt.subplots(figsize=(9, 9 * pic.shape[0] / pic.shape[1] + 0.4))
            ax.imshow(pic)
            ax.axis("off")
            ax.set_title(f"{method}: pair {pair.index} {pair.name0} - {pair.name1}\n"
                         f"{int(ok.sum())} of {len(ok)} matches within 3 px of the ground truth (green)", fontsize=8)
            out += _save(fig, out_dir, f"matches_{method}_pair{pair.index:04d}")
    return out


def make_figures(spec: dict, metrics: list[str], predictions: list[str], out_dir: str | Path) -> list[Path]:
    """All figures of one benchmark into ``out_dir``; ``metrics`` are summary JSONs (their
    per-pair CSVs sit beside them), ``predictions`` the caches of the benchmark's methods."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = [json.loads(Path(p).read_text()) for p in metrics]
    pair_tables = {(r["method"], r["protocol"]): pd.read_csv(str(p)[: -len(".json")] + "_pairs.csv")
                   for r, p in zip(results, metrics)}
    title = f"{spec['benchmark']} ({spec['dataset']['source']} data)"
    written = plot_mma(results, out_dir, title)
    written += plot_error_curves(results, pair_tables, out_dir, title)
    written += plot_auc_bars(results, out_dir, title)
    by_method = {Path(p).parent.name: p for p in predictions}
    written += plot_match_examples(spec["dataset"], by_method, out_dir, spec.get("match_examples", 2))
    return written


def plot_training_curves(logs: list[str | Path], out_dir: str | Path, window: int = 10) -> list[Path]:
    """One panel per training run (named by the log's folder): the per-step loss (thin) and its
    running mean over ``window`` steps (thick); skipped steps (NaN loss) are left out; the
    learning rate on a second axis. ``logs`` are ``log.csv`` files (step, epoch, loss, lr, seconds)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    n = len(logs)
    fig, axes = plt.subplots(1, n, figsize=(5.4 * n, 3.4), squeeze=False, layout="constrained")
    for ax, log in zip(axes[0], logs):
        try:
            df = pd.read_csv(log)
        except (OSError, ValueError) as e:
            raise DatasetError(f"{log}: cannot read the training log ({e})") from None
        if not {"step", "loss", "lr"} <= set(df.columns):
            raise DatasetError(f"{log}: not a training log (columns step, loss, lr expected)")
        ok = df[np.isfinite(df.loss)]
        ax.plot(ok.step, ok.loss, lw=0.6, alpha=0.5, label="loss per step")
        ax.plot(ok.step, ok.loss.rolling(window, min_periods=1).mean(), lw=1.8, label=f"mean of {window}")
        skipped = int((~np.isfinite(df.loss)).sum())
        ax.set_title(f"{Path(log).parent.name}: {len(df)} steps" + (f", {skipped} skipped" if skipped else ""))
        ax.set_xlabel("step")
        ax.set_ylabel("training loss")
        ax2 = ax.twinx()
        ax2.plot(df.step, df.lr, color="grey", lw=0.8, ls="--", label="learning rate")
        ax2.set_ylabel("learning rate", color="grey")
        ax2.set_ylim(0, 1.15 * float(df.lr.max()) if len(df) else 1)
        ax2.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
        ax2.grid(False)
        ax.legend(loc="upper right", fontsize=7)
    return _save(fig, out_dir, "loss_curves")


VALIDATION_SKIP = {"step", "epoch", "best", "matches", "mean_error", "median_error", "max_error"}


def plot_validation_curves(logs: list[str | Path], out_dir: str | Path) -> list[Path]:
    """One panel per training run with validation rows (``validation.csv``: step, epoch, the
    metrics, best = 1 where the kept checkpoint improved): the rate-like metrics in % (fractions
    × 100; AUCs already are), the improving steps starred and the kept step (the last one)
    named in the title. Runs without validation (header-only files) are left out."""
    runs = []
    for log in logs:
        try:
            df = pd.read_csv(log)
        except (OSError, ValueError) as e:
            raise DatasetError(f"{log}: cannot read the validation log ({e})") from None
        if len(df):
            if not {"step", "best"} <= set(df.columns):
                raise DatasetError(f"{log}: not a validation log (columns step, best expected)")
            runs.append((Path(log).parent.name, df))
    if not runs:
        return []
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, len(runs), figsize=(5.4 * len(runs), 3.4), squeeze=False, layout="constrained")
    for ax, (name, df) in zip(axes[0], runs):
        cols = [c for c in df.columns if c not in VALIDATION_SKIP and not c.startswith("pass@")
                or c in ("pass@1", "pass@5", "pass@10")]
        for c in cols:
            v = df[c].astype(float)
            scale = 100.0 if v.abs().max() <= 1.0 and not c.startswith("auc") and c != "mse" else 1.0
            pct = scale == 100 or c.startswith("auc")
            ax.plot(df.step, v * scale, marker=".", lw=1.2, label=c + (" (%)" if pct else ""))
        kept = df[df.best == 1]
        if len(kept):
            k = int(kept.step.iloc[-1])
            ax.axvline(k, color="k", lw=0.8, ls=":")
            ax.set_title(f"{name}: kept step {k} (dotted)", fontsize=9)
        ax.set_xlabel("step")
        ax.set_ylabel("validation metric")
        ax.legend(fontsize=7)
    return _save(fig, out_dir, "validation_curves")
