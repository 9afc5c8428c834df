"""File I/O: images, atomic writes and the HDF5 layouts of features and predictions.

Key names of the cached files are fixed here only.

Features file (one per features x dataset): a group per image (its path relative to the
dataset root, '/' replaced by '|'), with ``keypoints`` (N, 2) float32 pixels of the upright
original image, ``scores`` (N,), ``descriptors`` (N, D) and attributes ``image_size`` (w, h of the
upright original) and ``scale`` (sx, sy = original / resized, the frame the detector saw).

Predictions file (one per method x dataset): a group per pair ``pair_<index>`` (never keyed
by file stems, see protocols.md §1.1), with ``keypoints0`` (N0, 2), ``keypoints1`` (N1, 2) in
upright-original pixels, ``matches`` (K, 2) int64 indices into them, ``scores`` (K,) and
attributes ``name0``, ``name1``, ``scale0``, ``scale1``. Patch2Pix caches also keep every
refined match before the confidence threshold (:data:`ALL_REFINED`: ``all_keypoints0``,
``all_keypoints1`` (M, 2), ``all_scores`` (M,)), so a method with ``from_cache_of`` re-thresholds
them without the network. Root attributes record the method, dataset and the JSON of the config
that produced it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import cv2
import h5py
import numpy as np

from matchrepro.errors import DatasetError, ImageReadError

ALL_REFINED = ("all_keypoints0", "all_keypoints1", "all_scores")
"""Datasets of a Patch2Pix predictions group: every refined match before the threshold."""


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.name}.", suffix=suffix if suffix is not None else path.suffix,
        dir=path.parent,
    )
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def atomic_dir(out: str | Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``out``; it replaces ``out`` only on success."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        yield tmp
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json_atomic(path: str | os.PathLike, obj) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def read_image(path: str | os.PathLike, grayscale: bool = False, gray_from_color: bool = False) -> np.ndarray:
    """Read an image file as uint8, (H, W) if ``grayscale`` else (H, W, 3) RGB.

    ``gray_from_color`` (with ``grayscale``): decode in colour and convert with BGR2GRAY, as IMP's
    MegaDepth dump does; on JPEGs this differs from decoding to grayscale by a few grey levels.

    Raises:
        ImageReadError: one line naming the file when it is missing or cannot be decoded.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"image not found: {path}")
    flag = cv2.IMREAD_GRAYSCALE if grayscale and not gray_from_color else cv2.IMREAD_COLOR
    img = cv2.imread(str(path), flag)
    if img is None or img.size == 0:
        raise ImageReadError(f"cannot decode image (corrupt or unsupported format): {path}")
    if grayscale:
        return cv2.cvtColor(img, cv2.COLOR_BGR2GRAY) if gray_from_color else img
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """``(w, h)`` in pixels of a stored image without decoding it (JPEG SOF or PNG IHDR header;
    other formats are decoded). EXIF orientation is not applied: this is the stored frame."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(2)
            if head == b"\xff\xd8":  # JPEG: walk the markers to the first start-of-frame
                while True:
                    b = f.read(1)
                    while b and b != b"\xff":
                        b = f.read(1)
                    while b == b"\xff":
                        b = f.read(1)
                    if not b:
                        break
                    marker = b[0]
                    if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
                        continue
                    seg = f.read(2)
                    if len(seg) < 2:
                        break
                    n = int.from_bytes(seg, "big")
                    if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                        sof = f.read(5)
                        return int.from_bytes(sof[3:5], "big"), int.from_bytes(sof[1:3], "big")
                    f.seek(n - 2, 1)
            elif head == b"\x89P":
                hdr = f.read(22)
                if hdr[10:14] == b"IHDR":
                    return int.from_bytes(hdr[14:18], "big"), int.from_bytes(hdr[18:22], "big")
    except OSError:
        raise ImageReadError(f"image not found: {path}") from None
    img = read_image(path)
    return img.shape[1], img.shape[0]


def write_image(path: str | os.PathLike, image: np.ndarray, jpeg_quality: int = 95) -> None:
    """Write an (H, W) or (H, W, 3) RGB uint8 image atomically; format from the suffix."""
    path = Path(path)
    img = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    params = [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality] if path.suffix.lower() in (".jpg", ".jpeg") else []
    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), img, params):
            raise OSError(f"cannot write image: {path}")


def image_key(name: str) -> str:
    """HDF5 group name for an image path relative to its dataset root."""
    return name.replace("/", "|")


def read_h5_dataset(path: str | os.PathLike, key: str) -> np.ndarray:
    """Read one dataset of an HDF5 file with a one-line error naming file and key."""
    try:
        with h5py.File(path, "r") as f:
            return np.asarray(f[key][()])
    except FileNotFoundError:
        raise DatasetError(f"file not found: {path}") from None
    except KeyError:
        raise DatasetError(f"{path}: no dataset '{key}'") from None
    except OSError as e:
        raise DatasetError(f"{path}: cannot read HDF5 ({e})") from None
