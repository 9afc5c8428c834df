"""Provenance of a run: package versions, the validated config, the git commit and the machine."""

from __future__ import annotations

import html
import importlib.metadata
import platform
import subprocess
import sys
from pathlib import Path

import yaml

from matchrepro.cpu_isa import describe
from matchrepro.io import write_json_atomic, write_text_atomic

PACKAGES = ("matchrepro", "snakemake", "torch", "numpy", "opencv-python-headless", "scipy", "pandas",
            "matplotlib", "h5py", "scikit-image")


def git_commit(repo: Path) -> str:
    try:
        head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown (git not available)"
    return (head or "unknown (not a git checkout)") + (" (with uncommitted changes)" if dirty else "")


def collect(config: dict) -> dict:
    versions = {}
    for p in PACKAGES:
        try:
            versions[p] = importlib.metadata.version(p)
        except importlib.metadata.PackageNotFoundError:
            versions[p] = "not installed"
    import cv2

    versions["opencv (cv2)"] = cv2.__version__
    return {
        "git_commit": git_commit(Path(__file__).resolve().parents[3]),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu": describe(),
        "versions": versions,
        "config": config,
    }


def write_provenance(spec: dict, out: str | Path) -> None:
    """``out`` (.html) for the report and a ``.json`` twin beside it."""
    info = collect(spec["config"])
    out = Path(out)
    write_json_atomic(out.with_suffix(".json"), info)
    rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>" for k, v in info["versions"].items())
    body = (f"<h2>Provenance</h2><p>git commit: <code>{html.escape(info['git_commit'])}</code><br>"
            f"Python {html.escape(info['python'])} on {html.escape(info['platform'])}<br>"
            f"CPU: {html.escape(', '.join(f'{k} {v}' for k, v in info['cpu'].items()))}</p>"
            f"<table border='1' cellpadding='3'><tr><th>package</th><th>version</th></tr>{rows}</table>"
            f"<h3>Configuration (validated, defaults filled in)</h3>"
            f"<pre>{html.escape(yaml.safe_dump(info['config'], sort_keys=False))}</pre>")
    write_text_atomic(out, f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>provenance</title></head>"
                           f"<body>{body}</body></html>\n")
