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
release drops them from its dump). Batches hold the same tensors as
:class:`~matchrepro.datasets.imp_training.IMPPairs` plus ``H1`` (B, 3, 3) and ``pair_index`` (B,),
the pair actually used.

Randomness: every sample draws from its own seed. In training (:meth:`IMPOnlinePairs.loader`)
that seed is a function of (``seed``, step, position in the global batch), so a batch is the same
whether this process, a DataLoader worker or another DDP rank makes it, and a resumed run replays
it; :meth:`IMPOnlinePairs.batch` draws the seeds from torch's global generator instead. With
``num_workers`` > 0 (training params) the pairs are made by DataLoader worker processes while the
network trains on the previous batches; SuperPoint features on a CUDA machine are extracted in the
training process on the GPU, the workers reading and augmenting the images
(``benchmarks/imp_online_throughput.py`` prints pairs/s for 0, 1 and 2 workers).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from matchrepro.datasets import augment
from matchrepro.datasets.imp_training import ScenePairSampler, collate, scene_files, select_keypoints
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
        self.features, self.weights = features, weights
        self._extractor = get_extractor(features, weights)  # a missing weights file is named now
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

    @property
    def extractor(self):
        """The feature extractor, made on first use (in each DataLoader worker for its own)."""
        if self._extractor is None:
            self._extractor = get_extractor(self.features, self.weights)
        return self._extractor

    def __getstate__(self) -> dict:  # DataLoader workers (spawn) rebuild the extractor themselves
        return {**self.__dict__, "_extractor": None}

    def extracts_on_gpu(self) -> bool:
        """SuperPoint with a CUDA device: features are computed in the training process, on the
        GPU, from the views the DataLoader workers read and augment."""
        return self.features["type"] == "superpoint" and torch.cuda.is_available()

    def _read_view(self, path: str, depth_path: str, K: np.ndarray, rng: np.random.Generator, warp: bool) -> dict:
        """One (augmented) view: the image, its depth map, H, its camera matrix in the warped frame
        and the size (w, h)."""
        img = read_image(self.root / path, grayscale=True)
        depth = read_depth(self.root / depth_path)
        h, w = img.shape
        H = augment.random_homography(w, h, self.perspective, rng) if warp else np.eye(3)
        if warp and self.perspective > 0:
            img = augment.warp(img, H)
        img = augment.photometric(img, self.photometric, rng)
        # K of the warped view in K's own pixel convention (COLMAP: centres at +0.5): S H S⁻¹ K
        S = np.array([[1.0, 0, self.center], [0, 1, self.center], [0, 0, 1]])
        K_view = S @ H @ np.linalg.inv(S) @ np.asarray(K, np.float64)
        return {"image": img, "depth": depth, "H": H, "K": K_view, "wh": np.array([w, h], np.float32)}

    def _features(self, view: dict) -> tuple[dict, np.ndarray]:
        """Features of a view and the depth at each keypoint (read in the unwarped frame at H⁻¹ x;
        0 outside the depth map)."""
        f = self.extractor(view["image"])
        k = f["keypoints"].astype(np.float64)
        k_orig = augment.apply_homography(np.linalg.inv(view["H"]), k)
        depth = view["depth"]
        xi, yi = np.floor(k_orig[:, 0]).astype(int), np.floor(k_orig[:, 1]).astype(int)
        inside = (xi >= 0) & (yi >= 0) & (xi < depth.shape[1]) & (yi < depth.shape[0])
        d = np.zeros(len(k), np.float32)
        d[inside] = depth[yi[inside], xi[inside]]
        return f, d

    @staticmethod
    def _draws(seed: int, attempt: int) -> tuple[np.random.Generator, torch.Generator]:
        """The augmentation and the selection generators of one attempt at a sample."""
        a, b = np.random.SeedSequence([seed, attempt]).generate_state(2, dtype=np.uint64)
        return np.random.default_rng(int(a)), torch.Generator().manual_seed(int(b) >> 1)

    def read(self, i: int, seed: int, attempt: int = 0) -> dict:
        """The two views of pair ``i`` read and augmented (no features yet)."""
        p = self.pairs[i]
        rng, _ = self._draws(seed, attempt)
        return {"pair_index": i, "seed": seed, "attempt": attempt,
                "view0": self._read_view(p["image0"], p["depth0"], p["K0"], rng, warp=False),
                "view1": self._read_view(p["image1"], p["depth1"], p["K1"], rng, warp=True)}

    def complete(self, read: dict) -> dict | None:
        """Features, ground truth and the K-keypoint selection of a read pair; None when the pair
        has fewer than K keypoints or no GT match."""
        i, p = read["pair_index"], self.pairs[read["pair_index"]]
        v0, v1 = read["view0"], read["view1"]
        (f0, d0), (f1, d1) = self._features(v0), self._features(v1)
        k0, k1 = f0["keypoints"].astype(np.float64), f1["keypoints"].astype(np.float64)
        # GT in the frames the network sees: the radius and the cycle check are warped-frame pixels
        m = ground_truth_matches({"keypoints": k0, "depth": d0}, {"keypoints": k1, "depth": d1}, v0["K"], v1["K"],
                                 p["T0"], p["T1"], self.max_error, self.center)
        if min(len(k0), len(k1)) < self.K or not len(m):
            return None
        _, g = self._draws(read["seed"], read["attempt"])
        ids0, ids1, gt0, gt1 = select_keypoints(len(k0), len(k1), m, self.K, self.lo, self.hi, generator=g)
        out = {"gt0": gt0, "gt1": gt1, "K0": v0["K"].astype(np.float32), "K1": v1["K"].astype(np.float32),
               "T_0to1": (p["T1"] @ np.linalg.inv(p["T0"])).astype(np.float32), "H1": v1["H"].astype(np.float32),
               "pair_index": np.int64(i)}
        for k, (f, ids, wh) in enumerate(((f0, ids0, v0["wh"]), (f1, ids1, v1["wh"]))):
            out[f"keypoints{k}"] = f["keypoints"][ids].astype(np.float32)
            out[f"scores{k}"] = f["scores"][ids].astype(np.float32)
            out[f"descriptors{k}"] = f["descriptors"][ids].astype(np.float32)
            out[f"image_size{k}"] = wh
        return out

    def sample(self, i: int, seed: int | None = None, read: dict | None = None, tries: int = 10) -> dict:
        """One pair with K keypoints per image (see the module docstring). Its draws come from
        ``seed`` (one from torch's global generator when None); ``read``: the pair already read
        (:meth:`read`) by a DataLoader worker."""
        if seed is None:
            seed = int(torch.randint(0, 2**62, ()).item())
        for attempt in range(tries):
            if read is None or read["attempt"] != attempt:
                read = self.read(i, seed, attempt)
            out = self.complete(read)
            if out is not None:
                return out
            self.replaced += 1
            i = (i + 1) % len(self.pairs)
        raise DatasetError(f"online IMP pairs: {tries} pairs in a row had fewer than {self.K} keypoints or no "
                           "ground-truth match (lower num_keypoints or the augmentation strength)")

    def batch_at(self, step: int, idx, offset: int = 0) -> dict:
        """The batch of training step ``step``: pair ``idx[j]`` drawn from the seed of (``seed``,
        ``step``, ``offset + j``), so a batch is the same whichever process or worker makes it
        (``offset``: the position of this rank's first pair in the global batch under DDP)."""
        return collate([self.sample(i, seed) for i, seed in self.step_seeds(step, idx, offset)], self.shift)

    def step_seeds(self, step: int, idx, offset: int = 0) -> list[tuple[int, int]]:
        """(pair index, seed) of each pair of step ``step``'s batch part starting at ``offset``."""
        return [(int(i), step_seed(self.seed, step, offset + j)) for j, i in enumerate(idx)]

    def loader(self, plan, num_workers: int = 0, prefetch: int = 2):
        """Batches for ``plan``, an iterable of (step, idx, offset), in its order: made in this
        process (``num_workers`` 0) or by that many DataLoader worker processes ahead of the
        training step, equal either way. With :meth:`extracts_on_gpu` the workers read and augment
        and this process extracts the features on the GPU."""
        if num_workers <= 0:
            return (self.batch_at(step, idx, offset) for step, idx, offset in plan)
        gpu = self.extracts_on_gpu()
        data = _StepBatches(self, read_only=gpu)
        dl = torch.utils.data.DataLoader(data, sampler=((s, [int(i) for i in idx], o) for s, idx, o in plan),
                                         batch_size=None, num_workers=num_workers, prefetch_factor=prefetch,
                                         collate_fn=_as_is, worker_init_fn=_single_threaded_worker,
                                         # forked workers hung here before their first batch (in a process
                                         # that had run OpenCV and torch threads): spawned ones start clean
                                         multiprocessing_context="spawn")
        if not gpu:
            return iter(dl)
        return (collate([self.sample(r["pair_index"], r["seed"], r) for r in reads], self.shift) for reads in dl)


def step_seed(seed: int, step: int, position: int) -> int:
    """The seed of the pair at ``position`` of training step ``step``'s global batch."""
    return int(np.random.SeedSequence([seed, step, position]).generate_state(1, dtype=np.uint64)[0] >> 2)


class _StepBatches(torch.utils.data.Dataset):
    """A DataLoader's view of :class:`IMPOnlinePairs`: key (step, idx, offset) -> that step's batch
    (or, ``read_only``, the pairs read and augmented, for features on the GPU)."""

    def __init__(self, pairs: IMPOnlinePairs, read_only: bool):
        self.pairs, self.read_only = pairs, read_only

    def __getitem__(self, key):
        step, idx, offset = key
        if self.read_only:
            return [self.pairs.read(i, seed) for i, seed in self.pairs.step_seeds(step, idx, offset)]
        return self.pairs.batch_at(step, idx, offset)


def _as_is(x):
    return x


def _single_threaded_worker(_):
    import cv2

    cv2.setNumThreads(1)
