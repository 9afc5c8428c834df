"""IMP training pairs from ``imp_dump`` files (imp.md §3.3).

Each epoch takes ``pairs_per_scene`` (80) pairs per scene, drawn with replacement from scenes
with more pairs and all pairs otherwise, then shuffled (:meth:`IMPPairs.epoch_indices`). Per pair
(:meth:`IMPPairs.sample`): draw ``n_inliers ~ U{lo..hi}``, keep ``n = min(n_inliers, #GT)`` but at
least ``K - min(#unmatched0, #unmatched1)`` GT matches (at most K), fill each image up to K
keypoints with random unmatched ones (GT points left out are never fillers) and shuffle each
image's order. All draws use torch's global generator, so a resumed run replays them.

Batch tensors (B pairs): ``keypoints0/1 (B, K, 2)`` pixels, ``norm_keypoints0/1`` (released
training normalisation, shift 0.5 px), ``scores0/1 (B, K)``, ``descriptors0/1 (B, K, D)``,
``gt0 (B, K)`` (index of the GT partner in image 1, or -1: dustbin), ``gt1 (B, K)``,
``K0/K1 (B, 3, 3)``, ``T_0to1 (B, 4, 4)`` (world-to-camera poses: T1 inv(T0)).
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import torch

from matchrepro.errors import DatasetError
from matchrepro.io import image_key
from matchrepro.models.imp import normalize_keypoints


def select_keypoints(n0: int, n1: int, m: np.ndarray, K: int, lo: int, hi: int,
                     generator: torch.Generator | None = None):
    """The released per-pair selection (imp.md §3.3) from ``n0``/``n1`` keypoints with GT
    matches ``m`` (M, 2): returns ``ids0``, ``ids1`` (K,) keypoint indices in the sample's
    (shuffled) order and ``gt0``/``gt1`` (K,) the partner position in the other image or -1.
    Draws from ``generator``, torch's global generator when None."""
    g = generator
    un0 = np.setdiff1d(np.arange(n0), m[:, 0])
    un1 = np.setdiff1d(np.arange(n1), m[:, 1])
    n_in = int(torch.randint(lo, hi + 1, (), generator=g).item())
    n = min(n_in, len(m))
    n = max(n, K - min(len(un0), len(un1)))
    n = min(n, len(m), K)
    sel = m[torch.randperm(len(m), generator=g)[:n].numpy()]
    f0 = un0[torch.randperm(len(un0), generator=g)[: K - n].numpy()]
    f1 = un1[torch.randperm(len(un1), generator=g)[: K - n].numpy()]
    ids0 = np.concatenate([sel[:, 0], f0])
    ids1 = np.concatenate([sel[:, 1], f1])
    o0 = torch.randperm(K, generator=g).numpy()
    o1 = torch.randperm(K, generator=g).numpy()
    ids0, ids1 = ids0[o0], ids1[o1]
    # GT partner positions after shuffling: match j sits at pos0 = inv(o0)[j], pos1 = inv(o1)[j]
    inv0, inv1 = np.argsort(o0), np.argsort(o1)
    gt0 = np.full(K, -1, np.int64)
    gt1 = np.full(K, -1, np.int64)
    gt0[inv0[:n]] = inv1[:n]
    gt1[inv1[:n]] = inv0[:n]
    return ids0, ids1, gt0, gt1


def collate(items: list[dict], shift: float) -> dict:
    """Stack samples into batch tensors and add the released training normalisation."""
    out = {k: torch.as_tensor(np.stack([it[k] for it in items])) for k in items[0]}
    for k in (0, 1):
        out[f"norm_keypoints{k}"] = normalize_keypoints(out[f"keypoints{k}"], out[f"image_size{k}"], shift)
    return out


def scene_files(index: str | Path, kind: str) -> list[tuple[str, Path]]:
    """(scene, file) of a preprocessing index.json, sorted by scene; a relative file that does not
    exist is looked up beside the index."""
    index = Path(index)
    try:
        scenes = json.loads(index.read_text())["scenes"]
    except (OSError, ValueError, KeyError) as e:
        raise DatasetError(f"{index}: not an {kind} index ({type(e).__name__}: {e})") from None
    out = []
    for scene, path in sorted(scenes.items()):
        path = Path(path)
        out.append((scene, index.parent / path.name if not path.is_absolute() and not path.exists() else path))
    return out


