"""IMP training losses.

* :func:`matching_loss` (imp.md §3.4, released): with ``log = ln(|P| + 1e-8)``,
  ``L_pos = -Σ_GT log P_ij / max(#GT, 1)`` and
  ``L_neg = -½ (Σ_unmatched0 log P_i,dust / #unmatched0 + Σ_unmatched1 log P_dust,j / #unmatched1)``,
  each averaged over the pairs that have such points; total ``L_pos + L_neg``.
* :func:`pose_losses` (the paper's pose consistency, imp.md §1.5 [hist]; *not* in the release, off
  by default): E from a weighted eight-point fit on the predicted matches (weights = their P
  values), then the clamped symmetric epipolar distance of the GT correspondences under that E
  (pose loss) and of the predicted matches under the GT E (geo loss, score-weighted), each
  ``min(d, 5e-4) * 5e3``.

Points for the pose losses are normalised camera coordinates ``K^-1 (x + shift, y + shift, 1)``.
"""

from __future__ import annotations

import torch

CLAMP = 5e-4
SCALE = 5e3


def pair_terms(P: torch.Tensor, gt0: torch.Tensor, gt1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """(L_pos, L_neg0 or None, L_neg1 or None) of one pair.

    Args:
        P: ``(n+1, m+1)`` transport (probabilities).
        gt0: ``(n,)`` GT partner column of each row or -1; gt1 ``(m,)`` likewise.
    """
    logp = torch.log(P.abs() + 1e-8)
    pos = gt0 >= 0
    rows = torch.nonzero(pos).squeeze(1)
    l_pos = -logp[rows, gt0[rows]].sum() / max(1, len(rows))
    un0 = torch.nonzero(~pos).squeeze(1)
    un1 = torch.nonzero(gt1 < 0).squeeze(1)
    n0 = -logp[un0, -1].mean() if len(un0) else None
    n1 = -logp[-1, un1].mean() if len(un1) else None
    return l_pos, n0, n1


def restrict_gt(gt0: torch.Tensor, gt1: torch.Tensor, ids0: torch.Tensor, ids1: torch.Tensor):
    """GT over EIMP's retained keypoints: positions in ``ids0``/``ids1``; a retained point whose
    partner was pruned goes to the dustbin (-1)."""
    pos1 = torch.full_like(gt1, -1)
    pos1[ids1] = torch.arange(len(ids1), device=gt1.device)
    pos0 = torch.full_like(gt0, -1)
    pos0[ids0] = torch.arange(len(ids0), device=gt0.device)
    g0 = gt0[ids0]
    g0 = torch.where(g0 >= 0, pos1[g0.clamp_min(0)], g0)
    g1 = gt1[ids1]
    g1 = torch.where(g1 >= 0, pos0[g1.clamp_min(0)], g1)
    return g0, g1


def matching_loss(P, gt0: torch.Tensor, gt1: torch.Tensor, ids0=None, ids1=None) -> torch.Tensor:
    """Loss of one iteration over a batch: ``P`` a ``(B, N+1, M+1)`` tensor or a per-element list
    over the retained keypoints ``ids0[b]``/``ids1[b]`` (EIMP)."""
    pos, neg0, neg1 = [], [], []
    for b in range(len(gt0)):
        g0, g1 = gt0[b], gt1[b]
        if ids0 is not None and (len(ids0[b]) < len(g0) or len(ids1[b]) < len(g1)):
            g0, g1 = restrict_gt(g0, g1, ids0[b], ids1[b])
        lp, n0, n1 = pair_terms(P[b], g0, g1)
        pos.append(lp)
        if n0 is not None:
            neg0.append(n0)
        if n1 is not None:
            neg1.append(n1)
    loss = torch.stack(pos).mean()
    neg = [torch.stack(n).mean() for n in (neg0, neg1) if n]
    if neg:
        loss = loss + 0.5 * sum(neg)
    return loss


def to_camera(kpts: torch.Tensor, K: torch.Tensor, shift: float) -> torch.Tensor:
    """Pixels ``(N, 2)`` -> normalised camera coordinates ``(N, 3)`` (z = 1)."""
    xy1 = torch.cat([kpts + shift, torch.ones_like(kpts[:, :1])], 1)
    return xy1 @ torch.linalg.inv(K).T


def weighted_eight_point(x0: torch.Tensor, x1: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """E ``(3, 3)`` (unit Frobenius norm) minimising Σ w (x1ᵀ E x0)²: eigenvector of the smallest
    eigenvalue of XᵀWX, X the rows kron(x1, x0) (OANet/CNe style). x0, x1 ``(N, 3)``."""
    X = (x1[:, :, None] * x0[:, None, :]).reshape(-1, 9)
    XwX = X.T @ (X * w[:, None])
    _, vecs = torch.linalg.eigh(XwX)
    e = vecs[:, 0]
    return (e / e.norm()).reshape(3, 3)


def symmetric_epipolar(x0: torch.Tensor, x1: torch.Tensor, E: torch.Tensor) -> torch.Tensor:
    """(x1ᵀ E x0)² (1/|(E x0)_xy|² + 1/|(Eᵀ x1)_xy|²) per correspondence."""
    Ex0 = x0 @ E.T
    Etx1 = x1 @ E
    r = (x1 * Ex0).sum(1)
    return r ** 2 * (1.0 / (Ex0[:, :2].pow(2).sum(1) + 1e-15) + 1.0 / (Etx1[:, :2].pow(2).sum(1) + 1e-15))


def essential_from_T(T: torch.Tensor) -> torch.Tensor:
    """E = [t]x R of a relative pose ``(4, 4)`` (t normalised)."""
    R, t = T[:3, :3], T[:3, 3]
    t = t / t.norm().clamp_min(1e-12)
    tx = torch.zeros(3, 3, dtype=T.dtype, device=T.device)
    tx[0, 1], tx[0, 2], tx[1, 0], tx[1, 2], tx[2, 0], tx[2, 1] = -t[2], t[1], t[2], -t[0], -t[1], t[0]
    return tx @ R


def pose_losses(P: torch.Tensor, kp0, kp1, gt0, K0, K1, T, threshold: float, shift: float):
    """(pose loss, geo loss) of one pair for one iteration, or None with fewer than 8 predicted
    matches. ``P (n+1, m+1)``; ``kp0/kp1`` pixels of the rows/columns; ``gt0`` as in
    :func:`pair_terms`."""
    p = P[:-1, :-1]
    v0, i0 = p.max(1)
    i1 = p.max(0).indices
    mutual = i1[i0] == torch.arange(len(i0), device=p.device)
    rows = torch.nonzero(mutual & (v0 > threshold)).squeeze(1)
    if len(rows) < 8:
        return None
    cols = i0[rows]
    w = p[rows, cols]
    x0, x1 = to_camera(kp0[rows], K0, shift), to_camera(kp1[cols], K1, shift)
    E = weighted_eight_point(x0, x1, w)
    g = torch.nonzero(gt0 >= 0).squeeze(1)
    if len(g) == 0:
        return None
    y0, y1 = to_camera(kp0[g], K0, shift), to_camera(kp1[gt0[g]], K1, shift)
    pose = symmetric_epipolar(y0, y1, E).clamp(max=CLAMP).mean() * SCALE
    d = symmetric_epipolar(x0, x1, essential_from_T(T)).clamp(max=CLAMP) * SCALE
    geo = (w * d).sum() / w.sum().clamp_min(1e-12)
    return pose, geo
