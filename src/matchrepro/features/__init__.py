"""Local feature extractors: ``get_extractor(cfg)`` returns ``image (H, W) uint8 -> dict``."""

from __future__ import annotations

from matchrepro.errors import ConfigError


def get_extractor(cfg: dict):
    if cfg["type"] == "sift":
        from matchrepro.features.sift import SIFT

        return SIFT(cfg)
    raise ConfigError(f"features type {cfg['type']!r} is not available yet")
