"""Write the demo datasets in the real on-disk formats (see each function's docstring).

Every builder is deterministic given its config (which includes ``seed``) and writes into a
temporary folder that is renamed onto the output only when complete.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import h5py
import numpy as np
from tqdm import tqdm

from matchrepro.datasets.pairs import format_pair_line
from matchrepro.demo import scenes, textures
from matchrepro.geometry.camera import inplane_rotation, project, relative_pose, rotate_intrinsics, transform
from matchrepro.io import atomic_dir, write_image

#: Middlebury 2014 "Motorcycle" calibration for the 4x-downsampled images in scikit-image
#: (from the docstring of ``skimage.data.stereo_motorcycle``): focal, principal point of the
#: left camera, disparity offset ``doffs = cx1 - cx0`` and baseline in millimetres.
MOTORCYCLE = {"f": 994.978, "cx0": 311.193, "cy": 254.877, "doffs": 31.086, "baseline_mm": 193.001}


def _rng(cfg: dict, salt: int) -> np.random.Generator:
    return np.random.default_rng([int(cfg.get("seed", 0)), salt])


# --------------------------------------------------------------------------------------------
# HPatches
# --------------------------------------------------------------------------------------------

def _random_homography(rng, w: int, h: int, strength: float) -> np.ndarray:
    """A homography that moves the image corners by up to ``strength`` of the image size,
    with an in-plane rotation and scale change (a viewpoint change of a planar scene)."""
    src = np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], np.float32)
    ang = rng.uniform(-0.35, 0.35) * strength
    sc = np.exp(rng.uniform(-0.3, 0.3) * strength)
    c = np.array([(w - 1) / 2, (h - 1) / 2])
    Rm = np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]]) * sc
    dst = (src - c) @ Rm.T + c
    dst += rng.uniform(-strength, strength, (4, 2)) * np.array([w, h]) * 0.18
    return cv2.getPerspectiveTransform(src, dst.astype(np.float32)).astype(np.float64)


def _photometric_variant(img: np.ndarray, rng, level: float) -> np.ndarray:
    """Illumination change of strength ``level`` (0..1): gamma, exposure, colour cast, a smooth
    light gradient and noise, as in HPatches ``i_*`` sequences."""
    h, w = img.shape[:2]
    x = img.astype(np.float32) / 255.0
    x = x ** np.float32(np.exp(rng.uniform(-0.6, 0.6) * level))
    x *= np.float32(np.exp(rng.uniform(-0.7, 0.4) * level))
    x *= (1 + rng.uniform(-0.15, 0.15, 3) * level).astype(np.float32)
    gy, gx = np.mgrid[0:h, 0:w].astype(np.float32)
    d = rng.normal(size=2)
    ramp = (gx / w - 0.5) * d[0] + (gy / h - 0.5) * d[1]
    x *= (1 + 0.5 * level * ramp)[..., None]
    x += rng.normal(0, 0.01 + 0.02 * level, x.shape).astype(np.float32)
    return np.clip(x * 255 + 0.5, 0, 255).astype(np.uint8)


def build_hpatches(out: str | Path, cfg: dict) -> None:
    """HPatches layout: ``<out>/hpatches-sequences-release/<seq>/{1..6}.ppm`` and ``H_1_k``.

    ``v_*`` sequences: image k = photo seen through a random homography (exact ``H_1_k``);
    ``i_*`` sequences: same geometry (``H_1_k`` = identity) with illumination changes.
    Source photos are upscaled so that no warped image needs content outside the photo.
    """
    w, h = cfg["size"]
    names = textures.PHOTOS
    with atomic_dir(out) as tmp:
        root = tmp / "hpatches-sequences-release"
        jobs = [("i", k) for k in range(cfg["illumination"])] + [("v", k) for k in range(cfg["viewpoint"])]
        for n, (kind, k) in enumerate(tqdm(jobs, desc="demo hpatches", unit="seq")):
            rng = _rng(cfg, 1000 + n)
            photo = textures.load(names[n % len(names)])
            seq = root / f"{kind}_demo_{names[n % len(names)]}_{k}"
            seq.mkdir(parents=True)
            # canvas: the photo scaled so that the base view is a central crop of it
            s = 1.6 * max(w / photo.shape[1], h / photo.shape[0])
            canvas = cv2.resize(photo, None, fx=s, fy=s, interpolation=cv2.INTER_CUBIC)
            off = np.array([(canvas.shape[1] - w) / 2, (canvas.shape[0] - h) / 2])
            G1 = np.array([[1, 0, off[0]], [0, 1, off[1]], [0, 0, 1.0]])  # image-1 px -> canvas px
            base = cv2.warpPerspective(canvas, G1, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                       borderMode=cv2.BORDER_REFLECT)
            images = [base]
            Hs = []
            for idx in range(2, 7):
                if kind == "v":
                    H = _random_homography(rng, w, h, strength=0.45 + 0.15 * (idx - 2))
                    Gk = G1 @ np.linalg.inv(H)  # image-k px -> canvas px
                    img = cv2.warpPerspective(canvas, Gk, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                              borderMode=cv2.BORDER_REFLECT)
                    img = _photometric_variant(img, rng, 0.3)
                else:
                    H = np.eye(3)
                    img = _photometric_variant(base, rng, 0.4 + 0.2 * (idx - 2))
                images.append(img)
                Hs.append(H / H[2, 2])
            for idx, img in enumerate(images, 1):
                write_image(seq / f"{idx}.ppm", img)
            for idx, H in enumerate(Hs, 2):
                (seq / f"H_1_{idx}").write_text(
                    "\n".join("  ".join(f"{v:.10e}" for v in row) for row in H) + "\n"
                )


# --------------------------------------------------------------------------------------------
# YFCC100M / ScanNet-1500 (SuperGlue pair files)
# --------------------------------------------------------------------------------------------

def _store_rotated(image: np.ndarray, K_up: np.ndarray, rot: int) -> tuple[np.ndarray, np.ndarray]:
    """The stored file and its K for an upright view whose EXIF flag is ``rot``: the reader
    applies ``np.rot90(stored, rot)`` and ``rotate_intrinsics(K_stored, stored_wh, rot)``."""
    h, w = image.shape[:2]
    stored = np.ascontiguousarray(np.rot90(image, k=-rot))
    return stored, rotate_intrinsics(K_up, (w, h), (4 - rot) % 4)


def _write_yfcc_calibration(path: Path, K: np.ndarray, T_w2c: np.ndarray, wh: tuple[int, int]) -> None:
    """OANet/YFCC per-image calibration ``.h5``: datasets K, R, T (world-to-camera), imsize."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f["K"] = K
        f["R"] = T_w2c[:3, :3]
        f["T"] = T_w2c[:3, 3].reshape(3, 1)
        f["imsize"] = np.array([[wh[0], wh[1]]], dtype=np.float64)


