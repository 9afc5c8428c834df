"""Match every pair of a benchmark and write the predictions cache (layout in ``io.py``)."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import h5py
import numpy as np
from tqdm import tqdm

from matchrepro.datasets.benchmark import open_benchmark, shard_of
from matchrepro.errors import ConfigError, DatasetError
from matchrepro.io import ALL_REFINED, atomic_path, image_key
from matchrepro.matchers.nearest_neighbour import match_nearest_neighbour


def _read_features(f: h5py.File, name: str, path: str) -> dict:
    key = image_key(name)
    if key not in f:
        raise DatasetError(f"{path}: no features for image {name} (re-run extraction)")
    g = f[key]
    return {k: g[k][()] for k in ("keypoints", "scores", "descriptors")} | {
        "scale": g.attrs["scale"], "image_size": g.attrs["image_size"]
    }


def match_pairs(spec: dict, out: str | Path, features: str | Path | None, shard: tuple[int, int] | None = None,
                weights: str | Path | None = None, base: str | Path | None = None) -> None:
    """``spec``: ``{"dataset": ..., "method": ..., "features": ... | None, "resize": rule}``;
    ``shard = (k, n)`` matches only the k-th of n contiguous chunks of the pairs; ``base``: the
    predictions cache a refining method (``refines``) starts from, or the one a ``from_cache_of``
    method re-thresholds (no network runs then)."""
    bench = open_benchmark(spec["dataset"])
    pairs = shard_of(bench.pairs, shard)
    method = spec["method"]
    matcher = method["matcher"]
    if method.get("from_cache_of"):
        return _rethreshold(spec, pairs, out, base)
    if matcher["type"] in ("patch2pix", "ncnet"):
        return _match_dense(spec, bench, pairs, out, weights, base)
    if matcher["type"] not in ("nearest_neighbour", "imp"):
        raise ConfigError(f"methods.{method['name']}.matcher.type: {matcher['type']!r} is not available yet")
    if features is None:
        raise ConfigError(f"methods.{method['name']}: a descriptor matcher needs 'features'")
    if matcher["type"] == "imp":
        from matchrepro.matchers.imp import IMPMatcher

        if weights is None:
            raise ConfigError(f"methods.{method['name']}.weights: the imp matcher needs weights")
        from matchrepro.evaluation.evaluate import upright_geometry

        imp = IMPMatcher(method, weights)

        def match_fn(a, b, p):
            K0 = K1 = None
            if getattr(p, "K0", None) is not None:  # the keypoints' frame: upright original pixels
                K0, K1, _ = upright_geometry(p, {"image_size0": a["image_size"], "image_size1": b["image_size"]})
            r = imp(a, b, K0, K1)
            extra = {"stopped_at": r["stopped_at"], "retained": np.asarray(r["retained"], np.int64).reshape(-1, 2)}
            if r.get("pose") is not None:  # a released iterative stop: the reported pose (imp.md §1.5)
                extra["pose_R"], extra["pose_t"] = np.asarray(r["pose"][0], np.float64), np.asarray(r["pose"][1], np.float64)
            return r["matches"], r["scores"], extra
    else:
        def match_fn(a, b, p):
            m, s = match_nearest_neighbour(a["descriptors"], b["descriptors"], mutual=matcher["mutual"],
                                           ratio=matcher["ratio"])
            return m, s, {}
    n_matches, retained = [], []
    with h5py.File(features, "r") as ff, atomic_path(out) as tmp, h5py.File(tmp, "w") as f:
        _write_header(f, spec, len(pairs))
        for p in tqdm(pairs, desc=f"match {method['name']}", unit="pair"):
            a = _read_features(ff, p.name0, str(features))
            b = _read_features(ff, p.name1, str(features))
            m, s, extra = match_fn(a, b, p)
            g = f.create_group(f"pair_{p.index:06d}")
            g["keypoints0"], g["keypoints1"] = a["keypoints"], b["keypoints"]
            g["matches"], g["scores"] = m, s
            g.attrs.update(name0=p.name0, name1=p.name1, scale0=a["scale"], scale1=b["scale"],
                           image_size0=a["image_size"], image_size1=b["image_size"], **extra)
            n_matches.append(len(m))
            if len(extra.get("retained", ())):
                retained.append(extra["retained"].sum(1))
        f.attrs["mean_matches"] = float(np.mean(n_matches)) if n_matches else 0.0
        if retained:  # keypoints (both images) entering each iteration, averaged over pairs (EIMP pooling)
            per_it = np.mean(np.stack(retained), 0)
            f.attrs["mean_keypoints_per_iteration"] = per_it
            print("keypoints per iteration (both images, mean over pairs): "
                  + " ".join(f"{v:.0f}" for v in per_it), flush=True)


def _write_header(f: h5py.File, spec: dict, n_pairs: int) -> None:
    """Root attributes of a predictions cache: the config that made it (checked before any
    evaluation), method and dataset names, and the number of pairs."""
    f.attrs["config"] = json.dumps(spec, sort_keys=True)
    f.attrs["method"] = spec["method"]["name"]
    f.attrs["dataset"] = spec["dataset"]["name"]
    f.attrs["n_pairs"] = n_pairs


def _base_matches(f: h5py.File, path, index: int) -> tuple[np.ndarray, np.ndarray]:
    """Matched points (N, 2) and (N, 2) of one pair of a predictions cache (upright-original px)."""
    key = f"pair_{index:06d}"
    if key not in f:
        raise DatasetError(f"{path}: no predictions for pair {index} (re-run the method it refines)")
    g = f[key]
    m = g["matches"][()]
    return g["keypoints0"][()][m[:, 0]], g["keypoints1"][()][m[:, 1]]


def _match_dense(spec: dict, bench, pairs, out, weights, base=None) -> None:
    """Detector-free matchers (Patch2Pix, NCNet): images in, matches out (keypoints = matches).
    With ``base`` (a method with ``refines``) Patch2Pix refines that cache's matches instead."""
    from matchrepro.matchers.patch2pix import Patch2PixMatcher
    from matchrepro.pipeline.extract import load_upright

    method = spec["method"]
    if weights is None:
        raise ConfigError(f"methods.{method['name']}.weights: {method['matcher']['type']} needs weights")
    if bool(method.get("refines")) != (base is not None):
        raise ConfigError(f"methods.{method['name']}.refines: a refiner needs the base predictions (--base) and "
                          "only a refiner takes them")
    matcher = Patch2PixMatcher(method, weights)
    n_matches = []
    with contextlib.ExitStack() as stack:
        fb = stack.enter_context(h5py.File(base, "r")) if base is not None else None
        tmp = stack.enter_context(atomic_path(out))
        f = stack.enter_context(h5py.File(tmp, "w"))
        _write_header(f, spec, len(pairs))
        for p in tqdm(pairs, desc=f"match {method['name']}", unit="pair"):
            im0, s0, wh0 = load_upright(bench.image_dir / p.name0, p.rot0, spec["resize"], grayscale=False)
            im1, s1, wh1 = load_upright(bench.image_dir / p.name1, p.rot1, spec["resize"], grayscale=False)
            if fb is None:
                r = matcher(im0, im1, s0, s1)
            else:
                r = matcher.refine(im0, im1, s0, s1, *_base_matches(fb, base, p.index))
            g = f.create_group(f"pair_{p.index:06d}")
            for k in ("keypoints0", "keypoints1", "matches", "scores", *ALL_REFINED):
                if k in r:
                    g[k] = r[k]
            g.attrs.update(name0=p.name0, name1=p.name1, scale0=np.asarray(s0), scale1=np.asarray(s1),
                           image_size0=np.asarray(wh0), image_size1=np.asarray(wh1))
            n_matches.append(len(r["matches"]))
        f.attrs["mean_matches"] = float(np.mean(n_matches)) if n_matches else 0.0


