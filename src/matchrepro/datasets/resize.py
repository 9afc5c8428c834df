"""Resize rules applied before a method sees an image (a protocol knob, always recorded).

Rules (``mode``):
* ``none``: keep the original size;
* ``long_side``: scale so the longer side equals ``size`` (SuperGlue ``--resize N``; this
  *upsamples* small images), ``w_new = round(w * s)``;
* ``exact``: force ``width`` x ``height`` (SuperGlue ``--resize 640 480``);
* ``max_long_side``: downscale only, so the longer side is at most ``size``; with
  ``multiple_of`` the new sizes are floored to a multiple of it (Patch2Pix im1024 uses 16).
``interpolation``: ``linear`` (default) or ``cubic`` (Patch2Pix resizes bicubically).
Scales are ``(sx, sy) = (w / w_new, h / h_new)``; K scales as ``diag(1/sx, 1/sy, 1) K``.
"""

from __future__ import annotations

import cv2
import numpy as np


def resized_size(width: int, height: int, rule: dict) -> tuple[int, int]:
    """New (w, h) for an image of ``width`` x ``height`` under ``rule``."""
    mode = rule.get("mode", "none")
    if mode == "none":
        return width, height
    if mode == "exact":
        return int(rule["width"]), int(rule["height"])
    if mode in ("long_side", "max_long_side"):
        s = float(rule["size"]) / max(width, height)
        if mode == "max_long_side":
            s = min(s, 1.0)
        w_new, h_new = int(round(width * s)), int(round(height * s))
        m = int(rule.get("multiple_of") or 1)
        if m > 1:
            w_new, h_new = max(m, w_new // m * m), max(m, h_new // m * m)
        return w_new, h_new
    raise ValueError(f"unknown resize mode {mode!r}")


def apply_resize(image: np.ndarray, rule: dict) -> tuple[np.ndarray, tuple[float, float]]:
    """Resize ``image`` (H, W[, C]) by ``rule``; returns the image and ``(sx, sy)``.

    ``float: true`` resizes in float32 (SuperGlue ``--resize_float``), otherwise in uint8.
    The returned image keeps float32 if resized in float.
    """
    h, w = image.shape[:2]
    w_new, h_new = resized_size(w, h, rule)
    if (w_new, h_new) == (w, h):
        return image, (1.0, 1.0)
    src = image.astype(np.float32) if rule.get("float", False) else image
    interp = cv2.INTER_CUBIC if rule.get("interpolation") == "cubic" else cv2.INTER_LINEAR
    out = cv2.resize(src, (w_new, h_new), interpolation=interp)
    return out, (w / w_new, h / h_new)


def describe(rule: dict) -> str:
    """Short human-readable form for tables, e.g. ``long side 1600 (float)``."""
    mode = rule.get("mode", "none")
    if mode == "none":
        return "original"
    if mode == "exact":
        return f"{rule['width']}x{rule['height']}"
    txt = f"long side {'<=' if mode == 'max_long_side' else ''}{rule['size']}"
    if rule.get("multiple_of"):
        txt += f" /{rule['multiple_of']}"
    if rule.get("float"):
        txt += " (float)"
    if rule.get("interpolation") == "cubic":
        txt += " bicubic"
    return txt