def build_yfcc(out: str | Path, cfg: dict) -> None:
    """YFCC100M test layout as in OANet's ``raw_data``: ``<out>/raw_data/yfcc100m/<scene>/test/
    {images/*.jpg, calibration/calibration_*.h5, images.txt, calibration.txt}``, the OANet pair
    lists ``<out>/raw_data/pairs/<scene>-te-<n>-pairs.pkl`` (tuples whose first two entries index
    images.txt) and the SuperGlue pairs file ``<out>/<pairs_file>`` (38 columns, paths relative to
    ``raw_data/yfcc100m``). Rendered façade scenes, plus the real Middlebury motorcycle stereo
    pair when ``middlebury`` is set."""
    sizes = [tuple(s) for s in cfg["sizes"]]
    lines = []
    with atomic_dir(out) as tmp:
        img_root = tmp / "raw_data" / "yfcc100m"
        (tmp / "raw_data" / "pairs").mkdir(parents=True)
        for sc in tqdm(range(cfg["scenes"]), desc="demo yfcc", unit="scene"):
            rng = _rng(cfg, 2000 + sc)
            name = f"demo_facade_{sc}"
            planes = scenes.outdoor_scene(rng)
            cams = scenes.outdoor_cameras(rng, cfg["images_per_scene"], sizes)
            views = scenes.render_views(planes, cams, rng, ss=cfg["supersample"], jitter=cfg["photometric"])
            pairs = scenes.select_pairs(views, cfg["pairs_per_scene"], rng, *cfg["overlap"])
            test = img_root / name / "test"
            rots, Ks, names = [], [], []
            for i, v in enumerate(views):
                rot = 1 if i < cfg["exif_rotated"] else 0
                stored, K_st = _store_rotated(v.image, v.K, rot)
                stem = f"{int(rng.integers(1e7, 1e8))}_{int(rng.integers(1e9, 1e10))}"
                write_image(test / "images" / f"{stem}.jpg", stored)
                h, w = stored.shape[:2]
                T_st = inplane_rotation(rot).T @ v.T_w2c  # stored camera = upright rotated back
                _write_yfcc_calibration(test / "calibration" / f"calibration_{stem}.h5", K_st, T_st, (w, h))
                rots.append(rot)
                Ks.append(K_st)
                names.append(stem)
            (test / "images.txt").write_text("".join(f"images/{s}.jpg\n" for s in names))
            (test / "calibration.txt").write_text("".join(f"calibration/calibration_{s}.h5\n" for s in names))
            _write_oanet_pairs(tmp / "raw_data" / "pairs", name, [(i, j, o) for i, j, o in pairs])
            for i, j, _ in pairs:
                T_st_i = inplane_rotation(rots[i]).T @ views[i].T_w2c
                T_st_j = inplane_rotation(rots[j]).T @ views[j].T_w2c
                lines.append(format_pair_line(
                    f"{name}/test/images/{names[i]}.jpg", f"{name}/test/images/{names[j]}.jpg",
                    Ks[i], Ks[j], relative_pose(T_st_i, T_st_j), rots[i], rots[j],
                ))
        if cfg["middlebury"]:
            lines.append(_write_motorcycle(img_root))
            _write_oanet_pairs(tmp / "raw_data" / "pairs", "middlebury_motorcycle", [(0, 1, 1.0)])
        (tmp / cfg["pairs_file"]).write_text("\n".join(lines) + "\n")