def _rethreshold(spec: dict, pairs, out, base) -> None:
    """A ``from_cache_of`` method: the refined matches that ``base`` (the other method's
    predictions cache) holds before its threshold, kept above this method's ``matcher.threshold``
    with the release's fallback (:func:`~matchrepro.matchers.patch2pix.confident`). Equal, bit for
    bit, to running the network at this threshold; refuses a base made with another network,
    dataset or resize rule."""
    from matchrepro.config import network_of
    from matchrepro.matchers.patch2pix import confident, select_matches, selection

    method = spec["method"]
    key = f"methods.{method['name']}.from_cache_of"
    if base is None:
        raise ConfigError(f"{key}: needs the predictions cache of {method['from_cache_of']} (--base)")
    threshold, refine_keeps_all = selection(method)
    keep_all = refine_keeps_all if method.get("refines") else True  # matching keeps all, as released
    n_matches = []
    with contextlib.ExitStack() as stack:
        fb = stack.enter_context(h5py.File(base, "r"))
        made = json.loads(fb.attrs.get("config", "{}"))
        for part in ("dataset", "resize"):
            if made.get(part) != spec.get(part):
                raise ConfigError(f"{base}: made with a different '{part}' config than {key} needs "
                                  f"(re-run matching of {method['from_cache_of']})")
        if "method" not in made or network_of(made["method"]) != network_of(method):
            raise ConfigError(f"{base}: not made by the network of {key} (a method may differ from it only in "
                              "matcher.threshold and matcher.refine_fallback)")
        tmp = stack.enter_context(atomic_path(out))
        f = stack.enter_context(h5py.File(tmp, "w"))
        _write_header(f, spec, len(pairs))
        for p in tqdm(pairs, desc=f"re-threshold {method['name']}", unit="pair"):
            name = f"pair_{p.index:06d}"
            if name not in fb or any(k not in fb[name] for k in ALL_REFINED):
                raise DatasetError(f"{base}: pair {p.index} has no {ALL_REFINED[-1]} (a cache from before "
                                   f"they were kept); re-run matching of {method['from_cache_of']}")
            gb = fb[name]
            every = {k.removeprefix("all_"): gb[k][()] for k in ALL_REFINED}
            r = select_matches(every, confident(every["scores"], threshold, keep_all))
            g = f.create_group(name)
            for k in ("keypoints0", "keypoints1", "matches", "scores"):
                g[k] = r[k]
            g.attrs.update(dict(gb.attrs))
            n_matches.append(len(r["matches"]))
        f.attrs["mean_matches"] = float(np.mean(n_matches)) if n_matches else 0.0


