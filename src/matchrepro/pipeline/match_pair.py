"""Match your own two images: ``python -m matchrepro match IMG1 IMG2 --method ...``.

The same code as the benchmarks, one pair at a time: the images are read with their EXIF
orientation applied (OpenCV's default; so keypoints are in the pixels of the image as it is
displayed), resized by the method's rule (:func:`matchrepro.config.effective_resize`; a
benchmark's rule with ``resize_as``), matched by the method's matcher with its weights, and the
matches come back in those displayed-original pixels (x = column, y = row), as in the
predictions caches.

``method`` is a method of the config (``imp_sift_demo``) or a family name that picks the config's
first method of that family: ``patch2pix``, ``ncnet``, ``imp``, ``eimp``, ``sift``. Weights default
to where the workflow puts them: ``resources/weights/<name>.pth`` (downloaded) or
``results/training/<name>/model_best.pth`` (trained), relative to the working directory.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np

from matchrepro.config import effective_resize, load_config
from matchrepro.errors import ConfigError
from matchrepro.features import get_extractor
from matchrepro.io import atomic_path, read_image
from matchrepro.pipeline.extract import extract_image, load_upright

FAMILIES = ("patch2pix", "ncnet", "imp", "eimp", "sift")
OUTPUT_FORMATS = ("npz", "h5")
REPO_CONFIG = Path(__file__).resolve().parents[3] / "config.yaml"


def _family(config: dict, block: dict) -> str | None:
    m = block["matcher"]
    if m["type"] == "imp":
        return "eimp" if m.get("variant") == "eimp" else "imp"
    if m["type"] in ("patch2pix", "ncnet"):
        return m["type"]
    if m["type"] == "nearest_neighbour" and block.get("features"):
        return "sift" if config["features"][block["features"]]["type"] == "sift" else None
    return None


def resolve_method(config: dict, name: str) -> str:
    """A method name of the config, or the first (in config order) of a family; refiners are
    only chosen by their own name."""
    if name in config["methods"]:
        return name
    if name in FAMILIES:
        for n, block in config["methods"].items():
            if not block.get("refines") and _family(config, block) == name:
                return n
        raise ConfigError(f"--method {name}: the config has no {name} method (methods: {', '.join(config['methods'])})")
    raise ConfigError(f"--method {name}: neither a method of the config nor one of {', '.join(FAMILIES)} "
                      f"(methods: {', '.join(config['methods'])})")


def default_weights(config: dict, name: str, workdir: Path) -> Path:
    """Where the workflow keeps weights ``name`` (see ``weights_path`` in rules/common.smk)."""
    if name in config["weights"]:
        return workdir / "resources" / "weights" / f"{name}.pth"
    return workdir / "results" / "training" / name / "model_best.pth"


def _weights_for(config: dict, method: str, given, workdir: Path, what: str) -> Path | None:
    name = config["methods"][method]["weights"] if what == "method" else config["features"][method]["weights"]
    if given is not None:
        path = Path(given)
        if not path.is_file():
            raise ConfigError(f"--weights: file not found: {path}")
        return path
    if not name:
        return None
    path = default_weights(config, name, workdir)
    if not path.is_file():
        how = "fetch" if name in config["weights"] else "train"
        raise ConfigError(f"weights '{name}' of {what} {method} not found at {path}: {how} them first "
                          f"(snakemake {path.relative_to(workdir)}) or pass --weights")
    return path


def _resize_rule(config: dict, method: str, resize_as: str | None) -> dict:
    """The method's (or its features') resize rule, else ``resize_as``'s dataset rule, else none."""
    if resize_as is not None and resize_as not in config["datasets"]:
        raise ConfigError(f"--resize-as {resize_as}: not a dataset of the config ({', '.join(config['datasets'])})")
    return effective_resize(config, resize_as, method, config["methods"][method].get("features"))


