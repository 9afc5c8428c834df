"""Patch2Pix training losses (patch2pix.md §3.4), at the training resolution (480 x 320 px).

Distances are *squared* Sampson errors in px^2. Labels come from each stage's input (coarse
proposals for the mid level, mid matches for the fine level). A pair with no positive label at
either level is skipped (returns None).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F_


def sampson_sq(matches: torch.Tensor, F: torch.Tensor) -> torch.Tensor:
    """(N,) squared Sampson distances of matches (N, 4) [x1, y1, x2, y2] under F (3, 3),
    ``x2^T F x1 = 0``: (x2^T F x1)^2 / ((F x1)_0^2 + (F x1)_1^2 + (F^T x2)_0^2 + (F^T x2)_1^2 + 1e-8)."""
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


def pair_loss(coarse: torch.Tensor, mid: torch.Tensor, prob_mid: torch.Tensor, fine: torch.Tensor,
              prob_fine: torch.Tensor, F: torch.Tensor, cls_thres=(50.0, 5.0), epi_thres=(50.0, 5.0),
              weight_epi=(1.0, 1.0)) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(L_cls, L_epi) of one pair, or None when a level has no positive label (skipped).

    ``weight_epi`` = (mid, fine) weights of the regression terms."""
    dc, dm, df = sampson_sq(coarse, F), sampson_sq(mid, F), sampson_sq(fine, F)
    y_mid, y_fine = dc.detach() < cls_thres[0], dm.detach() < cls_thres[1]
    if not y_mid.any() or not y_fine.any():
        return None
    l_cls = weighted_bce(prob_mid, y_mid) + weighted_bce(prob_fine, y_fine)
    l_epi = prob_mid.new_zeros(())
    sel_m, sel_f = dc.detach() < epi_thres[0], dm.detach() < epi_thres[1]
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