def gather_predictions(shards: list[str | Path], out: str | Path) -> None:
    """Merge shard prediction files (same config) into one cache, refusing duplicates."""
    with atomic_path(out) as tmp, h5py.File(tmp, "w") as f:
        n, means = 0, []
        for k, path in enumerate(shards):
            with h5py.File(path, "r") as g:
                if k == 0:
                    for a in ("config", "method", "dataset"):
                        f.attrs[a] = g.attrs[a]
                elif g.attrs["config"] != f.attrs["config"]:
                    raise ConfigError(f"{path}: shard made with a different config than {shards[0]}")
                for key in g.keys():
                    if key in f:
                        raise ConfigError(f"{path}: {key} is in two shards")
                    g.copy(g[key], f, name=key)
                    n += 1
                means.append((g.attrs["mean_matches"], g.attrs["n_pairs"]))
        f.attrs["n_pairs"] = n
        f.attrs["mean_matches"] = float(sum(m * c for m, c in means) / max(1, n))


def check_predictions_config(path: str | Path, spec: dict) -> None:
    """Refuse a predictions cache made with another method, dataset or resize config (Snakemake
    re-runs matching when those change, but a cache copied by hand or a run with relaxed rerun
    triggers must never be evaluated silently)."""
    with h5py.File(path, "r") as f:
        made = json.loads(f.attrs.get("config", "{}"))
    for key in ("method", "dataset", "resize"):
        if made.get(key) != spec.get(key):
            raise ConfigError(
                f"{path}: predictions were made with a different '{key}' config than this evaluation "
                f"asks for; re-run matching (snakemake --forcerun match_pairs)"
            )


def read_predictions(path: str | Path):
    """Yield ``(index, dict)`` per pair from a predictions file."""
    with h5py.File(path, "r") as f:
        for key in sorted(k for k in f.keys() if k.startswith("pair_")):
            g = f[key]
            d = {k: g[k][()] for k in g.keys()}
            d.update({k: g.attrs[k] for k in g.attrs.keys()})
            yield int(key[5:]), d
