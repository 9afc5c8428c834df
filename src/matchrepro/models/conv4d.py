"""4-D convolution for neighbourhood consensus, in the checkpoint layout of NCNet/Patch2Pix.

The weight is stored pre-permuted as ``(k1, out, in, k2, k3, k4)`` (patch2pix.md §2.1), so the
official ``ncn.conv.*.weight`` tensors load strictly. The original implementation loops in Python
over the first spatial dimension and sums ``conv3d`` over the k1 kernel slices (3 x h1 calls);
here the first spatial dimension is folded into the batch, so there are only k1 ``conv3d`` calls.
Both compute the same zero-padded, stride-1 cross-correlation; the bias is added once.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class Conv4d(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bias: bool = True):
        super().__init__()
        k = kernel_size
        self.kernel_size = k
        self.weight = nn.Parameter(torch.empty(k, out_channels, in_channels, k, k, k))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        nn.init.kaiming_uniform_(self.weight.permute(1, 2, 0, 3, 4, 5), a=math.sqrt(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, h1, w1, h2, w2) -> (B, out, h1, w1, h2, w2)."""
        b, c, h1, w1, h2, w2 = x.shape
        k = self.kernel_size
        p = k // 2
        xp = F.pad(x, (0, 0, 0, 0, 0, 0, p, p))  # pad the first spatial dim only
        out = None
        for a in range(k):
            s = xp[:, :, a:a + h1].permute(0, 2, 1, 3, 4, 5).reshape(b * h1, c, w1, h2, w2)
            y = F.conv3d(s, self.weight[a], padding=p)
            out = y if out is None else out + y
        out = out.reshape(b, h1, -1, w1, h2, w2).permute(0, 2, 1, 3, 4, 5)
        if self.bias is not None:
            out = out + self.bias.view(1, -1, 1, 1, 1, 1)
        return out.contiguous()


def conv4d_loop_reference(x: torch.Tensor, weight_ckpt: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """The loop formulation (one conv3d per output slice and kernel slice), for tests and the
    speed benchmark. ``weight_ckpt`` is in the checkpoint layout (k1, out, in, k2, k3, k4)."""
    b, c, h1, w1, h2, w2 = x.shape
    k = weight_ckpt.shape[0]
    p = k // 2
    xp = F.pad(x, (0, 0, 0, 0, 0, 0, p, p))
    outs = []
    for i in range(h1):
        acc = None
        for a in range(k):
            y = F.conv3d(xp[:, :, i + a], weight_ckpt[a], bias=None, padding=p)
            acc = y if acc is None else acc + y
        if bias is not None:
            acc = acc + bias.view(1, -1, 1, 1, 1)
        outs.append(acc)
    return torch.stack(outs, dim=2)
