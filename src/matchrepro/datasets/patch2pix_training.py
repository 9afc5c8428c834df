"""Patch2Pix training pairs (patch2pix.md §3.1, per-sample processing) over a D2-Net MegaDepth root.

The pairs come from the ``patch2pix_pairs`` preprocessing (one ``.npz`` per scene, gathered by an
``index.json``). Each sample:

1. reads both images ``<root>/Undistorted_SfM/<name>`` and crops them from the bottom/right by
   the stored ``(dw, dh)`` (the principal point is unchanged);
2. scales K by ``diag(W / w_crop, H / h_crop, 1)`` and computes, *before* resizing the pixels,
   ``F = K2^-T [t]_x R K1^-1`` of the resized frame (``x2^T F x1 = 0``, pixels, x = column);
3. resizes both images to ``image_size`` = (W, H) (480 x 320 as released; bilinear) and
   ImageNet-normalises them.

Every sample also carries the scaled ``K1``/``K2`` and the relative pose ``T_1to2``
(world-to-camera convention: ``X_cam2 = R X_cam1 + t``), which validation uses. With
``depth=True`` (the demo's supervised coarse stage) it also returns both depth maps, cropped and
resized the same way (nearest neighbour). Depth paths come from the
scene's ``scene_info`` file. The released loader's unused negative image is not loaded.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import torch

from matchrepro.datasets.megadepth import read_depth, read_scene_info
from matchrepro.errors import DatasetError
from matchrepro.io import read_image
from matchrepro.models.patch2pix import IMAGENET_MEAN, IMAGENET_STD
from matchrepro.preprocessing.patch2pix_pairs import fundamental

PAIR_KEYS = ("im1", "im2", "K1", "K2", "R", "t", "crop1", "crop2")


def normalise(image: np.ndarray) -> torch.Tensor:
    """(H, W, 3) RGB uint8 -> (3, H, W) float32 ImageNet-normalised."""
    x = torch.from_numpy(image.astype(np.float32) / 255.0).permute(2, 0, 1)
    return (x - torch.tensor(IMAGENET_MEAN).view(3, 1, 1)) / torch.tensor(IMAGENET_STD).view(3, 1, 1)


class Patch2PixPairs:
    """Map-style dataset of Patch2Pix training pairs.

    Args:
        index_file: ``index.json`` of a ``patch2pix_pairs`` preprocessing run.
        root: MegaDepth root (holding ``Undistorted_SfM/`` and ``scene_info/``).
        image_size: (W, H) of the training frame, multiples of 16.
        depth: also return the depth maps.
    """

    def __init__(self, index_file: str | Path, root: str | Path, image_size=(480, 320), depth: bool = False):
        self.root = Path(root)
        self.size = (int(image_size[0]), int(image_size[1]))
        if self.size[0] % 16 or self.size[1] % 16:
            raise DatasetError(f"training image_size {list(self.size)} must be multiples of 16")
        self.depth = depth
        index_file = Path(index_file)
        try:
            index = json.loads(index_file.read_text())
        except (OSError, ValueError) as e:
            raise DatasetError(f"{index_file}: cannot read the pair index ({e})") from None
        self.pairs: list[dict] = []
        self.depth_paths: dict[str, str] = {}
        for scene, f in sorted(index.get("scenes", {}).items()):
            try:
                with np.load(f) as z:
                    cols = {k: z[k] for k in PAIR_KEYS}
            except (OSError, KeyError, ValueError) as e:
                raise DatasetError(f"{f}: not a Patch2Pix pair file ({e})") from None
            for k in range(len(cols["im1"])):
                self.pairs.append({key: cols[key][k] for key in PAIR_KEYS} | {"scene": scene})
            if depth:
                info = read_scene_info(self.root / "scene_info" / f"{scene}.npz")
                for ip, dp in zip(info.image_paths, info.depth_paths):
                    if ip is not None and dp is not None:
                        self.depth_paths[str(ip).split("Undistorted_SfM/", 1)[-1]] = str(dp)
        if not self.pairs:
            raise DatasetError(f"{index_file}: no training pairs (check the preprocessing settings)")

    def __len__(self) -> int:
        return len(self.pairs)

    def _load(self, name: str, crop, K: np.ndarray):
        img = read_image(self.root / "Undistorted_SfM" / name)
        h, w = img.shape[:2]
        hc, wc = h - int(crop[1]), w - int(crop[0])
        img = img[:hc, :wc]
        W, H = self.size
        Ks = np.diag([W / wc, H / hc, 1.0]) @ K
        out = {"image": normalise(cv2.resize(img, (W, H), interpolation=cv2.INTER_LINEAR)), "K": Ks}
        if self.depth:
            dp = self.depth_paths.get(name)
            if dp is None:
                raise DatasetError(f"no depth map for {name} in its scene_info")
            d = read_depth(self.root / dp)[:hc, :wc]
            out["depth"] = cv2.resize(d, (W, H), interpolation=cv2.INTER_NEAREST)
        return out

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        p = self.pairs[i]
        a = self._load(str(p["im1"]), p["crop1"], p["K1"])
        b = self._load(str(p["im2"]), p["crop2"], p["K2"])
        F = fundamental(a["K"], b["K"], p["R"], p["t"])
        F = F / np.linalg.norm(F)
        T = np.eye(4)
        T[:3, :3], T[:3, 3] = p["R"], p["t"]
        item = {"im1": a["image"], "im2": b["image"], "F": torch.from_numpy(F.astype(np.float64)),
                "K1": torch.from_numpy(a["K"].astype(np.float32)), "K2": torch.from_numpy(b["K"].astype(np.float32)),
                "T_1to2": torch.from_numpy(T.astype(np.float32))}
        if self.depth:
            item |= {"depth1": torch.from_numpy(a["depth"]), "depth2": torch.from_numpy(b["depth"])}
        return item

    def scenes(self) -> set[str]:
        return {p["scene"] for p in self.pairs}

    def first_per_scene(self, n: int) -> list[int]:
        """Indices of the first ``n`` pairs of each scene (a fixed validation subset)."""
        seen: dict[str, int] = {}
        out = []
        for i, p in enumerate(self.pairs):
            if seen.get(p["scene"], 0) < n:
                seen[p["scene"]] = seen.get(p["scene"], 0) + 1
                out.append(i)
        return out

    def batch(self, idx) -> dict[str, torch.Tensor]:
        items = [self[int(i)] for i in idx]
        return {k: torch.stack([it[k] for it in items]) for k in items[0]}
