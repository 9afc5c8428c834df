"""Patch2Pix (Zhou, Sattler, Leal-Taixé, CVPR 2021) and its coarse stage, NCNet adapted.

One readable file, as released (shared/spec/patch2pix.md §1-2): a ResNet-34 whose layer3 runs
at stride 8, an NCNet stage (4-D correlation of L2-normalised layer3 features, 2x2x2x2
relocalisation max-pooling, mutual matching, symmetric neighbourhood consensus of two Conv4d
with a ReLU after each, mutual matching again), and two patch regressors (mid, fine) on 16x16
patches of image + conv1 + layer1 + layer2 features. Module and parameter names follow the
official checkpoints (276 keys for Patch2Pix, 220 for ``ncn_ivd_5ep``), so they load strictly.

Conventions: images (B, 3, H, W) ImageNet-normalised, H and W multiples of 16; match
coordinates are pixels (x, y) of the resized images, x = column.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from matchrepro.models.conv4d import Conv4d, conv4d_fast, swap_kernel
from matchrepro.models.resnet import RESNET34_BLOCKS, RESNET34_WIDTHS, ResNet34

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def feature_l2norm(f: torch.Tensor, dim: int = 1, eps: float = 1e-6) -> torch.Tensor:
    return f / torch.sqrt(torch.sum(f * f, dim=dim, keepdim=True) + eps)


def correlation_4d(f1: torch.Tensor, f2: torch.Tensor) -> torch.Tensor:
    """(B, C, h1, w1), (B, C, h2, w2) -> (B, 1, h1, w1, h2, w2) dot products."""
    b, c, h1, w1 = f1.shape
    h2, w2 = f2.shape[2:]
    corr = torch.bmm(f1.reshape(b, c, h1 * w1).transpose(1, 2), f2.reshape(b, c, h2 * w2))
    return corr.view(b, 1, h1, w1, h2, w2)


def maxpool4d(corr: torch.Tensor, k: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """Relocalisation max-pooling over k^4 offsets. Returns the pooled volume
    (B, 1, h1/k, w1/k, h2/k, w2/k) and the offsets ``delta`` (4, B, h1/k, w1/k, h2/k, w2/k) of
    the maxima, each in {0..k-1} (order i, j, k, l = h1, w1, h2, w2; ties go to the first offset
    in that order, as NCNet's max over its stacked slices).

    Implemented as one reshape and a max over the last axis (not 16 strided slices), so the
    backward pass is a single scatter."""
    b, _, h1, w1, h2, w2 = corr.shape
    x = corr.reshape(b, h1 // k, k, w1 // k, k, h2 // k, k, w2 // k, k)
    x = x.permute(0, 1, 3, 5, 7, 2, 4, 6, 8).reshape(b, h1 // k, w1 // k, h2 // k, w2 // k, k ** 4)
    pooled, code = x.max(dim=-1)
    d = []
    rem = code
    for div in (k ** 3, k ** 2, k, 1):
        d.append(torch.div(rem, div, rounding_mode="floor"))
        rem = rem % div
    return pooled.unsqueeze(1), torch.stack(d)


def mutual_matching(c: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Soft mutual nearest-neighbour filtering: c * (c / max over image 2) * (c / max over image 1)."""
    b, _, h1, w1, h2, w2 = c.shape
    flat = c.view(b, h1 * w1, h2 * w2)
    max_a = flat.max(dim=2, keepdim=True)[0]  # best image-2 cell for each image-1 cell
    max_b = flat.max(dim=1, keepdim=True)[0]
    return (flat * (flat / (max_a + eps)) * (flat / (max_b + eps))).view_as(c)


class NeighConsensus(nn.Module):
    """Conv4d(1->16, 3) -> ReLU -> Conv4d(16->1, 3) -> ReLU, applied symmetrically."""

    def __init__(self, kernel_sizes=(3, 3), channels=(16, 1), symmetric: bool = True):
        super().__init__()
        layers, cin = [], 1
        for k, cout in zip(kernel_sizes, channels):
            layers += [Conv4d(cin, cout, k), nn.ReLU(inplace=True)]
            cin = cout
        self.conv = nn.Sequential(*layers)
        self.symmetric = symmetric

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, 1, h1, w1, h2, w2) -> the same shape, by :func:`~matchrepro.models.conv4d.conv4d_fast`
        (a few large conv2d calls); the swapped branch runs in the unswapped frame with swapped
        kernels, and the first layer of both branches is one call. Equal to
        :meth:`forward_reference` (the released order of operations) to float32 rounding."""
        convs = [m for m in self.conv if isinstance(m, Conv4d)]
        if not self.symmetric:
            h = x
            for c in convs:
                h = torch.relu(conv4d_fast(h, c.weight, c.bias))
            return h
        first = convs[0]
        w = torch.cat([first.weight, swap_kernel(first.weight)], 1)
        bias = None if first.bias is None else torch.cat([first.bias, first.bias])
        h = torch.relu(conv4d_fast(x, w, bias))
        ha, hb = h[:, : first.weight.shape[1]], h[:, first.weight.shape[1]:]
        for c in convs[1:]:
            ha = torch.relu(conv4d_fast(ha, c.weight, c.bias))
            hb = torch.relu(conv4d_fast(hb, swap_kernel(c.weight), c.bias))
        return ha + hb

    def forward_reference(self, x: torch.Tensor) -> torch.Tensor:
        """The released formulation: the Conv4d stack on x plus the stack on the swapped volume."""
        if not self.symmetric:
            return self.conv(x)
        swapped = x.permute(0, 1, 4, 5, 2, 3)
        return self.conv(x) + self.conv(swapped).permute(0, 1, 4, 5, 2, 3)


class FeatRegressNet(nn.Module):
    """Patch regressor (``feat_comb='pre'``): (N, 2D, 16, 16) -> (N, 5) = 4 offsets + 1 logit.
    No ReLU between the two convolutions, as released."""

    def __init__(self, feat_dim: int = 259, conv_dims=(512, 512), fc_dims=(512, 256), out_dim: int = 5):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(2 * feat_dim, conv_dims[0], 3, 2, 1, bias=False), nn.BatchNorm2d(conv_dims[0]),
            nn.Conv2d(conv_dims[0], conv_dims[1], 3, 1, 1, bias=False), nn.BatchNorm2d(conv_dims[1]),
            nn.ReLU(inplace=True), nn.MaxPool2d(8),
        )
        self.fc = nn.Sequential(
            nn.Linear(conv_dims[1], fc_dims[0]), nn.BatchNorm1d(fc_dims[0]), nn.ReLU(inplace=True),
            nn.Linear(fc_dims[0], fc_dims[1]), nn.BatchNorm1d(fc_dims[1]), nn.ReLU(inplace=True),
            nn.Linear(fc_dims[1], out_dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            return self.fc(self.conv(x).flatten(1))
        # eval: each BatchNorm2d folded into the convolution before it (W' = W g / sqrt(var + eps),
        # b' = beta - mean g / sqrt(var + eps)), the same affine map in one pass (float32 rounding)
        c0, bn0, c1, bn1, relu, pool = self.conv
        h = F.conv2d(x, *_fold_bn(c0, bn0), stride=c0.stride, padding=c0.padding)
        h = F.conv2d(h, *_fold_bn(c1, bn1), stride=c1.stride, padding=c1.padding)
        return self.fc(pool(torch.relu_(h)).flatten(1))


def _fold_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight, bias) of ``bn(conv(x))`` with the batch norm's running statistics (eval mode)."""
    g = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    b = bn.bias - bn.running_mean * g
    if conv.bias is not None:
        b = b + conv.bias * g
    return conv.weight * g[:, None, None, None], b


