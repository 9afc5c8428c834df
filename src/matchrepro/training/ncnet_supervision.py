"""Supervised correspondence loss for the coarse NCNet stage (the demo's substitute for the
ImageNet + IVD pre-training that cannot be downloaded here; not part of the released method).

Ground truth comes from depth and pose: the centre of every pooled cell of image 1 (pixels of
the training frame, x = column) is lifted with its depth, moved by ``T_1to2`` and projected into
image 2; the target is the pooled cell containing the projection, kept when it lies inside
image 2, in front of the camera and agrees with image 2's depth within ``depth_tol`` (relative),
else ignored (-1). The same is done from image 2 to image 1.

The loss is the cross-entropy of the softmax over all cells of the other image, in both
directions (the softmax :func:`matchrepro.models.patch2pix.corr_to_matches` scores with), on
the NC output and, weighted by ``raw_weight``, on the pooled raw correlation divided by
``temperature`` (a direct signal for the backbone).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from matchrepro.geometry.depth_warp import sample_depth, warp_with_depth


def _cell_centres(h: int, w: int, cell: int, device) -> torch.Tensor:
    ys, xs = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
    return torch.stack([xs.flatten(), ys.flatten()], 1).float() * cell + cell / 2  # (h w, 2) x, y


def cell_targets(depth1: torch.Tensor, depth2: torch.Tensor, K1: torch.Tensor, K2: torch.Tensor,
                 T_1to2: torch.Tensor, grid1: tuple[int, int], grid2: tuple[int, int], cell: int,
                 depth_tol: float = 0.1) -> torch.Tensor:
    """(h1 w1,) index of the image-2 cell seen by each image-1 cell centre, -1 where unknown.

    Args:
        depth1, depth2: (H, W) depth maps of the training frame (0 = invalid).
        K1, K2: (3, 3) intrinsics of the training frame; T_1to2: (4, 4) with X2 = R X1 + t.
        grid1, grid2: (h, w) pooled grids; cell: pixels per pooled cell (16 for stride 8, k=2).
    """
    h1, w1 = grid1
    h2, w2 = grid2
    xy = _cell_centres(h1, w1, cell, depth1.device)
    z1 = sample_depth(depth1, xy)
    uv, z = warp_with_depth(xy, z1, K1, K2, T_1to2)
    H2, W2 = depth2.shape
    ok = (z1 > 0) & (z > 1e-6) & (uv[:, 0] >= 0) & (uv[:, 0] < min(W2, w2 * cell)) & (uv[:, 1] >= 0) \
        & (uv[:, 1] < min(H2, h2 * cell))
    d2 = sample_depth(depth2, uv)
    ok &= (d2 > 0) & (torch.abs(d2 - z) <= depth_tol * d2)
    tgt = torch.floor(uv[:, 1] / cell).long() * w2 + torch.floor(uv[:, 0] / cell).long()
    return torch.where(ok, tgt, torch.full_like(tgt, -1))


def batch_targets(batch: dict, grid1: tuple[int, int], grid2: tuple[int, int], cell: int,
                  depth_tol: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """Targets (B, h1 w1) image 1 -> 2 and (B, h2 w2) image 2 -> 1 for a batch with depth."""
    t12, t21 = [], []
    for b in range(batch["im1"].shape[0]):
        T = batch["T_1to2"][b]
        t12.append(cell_targets(batch["depth1"][b], batch["depth2"][b], batch["K1"][b], batch["K2"][b], T,
                                grid1, grid2, cell, depth_tol))
        t21.append(cell_targets(batch["depth2"][b], batch["depth1"][b], batch["K2"][b], batch["K1"][b],
                                torch.linalg.inv(T), grid2, grid1, cell, depth_tol))
    return torch.stack(t12), torch.stack(t21)


def volume_ce(corr: torch.Tensor, t12: torch.Tensor, t21: torch.Tensor) -> torch.Tensor:
    """Mean of both directions' cross-entropies of a (B, 1, h1, w1, h2, w2) score volume; a
    direction without any known target contributes 0."""
    b, _, h1, w1, h2, w2 = corr.shape
    c = corr.reshape(b, h1 * w1, h2 * w2)
    terms = []
    for logits, tgt in ((c.reshape(-1, h2 * w2), t12.reshape(-1)),
                        (c.transpose(1, 2).reshape(-1, h1 * w1), t21.reshape(-1))):
        if (tgt >= 0).any():
            terms.append(F.cross_entropy(logits, tgt, ignore_index=-1))
    return torch.stack(terms).mean() if terms else corr.sum() * 0.0


def coarse_loss(nc: torch.Tensor, raw: torch.Tensor, t12: torch.Tensor, t21: torch.Tensor,
                raw_weight: float = 1.0, temperature: float = 0.1) -> torch.Tensor:
    """``CE(NC volume) + raw_weight * CE(raw pooled correlation / temperature)``."""
    loss = volume_ce(nc, t12, t21)
    if raw_weight:
        loss = loss + raw_weight * volume_ce(raw / temperature, t12, t21)
    return loss
