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


# ----------------------------------------------------------------------------------------------
# The same cross-correlation as a few large conv2d calls (used by NeighConsensus).
#
# The (h1, w1) kernel taps (a, b) are moved into channels, so one conv2d over (h2, w2) with all
# h1 * w1 cells in the batch does the work of the k1 conv3d calls above:
# * gather (Cin <= Cout, NC layer 1: 1 -> 16): the k^2 shifted copies of the input become
#   Cin * k^2 input channels of one conv2d (Cin * k^2 -> Cout);
# * scatter (Cin > Cout, NC layer 2: 16 -> 1): one conv2d Cin -> k^2 * Cout gives every (a, b)
#   tap's contribution at every cell, and the output is the sum of the k^2 shifted planes.
# Both sum the same products in another order than conv3d: results agree to float32 rounding
# (relative ~1e-6), not bitwise.
# ----------------------------------------------------------------------------------------------

def swap_kernel(weight: torch.Tensor) -> torch.Tensor:
    """The checkpoint-layout kernel (k1, out, in, k2, k3, k4) of the *swapped* branch: a conv on
    ``x.permute(0, 1, 4, 5, 2, 3)`` permuted back equals a conv on ``x`` with taps (a, b, c, d)
    taken from (c, d, a, b)."""
    return weight.permute(4, 1, 2, 5, 0, 3)


def conv4d_gather(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """Conv4d with the (a, b) taps gathered into channels. x (B, Cin, h1, w1, h2, w2)."""
    b, cin, h1, w1, h2, w2 = x.shape
    k, cout = weight.shape[0], weight.shape[1]
    p = k // 2
    xp = F.pad(x, (0, 0, 0, 0, p, p, p, p))
    taps = torch.stack([xp[:, :, a:a + h1, bb:bb + w1] for a in range(k) for bb in range(k)], 2)
    xg = taps.permute(0, 3, 4, 1, 2, 5, 6).reshape(b * h1 * w1, cin * k * k, h2, w2)
    w2d = weight.permute(1, 2, 0, 3, 4, 5).reshape(cout, cin * k * k, k, k)  # (out, (in, a, b), c, d)
    y = F.conv2d(xg, w2d, bias, padding=p)
    return y.view(b, h1, w1, cout, h2, w2).permute(0, 3, 1, 2, 4, 5)


def conv4d_scatter(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """Conv4d with the (a, b) taps scattered into output channels, then k^2 shifted sums."""
    b, cin, h1, w1, h2, w2 = x.shape
    k, cout = weight.shape[0], weight.shape[1]
    p = k // 2
    xs = x.permute(0, 2, 3, 1, 4, 5).reshape(b * h1 * w1, cin, h2, w2)
    w2d = weight.permute(0, 3, 1, 2, 4, 5).reshape(k * k * cout, cin, k, k)  # ((a, b, out), in, c, d)
    y = F.conv2d(xs, w2d, padding=p).view(b, h1, w1, k * k, cout, h2, w2)
    y = F.pad(y, (0, 0, 0, 0, 0, 0, 0, 0, p, p, p, p))  # zero-pad h1, w1
    out = None
    for t, (a, bb) in enumerate((a, bb) for a in range(k) for bb in range(k)):
        s = y[:, a:a + h1, bb:bb + w1, t]
        out = s.clone() if out is None else out.add_(s)
    if bias is not None:
        out = out + bias.view(1, 1, 1, -1, 1, 1)
    return out.permute(0, 3, 1, 2, 4, 5)


def conv4d_fast(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """Conv4d by conv2d: gather the (a, b) taps when Cin <= Cout, scatter them otherwise."""
    if weight.shape[2] <= weight.shape[1]:
        return conv4d_gather(x, weight, bias)
    return conv4d_scatter(x, weight, bias)