def parse_regressor_out(out: torch.Tensor, patch_size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 5) -> offsets (N, 4) in [-S/2, S/2) pixels (``S tanh(relu(o)) - S//2``) and the
    confidence sigmoid(o[:, 4]) (N,)."""
    offset = patch_size * torch.tanh(torch.relu(out[:, :4])) - patch_size // 2
    return offset, torch.sigmoid(out[:, 4])


OFFICIAL_ARCH = {
    "widths": list(RESNET34_WIDTHS),       # conv1, layer1..layer4 channels
    "blocks": list(RESNET34_BLOCKS),       # BasicBlocks per layer
    "nc_kernels": [3, 3],
    "nc_channels": [16, 1],
    "regressor_conv": [512, 512],
    "regressor_fc": [512, 256],
}


def full_arch(arch: dict | None) -> dict:
    """The released architecture with the given keys overridden (the demo's small model)."""
    unknown = set(arch or {}) - set(OFFICIAL_ARCH)
    if unknown:
        raise ValueError(f"unknown architecture keys {sorted(unknown)}; known: {sorted(OFFICIAL_ARCH)}")
    return {**OFFICIAL_ARCH, **(arch or {})}


class NCNet(nn.Module):
    """"NCNet adapted": the backbone and the NC stage (the 220 keys of ``ncn_ivd_5ep.pth`` with
    the default ``arch``)."""

    def __init__(self, change_stride: bool = True, arch: dict | None = None):
        super().__init__()
        self.arch = full_arch(arch)
        self.extract = ResNet34(change_stride, self.arch["widths"], self.arch["blocks"])
        self.ncn = NeighConsensus(self.arch["nc_kernels"], self.arch["nc_channels"])

    def level_dims(self) -> list[int]:
        """Channels of the feature levels of :meth:`ResNet34.forward_all` (image, conv1, layer1..3)."""
        return [3] + self.arch["widths"][:4]

    def volumes(self, f1: torch.Tensor, f2: torch.Tensor, ksize: int = 2):
        """layer3 features -> (filtered NC volume, delta offsets, raw pooled correlation), the
        volumes (B, 1, h1/k, w1/k, h2/k, w2/k) on the pooled grid."""
        corr = correlation_4d(feature_l2norm(f1), feature_l2norm(f2))
        raw, delta = maxpool4d(corr, ksize)
        nc = mutual_matching(self.ncn(mutual_matching(raw)))
        return nc, delta, raw

    def coarse_volume(self, f1: torch.Tensor, f2: torch.Tensor, ksize: int = 2):
        """layer3 features -> (filtered NC volume on the pooled grid, delta offsets)."""
        nc, delta, _ = self.volumes(f1, f2, ksize)
        return nc, delta

    def forward(self, im1: torch.Tensor, im2: torch.Tensor, ksize: int = 2):
        """Training forward of the coarse stage: (B, 3, H, W) pairs -> :meth:`volumes`."""
        f1 = self.extract.forward_all(im1)[-1]
        f2 = self.extract.forward_all(im2)[-1]
        return self.volumes(f1, f2, ksize)


class Patch2Pix(NCNet):
    """NCNet adapted + the mid and fine patch regressors (276 keys with the default ``arch``)."""

    def __init__(self, feat_idx=(0, 1, 2, 3), change_stride: bool = True, arch: dict | None = None):
        super().__init__(change_stride, arch)
        self.feat_idx = list(feat_idx)
        dims = self.level_dims()
        dim = sum(dims[i] for i in self.feat_idx)
        conv, fc = self.arch["regressor_conv"], self.arch["regressor_fc"]
        self.regress_mid = FeatRegressNet(dim, conv, fc)
        self.regress_fine = FeatRegressNet(dim, conv, fc)
        self.ptmax, self.panc, self.pshift = 400, 8, 8

    def refine_levels(self, f1: list[torch.Tensor], f2: list[torch.Tensor], matches: torch.Tensor,
                      sizes) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mid then fine regression (§1.4) of ``matches`` (N, 4) given both images' feature
        pyramids (``forward_all`` levels, batch 1) and their (W, H) ``sizes`` -> (mid (N, 4),
        prob_mid (N,), fine (N, 4), prob_fine (N,)), resized-image pixels."""
        l1, l2 = [f1[i] for i in self.feat_idx], [f2[i] for i in self.feat_idx]
        strides = [self.extract.strides[i] for i in self.feat_idx]
        mid, prob_mid = refine(self.regress_mid, l1, l2, strides, matches, sizes)
        fine, prob_fine = refine(self.regress_fine, l1, l2, strides, mid, sizes)
        return mid, prob_mid, fine, prob_fine

    def forward(self, im1: torch.Tensor, im2: torch.Tensor, ksize: int = 2) -> list[dict]:
        """Training forward (patch2pix.md §3.3): per pair, coarse mutual matches sampled to exactly
        ``ptmax``, expanded to ``panc`` anchors, refined by the mid then the fine regressor.

        The backbone and NC stage run without gradient (no loss term reaches them, §3.4); their
        BatchNorms still update running statistics when the module is in training mode, as
        released. Returns one dict per pair: ``coarse`` (N, 4), ``mid``, ``fine`` (N, 4) and
        ``prob_mid``, ``prob_fine`` (N,), pixels of the input images, N = ptmax * panc."""
        with torch.no_grad():
            f1 = self.extract.forward_all(im1)
            f2 = self.extract.forward_all(im2)
            corr, delta = self.coarse_volume(f1[-1], f2[-1], ksize)
        sizes = [(im1.shape[3], im1.shape[2]), (im2.shape[3], im2.shape[2])]
        outs = []
        for b in range(im1.shape[0]):
            with torch.no_grad():
                m, s = corr_to_matches(corr[b:b + 1], delta[:, b:b + 1], ksize, self.extract.strides[-1])
                m, _ = filter_coarse(m, s, 0.0)
                m = sample_proposals(m, self.ptmax)
                m = shift_to_anchors(m, self.pshift) if self.panc == 8 else m
            mid, prob_mid, fine, prob_fine = self.refine_levels([f[b:b + 1] for f in f1], [f[b:b + 1] for f in f2],
                                                                m, sizes)
            outs.append({"coarse": m, "mid": mid, "prob_mid": prob_mid, "fine": fine, "prob_fine": prob_fine})
        return outs


def init_weights(model: nn.Module, seed: int | None = None) -> None:
    """The released initialisation (patch2pix.md §3.5): Xavier-uniform for every Conv2d, Conv4d
    (on its stored, permuted tensor) and Linear weight, zero biases, BatchNorm2d weight ~ N(1,
    0.02) and bias 0; BatchNorm1d keeps PyTorch's defaults."""
    g = torch.Generator().manual_seed(seed) if seed is not None else None
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear, Conv4d)):
            w = torch.empty_like(m.weight)
            fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(w)
            a = (6.0 / (fan_in + fan_out)) ** 0.5
            with torch.no_grad():
                m.weight.copy_(torch.rand(w.shape, generator=g) * 2 * a - a)
                if m.bias is not None:
                    m.bias.zero_()
        elif isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.weight.copy_(1.0 + 0.02 * torch.randn(m.weight.shape, generator=g))
                m.bias.zero_()


