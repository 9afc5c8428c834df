"""Local feature extractors: ``get_extractor(cfg, weights)`` returns ``image (H, W) uint8 -> dict``."""

from __future__ import annotations

from matchrepro.errors import ConfigError


def get_extractor(cfg: dict, weights=None):
    if cfg["type"] == "sift":
        from matchrepro.features.sift import SIFT

        return SIFT(cfg)
    if cfg["type"] == "superpoint":
        from matchrepro.features.superpoint import SuperPointExtractor

        if weights is None:
            raise ConfigError(f"features.{cfg.get('name', 'superpoint')}.weights: SuperPoint needs weights "
                              "(superpoint_v1.pth)")
        return SuperPointExtractor(cfg, weights)
    raise ConfigError(f"features type {cfg['type']!r} is not available yet")