def _write_oanet_pairs(folder: Path, scene: str, pairs: list[tuple[int, int, float]]) -> None:
    """OANet's ``<scene>-te-<n>-pairs.pkl``: a pickled list of (i, j, overlap) tuples."""
    import pickle

    with open(folder / f"{scene}-te-{len(pairs)}-pairs.pkl", "wb") as f:
        pickle.dump([(int(i), int(j), float(o)) for i, j, o in pairs], f)


def motorcycle_geometry() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(K0, K1, T_0to1) of the rectified Middlebury motorcycle pair (left -> right camera);
    translation in millimetres. Depth from disparity d: ``Z = f B / (d + doffs)``."""
    c = MOTORCYCLE
    K0 = np.array([[c["f"], 0, c["cx0"]], [0, c["f"], c["cy"]], [0, 0, 1]])
    K1 = K0.copy()
    K1[0, 2] += c["doffs"]
    T = np.eye(4)
    T[0, 3] = -c["baseline_mm"]
    return K0, K1, T


def _write_motorcycle(img_root: Path) -> str:
    import skimage.data

    left, right, _disp = skimage.data.stereo_motorcycle()
    test = img_root / "middlebury_motorcycle" / "test"
    write_image(test / "images" / "im0.jpg", left)
    write_image(test / "images" / "im1.jpg", right)
    K0, K1, T = motorcycle_geometry()
    h, w = left.shape[:2]
    _write_yfcc_calibration(test / "calibration" / "calibration_im0.h5", K0, np.eye(4), (w, h))
    _write_yfcc_calibration(test / "calibration" / "calibration_im1.h5", K1, T, (w, h))
    (test / "images.txt").write_text("images/im0.jpg\nimages/im1.jpg\n")
    (test / "calibration.txt").write_text("calibration/calibration_im0.h5\ncalibration/calibration_im1.h5\n")
    return format_pair_line("middlebury_motorcycle/test/images/im0.jpg",
                            "middlebury_motorcycle/test/images/im1.jpg", K0, K1, T)


def build_scannet(out: str | Path, cfg: dict) -> None:
    """ScanNet test layout: ``<out>/scans_test/<scene>/sens/frame-XXXXXX.color.jpg`` and the
    SuperGlue pairs file (frames every 15, K of the stored colour frames, rot flags 0)."""
    w, h = cfg["size"]
    lines = []
    with atomic_dir(out) as tmp:
        for sc in tqdm(range(cfg["scenes"]), desc="demo scannet", unit="scene"):
            rng = _rng(cfg, 3000 + sc)
            scene = f"scene{9000 + sc:04d}_00"
            planes = scenes.indoor_scene(rng)
            cams = scenes.indoor_cameras(rng, cfg["frames_per_scene"], w, h)
            views = scenes.render_views(planes, cams, rng, ss=cfg["supersample"], jitter=cfg["photometric"])
            names = []
            for i, v in enumerate(views):
                rel = f"scans_test/{scene}/sens/frame-{15 * i:06d}.color.jpg"
                write_image(tmp / rel, v.image)
                names.append(rel)
            for i, j, _ in scenes.select_pairs(views, cfg["pairs_per_scene"], rng, *cfg["overlap"]):
                lines.append(format_pair_line(
                    names[i], names[j], views[i].K, views[j].K,
                    relative_pose(views[i].T_w2c, views[j].T_w2c),
                ))
        (tmp / cfg["pairs_file"]).write_text("\n".join(lines) + "\n")


# --------------------------------------------------------------------------------------------
# MegaDepth (D2-Net scene_info + depth h5)
# --------------------------------------------------------------------------------------------

def _visible_points(points: np.ndarray, v: scenes.View, rel_tol: float = 0.01):
    """Indices of world points visible in view ``v`` (inside, in front, not occluded), their
    pixels and their z-depths."""
    uv, z = project(transform(v.T_w2c, points), v.K)
    h, w = v.depth.shape
    xi, yi = np.round(uv[:, 0]).astype(int), np.round(uv[:, 1]).astype(int)
    inside = (z > 0) & (xi >= 0) & (yi >= 0) & (xi < w) & (yi < h)
    ids = np.flatnonzero(inside)
    dz = v.depth[yi[ids], xi[ids]]
    keep = np.abs(dz - z[ids]) < rel_tol * z[ids]
    ids = ids[keep]
    return ids, uv[ids], z[ids]


def build_megadepth(out: str | Path, cfg: dict) -> None:
    """MegaDepth D2-Net layout: ``Undistorted_SfM/<scene>/images/*.jpg``, depth
    ``phoenix/S6/zl548/MegaDepth_v1/<scene>/dense0/depths/<stem>.h5`` (dataset ``depth``) and
    ``scene_info/<scene>.npz`` with the D2-Net keys computed from sampled surface points.

    As in the real data, intrinsics and the SfM 2D points follow COLMAP's convention (the
    centre of the top-left pixel is (0.5, 0.5)): ``K`` here is the renderer's K with 0.5 added
    to the principal point, and ``points3D_id_to_2D`` holds renderer pixels + 0.5."""
    w, h = cfg["size"]
    with atomic_dir(out) as tmp:
        (tmp / "scene_info").mkdir()
        for sc in tqdm(range(cfg["scenes"]), desc="demo megadepth", unit="scene"):
            rng = _rng(cfg, 4000 + sc)
            scene = f"{9000 + sc:04d}"
            planes = scenes.outdoor_scene(rng)
            cams = scenes.outdoor_cameras(rng, cfg["images_per_scene"], [(w, h), (h, w)])
            views = scenes.render_views(planes, cams, rng, ss=cfg["supersample"], jitter=cfg["photometric"])
            if cfg["revisits"]:  # their own stream: revisits: 0 leaves the scene byte-identical
                rrng = _rng(cfg, 4500 + sc)
                again = scenes.revisit_cameras(rrng, cams, cfg["revisits"])
                views += scenes.render_views(planes, again, rrng, ss=cfg["supersample"],
                                             jitter=cfg["revisit_photometric"])
            areas = np.array([p.size[0] * p.size[1] for p in planes])
            counts = rng.multinomial(cfg["points3d"], areas / areas.sum())
            points = np.concatenate([p.sample_points(c, rng) for p, c in zip(planes, counts)])
            image_paths, depth_paths, Ks, poses, id2d, idnd, npts = [], [], [], [], [], [], []
            for i, v in enumerate(views):
                stem = f"{int(rng.integers(1e9, 1e10))}_{int(rng.integers(1e9, 1e10))}"
                ip = f"Undistorted_SfM/{scene}/images/{stem}.jpg"
                dp = f"phoenix/S6/zl548/MegaDepth_v1/{scene}/dense0/depths/{stem}.h5"
                write_image(tmp / ip, v.image)
                (tmp / dp).parent.mkdir(parents=True, exist_ok=True)
                with h5py.File(tmp / dp, "w") as f:
                    f.create_dataset("depth", data=v.depth.astype(np.float32))
                ids, uv, z = _visible_points(points, v)
                f_mean = (v.K[0, 0] + v.K[1, 1]) / 2
                id2d.append({int(k): uv[n].astype(np.float64) + 0.5 for n, k in enumerate(ids)})
                idnd.append({int(k): float(z[n] / f_mean) for n, k in enumerate(ids)})
                npts.append(len(ids))
                image_paths.append(ip)
                depth_paths.append(dp)
                K_colmap = v.K.copy()
                K_colmap[:2, 2] += 0.5
                Ks.append(K_colmap)
                poses.append(v.T_w2c)
            n = len(views)
            overlap = -np.ones((n, n))
            scale = -np.ones((n, n))
            angles = -np.ones((n, n))
            for i in range(n):
                for j in range(i + 1, n):
                    shared = sorted(set(id2d[i]) & set(id2d[j]))
                    if len(id2d[i]):
                        overlap[i, j] = len(shared) / len(id2d[i])
                    if len(id2d[j]):
                        overlap[j, i] = len(shared) / len(id2d[j])
                    if shared:
                        nd_i = np.array([idnd[i][k] for k in shared])
                        nd_j = np.array([idnd[j][k] for k in shared])
                        scale[i, j] = scale[j, i] = float(np.min(np.maximum(nd_i / nd_j, nd_j / nd_i)))
                    zi, zj = poses[i][2, :3], poses[j][2, :3]
                    angles[i, j] = angles[j, i] = float(np.rad2deg(np.arccos(np.clip(zi @ zj, -1, 1))))

            def obj(items):
                a = np.empty(len(items), dtype=object)
                for k, it in enumerate(items):
                    a[k] = it
                return a

            np.savez(
                tmp / "scene_info" / f"{scene}.npz",
                image_paths=obj(image_paths), depth_paths=obj(depth_paths), intrinsics=obj(Ks),
                poses=obj(poses), overlap_matrix=overlap, scale_ratio_matrix=scale, angles=angles,
                n_points3D=np.array(npts), points3D_id_to_2D=obj(id2d), points3D_id_to_ndepth=obj(idnd),
            )


BUILDERS = {  # by the dataset's demo.kind
    "hpatches": build_hpatches,
    "yfcc": build_yfcc,
    "scannet": build_scannet,
    "megadepth": build_megadepth,
}
