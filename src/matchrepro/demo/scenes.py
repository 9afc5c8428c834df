"""Random textured scenes and camera rigs for the demo datasets (world z axis points up)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from matchrepro.demo import textures
from matchrepro.demo.render import Plane, intrinsics, look_at, render
from matchrepro.geometry.camera import project, transform, unproject

LIGHT = np.array([0.4, -0.6, 0.7]) / np.linalg.norm([0.4, -0.6, 0.7])


def _shade(normal: np.ndarray) -> float:
    return float(0.55 + 0.45 * abs(normal @ LIGHT))


def _tex(rng: np.random.Generator, pool: tuple[str, ...]) -> np.ndarray:
    """A random crop (55-100 % per side), flip and quarter turn of a photo from ``pool``, so
    that panels reusing a photo do not repeat each other exactly (repetition would make the
    ground truth ambiguous for matchers)."""
    img = textures.load(pool[int(rng.integers(len(pool)))])
    h, w = img.shape[:2]
    ch, cw = int(h * rng.uniform(0.55, 1.0)), int(w * rng.uniform(0.55, 1.0))
    y0, x0 = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    crop = img[y0:y0 + ch, x0:x0 + cw]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    return np.ascontiguousarray(np.rot90(crop, k=int(rng.integers(4))))


def _box(rng, center, size, pool) -> list[Plane]:
    """Five visible faces (no bottom) of an axis-aligned box."""
    cx, cy, cz = center
    sx, sy, sz = size
    o = np.array([cx - sx / 2, cy - sy / 2, cz])
    faces = [
        (o, [1, 0, 0], [0, 0, 1], (sx, sz)),
        (o + [0, sy, 0], [1, 0, 0], [0, 0, 1], (sx, sz)),
        (o, [0, 1, 0], [0, 0, 1], (sy, sz)),
        (o + [sx, 0, 0], [0, 1, 0], [0, 0, 1], (sy, sz)),
        (o + [0, 0, sz], [1, 0, 0], [0, 1, 0], (sx, sy)),
    ]
    out = []
    for org, u, v, sz2 in faces:
        p = Plane(org, u, v, sz2, _tex(rng, pool))
        p.shade = _shade(p.normal)
        p.tex_f32 = p.texture.astype(np.float32) * np.float32(p.shade)
        out.append(p)
    return out


def _plane(rng, origin, u, v, size, pool, grid=(1, 1)) -> list[Plane]:
    """A rectangle split into ``grid`` panels, each with its own texture crop."""
    origin, u, v = (np.asarray(a, float) for a in (origin, u, v))
    su, sv = size[0] / grid[0], size[1] / grid[1]
    out = []
    for a in range(grid[0]):
        for b in range(grid[1]):
            p = Plane(origin + a * su * u / np.linalg.norm(u) + b * sv * v / np.linalg.norm(v),
                      u, v, (su, sv), _tex(rng, pool))
            p.shade = _shade(p.normal)
            p.tex_f32 = p.texture.astype(np.float32) * np.float32(p.shade)
            out.append(p)
    return out


def outdoor_scene(rng: np.random.Generator) -> list[Plane]:
    """A façade scene: textured ground, a back wall, two angled side walls and boxes.

    The back wall spans x in [-8, 8] at y = 0, height 9; cameras stand at y < 0.
    """
    photos, grey = textures.PHOTOS, textures.GREY_TEXTURES
    planes = [
        *_plane(rng, [-20, -30, 0], [1, 0, 0], [0, 1, 0], (40, 32), photos + grey, (5, 4)),
        *_plane(rng, [-8, 0, 9], [1, 0, 0], [0, 0, -1], (16, 9), photos, (2, 1)),
        *_plane(rng, [-8, -7, 8], [0, 1, 0], [0, 0, -1], (7, 8), photos + grey),
        *_plane(rng, [8, 0, 8], [0, -1, 0], [0, 0, -1], (7, 8), photos + grey),
    ]
    for _ in range(int(rng.integers(2, 4))):
        c = [rng.uniform(-5, 5), rng.uniform(-5, -1.5), 0.0]
        planes += _box(rng, c, rng.uniform([1.0, 1.0, 1.0], [2.5, 2.5, 3.0]), photos + grey)
    return planes


def indoor_scene(rng: np.random.Generator) -> list[Plane]:
    """A 10 x 8 x 3 room (floor, ceiling, four walls) with furniture-sized boxes."""
    photos, grey = textures.PHOTOS, textures.GREY_TEXTURES
    W, D, H = 10.0, 8.0, 3.0
    planes = [
        *_plane(rng, [0, 0, 0], [1, 0, 0], [0, 1, 0], (W, D), photos + grey, (3, 2)),
        *_plane(rng, [0, D, H], [1, 0, 0], [0, -1, 0], (W, D), grey, (2, 2)),
        *_plane(rng, [0, D, H], [1, 0, 0], [0, 0, -1], (W, H), photos + grey, (3, 1)),
        *_plane(rng, [W, 0, H], [-1, 0, 0], [0, 0, -1], (W, H), photos + grey, (3, 1)),
        *_plane(rng, [0, 0, H], [0, 1, 0], [0, 0, -1], (D, H), photos + grey, (2, 1)),
        *_plane(rng, [W, D, H], [0, -1, 0], [0, 0, -1], (D, H), photos + grey, (2, 1)),
    ]
    for _ in range(int(rng.integers(3, 5))):
        c = [rng.uniform(2, W - 2), rng.uniform(2, D - 2), 0.0]
        planes += _box(rng, c, rng.uniform([0.6, 0.6, 0.5], [1.6, 1.6, 1.4]), photos + grey)
    return planes


@dataclass
class View:
    """A rendered view: image (H, W, 3) uint8, depth (H, W) float32, K (3, 3), T_w2c (4, 4)."""

    image: np.ndarray
    depth: np.ndarray
    K: np.ndarray
    T_w2c: np.ndarray


def photometric_jitter(image: np.ndarray, rng: np.random.Generator, strength: float = 1.0) -> np.ndarray:
    """Per-view exposure, gamma, colour balance and sensor noise (geometry unchanged)."""
    x = image.astype(np.float32) / 255.0
    x = x ** np.float32(np.exp(rng.normal(0, 0.15 * strength)))
    x = x * np.float32(np.exp(rng.normal(0, 0.12 * strength))) * rng.uniform(
        1 - 0.06 * strength, 1 + 0.06 * strength, 3
    ).astype(np.float32)
    x = x + rng.normal(0, 0.01 * strength, x.shape).astype(np.float32)
    return np.clip(x * 255.0 + 0.5, 0, 255).astype(np.uint8)


def outdoor_cameras(rng, n: int, sizes: list[tuple[int, int]]) -> list[tuple[np.ndarray, np.ndarray, int, int]]:
    """``n`` cameras (K, T_w2c, w, h) on an arc in front of the façade, looking at it."""
    cams = []
    for _ in range(n):
        w, h = sizes[int(rng.integers(len(sizes)))]
        ang = np.deg2rad(rng.uniform(-55, 55))
        r = rng.uniform(9, 20)
        center = np.array([r * np.sin(ang), -r * np.cos(ang), rng.uniform(1.3, 3.0)])
        target = np.array([rng.uniform(-3, 3), rng.uniform(-2, 0), rng.uniform(2.5, 5)])
        K = intrinsics(w, h, rng.uniform(50, 70))
        cams.append((K, look_at(center, target, roll_deg=rng.uniform(-4, 4)), w, h))
    return cams


def revisit_cameras(rng, cams: list, n: int, shift_m: float = 0.3) -> list[tuple[np.ndarray, np.ndarray, int, int]]:
    """``n`` cameras that revisit a viewpoint of ``cams``: the same K and image size, the centre
    moved by about ``shift_m`` metres and the gaze by a few degrees (MegaDepth's many photos
    taken from the same spot at other times of day; HPatches-like small viewpoint changes)."""
    out = []
    for _ in range(n):
        K, T, w, h = cams[int(rng.integers(len(cams)))]
        R, t = T[:3, :3], T[:3, 3]
        center = -R.T @ t
        target = center + 10.0 * R[2] + rng.normal(0, 0.3, 3)
        out.append((K, look_at(center + rng.normal(0, shift_m, 3), target, roll_deg=rng.uniform(-3, 3)), w, h))
    return out


def indoor_cameras(rng, n: int, width: int, height: int) -> list[tuple[np.ndarray, np.ndarray, int, int]]:
    """``n`` hand-held-like cameras along a smooth path inside the indoor room."""
    cams = []
    t0 = rng.uniform(0, 2 * np.pi)
    for i in range(n):
        a = t0 + 0.35 * i
        center = np.array([5 + 2.5 * np.cos(a), 4 + 2.0 * np.sin(a), rng.uniform(1.3, 1.7)])
        look = a + np.pi / 2 + rng.uniform(-0.3, 0.3)
        target = center + np.array([3 * np.cos(look), 3 * np.sin(look), rng.uniform(-1.2, -0.2)])
        K = intrinsics(width, height, 62.0)
        cams.append((K, look_at(center, target, roll_deg=rng.uniform(-3, 3)), width, height))
    return cams


def render_views(planes, cams, rng, ss: int = 2, jitter: float = 1.0) -> list[View]:
    views = []
    for K, T, w, h in cams:
        img, depth = render(planes, K, T, w, h, ss=ss)
        views.append(View(photometric_jitter(img, rng, jitter), depth, K, T))
    return views


def depth_overlap(v0: View, v1: View, step: int = 8, rel_tol: float = 0.02) -> float:
    """Fraction of valid pixels of view 0 (on a grid) that are visible in view 1: they
    project inside image 1 and agree with its depth within ``rel_tol``."""
    h, w = v0.depth.shape
    ys, xs = np.mgrid[0:h:step, 0:w:step]
    d = v0.depth[ys, xs].ravel()
    ok = d > 0
    if not ok.any():
        return 0.0
    pts = np.stack([xs.ravel(), ys.ravel()], 1)[ok].astype(np.float64)
    X0 = unproject(pts, d[ok], v0.K)
    X1 = transform(v1.T_w2c @ np.linalg.inv(v0.T_w2c), X0)
    uv, z = project(X1, v1.K)
    h1, w1 = v1.depth.shape
    xi, yi = np.round(uv[:, 0]).astype(int), np.round(uv[:, 1]).astype(int)
    inside = (z > 0) & (xi >= 0) & (yi >= 0) & (xi < w1) & (yi < h1)
    vis = np.zeros(len(z), bool)
    dz = v1.depth[yi[inside], xi[inside]]
    vis[inside] = np.abs(dz - z[inside]) < rel_tol * z[inside]
    return float(vis.sum() / len(z))


def select_pairs(views: list[View], n_pairs: int, rng, lo: float = 0.15, hi: float = 0.85) -> list[tuple[int, int, float]]:
    """Up to ``n_pairs`` pairs (i < j) whose symmetric overlap min(o_ij, o_ji) is in [lo, hi]."""
    cand = []
    for i in range(len(views)):
        for j in range(i + 1, len(views)):
            o = min(depth_overlap(views[i], views[j]), depth_overlap(views[j], views[i]))
            if lo <= o <= hi:
                cand.append((i, j, o))
    order = rng.permutation(len(cand))[:n_pairs]
    return sorted(cand[k] for k in order)
