"""Download a dataset or a weights file as configured (the ``download`` and ``fetch-weights``
verbs). Downloads land in a cache folder outside the rule's output, so an interrupted
download resumes on the next run; the dataset folder itself appears only when complete."""

from __future__ import annotations

import shutil
from pathlib import Path

from matchrepro.download.extract import extract
from matchrepro.download.http import Source, download
from matchrepro.errors import ConfigError
from matchrepro.io import atomic_dir


def expected_paths(ds: dict) -> list[str]:
    """Paths (relative to the dataset root) that must exist once a dataset is in place."""
    if ds["format"] in ("superglue_pairs", "calibrated_pairs"):
        return [ds["pairs_file"], ds.get("image_dir", ".")]
    if ds["format"] == "loftr_scannet":
        return [ds["pairs_file"], ds["intrinsics_file"], ds.get("image_dir", ".")]
    if ds["format"] == "oanet_yfcc":
        return [f"raw_data/yfcc100m/{s}/test/images.txt" for s in ds["scenes"]]
    if ds["format"] == "hpatches":
        return [ds["sequences_dir"]]
    if ds["format"] == "megadepth_d2net":
        return ["scene_info"]
    return []


def fetch_dataset(ds: dict, out: str | Path, cache: str | Path) -> Path:
    """Download every file of ``ds['download']['files']`` into ``cache``, then copy or extract
    them into ``out`` (created atomically) and check the expected paths exist."""
    files = (ds.get("download") or {}).get("files") or []
    if not files:
        raise ConfigError(f"datasets.{ds['name']}.download.files: nothing to download")
    cache = Path(cache)
    fetched = []
    for f in files:
        src = Source(urls=f["urls"], dest=cache / f["dest"], sha256=f.get("sha256"),
                     google_drive=f.get("google_drive", False))
        fetched.append((download(src), f.get("extract", False)))
    with atomic_dir(out) as tmp:
        for path, is_archive in fetched:
            if is_archive:
                extract(path, tmp)
            else:
                shutil.copy2(path, tmp / path.name)
        check_layout(ds, tmp)
    return Path(out)


def check_layout(ds: dict, root: Path) -> None:
    """Refuse (one line) a dataset folder whose layout does not fit the config: a missing pairs
    file, image or sequence folder, or a pairs file whose first pair's images are not under
    ``image_dir`` (the reader would fail at the first image), naming an image the folder does have."""
    missing = [e for e in expected_paths(ds) if not (root / e).exists()]
    if missing:
        raise ConfigError(
            f"datasets.{ds['name']}: after download, '{missing[0]}' is missing under the dataset "
            f"folder (check pairs_file / image_dir / sequences_dir against the archive layout)"
        )
    if ds["format"] not in ("superglue_pairs", "calibrated_pairs"):
        return
    from matchrepro.datasets import pairs as sg_pairs, scannet

    reader = sg_pairs.read_pairs if ds["format"] == "superglue_pairs" else scannet.read_calibrated_pairs
    listed = reader(root / ds["pairs_file"])
    if not listed:
        raise ConfigError(f"datasets.{ds['name']}: {ds['pairs_file']} lists no pairs")
    image_dir = root / ds.get("image_dir", ".")
    first = listed[0].name0
    if not (image_dir / first).is_file():
        have = next((p.relative_to(image_dir).as_posix() for p in sorted(image_dir.rglob("*"))
                     if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".ppm")), None)
        raise ConfigError(
            f"datasets.{ds['name']}: {ds['pairs_file']} names '{first}', which is not under image_dir "
            f"'{ds.get('image_dir', '.')}'" + (f" (the folder has e.g. '{have}')" if have else " (no images there)")
        )


def fetch_weights(w: dict, out: str | Path) -> Path:
    """Download a weights file to ``out`` (checksummed; digest recorded beside it)."""
    return download(Source(urls=w["urls"], dest=Path(out), sha256=w.get("sha256"),
                           google_drive=w.get("google_drive", False)))
