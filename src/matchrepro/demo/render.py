"""A small exact ray-caster for piecewise-planar textured scenes.

Cameras are pinhole with 3x3 K in pixels and 4x4 world-to-camera poses. The pixel (x, y) has
its centre at (x, y), so its ray is ``R^T K^-1 [x, y, 1]`` from the centre ``-R^T t``. Images
are super-sampled (``ss`` x ``ss`` rays per pixel, box filter); depth is the z coordinate in the
camera frame of the surface seen through the pixel centre (0 = sky, invalid).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np


@dataclass
class Plane:
    """Rectangle ``origin + s u + t v`` for ``0 <= s <= size[0]``, ``0 <= t <= size[1]``.

    ``texture`` (Ht, Wt, 3) uint8 covers the rectangle once; ``shade`` multiplies its brightness (a fixed Lambertian term).
    """

    origin: np.ndarray
    u: np.ndarray
    v: np.ndarray
    size: tuple[float, float]
    texture: np.ndarray
    shade: float = 1.0
    tex_f32: np.ndarray = field(init=False, repr=False)

    def __post_init__(self):
        self.origin = np.asarray(self.origin, np.float64)
        self.u = np.asarray(self.u, np.float64) / np.linalg.norm(self.u)
        self.v = np.asarray(self.v, np.float64) / np.linalg.norm(self.v)
        self.tex_f32 = self.texture.astype(np.float32) * np.float32(self.shade)

    @property
    def normal(self) -> np.ndarray:
        return np.cross(self.u, self.v)

    def sample_points(self, n: int, rng: np.random.Generator) -> np.ndarray:
        st = rng.uniform(0, 1, (n, 2)) * np.asarray(self.size)
        return self.origin + st[:, :1] * self.u + st[:, 1:] * self.v


def look_at(center: np.ndarray, target: np.ndarray, up=(0.0, 0.0, 1.0), roll_deg: float = 0.0) -> np.ndarray:
    """World-to-camera 4x4 pose of a camera at ``center`` looking at ``target``.

    Camera axes: x right, y down, z forward (OpenCV). ``up`` is the world up direction.
    """
    center, target = np.asarray(center, float), np.asarray(target, float)
    z = target - center
    z /= np.linalg.norm(z)
    x = np.cross(z, np.asarray(up, float))
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    R = np.stack([x, y, z])  # rows: camera axes in world coordinates
    a = np.deg2rad(roll_deg)
    Rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    R = Rz @ R
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = -R @ center
    return T


def intrinsics(width: int, height: int, fov_deg: float) -> np.ndarray:
    """K with the horizontal field of view ``fov_deg`` and principal point at the image
    centre ((w-1)/2, (h-1)/2), as in the YFCC calibration files."""
    f = (width / 2.0) / np.tan(np.deg2rad(fov_deg) / 2.0)
    return np.array([[f, 0, (width - 1) / 2.0], [0, f, (height - 1) / 2.0], [0, 0, 1.0]])


def _window(p: Plane, K: np.ndarray, T_w2c: np.ndarray, xs: np.ndarray, ys: np.ndarray):
    """Row/column slices of the (regular) pixel grid that can see plane ``p``: the bounding box
    of its projected corners, or the whole grid when a corner lies behind the camera."""
    su, sv = p.size
    corners = np.stack([p.origin, p.origin + su * p.u, p.origin + sv * p.v, p.origin + su * p.u + sv * p.v])
    cam = corners @ T_w2c[:3, :3].T + T_w2c[:3, 3]
    full = (slice(None), slice(None))
    if np.any(cam[:, 2] <= 1e-6):
        return None if np.all(cam[:, 2] <= 1e-6) else full
    uv = cam @ K.T
    uv = uv[:, :2] / uv[:, 2:3]
    x_axis, y_axis = xs[0], ys[:, 0]
    c0, c1 = np.searchsorted(x_axis, [uv[:, 0].min() - 1, uv[:, 0].max() + 1])
    r0, r1 = np.searchsorted(y_axis, [uv[:, 1].min() - 1, uv[:, 1].max() + 1])
    if c0 >= c1 or r0 >= r1:
        return None
    return slice(r0, r1), slice(c0, c1)


def _cast(planes: list[Plane], K: np.ndarray, T_w2c: np.ndarray, xs: np.ndarray, ys: np.ndarray):
    """Ray-cast pixel positions (H', W') -> (depth, plane index, s, t) maps.

    ``xs``/``ys`` form a regular grid (constant along columns/rows respectively)."""
    R, t = T_w2c[:3, :3], T_w2c[:3, 3]
    C = -R.T @ t
    Kinv = np.linalg.inv(K)
    # world direction of the ray through (x, y), scaled so its camera-frame z is 1
    M = R.T @ Kinv  # d_w = M @ [x, y, 1]
    depth = np.full(xs.shape, np.inf)
    idx = np.full(xs.shape, -1, np.int32)
    S = np.zeros(xs.shape)
    Tt = np.zeros(xs.shape)
    for i, p in enumerate(planes):
        win = _window(p, K, T_w2c, xs, ys)
        if win is None:
            continue
        wx, wy, wdepth = xs[win], ys[win], depth[win]
        n = p.normal
        a = n @ M  # d_w . n = a0 x + a1 y + a2
        denom = a[0] * wx + a[1] * wy + a[2]
        with np.errstate(divide="ignore", invalid="ignore"):
            lam = ((p.origin - C) @ n) / denom
        ok = (lam > 1e-6) & (lam < wdepth)
        if not ok.any():
            continue
        lam_ok = lam[ok]
        x_ok, y_ok = wx[ok], wy[ok]
        bu, bv = p.u @ M, p.v @ M
        co = C - p.origin
        s = co @ p.u + lam_ok * (bu[0] * x_ok + bu[1] * y_ok + bu[2])
        tt = co @ p.v + lam_ok * (bv[0] * x_ok + bv[1] * y_ok + bv[2])
        inside = (s >= 0) & (s <= p.size[0]) & (tt >= 0) & (tt <= p.size[1])
        sel = np.zeros(ok.shape, bool)
        sel[ok] = inside
        depth[win][sel] = lam_ok[inside]
        idx[win][sel] = i
        S[win][sel] = s[inside]
        Tt[win][sel] = tt[inside]
    return depth, idx, S, Tt


def _sample(tex: np.ndarray, mx: np.ndarray, my: np.ndarray) -> np.ndarray:
    """Bilinear texture lookup at (N,) float positions (OpenCV maps are limited to 32767
    rows, so the lists are folded into rows of 4096)."""
    n = len(mx)
    rows = -(-n // 4096)
    pad = rows * 4096 - n
    fx = np.pad(mx, (0, pad)).astype(np.float32).reshape(rows, 4096)
    fy = np.pad(my, (0, pad)).astype(np.float32).reshape(rows, 4096)
    vals = cv2.remap(tex, fx, fy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return vals.reshape(-1, tex.shape[2])[:n]


def render(
    planes: list[Plane], K: np.ndarray, T_w2c: np.ndarray, width: int, height: int,
    ss: int = 2, sky=(170.0, 195.0, 230.0),
) -> tuple[np.ndarray, np.ndarray]:
    """Render an (H, W, 3) uint8 image and an (H, W) float32 z-depth map (0 = no surface)."""
    offs = (np.arange(ss) + 0.5) / ss - 0.5
    gx = (np.arange(width)[None, :, None] + offs[None, None, :]).reshape(1, -1)
    gy = (np.arange(height)[:, None, None] + offs[None, None, :]).reshape(-1, 1)
    xs, ys = (np.ascontiguousarray(a) for a in np.broadcast_arrays(gx, gy))
    depth, idx, S, Tt = _cast(planes, K, T_w2c, xs, ys)
    # sky: vertical gradient
    frac = (ys / (height * ss)).astype(np.float32)[..., None]
    img = np.broadcast_to(np.asarray(sky, np.float32) * (1.1 - 0.3 * frac), (*xs.shape, 3)).copy()
    for i, p in enumerate(planes):
        m = idx == i
        if not m.any():
            continue
        ht, wt = p.texture.shape[:2]
        mx = S[m] / p.size[0] * wt - 0.5
        my = Tt[m] / p.size[1] * ht - 0.5
        img[m] = _sample(p.tex_f32, mx, my)
    img = img.reshape(height, ss, width, ss, 3).mean(axis=(1, 3))
    # depth through the pixel centres
    cx, cy = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
    dc, _, _, _ = _cast(planes, K, T_w2c, cx, cy)
    dc = np.where(np.isfinite(dc), dc, 0.0).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8), dc
