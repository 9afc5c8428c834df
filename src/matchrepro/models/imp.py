"""IMP (DGNNS) and EIMP (AdaGMN) as released (imp.md §1-§2): an attention matcher over keypoints.

Conventions
-----------
* Keypoints are pixels ``(x, y)`` (x = column) of the image they were detected in; the network
  sees them normalised by :func:`normalize_keypoints` together with the detector score.
* Descriptors enter as ``(B, N, D)``; internally features are channel-first ``(B, D, N)``.
* ``D`` is 256 for SuperPoint and 128 for (Root)SIFT; 4 interleaved heads (channel ``c`` belongs
  to head ``c mod 4``), InstanceNorm without affine parameters (eps 1e-3).
* 15 iterations = 30 layers (self, cross, self, cross, ...). Layers 6, 7, 10, 11, ..., 26, 27
  (iterations 3, 5, ..., 13, 0-based) have no query/key projections and reuse the attention of
  the same-type layer of the previous iteration (:data:`SHARED_LAYERS`).
* Every iteration ``i`` has its own ``final_proj[i]``; the head is the probability-domain
  Sinkhorn of :func:`sinkhorn_prob` over scores augmented with one learnable ``bin_score``.

The state dict matches the official checkpoints key for key (353 tensors: ``bin_score``,
``kenc.encoder.{0,3,6,9,12}``, ``gnn.layers.<l>.attn.{merge,proj.0-2}`` or
``gnn.layers.<l>.{proj,merge}`` for shared layers, ``gnn.layers.<l>.mlp.{0,3}``, ``final_proj.<i>``).

EIMP (``IMP(pooling=...)``) adds adaptive keypoint pooling after the shared iterations
(imp.md §1.6): ``"mask"`` hides pruned keys from attention as the released batch code does (no
compute saved), ``"prune"`` physically removes them from the descriptors (the efficient form;
batch size 1). ``pooling=None`` is IMP.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from matchrepro.models import onednn_gemm

NUM_ITERATIONS = 15
NUM_HEADS = 4
KENC_WIDTHS = (32, 64, 128, 256)
# [F, F] * 2 + [F, F, T, T] * 21, truncated to 30 layers
SHARED_LAYERS = frozenset(l for l, s in enumerate(([False, False] * 2 + [False, False, True, True] * 21)[:30]) if s)
POOL_ITERATIONS = frozenset(l // 2 for l in SHARED_LAYERS)  # {3, 5, ..., 13}: EIMP pools after these
FIRST_HEAD_ON_RETAINED = 2  # EIMP's ``first_it_to_update``


def normalize_keypoints(kpts: torch.Tensor, size_wh: torch.Tensor, shift: float = 0.0) -> torch.Tensor:
    """``(kpts - size/2 - shift) / (0.7 max(W, H))``.

    Args:
        kpts: ``(B, N, 2)`` pixels (x, y).
        size_wh: ``(B, 2)`` image width and height in pixels.
        shift: 0 at evaluation (``normalize_keypoints``), 0.5 in the released training data
            (``normalize_size_spg``).
    Returns: ``(B, N, 2)``.
    """
    size_wh = size_wh.to(kpts)
    center = size_wh[:, None, :] / 2 + shift
    scale = 0.7 * size_wh.max(dim=1).values[:, None, None]
    return (kpts - center) / scale


class PointwiseConv(nn.Conv1d):
    """``nn.Conv1d(c_in, c_out, kernel_size=1)`` (same parameters and state-dict keys) computed as
    one matrix product ``W @ x + b`` on ``(B, C, N)`` (:func:`_pointwise`) instead of oneDNN's
    1-D convolution, the same products summed in another order (float32 rounding apart)."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__(c_in, c_out, kernel_size=1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _pointwise(self.weight[:, :, 0], self.bias, x)


