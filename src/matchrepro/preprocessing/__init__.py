"""MegaDepth training-data preparation, one scene per call (so scenes run in parallel)."""

from __future__ import annotations

from pathlib import Path

from matchrepro.errors import DatasetError


def scene_ids(root: str | Path, exclude: list[str] | tuple[str, ...] = ()) -> list[str]:
    """Scene ids with a ``scene_info`` file (``<scene>.npz`` or ``<scene>.0.npz``), sorted."""
    d = Path(root) / "scene_info"
    if not d.is_dir():
        raise DatasetError(f"scene_info folder not found: {d}")
    ids = sorted({p.name.split(".")[0] for p in d.glob("*.npz")})
    return [s for s in ids if s not in set(exclude)]


def scene_info_path(root: str | Path, scene: str) -> Path:
    """The scene_info file of ``scene``: ``<scene>.npz`` or ``<scene>.0.npz`` (D2-Net), else any
    ``<scene>.*.npz`` :func:`scene_ids` listed it from (read_scene_info then says what it is)."""
    d = Path(root) / "scene_info"
    for name in (f"{scene}.npz", f"{scene}.0.npz"):
        if (d / name).is_file():
            return d / name
    other = sorted(p for p in d.glob(f"{scene}.*npz") if p.name.split(".")[0] == scene)
    if other:
        return other[0]
    raise DatasetError(f"no scene_info for scene {scene} in {d}")
