"""Photographs bundled with scikit-image, used as textures and HPatches sources (offline)."""

from __future__ import annotations

import functools

import numpy as np

#: Colour photographs (natural scenes with texture) and grey texture images in the wheel.
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry")
GREY_TEXTURES = ("brick", "grass", "gravel", "camera", "moon", "page", "text", "coins", "clock")


@functools.lru_cache(maxsize=None)
def load(name: str) -> np.ndarray:
    """(H, W, 3) uint8 RGB version of ``skimage.data.<name>()``."""
    import skimage.data

    img = np.asarray(getattr(skimage.data, name)())
    if img.dtype == bool:
        img = img.astype(np.uint8) * 255
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    return np.ascontiguousarray(img[:, :, :3].astype(np.uint8))


def all_names() -> tuple[str, ...]:
    return PHOTOS + GREY_TEXTURES
