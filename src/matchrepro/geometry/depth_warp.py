"""Pixels of image 1 moved into image 2 with depth and relative pose, in torch (training losses;
``matchrepro.geometry.camera`` holds the numpy versions used by evaluation and preprocessing).

Conventions: pixels (N, 2) are (x, y), x = column, in the frame the intrinsics describe; poses
map camera-1 to camera-2 coordinates, ``X2 = R X1 + t`` with ``T_1to2`` (4, 4)."""

from __future__ import annotations

import torch


def sample_depth(depth: torch.Tensor, xy: torch.Tensor) -> torch.Tensor:
    """Nearest depth (N,) of a (H, W) map at pixels ``xy`` (N, 2) (the pixel containing each
    point, no gradient through the look-up); 0 outside the map."""
    H, W = depth.shape
    xi = torch.floor(xy.detach()).long()
    x, y = xi[:, 0], xi[:, 1]
    inside = (x >= 0) & (x < W) & (y >= 0) & (y < H)
    out = torch.zeros(len(xy), dtype=depth.dtype, device=depth.device)
    out[inside] = depth[y[inside], x[inside]]
    return out


def warp_with_depth(xy: torch.Tensor, z: torch.Tensor, K1: torch.Tensor, K2: torch.Tensor,
                    T_1to2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixels ``xy`` (N, 2) of image 1 at depths ``z`` (N,) -> (pixels (N, 2) in image 2, their
    depth (N,) in camera 2). Points with depth <= 1e-6 in camera 2 get a finite but meaningless
    position: mask them with the returned depth. Differentiable in ``xy``."""
    rays = torch.cat([xy, torch.ones_like(xy[:, :1])], 1) @ torch.linalg.inv(K1).T
    X2 = (rays * z[:, None]) @ T_1to2[:3, :3].T + T_1to2[:3, 3]
    uvw = X2 @ K2.T
    z2 = uvw[:, 2]
    return uvw[:, :2] / torch.where(z2 > 1e-6, z2, torch.ones_like(z2))[:, None], z2
