"""IMP training pairs made online from MegaDepth-format scenes (an option; the release dumps).

Input: an ``imp_pairs`` preprocessing run (pair lists per scene, :mod:`matchrepro.preprocessing.
imp_pairs`) and the MegaDepth root. Per sample, at full stored resolution as the dump:

1. read both images (grayscale) and depth maps;
2. augment (``photometric`` strength, applied to each image independently; ``perspective``
   strength: image 1 is warped by a random homography H, :mod:`matchrepro.datasets.augment`);
3. extract features with the configured detector (``max_keypoints`` of the features block);
4. ground truth exactly as the dump (:func:`matchrepro.preprocessing.imp_dump.
   ground_truth_matches`: depth reprojection, ``max_error_px``, cycle check, one-to-one) in the
   warped frame: image 1's depth is read at H⁻¹ x and its camera matrix is ``S H S⁻¹ K1`` (S:
   K's half-pixel centre convention), which projects a 3-D point exactly where the warp moves
   its pixel;
5. the released selection of K keypoints per image (:func:`matchrepro.datasets.imp_training.
   select_keypoints`).

Keypoints of image 1 stay in the warped frame and the sample's ``K1`` is the warped camera,
so every later use of K (pose loss) sees the geometry of the pixels it gets. Pairs
with fewer than K keypoints or no GT match are replaced by the next pair of the epoch order (the
release drops them from its dump). All draws come from torch's global generator (a resumed run
replays them). Batches hold the same tensors as :class:`~matchrepro.datasets.imp_training.IMPPairs`
plus ``H1`` (B, 3, 3) and ``pair_index`` (B,), the pair actually used.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from matchrepro.datasets import augment
from matchrepro.datasets.imp_training import ScenePairSampler, scene_files, select_keypoints
from matchrepro.datasets.megadepth import read_depth
from matchrepro.errors import DatasetError
from matchrepro.features import get_extractor
from matchrepro.io import read_image
from matchrepro.preprocessing.imp_dump import ground_truth_matches

DESCRIPTOR_DIM = {"sift": 128, "superpoint": 256}


class IMPOnlinePairs(ScenePairSampler):
    def __init__(self, index: str | Path, root: str | Path, features: dict, weights=None, num_keypoints: int = 1024,
                 inliers_range=(32, 512), pairs_per_scene: int = 80, keypoint_shift: float = 0.5, seed: int = 0,
                 photometric: float = 0.0, perspective: float = 0.0, max_error_px: float = 5.0,
                 pixel_center: str = "colmap"):
        files = scene_files(index, "imp_pairs")
        if features is None or features.get("type") not in DESCRIPTOR_DIM:
            raise DatasetError(f"{index}: online IMP pairs need a sift or superpoint features block")
        self.root = Path(root)
        self.K, (self.lo, self.hi) = int(num_keypoints), (int(inliers_range[0]), int(inliers_range[1]))
        self.pairs_per_scene, self.shift, self.seed = int(pairs_per_scene), float(keypoint_shift), seed
        self.photometric, self.perspective = float(photometric), float(perspective)
        self.max_error = float(max_error_px)
        self.center = 0.5 if pixel_center == "colmap" else 0.0
        self.extractor = get_extractor(features, weights)
        self.dim = DESCRIPTOR_DIM[features["type"]]
        self.pairs: list[dict] = []
        self.scene_pairs: list[list[int]] = []
        self.replaced = 0
        for scene, path in files:
            try:
                with np.load(path) as z:
                    d = {k: z[k] for k in z.files}
            except (OSError, ValueError) as e:
                raise DatasetError(f"{path}: cannot read imp_pairs file ({e})") from None
            mine = []
            for a, b in d["pairs"]:
                mine.append(len(self.pairs))
                self.pairs.append({"scene": scene, **{f"{k}{j}": d[v][i] for j, i in ((0, a), (1, b)) for k, v in
                                   (("image", "image_paths"), ("depth", "depth_paths"), ("K", "intrinsics"),
                                    ("T", "poses"))}})
            if mine:
                self.scene_pairs.append(mine)
        if not self.pairs:
            raise DatasetError(f"{index}: no pairs (check the imp_pairs overlap settings)")

    def scenes(self) -> set[str]:
        return {p["scene"] for p in self.pairs}

    def _view(self, path: str, depth_path: str, K: np.ndarray, rng: np.random.Generator, warp: bool):
        """Features of one (augmented) view, the depth at each keypoint (read in the unwarped
        frame through H⁻¹), its camera matrix in the warped frame, H and the size (w, h)."""
        img = read_image(self.root / path, grayscale=True)
        depth = read_depth(self.root / depth_path)
        h, w = img.shape
        H = augment.random_homography(w, h, self.perspective, rng) if warp else np.eye(3)
        if warp and self.perspective > 0:
            img = augment.warp(img, H)
        img = augment.photometric(img, self.photometric, rng)
        f = self.extractor(img)
        k = f["keypoints"].astype(np.float64)
        k_orig = augment.apply_homography(np.linalg.inv(H), k)
        xi, yi = np.floor(k_orig[:, 0]).astype(int), np.floor(k_orig[:, 1]).astype(int)
        inside = (xi >= 0) & (yi >= 0) & (xi < depth.shape[1]) & (yi < depth.shape[0])
        d = np.zeros(len(k), np.float32)
        d[inside] = depth[yi[inside], xi[inside]]
        # K of the warped view in K's own pixel convention (COLMAP: centres at +0.5): S H S⁻¹ K
        S = np.array([[1.0, 0, self.center], [0, 1, self.center], [0, 0, 1]])
        K_view = S @ H @ np.linalg.inv(S) @ np.asarray(K, np.float64)
        return f, d, K_view, H, np.array([w, h], np.float32)

    def sample(self, i: int, tries: int = 10) -> dict:
        """One pair with K keypoints per image (see the module docstring)."""
        for _ in range(tries):
            p = self.pairs[i]
            rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, ()).item()))
            f0, d0, K0, _, wh0 = self._view(p["image0"], p["depth0"], p["K0"], rng, warp=False)
            f1, d1, K1, H, wh1 = self._view(p["image1"], p["depth1"], p["K1"], rng, warp=True)
            k0, k1 = f0["keypoints"].astype(np.float64), f1["keypoints"].astype(np.float64)
            # GT in the frames the network sees: the radius and the cycle check are warped-frame pixels
            m = ground_truth_matches({"keypoints": k0, "depth": d0}, {"keypoints": k1, "depth": d1}, K0, K1,
                                     p["T0"], p["T1"], self.max_error, self.center)
            if min(len(k0), len(k1)) >= self.K and len(m):
                break
            self.replaced += 1
            i = (i + 1) % len(self.pairs)
        else:
            raise DatasetError(f"online IMP pairs: {tries} pairs in a row had fewer than {self.K} keypoints or no "
                               "ground-truth match (lower num_keypoints or the augmentation strength)")
        ids0, ids1, gt0, gt1 = select_keypoints(len(k0), len(k1), m, self.K, self.lo, self.hi)
        out = {"gt0": gt0, "gt1": gt1, "K0": K0.astype(np.float32), "K1": K1.astype(np.float32),
               "T_0to1": (p["T1"] @ np.linalg.inv(p["T0"])).astype(np.float32), "H1": H.astype(np.float32),
               "pair_index": np.int64(i)}
        for k, (f, ids, wh) in enumerate(((f0, ids0, wh0), (f1, ids1, wh1))):
            out[f"keypoints{k}"] = f["keypoints"][ids].astype(np.float32)
            out[f"scores{k}"] = f["scores"][ids].astype(np.float32)
            out[f"descriptors{k}"] = f["descriptors"][ids].astype(np.float32)
            out[f"image_size{k}"] = wh
        return out
