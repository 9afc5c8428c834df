"""SuperPoint keypoints and descriptors (imp.md §2.4) through :mod:`matchrepro.models.superpoint`."""

from __future__ import annotations

import numpy as np
import torch

from matchrepro.models.checkpoints import extract_state_dict, load_checkpoint, load_state_dict_strict
from matchrepro.models.superpoint import SuperPoint


SAMPLING = {"superglue": True, "imp": False}


def descriptor_align_corners(cfg: dict) -> bool:
    mode = cfg.get("descriptor_sampling") or "superglue"
    if mode not in SAMPLING:
        raise ValueError(f"features.descriptor_sampling: {mode!r} (expected one of {sorted(SAMPLING)})")
    return SAMPLING[mode]


class SuperPointExtractor:
    """Config keys: ``max_keypoints``, ``nms_radius`` (px), ``detection_threshold`` (the
    keypoint score threshold; note that IMP's dump passes it under a key SuperPoint ignores, so
    its effective value there is 0.0025, imp.md §4.1), ``remove_borders`` (px, default 4),
    ``descriptor_sampling``: ``superglue`` (bilinear with align_corners=True, SuperGlue's SuperPoint)
    or ``imp`` (align_corners=False, as IMP's own SuperPoint runs on torch 1.12 and later; the
    official IMP weights were trained and evaluated on it)."""

    def __init__(self, cfg: dict, weights, device: str = "auto"):
        self.device = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else "cpu")
        self.model = SuperPoint({
            "nms_radius": int(cfg.get("nms_radius", 4)),
            "keypoint_threshold": float(cfg.get("detection_threshold", 0.005)),
            "max_keypoints": int(cfg.get("max_keypoints", -1)),
            "remove_borders": int(cfg.get("remove_borders", 4)),
            "descriptor_align_corners": descriptor_align_corners(cfg),
        })
        load_state_dict_strict(self.model, extract_state_dict(load_checkpoint(weights)), str(weights))
        self.model.eval().to(self.device)

    def __call__(self, image: np.ndarray) -> dict:
        """Args: image (H, W) uint8 or float in [0, 255]. Returns ``keypoints`` (N, 2) float32
        pixels, ``scores`` (N,), ``descriptors`` (N, 256), by descending score."""
        x = torch.as_tensor(np.asarray(image, np.float32) / 255.0, device=self.device)[None, None]
        r = self.model(x)[0]
        return {k: v.cpu().numpy().astype(np.float32) for k, v in r.items()}