class ScenePairSampler:
    """The released epoch composition, shared by the offline and online samplers: subclasses fill
    ``scene_pairs`` (pair indices per scene), ``pairs_per_scene``, ``seed``, ``shift`` and define
    ``sample(i)``."""

    scene_pairs: list[list[int]]
    pairs_per_scene: int
    seed: int
    shift: float

    def epoch_size(self) -> int:
        return sum(min(len(s), self.pairs_per_scene) for s in self.scene_pairs)

    def epoch_indices(self, epoch: int) -> torch.Tensor:
        """The epoch's pair order (``build_dataset(seed=epoch)``): per scene ``pairs_per_scene``
        drawn with replacement where a scene has more, all otherwise; shuffled."""
        rng = np.random.default_rng(self.seed * 100003 + epoch)
        out = []
        for s in self.scene_pairs:
            out.extend(rng.choice(s, self.pairs_per_scene, replace=True).tolist()
                       if len(s) > self.pairs_per_scene else s)
        return torch.as_tensor(rng.permutation(np.asarray(out, np.int64)))

    def batch(self, idx) -> dict:
        return collate([self.sample(int(i)) for i in idx], self.shift)


class IMPPairs(ScenePairSampler):
    def __init__(self, index: str | Path, num_keypoints: int = 1024, inliers_range=(32, 512),
                 pairs_per_scene: int = 80, keypoint_shift: float = 0.5, seed: int = 0):
        files = scene_files(index, "imp_dump")
        self.K = int(num_keypoints)
        self.lo, self.hi = int(inliers_range[0]), int(inliers_range[1])
        self.pairs_per_scene = int(pairs_per_scene)
        self.shift = float(keypoint_shift)
        self.seed = seed
        self.images: dict[str, dict] = {}
        self.pairs: list[dict] = []
        self.scene_pairs: list[list[int]] = []
        self.dropped = 0
        for scene, path in files:
            try:
                h = h5py.File(path, "r")
            except OSError as e:
                raise DatasetError(f"{path}: cannot read imp_dump file ({e})") from None
            with h:
                if "image_size" not in next(iter(h["images"].values())).attrs:
                    raise DatasetError(f"{path}: made by an older imp_dump without image sizes; re-run preprocessing")
                for name, g in h["images"].items():
                    self.images[f"{scene}/{name}"] = {
                        "keypoints": g["keypoints"][()].astype(np.float32), "scores": g["scores"][()].astype(np.float32),
                        "descriptors": g["descriptors"][()].astype(np.float32),
                        "image_size": np.asarray(g.attrs["image_size"], np.float32),
                    }
                mine = []
                for k in sorted(h["pairs"].keys(), key=int):
                    g = h["pairs"][k]
                    a = {key: g.attrs[key] for key in ("name1", "name2", "K1", "K2", "T_w2c1", "T_w2c2")}
                    n0, n1 = f"{scene}/{image_key(a['name1'])}", f"{scene}/{image_key(a['name2'])}"
                    if min(len(self.images[n0]["keypoints"]), len(self.images[n1]["keypoints"])) < self.K:
                        self.dropped += 1  # the release drops pairs with fewer than K keypoints
                        continue
                    mine.append(len(self.pairs))
                    self.pairs.append({"name0": n0, "name1": n1, "matches": g["matches"][()].astype(np.int64),
                                       "K0": np.asarray(a["K1"], np.float32), "K1": np.asarray(a["K2"], np.float32),
                                       "T_0to1": (a["T_w2c2"] @ np.linalg.inv(a["T_w2c1"])).astype(np.float32)})
                if mine:
                    self.scene_pairs.append(mine)
        if not self.pairs:
            raise DatasetError(f"{index}: no pair with at least {self.K} keypoints in both images "
                               f"(num_keypoints; {self.dropped} dropped)")
        self.dim = next(iter(self.images.values()))["descriptors"].shape[1]

    def scenes(self) -> set[str]:
        return {n.split("/")[0] for n in self.images}

    def sample(self, i: int) -> dict:
        """One pair with K keypoints per image (see the module docstring)."""
        p = self.pairs[i]
        a, b = self.images[p["name0"]], self.images[p["name1"]]
        ids0, ids1, gt0, gt1 = select_keypoints(len(a["keypoints"]), len(b["keypoints"]), p["matches"], self.K,
                                                self.lo, self.hi)
        out = {"gt0": gt0, "gt1": gt1, "K0": p["K0"], "K1": p["K1"], "T_0to1": p["T_0to1"]}
        for k, (img, ids) in enumerate(((a, ids0), (b, ids1))):
            out[f"keypoints{k}"] = img["keypoints"][ids]
            out[f"scores{k}"] = img["scores"][ids]
            out[f"descriptors{k}"] = img["descriptors"][ids]
            out[f"image_size{k}"] = img["image_size"]
        return out
