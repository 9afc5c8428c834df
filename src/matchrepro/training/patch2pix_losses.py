"""Patch2Pix training losses (patch2pix.md §3.4), at the training resolution (480 x 320 px).

Distances are *squared* Sampson errors in px^2. Labels come from each stage's input (coarse
proposals for the mid level, mid matches for the fine level). A pair with no positive label at
either level is skipped (returns None).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F_

from matchrepro.geometry.depth_warp import sample_depth, warp_with_depth


def sampson_sq(matches: torch.Tensor, F: torch.Tensor) -> torch.Tensor:
    """(N,) squared Sampson distances of matches (N, 4) [x1, y1, x2, y2] under F (3, 3),
    ``x2^T F x1 = 0``: (x2^T F x1)^2 / ((F x1)_0^2 + (F x1)_1^2 + (F^T x2)_0^2 + (F^T x2)_1^2 + 1e-8).

    Computed in F's dtype: the release builds F and the distance in float64 (the matches are
    cast up; their gradient comes back in their own dtype). In float32 large distances differ by
    several per cent (1032 px² at 20000 measured on training pairs)."""
    matches = matches.to(F.dtype)
    ones = torch.ones_like(matches[:, :1])
    x1 = torch.cat([matches[:, :2], ones], 1)
    x2 = torch.cat([matches[:, 2:], ones], 1)
    Fx1 = x1 @ F.T
    Ftx2 = x2 @ F
    num = torch.sum(x2 * Fx1, 1) ** 2
    return num / (Fx1[:, 0] ** 2 + Fx1[:, 1] ** 2 + Ftx2[:, 0] ** 2 + Ftx2[:, 1] ** 2 + 1e-8)


def weighted_bce(prob: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """mean_i w_i BCE(p_i, y_i) with w = (N_neg / N_pos) y + (1 - y)."""
    y = label.float()
    n_pos = y.sum()
    w = (y.numel() - n_pos) / n_pos * y + (1 - y)
    return torch.mean(w * F_.binary_cross_entropy(prob.clamp(1e-7, 1 - 1e-7), y, reduction="none"))


def transfer_sq(matches: torch.Tensor, depth1: torch.Tensor, K1: torch.Tensor, K2: torch.Tensor,
                T_1to2: torch.Tensor) -> torch.Tensor:
    """(N,) squared transfer errors in px^2 of matches (N, 4) [x1, y1, x2, y2]: point 1 lifted
    with the depth (H, W) of image 1 at its pixel (nearest, no gradient through the look-up),
    moved by ``T_1to2`` (X2 = R X1 + t), projected with K2 and compared with point 2. Points
    without depth, outside image 1 or behind camera 2 get +inf (negative labels, never regressed).
    Used by ``regression_target: reprojection`` (a demo option, not the released loss)."""
    z = sample_depth(depth1, matches[:, :2])
    p2, z2 = warp_with_depth(matches[:, :2], z, K1, K2, T_1to2)
    valid = (z > 0) & (z2 > 1e-6)
    d = torch.sum((p2 - matches[:, 2:]) ** 2, 1)
    return torch.where(valid, d, torch.full_like(d, float("inf")))


def pair_loss(coarse: torch.Tensor, mid: torch.Tensor, prob_mid: torch.Tensor, fine: torch.Tensor,
              prob_fine: torch.Tensor, F: torch.Tensor | None, cls_thres=(50.0, 5.0), epi_thres=(50.0, 5.0),
              weight_epi=(1.0, 1.0), distance=None) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(L_cls, L_epi) of one pair, or None when a level has no positive label (skipped).

    ``weight_epi`` = (mid, fine) weights of the regression terms. ``distance`` (matches -> (N,)
    px^2) replaces the squared Sampson distance under ``F`` (e.g. :func:`transfer_sq`)."""
    dist = distance if distance is not None else (lambda m: sampson_sq(m, F))
    dc, dm, df = dist(coarse), dist(mid), dist(fine)
    y_mid, y_fine = dc.detach() < cls_thres[0], dm.detach() < cls_thres[1]
    if not y_mid.any() or not y_fine.any():
        return None
    l_cls = weighted_bce(prob_mid, y_mid) + weighted_bce(prob_fine, y_fine)
    l_epi = prob_mid.new_zeros(())
    sel_m, sel_f = dc.detach() < epi_thres[0], dm.detach() < epi_thres[1]
    sel_m, sel_f = sel_m & torch.isfinite(dm.detach()), sel_f & torch.isfinite(df.detach())  # inf: no depth
    if sel_m.any():
        l_epi = l_epi + weight_epi[0] * dm[sel_m].mean()
    if sel_f.any():
        l_epi = l_epi + weight_epi[1] * df[sel_f].mean()
    return l_cls, l_epi


def total_loss(pairs: list[tuple[torch.Tensor, torch.Tensor] | None], weight_cls: float = 10.0) -> torch.Tensor | None:
    """``weight_cls * mean(L_cls) + mean(L_epi)`` over the pairs that were not skipped."""
    kept = [p for p in pairs if p is not None]
    if not kept:
        return None
    return weight_cls * torch.stack([c for c, _ in kept]).mean() + torch.stack([e for _, e in kept]).mean()