def _pointwise(w: torch.Tensor, b: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``w @ x + b`` for ``w (C_out, C_in)``, ``x (B, C_in, N)``: oneDNN's GEMM per batch element
    where it applies (inference on the CPU, :mod:`onednn_gemm`), else one fused torch GEMM
    (addmm for B = 1)."""
    if onednn_gemm.usable(w, b, x):
        return _stack([onednn_gemm.gemm(w, xb).add_(b[:, None]) for xb in x])
    if x.shape[0] == 1:
        return torch.addmm(b[:, None], w, x[0])[None]
    return torch.baddbmm(b[None, :, None], w.expand(x.shape[0], -1, -1), x)


def _stack(ts: list[torch.Tensor]) -> torch.Tensor:
    """``torch.stack(ts)``, without its copy for a single tensor (batch size 1)."""
    return ts[0][None] if len(ts) == 1 else torch.stack(ts)


def _head_major(n: int) -> torch.Tensor:
    """Channel order that groups the interleaved heads: new channel h * (n / 4) + i is old
    channel 4 i + h (channel c belongs to head c mod 4)."""
    d = n // NUM_HEADS
    return torch.arange(n).view(d, NUM_HEADS).t().reshape(-1)


def _mlp(channels: list[int]) -> nn.Sequential:
    """Conv1d layers with InstanceNorm(eps 1e-3, no affine) + ReLU between them; last bias 0."""
    layers: list[nn.Module] = []
    for i in range(1, len(channels)):
        layers.append(PointwiseConv(channels[i - 1], channels[i]))
        if i < len(channels) - 1:
            layers.append(nn.InstanceNorm1d(channels[i], eps=1e-3, affine=False, track_running_stats=False))
            layers.append(nn.ReLU())
    nn.init.constant_(layers[-1].bias, 0.0)
    return nn.Sequential(*layers)


class KeypointEncoder(nn.Module):
    """(x_n, y_n, score) -> D channels: 3 -> 32 -> 64 -> 128 -> 256 -> D."""

    def __init__(self, dim: int):
        super().__init__()
        self.encoder = _mlp([3, *KENC_WIDTHS, dim])

    def forward(self, kpts_n: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """kpts_n ``(B, N, 2)``, scores ``(B, N)`` -> ``(B, D, N)``."""
        return self.encoder(torch.cat([kpts_n.transpose(1, 2), scores[:, None, :]], dim=1))


class MultiHeadedAttention(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim
        self.merge = PointwiseConv(dim, dim)
        self.proj = nn.ModuleList([PointwiseConv(dim, dim) for _ in range(3)])
        self.register_buffer("order", _head_major(dim), persistent=False)  # not in the state dict

    def forward(self, x, source, key_mask=None):
        """The released attention (interleaved heads) computed head-major: the projections' rows
        and the merge's columns are taken in :func:`_head_major` order, so each head is a
        contiguous block and both attention products are batched GEMMs without copies. The
        1/sqrt(d) scale is applied to the queries (before the product, not after)."""
        q, k, v = (_linear_rows(p, t, self.order) for p, t in zip(self.proj, (x, source, source)))
        prob = head_major_probs(q, k, key_mask)
        return _merge(self.merge, attend(v, prob), self.order), prob


def _head_major_weight(conv: nn.Conv1d, order: torch.Tensor, rows: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """``conv``'s ``(C_out, C_in)`` weight with its rows (``rows``: and bias) or its columns taken in
    ``order``, and the bias. Where no gradient is tracked the gathered copy is kept on the module
    and reused while the parameters are unchanged (same storage, same in-place version); with
    gradients it is gathered afresh, inside the graph."""
    w, b = conv.weight, conv.bias

    def gather():
        return (w[order, :, 0], b[order]) if rows else (w[:, order, 0], b)

    if torch.is_grad_enabled() and (w.requires_grad or b.requires_grad):
        return gather()
    key = (rows, w.data_ptr(), w._version, b.data_ptr(), b._version, order.data_ptr())
    cached = conv.__dict__.get("_head_major_cache")
    if cached is None or cached[0] != key:
        cached = conv.__dict__["_head_major_cache"] = (key, gather())
    return cached[1]


def _linear_rows(conv: nn.Conv1d, x: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """``conv(x)`` with its output channels in ``order``, as ``(B, 4, d, N)`` head blocks."""
    y = _pointwise(*_head_major_weight(conv, order, rows=True), x)
    return y.view(x.shape[0], NUM_HEADS, -1, x.shape[-1])


def head_major_probs(q: torch.Tensor, k: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
    """Softmax attention ``(B, 4, N, M)`` of head-major ``(B, 4, d, N)`` queries over
    ``(B, 4, d, M)`` keys, scores ``q·k / sqrt(d)``; ``key_mask (B, M)`` False hides a key
    (score -finfo.max, as released). On the CPU at inference each head's scores are one oneDNN
    GEMM (:mod:`onednn_gemm`), softmaxed into its slice of the output."""
    qs = q * (1.0 / math.sqrt(q.shape[2]))
    fill = -torch.finfo(q.dtype).max
    if onednn_gemm.usable(qs, k):
        b, h, n, m = q.shape[0], q.shape[1], q.shape[3], k.shape[3]
        prob = q.new_empty(b, h, n, m)
        for bi in range(b):
            hidden = None if key_mask is None else ~key_mask[bi][None, :]
            for hi in range(h):
                s = onednn_gemm.gemm(qs[bi, hi].t(), k[bi, hi])
                if hidden is not None:
                    s.masked_fill_(hidden, fill)
                torch._softmax(s, -1, False, out=prob[bi, hi])
        return prob
    scores = torch.matmul(qs.transpose(2, 3), k)
    if key_mask is not None:
        scores = scores.masked_fill(~key_mask[:, None, None, :], fill)
    return torch.softmax(scores, dim=-1)


def attend(v: torch.Tensor, prob: torch.Tensor) -> torch.Tensor:
    """Per-head messages ``(B, 4, d, N)``: values ``v (B, 4, d, M)`` weighted by ``prob
    (B, 4, N, M)``, ``v @ prob^T`` (one oneDNN GEMM per head on the CPU at inference)."""
    if onednn_gemm.usable(v, prob):
        return _stack([torch.stack([onednn_gemm.gemm(vh, ph.t()) for vh, ph in zip(vb, pb)])
                       for vb, pb in zip(v, prob)])
    return torch.matmul(v, prob.transpose(2, 3))


def _merge(merge: nn.Conv1d, msg: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """``merge`` of head-major per-head messages ``(B, 4, d, N)``, its input columns taken in the
    same head-major order."""
    return _pointwise(*_head_major_weight(merge, order, rows=False), msg.reshape(msg.shape[0], -1, msg.shape[-1]))


class AttentionalPropagation(nn.Module):
    """A layer with its own attention: Δ = MLP([x, merge(attention(x, source))])."""

    shared = False

    def __init__(self, dim: int):
        super().__init__()
        self.attn = MultiHeadedAttention(dim)
        self.mlp = _mlp([2 * dim, 2 * dim, dim])

    def forward(self, x, source, prob=None, key_mask=None):
        msg, prob = self.attn(x, source, key_mask)
        return self.mlp(torch.cat([x, msg], dim=1)), prob


class SharedAttentionalPropagation(nn.Module):
    """A layer that reuses ``prob`` (B, 4, N, M) of the previous same-type layer: own value
    projection ``proj``, ``merge`` and MLP, no query/key projections."""

    shared = True

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim
        self.proj = PointwiseConv(dim, dim)
        self.merge = PointwiseConv(dim, dim)
        self.mlp = _mlp([2 * dim, 2 * dim, dim])
        self.register_buffer("order", _head_major(dim), persistent=False)  # not in the state dict

    def forward(self, x, source, prob=None, key_mask=None):
        v = _linear_rows(self.proj, source, self.order)
        msg = _merge(self.merge, attend(v, prob), self.order)
        return self.mlp(torch.cat([x, msg], dim=1)), prob


class AttentionalGNN(nn.Module):
    def __init__(self, dim: int, num_layers: int = 2 * NUM_ITERATIONS):
        super().__init__()
        self.layers = nn.ModuleList(
            [SharedAttentionalPropagation(dim) if l in SHARED_LAYERS else AttentionalPropagation(dim)
             for l in range(num_layers)]
        )


def sinkhorn_prob(scores: torch.Tensor, bin_score: torch.Tensor, iters: int = 20) -> torch.Tensor:
    """The released probability-domain optimal transport (imp.md §1.4).

    Args:
        scores: ``(B, N, M)`` similarity <md0, md1>/sqrt(D).
        bin_score: scalar dustbin score (fills the extra row, column and corner).
    Returns: P ``(B, N+1, M+1)``, probabilities: ``K = softmax_rows(S̄)``, marginals
    r = (1, ..., 1, N+1), c = (1, ..., 1, M+1), 20 scaling iterations from u = v = 1.
    """
    b, n, m = scores.shape
    aug = torch.cat([scores, bin_score.expand(b, n, 1).to(scores)], dim=2)
    aug = torch.cat([aug, bin_score.expand(b, 1, m + 1).to(scores)], dim=1)
    K = torch.softmax(aug, dim=2)
    r = torch.ones(b, n + 1, dtype=scores.dtype, device=scores.device)
    c = torch.ones(b, m + 1, dtype=scores.dtype, device=scores.device)
    r[:, -1] = n + 1
    c[:, -1] = m + 1
    u = torch.ones_like(r)
    v = torch.ones_like(c)
    for _ in range(iters):
        u = r / (torch.einsum("bnm,bm->bn", K, v) + 1e-8)
        v = c / (torch.einsum("bnm,bn->bm", K, u) + 1e-8)
    return u[:, :, None] * K * v[:, None, :]


def dual_softmax_prob(scores: torch.Tensor, bin_score: torch.Tensor) -> torch.Tensor:
    """``--use_dual_softmax``: exp(log_softmax_rows + log_softmax_cols) of the augmented scores."""
    b, n, m = scores.shape
    aug = torch.cat([scores, bin_score.expand(b, n, 1).to(scores)], dim=2)
    aug = torch.cat([aug, bin_score.expand(b, 1, m + 1).to(scores)], dim=1)
    return torch.exp(torch.log_softmax(aug, dim=2) + torch.log_softmax(aug, dim=1))


def mutual_matches(P: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mutual argmax matches of P ``(B, N+1, M+1)`` (dustbins dropped) with score P > threshold.

    Returns ``matches0 (B, N)`` (index into image 1 or -1), ``matches1 (B, M)``, ``mscores0``,
    ``mscores1`` (the P value at the match, 0 where unmatched)."""
    p = P[:, :-1, :-1]
    max0, max1 = p.max(2), p.max(1)
    idx0, idx1 = max0.indices, max1.indices
    ar0 = torch.arange(p.shape[1], device=p.device)[None]
    ar1 = torch.arange(p.shape[2], device=p.device)[None]
    mutual0 = ar0 == idx1.gather(1, idx0)
    mutual1 = ar1 == idx0.gather(1, idx1)
    ms0 = torch.where(mutual0, max0.values, torch.zeros_like(max0.values))
    valid0 = mutual0 & (ms0 > threshold)
    valid1 = mutual1 & valid0.gather(1, idx1)
    ms1 = torch.where(valid1, ms0.gather(1, idx1), torch.zeros_like(max1.values))
    m0 = torch.where(valid0, idx0, torch.full_like(idx0, -1))
    m1 = torch.where(valid1, idx1, torch.full_like(idx1, -1))
    return m0, m1, torch.where(valid0, ms0, torch.zeros_like(ms0)), ms1


@dataclass
class GNNState:
    """Descriptors between iterations. ``ids0/ids1``: per batch element, the global indices of the
    retained keypoints (EIMP); in ``prune`` mode ``desc0/desc1`` hold only those columns."""

    desc0: torch.Tensor
    desc1: torch.Tensor
    ids0: list[torch.Tensor]
    ids1: list[torch.Tensor]
    n0: int
    n1: int
    probs: dict = field(default_factory=dict)
    pruned: bool = False

    def key_masks(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(B, N) / (B, M) masks of retained keys for ``mask`` pooling (None when all retained)."""
        if self.pruned:
            return None, None
        out = []
        for ids, n in ((self.ids0, self.n0), (self.ids1, self.n1)):
            if all(len(i) == n for i in ids):
                out.append(None)
                continue
            mask = torch.zeros(len(ids), n, dtype=torch.bool, device=self.desc0.device)
            for b, i in enumerate(ids):
                mask[b, i] = True
            out.append(mask)
        return out[0], out[1]


class IMP(nn.Module):
    """DGNNS (``pooling=None``) or AdaGMN (``pooling="mask" | "prune"``).

    Args:
        dim: descriptor dimension D (256 SuperPoint, 128 SIFT).
        sinkhorn_iterations: 20 as released.
        match_threshold: p of :func:`mutual_matches` (0.2 as released).
        dual_softmax: use :func:`dual_softmax_prob` instead of the Sinkhorn head.
        pooling: EIMP's adaptive pooling mode, None for IMP.
        pool_confidence: θ_m (0.1 as released).
        min_tokens: images with at most this many retained keypoints are not pooled (256).
    """

    def __init__(self, dim: int = 256, sinkhorn_iterations: int = 20, match_threshold: float = 0.2,
                 dual_softmax: bool = False, pooling: str | None = None, pool_confidence: float = 0.1,
                 min_tokens: int = 256):
        super().__init__()
        if pooling not in (None, "mask", "prune"):
            raise ValueError(f"pooling must be None, 'mask' or 'prune', got {pooling!r}")
        self.register_parameter("bin_score", nn.Parameter(torch.tensor(1.0)))
        self.kenc = KeypointEncoder(dim)
        self.gnn = AttentionalGNN(dim)
        self.final_proj = nn.ModuleList([PointwiseConv(dim, dim) for _ in range(NUM_ITERATIONS)])
        self.dim = dim
        self.sinkhorn_iterations = sinkhorn_iterations
        self.match_threshold = match_threshold
        self.dual_softmax = dual_softmax
        self.pooling = pooling
        self.pool_confidence = pool_confidence
        self.min_tokens = min_tokens

    # -- the stack, iteration by iteration ---------------------------------------------------
    def start(self, data: dict) -> GNNState:
        """Encode keypoints. ``data``: ``keypoints0/1 (B, N, 2)`` normalised positions
        (:func:`normalize_keypoints`), ``scores0/1 (B, N)``, ``descriptors0/1 (B, N, D)``."""
        d0 = data["descriptors0"].transpose(1, 2) + self.kenc(data["keypoints0"], data["scores0"])
        d1 = data["descriptors1"].transpose(1, 2) + self.kenc(data["keypoints1"], data["scores1"])
        b, _, n0 = d0.shape
        n1 = d1.shape[2]
        dev = d0.device
        return GNNState(d0, d1, [torch.arange(n0, device=dev)] * b, [torch.arange(n1, device=dev)] * b, n0, n1,
                        pruned=self.pooling == "prune")

    def iterate(self, st: GNNState, ni: int) -> None:
        """Iteration ``ni`` (0-based): a self layer then a cross layer, updating ``st`` in place."""
        m0, m1 = st.key_masks()
        for kind, layer in (("self", self.gnn.layers[2 * ni]), ("cross", self.gnn.layers[2 * ni + 1])):
            if kind == "self":
                src0, src1, km0, km1 = st.desc0, st.desc1, m0, m1
            else:
                src0, src1, km0, km1 = st.desc1, st.desc0, m1, m0
            p0, p1 = (st.probs.get((kind, 0)), st.probs.get((kind, 1))) if layer.shared else (None, None)
            delta0, prob0 = layer(st.desc0, src0, p0, km0)
            delta1, prob1 = layer(st.desc1, src1, p1, km1)
            st.desc0, st.desc1 = st.desc0 + delta0, st.desc1 + delta1
            st.probs[(kind, 0)], st.probs[(kind, 1)] = prob0, prob1

    def head(self, st: GNNState, ni: int) -> list[torch.Tensor] | torch.Tensor:
        """P of iteration ``ni``: one ``(B, N+1, M+1)`` tensor when every keypoint is retained,
        otherwise a list of per-element ``(n_b+1, m_b+1)`` tensors over the retained keypoints
        (rows/columns in the order of ``st.ids0[b]`` / ``st.ids1[b]``)."""
        md0, md1 = self.final_proj[ni](st.desc0), self.final_proj[ni](st.desc1)
        full = all(len(i) == st.n0 for i in st.ids0) and all(len(i) == st.n1 for i in st.ids1)
        if full or ni < FIRST_HEAD_ON_RETAINED:
            return self._transport(torch.einsum("bdn,bdm->bnm", md0, md1) / math.sqrt(self.dim))
        out = []
        for b in range(md0.shape[0]):
            a = md0[b] if st.pruned else md0[b][:, st.ids0[b]]
            c = md1[b] if st.pruned else md1[b][:, st.ids1[b]]
            out.append(self._transport((a.t() @ c)[None] / math.sqrt(self.dim))[0])
        return out

    def _transport(self, scores: torch.Tensor) -> torch.Tensor:
        if self.dual_softmax:
            return dual_softmax_prob(scores, self.bin_score)
        return sinkhorn_prob(scores, self.bin_score, self.sinkhorn_iterations)

    def pool(self, st: GNNState, P, confidence: float | None = None) -> None:
        """EIMP's adaptive pooling after a shared iteration (imp.md §1.6): keep the confident
        keypoints (matchable mass ≥ θ_m) and every keypoint whose self- or cross-attention
        importance is at least the median importance of the confident ones."""
        theta = self.pool_confidence if confidence is None else confidence
        imp0 = {k: st.probs[k].sum(dim=(1, 2)) for k in (("self", 0), ("cross", 1))}  # keys in image 0
        imp1 = {k: st.probs[k].sum(dim=(1, 2)) for k in (("self", 1), ("cross", 0))}  # keys in image 1
        new0, new1 = [], []
        for b in range(st.desc0.shape[0]):
            pb = P[b]  # over the retained keypoints (all of them before the first pooling)
            conf0 = pb[:-1, :-1].sum(1)
            conf1 = pb[:-1, :-1].sum(0)
            new0.append(self._select(st.ids0[b], conf0, [v[b] for v in imp0.values()], theta, st.pruned))
            new1.append(self._select(st.ids1[b], conf1, [v[b] for v in imp1.values()], theta, st.pruned))
        if st.pruned:  # batch size 1: slice the descriptors physically
            keep0, keep1 = new0[0], new1[0]
            st.desc0 = st.desc0[:, :, keep0]
            st.desc1 = st.desc1[:, :, keep1]
            st.ids0, st.ids1 = [st.ids0[0][keep0]], [st.ids1[0][keep1]]
        else:
            st.ids0, st.ids1 = new0, new1
        st.probs.clear()  # the next iteration computes new attention

    def _select(self, ids, conf, importances, theta, pruned) -> torch.Tensor:
        """Positions (``pruned``: into the retained list; else global ids) that stay."""
        n = len(ids)
        if n <= self.min_tokens:
            return torch.arange(n, device=ids.device) if pruned else ids
        keep = conf >= theta
        if keep.any():
            for imp in importances:
                v = imp if pruned else imp[ids]
                v = v / v.sum().clamp_min(1e-12)
                keep = keep | (v >= v[conf >= theta].median())
        else:  # nothing confident: the median is undefined, keep the set (a guard the release lacks)
            keep = torch.ones_like(keep)
        pos = torch.nonzero(keep).squeeze(1)
        return pos if pruned else ids[pos]

    # -- whole passes -----------------------------------------------------------------------
    def forward(self, data: dict, all_iterations: bool = True):
        """Training / batch pass. Returns a list with, per iteration, P (a tensor or, after EIMP
        pooling, a per-element list; see :meth:`head`) and the retained ids, ``[(P, ids0, ids1)]``;
        with ``all_iterations=False`` only the last iteration's head (plus the pooling heads EIMP needs)."""
        st = self.start(data)
        outs = []
        for ni in range(NUM_ITERATIONS):
            self.iterate(st, ni)
            pool_now = self.pooling is not None and ni in POOL_ITERATIONS
            if all_iterations or pool_now or ni == NUM_ITERATIONS - 1:
                P = self.head(st, ni)
                outs.append((ni, P, list(st.ids0), list(st.ids1)))
                if pool_now:
                    self.pool(st, P)
        return outs

    @torch.no_grad()
    def match(self, data: dict, threshold: float | None = None) -> dict:
        """``produce_matches(only_last=True)`` for one pair (B = 1): ``matches0 (N,)`` (-1 unmatched),
        ``mscores0 (N,)``, and ``retained`` (keypoints seen per iteration, logged for EIMP)."""
        st = self.start(data)
        retained = []
        P = None
        for ni in range(NUM_ITERATIONS):
            retained.append((len(st.ids0[0]), len(st.ids1[0])))
            self.iterate(st, ni)
            if (self.pooling is not None and ni in POOL_ITERATIONS) or ni == NUM_ITERATIONS - 1:
                P = self.head(st, ni)
                if ni < NUM_ITERATIONS - 1:
                    self.pool(st, P)
        return self.extract(st, P, self.match_threshold if threshold is None else threshold) | {"retained": retained}

    def extract(self, st: GNNState, P, threshold: float) -> dict:
        """Global-index mutual matches of a head's P (one pair)."""
        p = P if isinstance(P, torch.Tensor) else P[0][None]
        m0, _, s0, _ = mutual_matches(p, threshold)
        m0, s0 = m0[0], s0[0]
        ids0, ids1 = st.ids0[0], st.ids1[0]
        if p.shape[1] - 1 == st.n0 and p.shape[2] - 1 == st.n1:
            return {"matches0": m0, "mscores0": s0}
        g0 = torch.full((st.n0,), -1, dtype=torch.long, device=m0.device)
        gs = torch.zeros(st.n0, dtype=s0.dtype, device=m0.device)
        ok = m0 >= 0
        g0[ids0[ok]] = ids1[m0[ok]]
        gs[ids0[ok]] = s0[ok]
        return {"matches0": g0, "mscores0": gs}


def build_model(variant: str, dim: int, **kw) -> IMP:
    """``variant``: ``imp`` (DGNNS) or ``eimp`` (AdaGMN; ``pooling`` defaults to ``mask`` as in the
    released batch code, ``prune`` is the physically pruned iterative path)."""
    if variant == "imp":
        kw.pop("pooling", None)
        return IMP(dim, **kw)
    if variant == "eimp":
        kw.setdefault("pooling", "mask")
        return IMP(dim, **kw)
    raise ValueError(f"unknown IMP variant {variant!r} (imp or eimp)")