def sample_proposals(matches: torch.Tensor, ptmax: int) -> torch.Tensor:
    """Shuffle the coarse matches (N, 4) and tile or cut them to exactly ``ptmax`` rows (the
    training-time ``ptmax``); zero matches give ``ptmax`` copies of a zero row. Uses torch's
    global generator."""
    n = len(matches)
    if n == 0:
        return matches.new_zeros(ptmax, 4)
    perm = torch.randperm(n, device=matches.device)
    reps = -(-ptmax // n)
    return matches[perm.repeat(reps)[:ptmax]]


def shift_to_anchors(matches: torch.Tensor, shift: int = 8) -> torch.Tensor:
    """Patch expansion (training only): every match (N, 4) becomes 8 proposals, point 1 moved by
    (-,-), (+,-), (-,+), (+,+) ``shift`` pixels with point 2 fixed, then point 2 moved the same
    way with point 1 fixed -> (8N, 4), anchor-major within each match."""
    signs = torch.tensor([[-1, -1], [1, -1], [-1, 1], [1, 1]], dtype=matches.dtype, device=matches.device) * shift
    zero = torch.zeros_like(signs)
    offs = torch.cat([torch.cat([signs, zero], 1), torch.cat([zero, signs], 1)])  # (8, 4)
    return (matches[:, None, :] + offs[None]).reshape(-1, 4)


# ----------------------------------------------------------------------------------------------
# Inference: coarse matches (§1.3 steps 7-8) and pixel-level refinement (§1.4-1.5)
# ----------------------------------------------------------------------------------------------

def corr_to_matches(corr: torch.Tensor, delta: torch.Tensor, ksize: int = 2, upsample: int = 8,
                    center: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Both-direction argmax matches of a pooled NC volume (batch size 1).

    Args:
        corr: (1, 1, h1, w1, h2, w2) filtered NC volume on the pooled grid.
        delta: (4, 1, h1, w1, h2, w2) relocalisation offsets from :func:`maxpool4d`.
    Returns:
        matches (N, 4) = [x1, y1, x2, y2] pixels of the resized images (cell centres when
        ``center``), B->A direction first, then A->B; scores (N,) softmax maxima.
    """
    _, _, h1, w1, h2, w2 = corr.shape
    dev = corr.device
    # B -> A: for every image-2 cell, the best image-1 cell
    sb, ia_flat = torch.softmax(corr.view(h1 * w1, h2, w2), dim=0).max(dim=0)
    ib, jb = torch.meshgrid(torch.arange(h2, device=dev), torch.arange(w2, device=dev), indexing="ij")
    ia, ja = ia_flat // w1, ia_flat % w1
    m_ba = torch.stack([ia.flatten(), ja.flatten(), ib.flatten(), jb.flatten()], 1)
    # A -> B
    sa, ib_flat = torch.softmax(corr.view(h1, w1, h2 * w2), dim=2).max(dim=2)
    ia2, ja2 = torch.meshgrid(torch.arange(h1, device=dev), torch.arange(w1, device=dev), indexing="ij")
    m_ab = torch.stack([ia2.flatten(), ja2.flatten(), (ib_flat // w2).flatten(), (ib_flat % w2).flatten()], 1)
    m = torch.cat([m_ba, m_ab])
    scores = torch.cat([sb.flatten(), sa.flatten()])
    d = delta[:, 0, m[:, 0], m[:, 1], m[:, 2], m[:, 3]].T  # (N, 4) offsets at the pooled match
    m = m * ksize + d  # indices on the stride-8 grid
    off = upsample // 2 if center else 0
    xy = torch.stack([m[:, 1], m[:, 0], m[:, 3], m[:, 2]], 1) * upsample + off
    return xy.float(), scores


def filter_coarse(matches: torch.Tensor, scores: torch.Tensor, threshold: float = 0.0,
                  mutual: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """The released filter: with ``mutual``, keep the rows found in both directions (``np.unique``
    semantics: lexicographic order, the score of the first occurrence); if none is mutual keep all;
    then keep ``score > threshold``, or all if none passes."""
    if mutual and len(matches):
        import numpy as np

        rows = matches.detach().cpu().numpy().astype(np.int64)
        _, first, counts = np.unique(rows, axis=0, return_index=True, return_counts=True)
        keep = first[counts > 1]
        if len(keep):
            idx = torch.as_tensor(keep, device=matches.device)
            matches, scores = matches[idx], scores[idx]
    ok = scores > threshold
    if ok.any():
        matches, scores = matches[ok], scores[ok]
    return matches, scores


def gather_patch_pairs(feats1, feats2, strides: list[int], matches: torch.Tensor, sizes, psize: int = 16) -> torch.Tensor:
    """Both images' patches of matches (N, 4) [x1, y1, x2, y2] as the regressors' input
    (N, 2D, psize, psize) (patch2pix.md §1.4): around each integer-truncated point, nearest-neighbour
    samples of each level at ``(x + d) // stride`` (clamped), levels concatenated and L2-normalised
    jointly per pixel, image 1's D channels then image 2's.

    ``feats`` are (1, C_l, H / s_l, W / s_l) maps; rows are gathered from a (H W, C) view (several
    times faster on a CPU than 2-D advanced indexing) straight into one buffer, normalised in place,
    and returned as a channels-last view (no concatenation copies)."""
    d1, d2 = sum(f.shape[1] for f in feats1), sum(f.shape[1] for f in feats2)
    n = len(matches)
    out = torch.empty(n * psize * psize, d1 + d2, device=matches.device, dtype=feats1[0].dtype)
    off = torch.arange(psize, device=matches.device) - psize // 2
    col = 0
    for feats, pts, (w, h) in ((feats1, matches[:, :2], sizes[0]), (feats2, matches[:, 2:], sizes[1])):
        x = pts[:, 0].long()[:, None] + off[None]
        y = pts[:, 1].long()[:, None] + off[None]
        start = col
        for f, s in zip(feats, strides):
            fw = f.shape[3]
            fx = torch.clamp(torch.div(x, s, rounding_mode="floor"), 0, w // s - 1)
            fy = torch.clamp(torch.div(y, s, rounding_mode="floor"), 0, h // s - 1)
            idx = (fy[:, :, None] * fw + fx[:, None, :]).reshape(-1)
            rows = f[0].flatten(1).T
            out[:, col:col + f.shape[1]] = rows.index_select(0, idx)
            col += f.shape[1]
        half = out[:, start:col]
        half.div_(torch.sqrt(torch.sum(half * half, dim=1, keepdim=True) + 1e-6))
    return out.view(n, psize, psize, d1 + d2).permute(0, 3, 1, 2)


def _coarse_levels(strides: list[int], psize: int) -> list[bool]:
    """Which feature levels the eval path factors (:func:`regress_patches_eval`): those of the
    largest stride, if it is at least half the patch (a patch then spans at most 3 of their
    cells per axis; layer2 at stride 8 for 16x16 patches)."""
    top = max(strides)
    return [s == top and 2 * s >= psize for s in strides]


def regress_patches_eval(regressor: FeatRegressNet, feats1, feats2, strides: list[int], matches: torch.Tensor,
                         sizes, psize: int = 16) -> torch.Tensor:
    """``regressor(gather_patch_pairs(...))`` in eval mode, with the first convolution of the
    coarse levels (:func:`_coarse_levels`: layer2, stride 8) applied to their cells, not to
    their pixels. Returns (N, 5), equal to the gathered formulation to float32 rounding.

    A 16x16 patch samples a stride-8 map by nearest neighbour, so it holds at most 3x3 distinct
    cells of it; the joint L2 normalisation divides each pixel by its own norm n(p), which is a
    scalar. The first convolution is linear, so its stride-8 part at output o is
    sum_t (W_t . f(cell(p))) / n(p) over its taps t, p = 2 o + t - 1: the products W_t . f of the
    K x K cells (one GEMM, (N K K, C) @ (C, 9 C_out)) are combined per output pixel by a batched
    product with a sparse (N, 64, 2 K K 9) matrix holding 1 / n(p). For the released
    architecture this does 0.61 of the first convolution's multiply-adds (0.87 of the level's),
    and the gather moves 131 of each image's 259 channels. The finer levels (image, conv1,
    layer1) are gathered per pixel as in :func:`gather_patch_pairs`, and their part of the
    convolution runs as a convolution. Level sets with nothing to factor, or nothing left to
    gather, run the gathered formulation."""
    coarse = _coarse_levels(strides, psize)
    if all(coarse) or not any(coarse):
        return regressor(gather_patch_pairs(feats1, feats2, strides, matches, sizes, psize))
    c0, bn0, c1, bn1, relu, pool = regressor.conv
    assert c0.kernel_size == (3, 3) and c0.stride == (2, 2) and c0.padding == (1, 1), "the released first conv"
    w0, b0 = _fold_bn(c0, bn0)
    dev, dtype = matches.device, feats1[0].dtype
    n, pp = len(matches), psize * psize
    dims = [f.shape[1] for f in feats1]
    d_half = sum(dims)
    d_fine = sum(c for c, k in zip(dims, coarse) if not k)
    ho = psize // 2  # output rows and columns of the stride-2 convolution
    cout = w0.shape[0]
    # weight columns: per half, the channels of the fine levels, then those of the coarse levels
    cols_fine, cols_coarse, at = [], [], 0
    for c, k in zip(dims, coarse):
        (cols_coarse if k else cols_fine).append(torch.arange(at, at + c, device=dev))
        at += c
    cols_fine, cols_coarse = torch.cat(cols_fine), torch.cat(cols_coarse)
    w_fine = torch.cat([w0[:, cols_fine], w0[:, d_half + cols_fine]], 1)
    fine = torch.empty(n * pp, 2 * d_fine, device=dev, dtype=dtype)
    off = torch.arange(psize, device=dev) - psize // 2
    # output pixel o = (oy, ox), tap t = (ty, tx) -> the patch pixel it reads (index -1 or psize: padding)
    o = torch.arange(ho, device=dev)
    t = torch.arange(3, device=dev)
    p_of = 2 * o[:, None] + t[None] - 1  # (ho, 3) patch row (or column) read by output row oy, tap ty
    valid = (p_of >= 0) & (p_of < psize)
    p_cl = p_of.clamp(0, psize - 1)
    blocks, qs = [], []
    for half, (feats, pts, (w, h)) in enumerate(((feats1, matches[:, :2], sizes[0]), (feats2, matches[:, 2:], sizes[1]))):
        px, py = pts[:, 0].long(), pts[:, 1].long()
        x, y = px[:, None] + off[None], py[:, None] + off[None]  # (N, psize) pixel columns, rows
        col = half * d_fine
        sq = None  # (N, psize, psize) squared norm of the coarse levels' cells at each pixel
        k_cells = []  # the coarse levels' cells; they share one stride, so one local index map
        for f, s, k in zip(feats, strides, coarse):
            fw, c = f.shape[3], f.shape[1]
            rows = f[0].flatten(1).T
            if not k:
                fx = torch.clamp(torch.div(x, s, rounding_mode="floor"), 0, w // s - 1)
                fy = torch.clamp(torch.div(y, s, rounding_mode="floor"), 0, h // s - 1)
                fine[:, col:col + c] = rows.index_select(0, (fy[:, :, None] * fw + fx[:, None, :]).reshape(-1))
                col += c
                continue
            kk = (psize - 1) // s + 2  # cells per axis a patch can touch
            bx = torch.div(px - psize // 2, s, rounding_mode="floor")  # (N,) first cell, unclamped
            by = torch.div(py - psize // 2, s, rounding_mode="floor")
            lx = torch.div(x, s, rounding_mode="floor") - bx[:, None]  # (N, psize) local cell of each pixel
            ly = torch.div(y, s, rounding_mode="floor") - by[:, None]
            ar = torch.arange(kk, device=dev)
            cx = torch.clamp(bx[:, None] + ar, 0, w // s - 1)  # (N, kk) the cells, clamped as the pixels are
            cy = torch.clamp(by[:, None] + ar, 0, h // s - 1)
            cells = rows.index_select(0, (cy[:, :, None] * fw + cx[:, None, :]).reshape(-1))  # (N kk kk, c)
            csq = torch.sum(cells * cells, dim=1).view(n, kk * kk)
            loc = ly[:, :, None] * kk + lx[:, None, :]  # (N, psize, psize) local cell index of each pixel
            g = torch.gather(csq, 1, loc.view(n, pp)).view(n, psize, psize)
            sq = g if sq is None else sq + g
            k_cells.append(cells)
        half_buf = fine[:, half * d_fine:(half + 1) * d_fine]
        norm2 = torch.sum(half_buf * half_buf, dim=1)
        norm = torch.sqrt(norm2 + sq.reshape(-1) + 1e-6)
        half_buf.div_(norm[:, None])
        cells = torch.cat(k_cells, 1) if len(k_cells) > 1 else k_cells[0]
        # (C_coarse, 9 C_out): W_t for the coarse channels of this half, tap-major
        wc = w0[:, d_half * half + cols_coarse].permute(1, 2, 3, 0).reshape(len(cols_coarse), 9 * cout)
        qs.append((cells @ wc).view(n, kk * kk * 9, cout))  # (N, cell-major then tap, C_out)
        inv = (1.0 / norm).view(n, psize, psize)
        # entry (o, t) of the sparse combination matrix: value 1 / n(p) at column cell(p) * 9 + t
        py_, px_ = p_cl[:, None, :, None], p_cl[None, :, None, :]  # (ho, ho, 3, 3) broadcast shapes
        ok = (valid[:, None, :, None] & valid[None, :, None, :]).reshape(1, -1)
        val = inv[:, py_, px_].reshape(n, -1) * ok  # (N, ho ho 3 3), zero where the tap reads padding
        cidx = loc[:, py_, px_] * 9 + (3 * t[:, None] + t[None, :]).view(1, 1, 3, 3)  # (N, ho, ho, 3, 3)
        blocks.append((val.view(n, ho * ho, 9), cidx.reshape(n, ho * ho, 9) + half * kk * kk * 9, kk))
    h = F.conv2d(fine.view(n, psize, psize, 2 * d_fine).permute(0, 3, 1, 2), w_fine, b0, stride=2, padding=1)
    a = torch.zeros(n, ho * ho, sum(b[2] * b[2] * 9 for b in blocks), device=dev, dtype=dtype)
    for val, cidx, _ in blocks:
        a.scatter_(2, cidx, val)
    h = h + torch.bmm(a, torch.cat(qs, 1)).view(n, ho, ho, cout).permute(0, 3, 1, 2)
    h = F.conv2d(h, *_fold_bn(c1, bn1), stride=c1.stride, padding=c1.padding)
    return regressor.fc(pool(torch.relu_(h)).flatten(1))


def refine(regressor: FeatRegressNet, feats1, feats2, strides, matches: torch.Tensor, sizes, psize: int = 16,
           chunk: int | None = None, factor: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """One refinement level: regress offsets around ``matches`` (N, 4) -> (refined (N, 4), prob (N,)).
    Chunks of ``chunk`` proposals (default: the released ``regr_batch`` 1200 in training, where the
    chunk is the BatchNorm batch; 300 in eval mode, where each proposal is independent and smaller
    chunks stay in cache); a trailing chunk of one is merged into the previous one (a
    BatchNorm1d in training mode cannot take a batch of one). Zero matches give empty outputs.
    In eval mode ``factor`` runs :func:`regress_patches_eval` (equal to float32 rounding, 0.87
    of the multiply-adds); False runs the gathered formulation, as training does."""
    if chunk is None:
        chunk = 1200 if regressor.training else 300
    n = len(matches)
    if n == 0:
        return matches.new_zeros(0, 4), matches.new_zeros(0)
    bounds = list(range(0, n, chunk)) + [n]
    if len(bounds) > 2 and bounds[-1] - bounds[-2] == 1:
        bounds.pop(-2)
    outs = []
    for a, b in zip(bounds[:-1], bounds[1:]):
        if regressor.training or not factor:
            outs.append(regressor(gather_patch_pairs(feats1, feats2, strides, matches[a:b], sizes, psize)))
        else:
            outs.append(regress_patches_eval(regressor, feats1, feats2, strides, matches[a:b], sizes, psize))
    offset, prob = parse_regressor_out(torch.cat(outs), psize)
    refined = matches.float() + offset
    (w1, h1), (w2, h2) = sizes
    lim = torch.tensor([w1, h1, w2, h2], dtype=refined.dtype, device=refined.device)
    refined = torch.minimum(torch.clamp(refined, min=0), lim)
    return refined, prob


@torch.no_grad()
def predict(model: NCNet, im1: torch.Tensor, im2: torch.Tensor, threshold: float = 0.5, ksize: int = 2) -> dict:
    """Matches of one pair of resized, normalised images (1, 3, H, W) with H, W multiples of 16.

    ``Patch2Pix``: coarse mutual matches refined by the mid then fine regressors, kept where the
    fine confidence exceeds ``threshold`` (all of them if none does). ``NCNet``: the coarse cell
    centres with softmax score above ``threshold``. Returns ``matches`` (N, 4) [x1, y1, x2, y2]
    and ``scores`` (N,) in resized-image pixels; N may be 0.
    """
    f1 = model.extract.forward_all(im1)
    f2 = model.extract.forward_all(im2)
    corr, delta = model.coarse_volume(f1[-1], f2[-1], ksize)
    coarse, cscore = corr_to_matches(corr, delta, ksize, upsample=model.extract.strides[-1])
    coarse, cscore = filter_coarse(coarse, cscore, 0.0 if isinstance(model, Patch2Pix) else threshold)
    if not isinstance(model, Patch2Pix):
        return {"matches": coarse, "scores": cscore}
    sizes = [(im1.shape[3], im1.shape[2]), (im2.shape[3], im2.shape[2])]
    _, _, fine, prob = model.refine_levels(f1, f2, coarse, sizes)
    keep = prob > threshold
    if keep.any():
        fine, prob = fine[keep], prob[keep]
    return {"matches": fine, "scores": prob}


@torch.no_grad()
def refine_matches(model: Patch2Pix, im1: torch.Tensor, im2: torch.Tensor, matches: torch.Tensor,
                   threshold: float = 0.5, keep_all_if_none: bool = True) -> dict:
    """Patch2Pix as a refiner of another method's matches (``Patch2PixRefined``, §1.5): the given
    matches (N, 4) [x1, y1, x2, y2] in pixels of the resized images (1, 3, H, W) go straight to
    the mid then fine regressors (no NC stage, no expansion); the refined matches whose fine
    confidence exceeds ``threshold`` are returned (``matches`` (M, 4), ``scores`` (M,), and
    ``index`` (M,) into the input rows). When none passes, ``keep_all_if_none`` (immatch's
    Patch2PixRefined as released) returns *all* refined matches, as :func:`predict` does; False
    returns none. Zero input matches return empty outputs (the released early return, patch2pix#6)."""
    if len(matches) == 0:
        empty = matches.new_zeros(0, 4).float()
        return {"matches": empty, "scores": empty[:, 0], "index": torch.zeros(0, dtype=torch.long, device=matches.device)}
    f1 = model.extract.forward_all(im1)
    f2 = model.extract.forward_all(im2)
    sizes = [(im1.shape[3], im1.shape[2]), (im2.shape[3], im2.shape[2])]
    _, _, fine, prob = model.refine_levels(f1, f2, matches.float(), sizes)
    index = torch.nonzero(prob > threshold).flatten()
    if len(index) == 0 and keep_all_if_none:
        index = torch.arange(len(prob), device=prob.device)
    return {"matches": fine[index], "scores": prob[index], "index": index}
