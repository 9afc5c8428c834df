"""Patch2Pix and NCNet-adapted as workflow matchers (detector-free: keypoints are the matches).

Images are read as RGB, turned upright, resized by the method's rule (the release: long side
at most 1024, floored to a multiple of 16, bicubic), scaled to [0, 1] and ImageNet-normalised;
matches come back in upright-original pixels (resized coordinates times the scale, no half-pixel
correction, as released).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from matchrepro.errors import ConfigError
from matchrepro.models.checkpoints import extract_state_dict, load_checkpoint, load_state_dict_strict
from matchrepro.models.patch2pix import IMAGENET_MEAN, IMAGENET_STD, NCNet, Patch2Pix, predict, refine_matches


def load_model(kind: str, weights: str | Path, device: torch.device) -> NCNet:
    """Build Patch2Pix or NCNet and load the weights strictly. ``feat_idx`` and ``arch`` come
    from the checkpoint when it has them (our trained files), else the released defaults."""
    ckpt = load_checkpoint(weights, map_location="cpu")
    sd = extract_state_dict(ckpt)
    meta = ckpt if isinstance(ckpt, dict) else {}
    arch = meta.get("arch")
    if kind == "patch2pix":
        model = Patch2Pix(feat_idx=meta.get("feat_idx", [0, 1, 2, 3]), arch=arch)
    elif kind == "ncnet":
        model = NCNet(arch=arch)
        sd = {k: v for k, v in sd.items() if k.startswith(("extract.", "ncn."))}  # a Patch2Pix file works too
    else:
        raise ConfigError(f"matcher type {kind!r} is not a Patch2Pix-family matcher")
    load_state_dict_strict(model, sd, str(weights))
    return model.to(device).eval()


def to_tensor(image: np.ndarray, device: torch.device) -> torch.Tensor:
    """(H, W, 3) RGB uint8 (or float in [0, 255]) -> (1, 3, H, W) ImageNet-normalised."""
    x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)[None]
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return ((x - mean) / std).to(device)


class Patch2PixMatcher:
    def __init__(self, method: dict, weights: str | Path, device: str = "auto"):
        dev = torch.device("cuda" if device in ("auto", "cuda") and torch.cuda.is_available() else "cpu")
        self.device = dev
        self.kind = method["matcher"]["type"]
        self.threshold, self.refine_keeps_all = selection(method)
        self.model = load_model(self.kind, weights, dev)

    def __call__(self, img0: np.ndarray, img1: np.ndarray, scale0, scale1) -> dict:
        """Resized RGB images and their scales -> keypoints0/1 (N, 2) in upright-original
        pixels, matches (N, 2) = (i, i), scores (N,). Patch2Pix also returns every refined match
        before the confidence threshold: ``all_keypoints0/1`` (M, 2) and ``all_scores`` (M,), so
        another threshold needs no network (:func:`confident`, ``from_cache_of``)."""
        if self.kind != "patch2pix":
            out = predict(self.model, to_tensor(img0, self.device), to_tensor(img1, self.device), self.threshold)
            return self._to_original(out, scale0, scale1)
        every = predict(self.model, to_tensor(img0, self.device), to_tensor(img1, self.device), float("-inf"))
        return self._kept(self._to_original(every, scale0, scale1), keep_all_if_none=True)

    def refine(self, img0: np.ndarray, img1: np.ndarray, scale0, scale1, pts0: np.ndarray, pts1: np.ndarray) -> dict:
        """Refine another method's matches ``pts0``/``pts1`` (N, 2) given in upright-original
        pixels: into the resized frame (divided by the scale), mid + fine regressors, kept where
        the fine confidence exceeds the threshold (all of them when none does, the released
        ``refine_fallback: all``; ``none`` keeps none), back to original pixels (as :meth:`__call__`,
        with the ``all_*`` arrays: every refined match)."""
        if self.kind != "patch2pix":
            raise ConfigError("only Patch2Pix refines matches (matcher type patch2pix)")
        s0, s1 = np.asarray(scale0, np.float64), np.asarray(scale1, np.float64)
        m = np.concatenate([np.asarray(pts0, np.float64) / s0, np.asarray(pts1, np.float64) / s1], 1).reshape(-1, 4)
        every = refine_matches(self.model, to_tensor(img0, self.device), to_tensor(img1, self.device),
                               torch.from_numpy(m).float().to(self.device), float("-inf"))
        return self._kept(self._to_original(every, scale0, scale1), keep_all_if_none=self.refine_keeps_all)

    def _kept(self, every: dict, keep_all_if_none: bool) -> dict:
        """The matches of ``every`` (all refined ones) above ``self.threshold``, plus ``every``
        itself as ``all_keypoints0/1`` and ``all_scores``."""
        out = select_matches(every, confident(every["scores"], self.threshold, keep_all_if_none))
        return out | {"all_keypoints0": every["keypoints0"], "all_keypoints1": every["keypoints1"],
                      "all_scores": every["scores"]}

    @staticmethod
    def _to_original(out: dict, scale0, scale1) -> dict:
        m = out["matches"].cpu().numpy().astype(np.float64)
        k0 = (m[:, :2] * np.asarray(scale0)[None]).astype(np.float32)
        k1 = (m[:, 2:] * np.asarray(scale1)[None]).astype(np.float32)
        return {"keypoints0": k0, "keypoints1": k1, "matches": _diagonal(len(m)),
                "scores": out["scores"].cpu().numpy().astype(np.float32)}


def _diagonal(n: int) -> np.ndarray:
    """matches (n, 2) = (i, i): a detector-free matcher's keypoints are its matches."""
    return np.stack([np.arange(n), np.arange(n)], 1).astype(np.int64)


def selection(method: dict) -> tuple[float, bool]:
    """What picks among a method's refined matches: ``matcher.threshold`` (default 0.5 for
    Patch2Pix's fine confidence, 0.9 for NCNet's coarse score) and whether a refiner keeps all
    its refined matches when none passes (``refine_fallback``: ``all``, the release and the
    default, or ``none``). Matching itself always keeps all then, as released."""
    matcher = method["matcher"]
    threshold = matcher["threshold"]
    if threshold is None:
        threshold = 0.5 if matcher["type"] == "patch2pix" else 0.9
    fallback = matcher.get("refine_fallback") or "all"
    if fallback not in ("all", "none"):
        raise ConfigError(f"methods.{method.get('name', '?')}.matcher.refine_fallback: {fallback!r} "
                          "(expected 'all' or 'none')")
    return threshold, fallback == "all"


def confident(scores: np.ndarray, threshold: float, keep_all_if_none: bool = True) -> np.ndarray:
    """Indices (K,) of the fine confidences ``scores`` (M,) above ``threshold``, compared in
    float32 as the network's probabilities are; all M of them when none passes and
    ``keep_all_if_none`` (the release: :func:`~matchrepro.models.patch2pix.predict` always, a
    refiner with ``refine_fallback: all``), else none."""
    scores = np.asarray(scores, np.float32)
    index = np.flatnonzero(scores > np.float32(threshold))
    if len(index) == 0 and keep_all_if_none:
        index = np.arange(len(scores))
    return index


def select_matches(every: dict, index: np.ndarray) -> dict:
    """The rows ``index`` of a detector-free result (keypoints0/1 (M, 2), scores (M,)), with
    matches (K, 2) = (i, i) renumbered."""
    return {"keypoints0": every["keypoints0"][index], "keypoints1": every["keypoints1"][index],
            "matches": _diagonal(len(index)), "scores": every["scores"][index]}
