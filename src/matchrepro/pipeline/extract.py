"""Extract local features for every image of a benchmark into one HDF5 cache."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
from tqdm import tqdm

from matchrepro.datasets.benchmark import open_benchmark
from matchrepro.datasets.resize import apply_resize
from matchrepro.features import get_extractor
from matchrepro.io import atomic_path, image_key, read_image


def load_upright(path: Path, rot: int, resize_rule: dict, grayscale: bool = True):
    """Read an image, turn it upright (``np.rot90`` k=rot) and apply the resize rule.

    Returns:
        (image, (sx, sy), (w, h)): the resized image, the scale from resized to upright-original
        pixels (``x_orig = x_resized * sx``) and the upright-original size.
    """
    img = read_image(path, grayscale=grayscale)
    if rot:
        img = np.ascontiguousarray(np.rot90(img, k=rot))
    h, w = img.shape[:2]
    img, scale = apply_resize(img, resize_rule)
    return img, scale, (w, h)


def extract_image(extractor, path: Path, rot: int, resize_rule: dict) -> dict:
    """Features of one image file: ``keypoints (N, 2)`` in upright-original pixels (resized-frame
    keypoints times the scale), ``scores``, ``descriptors``, ``scale`` (sx, sy) and ``image_size``
    (w, h) of the upright original."""
    img, scale, wh = load_upright(path, rot, resize_rule)
    feats = extractor(img)
    return {"keypoints": feats["keypoints"] * np.asarray(scale, np.float32)[None], "scores": feats["scores"],
            "descriptors": feats["descriptors"], "scale": np.asarray(scale, np.float64),
            "image_size": np.asarray(wh, np.int64)}


def extract_features(spec: dict, out: str | Path, weights: str | Path | None = None) -> None:
    """``spec``: ``{"dataset": <dataset block>, "features": <features block>, "resize": rule}``.

    Writes the features file layout documented in :mod:`matchrepro.io`; keypoints are
    stored in upright-original pixels (resized-frame keypoints times the scale).
    """
    bench = open_benchmark(spec["dataset"])
    extractor = get_extractor(spec["features"], weights)
    with atomic_path(out) as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs["config"] = json.dumps(spec, sort_keys=True)
            for name, rot in tqdm(bench.images(), desc=f"extract {spec['features']['name']}", unit="img"):
                feats = extract_image(extractor, bench.image_dir / name, rot, spec["resize"])
                g = f.create_group(image_key(name))
                for k in ("keypoints", "scores", "descriptors"):
                    g[k] = feats[k]
                g.attrs["scale"] = feats["scale"]
                g.attrs["image_size"] = feats["image_size"]
                g.attrs["rot"] = rot
