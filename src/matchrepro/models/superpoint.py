"""SuperPoint (DeTone et al. 2018) with the keys of ``superpoint_v1.pth`` (imp.md §2.4).

Conventions: the input is a grayscale image ``(B, 1, H, W)`` in [0, 1]; keypoints are integer
pixel positions ``(x, y)`` (x = column) of that image, no sub-pixel refinement; descriptors are
L2-normalised 256-vectors bilinearly sampled from the 1/8-resolution descriptor map.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

DEFAULTS = {"nms_radius": 4, "keypoint_threshold": 0.005, "max_keypoints": -1, "remove_borders": 4,
            "descriptor_align_corners": True}


def simple_nms(scores: torch.Tensor, radius: int) -> torch.Tensor:
    """Max-pool non-maximum suppression with two suppression rounds. scores ``(B, H, W)``."""

    def max_pool(x):
        return F.max_pool2d(x, kernel_size=2 * radius + 1, stride=1, padding=radius)

    zeros = torch.zeros_like(scores)
    max_mask = scores == max_pool(scores)
    for _ in range(2):
        supp_mask = max_pool(max_mask.float()) > 0
        supp_scores = torch.where(supp_mask, zeros, scores)
        new_max = supp_scores == max_pool(supp_scores)
        max_mask = max_mask | (new_max & ~supp_mask)
    return torch.where(max_mask, scores, zeros)


def sample_descriptors(kpts: torch.Tensor, desc: torch.Tensor, s: int = 8, align_corners: bool = True) -> torch.Tensor:
    """Bilinear descriptors at pixel keypoints ``(N, 2)`` from a map ``(1, C, h, w)`` of stride s,
    with the reference's ``(kp - s/2 + 0.5) / (w*s - s/2 - 0.5)`` normalisation; returns ``(N, C)``.

    ``align_corners``: True as SuperGlue's SuperPoint samples; IMP's own SuperPoint (its evaluation
    and MegaDepth dump) takes False, because its torch-version test is false for torch 1.12 and 2.x."""
    _, c, h, w = desc.shape
    k = kpts - s / 2 + 0.5
    k = k / torch.tensor([w * s - s / 2 - 0.5, h * s - s / 2 - 0.5], dtype=k.dtype, device=k.device)
    k = k * 2 - 1
    d = F.grid_sample(desc, k.view(1, 1, -1, 2), mode="bilinear", align_corners=align_corners)
    return F.normalize(d.reshape(c, -1), p=2, dim=0).t()


class SuperPoint(nn.Module):
    """VGG-style encoder, 65-way detector head and 256-d descriptor head.

    Config: ``nms_radius`` (px), ``keypoint_threshold``, ``max_keypoints`` (-1: all),
    ``remove_borders`` (px), ``descriptor_align_corners`` (see :func:`sample_descriptors`)."""

    def __init__(self, config: dict | None = None):
        super().__init__()
        self.config = {**DEFAULTS, **(config or {})}
        c1, c2, c3, c4, c5 = 64, 64, 128, 128, 256
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2)
        self.conv1a = nn.Conv2d(1, c1, 3, padding=1)
        self.conv1b = nn.Conv2d(c1, c1, 3, padding=1)
        self.conv2a = nn.Conv2d(c1, c2, 3, padding=1)
        self.conv2b = nn.Conv2d(c2, c2, 3, padding=1)
        self.conv3a = nn.Conv2d(c2, c3, 3, padding=1)
        self.conv3b = nn.Conv2d(c3, c3, 3, padding=1)
        self.conv4a = nn.Conv2d(c3, c4, 3, padding=1)
        self.conv4b = nn.Conv2d(c4, c4, 3, padding=1)
        self.convPa = nn.Conv2d(c4, c5, 3, padding=1)
        self.convPb = nn.Conv2d(c5, 65, 1)
        self.convDa = nn.Conv2d(c4, c5, 3, padding=1)
        self.convDb = nn.Conv2d(c5, 256, 1)

    def dense(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """image ``(B, 1, H, W)`` -> scores ``(B, H', W')`` (H' = 8 floor(H/8)) and the
        L2-normalised descriptor map ``(B, 256, H/8, W/8)``."""
        x = self.relu(self.conv1a(image))
        x = self.pool(self.relu(self.conv1b(x)))
        x = self.relu(self.conv2a(x))
        x = self.pool(self.relu(self.conv2b(x)))
        x = self.relu(self.conv3a(x))
        x = self.pool(self.relu(self.conv3b(x)))
        x = self.relu(self.conv4a(x))
        x = self.relu(self.conv4b(x))
        scores = torch.softmax(self.convPb(self.relu(self.convPa(x))), 1)[:, :-1]
        b, _, h, w = scores.shape
        scores = scores.permute(0, 2, 3, 1).reshape(b, h, w, 8, 8).permute(0, 1, 3, 2, 4).reshape(b, h * 8, w * 8)
        desc = F.normalize(self.convDb(self.relu(self.convDa(x))), p=2, dim=1)
        return scores, desc

    @torch.no_grad()
    def forward(self, image: torch.Tensor) -> list[dict]:
        """Per image: ``keypoints (N, 2)`` float pixels (integer values), ``scores (N,)``,
        ``descriptors (N, 256)``; sorted by descending score, at most ``max_keypoints``."""
        cfg = self.config
        scores, desc = self.dense(image)
        scores = simple_nms(scores, int(cfg["nms_radius"]))
        out = []
        for b in range(scores.shape[0]):
            s = scores[b]
            yx = torch.nonzero(s > cfg["keypoint_threshold"])
            sc = s[yx[:, 0], yx[:, 1]]
            r = int(cfg["remove_borders"])
            h, w = s.shape
            keep = (yx[:, 0] >= r) & (yx[:, 0] < h - r) & (yx[:, 1] >= r) & (yx[:, 1] < w - r)
            yx, sc = yx[keep], sc[keep]
            order = torch.argsort(sc, descending=True)
            if int(cfg["max_keypoints"]) >= 0:
                order = order[: int(cfg["max_keypoints"])]
            yx, sc = yx[order], sc[order]
            kpts = yx.flip(1).to(image.dtype)
            d = (sample_descriptors(kpts, desc[b:b + 1], align_corners=bool(cfg["descriptor_align_corners"]))
                 if len(kpts) else desc.new_zeros(0, 256))
            out.append({"keypoints": kpts, "scores": sc, "descriptors": d})
        return out