def _run(config: dict, method: str, paths: tuple[Path, Path], weights, resize_as, workdir: Path, device: str) -> dict:
    """keypoints0/1, matches (K, 2) indices, scores (K,), image_size0/1 and the resize rule of one method."""
    block = config["methods"][method]
    kind = block["matcher"]["type"]
    rule = _resize_rule(config, method, resize_as)
    if kind in ("patch2pix", "ncnet"):
        from matchrepro.matchers.patch2pix import Patch2PixMatcher

        w = _weights_for(config, method, weights, workdir, "method")
        (im0, s0, wh0), (im1, s1, wh1) = (load_upright(p, 0, rule, grayscale=False) for p in paths)
        matcher = Patch2PixMatcher(block, w, device)
        if block.get("refines"):
            base = _run(config, block["refines"], paths, None, resize_as, workdir, device)
            m = base["matches"]
            r = matcher.refine(im0, im1, s0, s1, base["keypoints0"][m[:, 0]], base["keypoints1"][m[:, 1]])
        else:
            r = matcher(im0, im1, s0, s1)
        return r | {"image_size0": np.asarray(wh0), "image_size1": np.asarray(wh1), "resize": rule}
    fname = block["features"]
    extractor = get_extractor(dict(config["features"][fname], name=fname),
                              _weights_for(config, fname, None, workdir, "features"))
    a, b = (extract_image(extractor, p, 0, rule) for p in paths)
    if kind == "imp":
        from matchrepro.matchers.imp import IMPMatcher

        w = _weights_for(config, method, weights, workdir, "method")
        r = IMPMatcher(block | {"matcher": {**block["matcher"], "iterative": False}}, w, device)(a, b)
        m, s = r["matches"], r["scores"]
    elif kind == "nearest_neighbour":
        from matchrepro.matchers.nearest_neighbour import match_nearest_neighbour

        m, s = match_nearest_neighbour(a["descriptors"], b["descriptors"], mutual=block["matcher"]["mutual"],
                                       ratio=block["matcher"]["ratio"])
    else:
        raise ConfigError(f"methods.{method}.matcher.type: {kind!r} cannot match a single pair")
    return {"keypoints0": a["keypoints"], "keypoints1": b["keypoints"], "matches": m, "scores": s,
            "image_size0": a["image_size"], "image_size1": b["image_size"], "resize": rule}


def match_pair(image0, image1, method: str, config: str | Path | None = None, weights=None,
               out_dir: str | Path = "matches", fmt: str = "npz", resize_as: str | None = None,
               device: str = "auto", picture: bool = True) -> dict:
    """Match two image files and write ``<out_dir>/<stem0>-<stem1>.<method>.{npz|h5,png}``.

    Returns the result dict (``keypoints0 (N0, 2)``, ``keypoints1 (N1, 2)`` float32 pixels of the
    EXIF-oriented originals, ``matches (K, 2)`` int64 indices into them, ``scores (K,)``,
    ``image_size0/1`` (w, h), ``method``, ``resize``) plus ``files``: the paths written.
    """
    if fmt not in OUTPUT_FORMATS:
        raise ConfigError(f"--format must be one of {', '.join(OUTPUT_FORMATS)}, got {fmt!r}")
    cfg_path = Path(config) if config is not None else (Path("config.yaml") if Path("config.yaml").is_file() else REPO_CONFIG)
    cfg = load_config(cfg_path)
    workdir = cfg_path.resolve().parent if config is None and cfg_path == REPO_CONFIG else Path.cwd()
    name = resolve_method(cfg, method)
    paths = (Path(image0), Path(image1))
    for p in paths:
        read_image(p)  # one clear line for a missing or unreadable file, before any model loads
    r = _run(cfg, name, paths, weights, resize_as, workdir, device)
    r["method"] = name
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{paths[0].stem}-{paths[1].stem}.{name}"
    files = [_write_matches(out_dir / f"{stem}.{fmt}", r, paths)]
    if picture:
        files.append(_write_picture(out_dir / f"{stem}.png", r, paths))
    r["files"] = files
    return r


def _write_matches(path: Path, r: dict, paths) -> Path:
    arrays = {k: np.asarray(r[k]) for k in ("keypoints0", "keypoints1", "matches", "scores", "image_size0", "image_size1")}
    meta = {"method": r["method"], "resize": r["resize"], "image0": str(paths[0]), "image1": str(paths[1])}
    with atomic_path(path) as tmp:
        if path.suffix == ".npz":
            with open(tmp, "wb") as f:
                np.savez(f, **arrays, meta=np.asarray(json.dumps(meta)))
        else:
            with h5py.File(tmp, "w") as f:
                for k, v in arrays.items():
                    f[k] = v
                f.attrs["meta"] = json.dumps(meta)
    return path


def _write_picture(path: Path, r: dict, paths) -> Path:
    """Both images side by side (displayed orientation), matches coloured by confidence."""
    import cv2

    from matchrepro.reporting.figures import confidence_colors, draw_matches

    m = r["matches"]
    k0, k1 = r["keypoints0"][m[:, 0]], r["keypoints1"][m[:, 1]]
    pic = draw_matches(read_image(paths[0]), read_image(paths[1]), k0, k1, confidence_colors(r["scores"]), max_lines=500)
    cv2.putText(pic, f"{r['method']}: {len(m)} matches (red: low confidence, green: high)", (8, 20),
                cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    with atomic_path(path) as tmp:
        ok, buf = cv2.imencode(".png", cv2.cvtColor(pic, cv2.COLOR_RGB2BGR))
        Path(tmp).write_bytes(buf.tobytes())
    return path
