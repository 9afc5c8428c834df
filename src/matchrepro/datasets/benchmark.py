"""One interface over the evaluation datasets: image list and pairs with ground truth.

``open_benchmark(cfg)`` reads the dataset block of the config (``format`` selects the
reader) and returns a :class:`Benchmark` whose pairs carry either ``K0, K1, T_0to1``
(relative pose) or ``H_0to1`` (homography). Image names are relative to ``image_dir``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from matchrepro.datasets import hpatches, pairs, scannet, yfcc_raw
from matchrepro.errors import DatasetError
from matchrepro.io import image_size


@dataclass(frozen=True)
class Pair:
    """A pair to match; ``rot`` flags rotate stored images upright (``np.rot90`` k)."""

    index: int
    name0: str
    name1: str
    rot0: int = 0
    rot1: int = 0
    K0: np.ndarray | None = None
    K1: np.ndarray | None = None
    T_0to1: np.ndarray | None = None
    H_0to1: np.ndarray | None = None
    group: str = ""  # "i"/"v" for HPatches, scene name otherwise


@dataclass
class Benchmark:
    name: str
    image_dir: Path
    pairs: list[Pair]
    kind: str  # "relative_pose" or "homography"
    info: dict = field(default_factory=dict)

    def images(self) -> list[tuple[str, int]]:
        """Unique ``(name, rot)`` in first-seen order."""
        seen: dict[tuple[str, int], None] = {}
        for p in self.pairs:
            seen.setdefault((p.name0, p.rot0))
            seen.setdefault((p.name1, p.rot1))
        return list(seen)


def dataset_root(cfg: dict) -> Path:
    root = Path(cfg["root"])
    if not root.is_dir():
        raise DatasetError(f"dataset folder not found: {root} (config key datasets.{cfg['name']}.root)")
    return root


def open_benchmark(cfg: dict) -> Benchmark:
    """Open the dataset described by a (validated) dataset config block."""
    root = dataset_root(cfg)
    fmt = cfg["format"]
    if fmt == "superglue_pairs":
        image_dir = root / cfg["image_dir"]
        if not image_dir.is_dir():
            raise DatasetError(f"image folder not found: {image_dir} (config key datasets.{cfg['name']}.image_dir)")
        plist = [
            Pair(p.index, p.name0, p.name1, p.rot0, p.rot1, p.K0, p.K1, p.T_0to1,
                 group=p.name0.split("/")[0] if "/" in p.name0 else "")
            for p in pairs.read_pairs(root / cfg["pairs_file"])
        ]
        if cfg.get("max_pairs"):
            plist = plist[: cfg["max_pairs"]]
        return Benchmark(cfg["name"], image_dir, plist, "relative_pose")
    if fmt in ("oanet_yfcc", "loftr_scannet", "calibrated_pairs"):
        image_dir = root / cfg["image_dir"]
        if fmt == "oanet_yfcc":
            plist = []
            for scene in cfg["scenes"]:
                for p in yfcc_raw.read_scene_pairs(root / "raw_data", scene, cfg["principal_point"]):
                    plist.append(Pair(len(plist), p.name0, p.name1, 0, 0, p.K0, p.K1, p.T_0to1, group=scene))
        elif fmt == "loftr_scannet":
            raw = scannet.read_loftr_pairs(root / cfg["pairs_file"], root / cfg["intrinsics_file"])
            if cfg.get("max_pairs"):
                raw = raw[: cfg["max_pairs"]]
            k_frame = tuple(cfg.get("intrinsics_frame") or (640, 480))
            src = str(root / cfg["intrinsics_file"])
            sizes: dict[str, tuple[int, int]] = {}

            def stored_K(K, name):
                if name not in sizes:
                    sizes[name] = image_size(image_dir / name)
                return scannet.intrinsics_for_stored_frame(K, k_frame, sizes[name], src, str(image_dir / name))

            plist = [Pair(p.index, p.name0, p.name1, 0, 0, stored_K(p.K0, p.name0), stored_K(p.K1, p.name1),
                          p.T_0to1, group=p.name0.split("/")[0]) for p in raw]
        else:
            plist = [Pair(p.index, p.name0, p.name1, 0, 0, p.K0, p.K1, p.T_0to1, group=p.name0.split("/")[0])
                     for p in scannet.read_calibrated_pairs(root / cfg["pairs_file"])]
        if cfg.get("max_pairs"):
            plist = plist[: cfg["max_pairs"]]
        return Benchmark(cfg["name"], image_dir, plist, "relative_pose")
    if fmt == "hpatches":
        seq_root = root / cfg["sequences_dir"]
        hp = hpatches.list_pairs(seq_root, cfg.get("exclude", []), cfg.get("expected_sequences"))
        plist = [Pair(p.index, p.name0, p.name1, H_0to1=p.H_0to1, group=p.kind) for p in hp]
        return Benchmark(cfg["name"], seq_root, plist, "homography",
                         info={"sequences": len({p.sequence for p in hp})})
    raise DatasetError(f"datasets.{cfg['name']}.format: {fmt!r} is not an evaluation format")


def shard_of(items: list, shard: tuple[int, int] | None) -> list:
    """Contiguous shard ``k`` of ``n`` (0-based) of a list; all of it when ``shard`` is None."""
    if shard is None:
        return items
    k, n = shard
    bounds = np.linspace(0, len(items), n + 1).round().astype(int)
    return items[bounds[k]: bounds[k + 1]]
