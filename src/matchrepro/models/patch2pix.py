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
from torch import nn

from matchrepro.models.conv4d import Conv4d
from matchrepro.models.resnet import ResNet34

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LEVEL_DIMS = [3, 64, 64, 128, 256]


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
    the maxima, each in {0..k-1} (order i, j, k, l = h1, w1, h2, w2)."""
    slices = []
    for i in range(k):
        for j in range(k):
            for a in range(k):
                for b in range(k):
                    slices.append(corr[:, 0, i::k, j::k, a::k, b::k])
    stacked = torch.stack(slices, dim=1)
    pooled, code = stacked.max(dim=1)
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
        return self.fc(self.conv(x).flatten(1))


def parse_regressor_out(out: torch.Tensor, patch_size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 5) -> offsets (N, 4) in [-S/2, S/2) pixels (``S tanh(relu(o)) - S//2``) and the
    confidence sigmoid(o[:, 4]) (N,)."""
    offset = patch_size * torch.tanh(torch.relu(out[:, :4])) - patch_size // 2
    return offset, torch.sigmoid(out[:, 4])


class NCNet(nn.Module):
    """"NCNet adapted": the backbone and the NC stage (the 220 keys of ``ncn_ivd_5ep.pth``)."""

    def __init__(self, change_stride: bool = True):
        super().__init__()
        self.extract = ResNet34(change_stride)
        self.ncn = NeighConsensus()

    def coarse_volume(self, f1: torch.Tensor, f2: torch.Tensor, ksize: int = 2):
        """layer3 features -> (filtered NC volume on the pooled grid, delta offsets)."""
        corr = correlation_4d(feature_l2norm(f1), feature_l2norm(f2))
        corr, delta = maxpool4d(corr, ksize)
        corr = mutual_matching(corr)
        corr = self.ncn(corr)
        return mutual_matching(corr), delta


class Patch2Pix(NCNet):
    """NCNet adapted + the mid and fine patch regressors (276 keys)."""

    def __init__(self, feat_idx=(0, 1, 2, 3), change_stride: bool = True):
        super().__init__(change_stride)
        self.feat_idx = list(feat_idx)
        dim = sum(LEVEL_DIMS[i] for i in self.feat_idx)
        self.regress_mid = FeatRegressNet(dim)
        self.regress_fine = FeatRegressNet(dim)
