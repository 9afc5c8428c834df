"""Command-line entry points called by the workflow rules (usable without Snakemake).

Each verb takes a ``--spec`` JSON object holding the config blocks it needs (the rule passes
them, so Snakemake re-runs a step exactly when its blocks change) and writes its outputs
atomically. Errors print one line ``error: ...`` and exit with status 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from matchrepro.allocator import keep_freed_memory
from matchrepro.cpu_isa import apply_from_env
from matchrepro.errors import ConfigError, MatchReproError, NotYetAvailableError


def _spec(text: str) -> dict:
    try:
        spec = json.loads(text)
    except json.JSONDecodeError as e:
        raise MatchReproError(f"--spec is not valid JSON ({e})") from None
    if not isinstance(spec, dict):
        raise MatchReproError("--spec must be a JSON object")
    return spec


def cmd_build_demo(a) -> None:
    from matchrepro.demo.builders import BUILDERS

    ds = _spec(a.spec)["dataset"]
    cfg = dict(ds["demo"], pairs_file=ds.get("pairs_file"))
    BUILDERS[cfg["kind"]](a.out, cfg)


def cmd_extract(a) -> None:
    from matchrepro.pipeline.extract import extract_features

    extract_features(_spec(a.spec), a.out, a.weights)


def _shard(text: str | None) -> tuple[int, int] | None:
    """``k-of-n`` (0-based k) -> (k, n)."""
    if text is None:
        return None
    try:
        k, n = (int(v) for v in text.split("-of-"))
    except ValueError:
        raise MatchReproError(f"--shard must look like 0-of-4, got {text!r}") from None
    if not 0 <= k < n:
        raise MatchReproError(f"--shard {text}: need 0 <= k < n")
    return k, n


def _set_threads(n: int | None) -> None:
    """Intra-op threads of torch for this step (the cores its rule was given), so two jobs on
    two cores do not each start a thread per core."""
    if n:
        import torch

        torch.set_num_threads(int(n))


def cmd_match(a) -> None:
    from matchrepro.pipeline.match import match_pairs

    _set_threads(a.threads)
    match_pairs(_spec(a.spec), a.out, a.features, _shard(a.shard), a.weights, a.base)


def cmd_match_pair(a) -> None:
    from matchrepro.pipeline.match_pair import match_pair

    _set_threads(a.threads)
    r = match_pair(a.image0, a.image1, a.method, a.config, a.weights, a.out, a.format, a.resize_as, a.device,
                   picture=not a.no_picture)
    print(f"{r['method']}: {len(r['matches'])} matches ({len(r['keypoints0'])} / {len(r['keypoints1'])} keypoints, "
          f"resize {json.dumps(r['resize'])})")
    for f in r["files"]:
        print(f)


def cmd_gather_matches(a) -> None:
    from matchrepro.pipeline.match import gather_predictions

    gather_predictions(a.inputs, a.out)


def cmd_evaluate(a) -> None:
    from matchrepro.evaluation.evaluate import evaluate, evaluate_rows
    from matchrepro.io import atomic_path

    spec = _spec(a.spec)
    if a.shard is not None:  # per-pair rows only; the summary comes from gather-evaluation
        df = evaluate_rows(spec, a.predictions, _shard(a.shard))
        with atomic_path(a.pairs_out) as tmp:
            df.to_csv(tmp, index=False)
        print(f"{len(df)} pairs -> {a.pairs_out}")
        return
    if a.out is None:
        raise MatchReproError("evaluate: --out is required without --shard")
    r = evaluate(spec, a.predictions, a.out, a.pairs_out)
    print(json.dumps({"method": r["method"], "protocol": r["protocol"], **r["summary"]}, default=str))


def cmd_gather_evaluation(a) -> None:
    import pandas as pd

    from matchrepro.evaluation.evaluate import summarize

    df = pd.concat([pd.read_csv(p) for p in a.inputs], ignore_index=True)
    r = summarize(_spec(a.spec), df, a.out, a.pairs_out)
    print(json.dumps({"method": r["method"], "protocol": r["protocol"], **r["summary"]}, default=str))


def cmd_tables(a) -> None:
    from matchrepro.reporting.published import load_published, write_comparisons
    from matchrepro.reporting.tables import load_results, rows_for, write_tables

    spec = _spec(a.spec)
    results = load_results(a.results)
    written = write_tables(results, spec["benchmarks"], a.out)
    if a.published:
        written += write_comparisons(rows_for(results), load_published(a.published), spec["benchmarks"], a.out)
    for p in written:
        print(p)


def cmd_download(a) -> None:
    from matchrepro.pipeline.fetch import fetch_dataset

    ds = _spec(a.spec)["dataset"]
    fetch_dataset(ds, a.out, a.cache or f"resources/downloads/{ds['name']}")


def cmd_fetch_weights(a) -> None:
    from matchrepro.pipeline.fetch import fetch_weights

    fetch_weights(_spec(a.spec)["weights"], a.out)


def cmd_preprocess(a) -> None:
    from matchrepro.preprocessing import scene_info_path

    spec = _spec(a.spec)
    prep, ds = spec["preprocessing"], spec["dataset"]
    info = scene_info_path(ds["root"], a.scene)
    if prep["kind"] == "patch2pix_pairs":
        from matchrepro.preprocessing import patch2pix_pairs

        n = patch2pix_pairs.run(info, prep["params"], a.out)
    elif prep["kind"] == "imp_dump":
        from matchrepro.preprocessing import imp_dump

        n = imp_dump.run(ds["root"], info, spec["features"], prep["params"], a.out, a.weights)
    elif prep["kind"] == "imp_pairs":
        from matchrepro.preprocessing import imp_pairs

        n = imp_pairs.run(info, prep["params"], a.out)
    else:  # the schema's enum makes this unreachable
        raise MatchReproError(f"preprocessing.{prep['name']}.kind: unknown kind {prep['kind']!r}")
    print(f"{prep['name']} {a.scene}: {n} pairs -> {a.out}")


def cmd_preprocess_index(a) -> None:
    from matchrepro.io import write_json_atomic

    spec = _spec(a.spec)
    scenes = {Path(f).name.split(".")[0]: f for f in a.inputs}
    write_json_atomic(a.out, {"preprocessing": spec["preprocessing"], "scenes": scenes})


def cmd_figures(a) -> None:
    from matchrepro.io import atomic_dir
    from matchrepro.reporting.figures import make_figures

    with atomic_dir(a.out) as tmp:
        for p in make_figures(_spec(a.spec), a.metrics, a.predictions, tmp):
            print(Path(a.out) / p.name)


def cmd_training_curves(a) -> None:
    from matchrepro.io import atomic_dir
    from matchrepro.reporting.figures import plot_training_curves, plot_validation_curves

    with atomic_dir(a.out) as tmp:
        for p in plot_training_curves(a.logs, tmp) + plot_validation_curves(a.validation or [], tmp):
            print(Path(a.out) / p.name)


def cmd_provenance(a) -> None:
    from matchrepro.reporting.provenance import write_provenance

    write_provenance(_spec(a.spec), a.out)


def cmd_worst(a) -> None:
    from matchrepro.reporting.worst import worst_pairs

    print(worst_pairs(a.pairs_csv, a.n, a.by).to_string(index=False))


def cmd_compare(a) -> None:
    from matchrepro.reporting.compare import format_comparison, paired_auc_difference

    def label(path: str) -> str:  # results/metrics/<method>/<dataset>/<protocol>_pairs.csv
        return Path(path).parent.parent.name or path

    kw = {} if a.resamples is None else {"resamples": a.resamples}
    df = paired_auc_difference(a.base_csv, a.other_csv, a.thresholds, **kw)
    print(format_comparison(df, label(a.base_csv), label(a.other_csv)))


def cmd_train(a) -> None:
    import os
    import shutil
    import subprocess

    from matchrepro.training.loop import launched_by_torchrun

    spec = _spec(a.spec)
    t = spec["training"]
    # one process per GPU the job was given, unless `processes` says otherwise
    procs = int(t["params"].get("processes", t["params"].get("gpus", 1)))
    print(f"training {t['name']} ({t['model']}): CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '')!r}"
          f", processes={procs}", flush=True)
    if procs > 1 and not launched_by_torchrun():
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}",
               "-m", "matchrepro", "train", "--spec", a.spec, "--out", a.out]
        cmd += (["--data", a.data] if a.data else []) + (["--init", a.init] if a.init else [])
        cmd += ["--loss-out", a.loss_out] if a.loss_out else []
        cmd += (["--val-data", a.val_data] if a.val_data else []) + (["--val-out", a.val_out] if a.val_out else [])
        cmd += ["--feature-weights", a.feature_weights] if a.feature_weights else []
        cmd += ["--threads", str(max(1, a.threads // procs))] if a.threads else []
        raise SystemExit(subprocess.run(cmd).returncode)
    from matchrepro.training.loop import Interrupted, file_digest, run_fingerprint, train

    _set_threads(a.threads)
    out = Path(a.out)
    task = _training_task(t, spec.get("dataset"), a.data, a.init, a.val_data, spec.get("features"), a.feature_weights)
    try:
        # the task's settings with its defaults filled in: a changed default also starts over
        settings = {**t["params"], **getattr(task, "p", {})}
        fp = run_fingerprint(t["model"], settings, spec.get("dataset"), a.data, a.init)
        # a validation split (which weights are kept) and online features are part of the run too,
        # and so are the contents of its input files: retrained initial weights or a re-made
        # pair index under the same path start a new run instead of resuming a stale one
        extras = {k: v for k, v in (("validation", a.val_data), ("features", spec.get("features"))) if v}
        extras["contents"] = {k: file_digest(v) for k, v in (("data", a.data), ("init", a.init),
                              ("validation", a.val_data), ("feature_weights", a.feature_weights)) if v}
        fp = run_fingerprint(t["model"], {"fp": fp, **extras}, None, None, None)
        res = train(task, t["params"], out.parent, fp)
    except Interrupted:
        raise SystemExit(130)
    if int(os.environ.get("RANK", "0")) == 0:
        from matchrepro.io import atomic_path

        if a.loss_out:  # the whole loss history, resumed parts included, as a declared output
            with atomic_path(Path(a.loss_out)) as tmp:
                shutil.copyfile(out.parent / "log.csv", tmp)
        if a.val_out:  # the validation rows (header only without a validation split)
            src = out.parent / "validation.csv"
            with atomic_path(Path(a.val_out)) as tmp:
                if res.get("best") is not None and src.exists():
                    shutil.copyfile(src, tmp)
                else:
                    Path(tmp).write_text("step\n")
        kept = "best.pth" if res.get("best") is not None else "final.pth"
        if kept == "best.pth":
            b = res["best"]
            print(f"kept best.pth: {b['metric']} = {b['value']:.4g} at step {b['step']}", flush=True)
        with atomic_path(out) as tmp:
            shutil.copyfile(out.parent / kept, tmp)
        if getattr(task, "skipped", 0):
            res["skipped_pairs"] = task.skipped
        print(json.dumps(res), flush=True)


def _training_task(t: dict, dataset: dict | None, data: str | None, init: str | None, val_data: str | None = None,
                   features: dict | None = None, feature_weights: str | None = None):
    """The task object of a training block (see matchrepro.training.loop)."""
    if t["model"] == "toy":
        from matchrepro.training.toy import ToyTask

        return ToyTask(val_samples=int(t["params"].get("val_samples", 0)))
    if t["model"] in ("ncnet", "patch2pix"):
        from matchrepro.training.patch2pix_task import TASKS

        if not data or not dataset:
            raise ConfigError(f"training.{t['name']}.data: the {t['model']} model trains on a patch2pix_pairs "
                              "preprocessing run; name one")
        return TASKS[t["model"]](t["name"], t["params"], data, dataset["root"], init, val_data)
    if t["model"] in ("imp", "eimp"):
        from matchrepro.training.imp_task import IMPTask

        if not data:
            raise ConfigError(f"training.{t['name']}.data: the {t['model']} model trains on an imp_dump "
                              "preprocessing run; name one")
        return IMPTask(t["name"], t["model"], t["params"], data, init, val_data,
                       dataset_root=(dataset or {}).get("root"), features=features, feature_weights=feature_weights)
    raise NotYetAvailableError(f"training the {t['model']} model is not implemented in this version")


def cmd_check_config(a) -> None:
    from matchrepro.config import load_config

    cfg = load_config(a.config)
    print(f"{a.config}: OK ({len(cfg['datasets'])} datasets, {len(cfg['methods'])} methods, "
          f"{len(cfg['benchmarks'])} benchmarks)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m matchrepro", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="verb", required=True)

    def verb(name, fn, help_):
        s = sub.add_parser(name, help=help_)
        s.set_defaults(fn=fn)
        return s

    s = verb("build-demo", cmd_build_demo, "build a demo dataset in its real on-disk format")
    s.add_argument("--spec", required=True)
    s.add_argument("--out", required=True, help="dataset root folder to create")
    s = verb("extract", cmd_extract, "extract local features for a dataset")
    s.add_argument("--spec", required=True)
    s.add_argument("--weights", default=None, help="detector weights (SuperPoint)")
    s.add_argument("--out", required=True)
    s = verb("match", cmd_match_pair, "match two image files of your own (matches file + picture)")
    s.add_argument("image0")
    s.add_argument("image1")
    s.add_argument("--method", required=True,
                   help="a method of the config, or patch2pix | ncnet | imp | eimp | sift (its first such method)")
    s.add_argument("--weights", default=None, help="model weights (default: where the workflow writes them)")
    s.add_argument("--config", default=None, help="config file (default: ./config.yaml, else the repository's)")
    s.add_argument("--resize-as", default=None, help="use this dataset's resize rule (default: the method's, else none)")
    s.add_argument("--format", default="npz", choices=["npz", "h5"], help="matches file format (default npz)")
    s.add_argument("--out", default="matches", help="output folder (default ./matches)")
    s.add_argument("--device", default="auto", help="auto | cpu | cuda")
    s.add_argument("--no-picture", action="store_true", help="do not draw the matches")
    s.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    s = verb("match-dataset", cmd_match, "match all pairs of a dataset into a predictions cache")
    s.add_argument("--spec", required=True)
    s.add_argument("--features", default=None)
    s.add_argument("--shard", default=None, help="k-of-n: only the k-th (0-based) of n chunks of pairs")
    s.add_argument("--weights", default=None, help="model weights (learned matchers)")
    s.add_argument("--base", default=None, help="predictions cache of the method a refiner refines, or that a from_cache_of method re-thresholds")
    s.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    s.add_argument("--out", required=True)
    s = verb("gather-matches", cmd_gather_matches, "merge shard prediction caches")
    s.add_argument("--out", required=True)
    s.add_argument("inputs", nargs="+")
    s = verb("evaluate", cmd_evaluate, "evaluate cached predictions under a protocol")
    s.add_argument("--spec", required=True)
    s.add_argument("--predictions", required=True)
    s.add_argument("--shard", default=None, help="k-of-n: per-pair rows of one shard only (no summary)")
    s.add_argument("--out", default=None, help="summary JSON")
    s.add_argument("--pairs-out", required=True, help="per-pair CSV")
    s = verb("gather-evaluation", cmd_gather_evaluation, "summary of the per-pair rows of all shards")
    s.add_argument("--spec", required=True)
    s.add_argument("--out", required=True, help="summary JSON")
    s.add_argument("--pairs-out", required=True, help="per-pair CSV of all pairs")
    s.add_argument("inputs", nargs="+")
    s = verb("tables", cmd_tables, "write one CSV and Markdown table per benchmark")
    s.add_argument("--spec", required=True)
    s.add_argument("--results", nargs="+", required=True)
    s.add_argument("--published", default=None, help="published numbers (YAML) to compare with")
    s.add_argument("--out", required=True)
    s = verb("figures", cmd_figures, "plots and match pictures of one benchmark")
    s.add_argument("--spec", required=True)
    s.add_argument("--metrics", nargs="+", required=True)
    s.add_argument("--predictions", nargs="+", required=True)
    s.add_argument("--out", required=True)
    s = verb("training-curves", cmd_training_curves, "loss curves of training runs (log.csv files)")
    s.add_argument("--logs", nargs="+", required=True, help="per-step loss logs; the run is named by their folder")
    s.add_argument("--validation", nargs="*", default=[], help="validation logs (validation.csv) of the same runs")
    s.add_argument("--out", required=True)
    s = verb("provenance", cmd_provenance, "versions, config and git commit of this run (HTML + JSON)")
    s.add_argument("--spec", required=True)
    s.add_argument("--out", required=True, help="HTML file; the JSON is written beside it")
    s = verb("worst", cmd_worst, "print the worst pairs of a per-pair results CSV")
    s.add_argument("pairs_csv", help="results/metrics/<method>/<dataset>/<protocol>_pairs.csv")
    s.add_argument("-n", type=int, default=10, help="how many pairs (default 10)")
    s.add_argument("--by", default=None, help="column to sort by (default: the protocol's error)")
    s = verb("compare", cmd_compare, "pose AUC of one method minus another's on the same pairs (paired bootstrap)")
    s.add_argument("base_csv", help="per-pair results of the baseline: results/metrics/<method>/<dataset>/<protocol>_pairs.csv")
    s.add_argument("other_csv", help="per-pair results of the method compared with it (same dataset and protocol)")
    s.add_argument("--thresholds", type=float, nargs="+", default=[5, 10, 20], help="AUC thresholds in degrees")
    s.add_argument("--resamples", type=int, default=None, help="bootstrap resamples (default: as many as the tables', 1000)")
    s = verb("train", cmd_train, "train a model (DDP through torchrun when params.processes > 1)")
    s.add_argument("--spec", required=True)
    s.add_argument("--out", required=True, help="weights file; checkpoints and log.csv go beside it")
    s.add_argument("--data", help="index.json of the preprocessed training pairs")
    s.add_argument("--init", help="initial weights (.pth)")
    s.add_argument("--loss-out", help="copy the per-step loss log (log.csv) here when training ends")
    s.add_argument("--val-data", help="index.json of the validation pairs (held-out scenes)")
    s.add_argument("--val-out", help="copy the validation log (validation.csv) here when training ends")
    s.add_argument("--feature-weights", help="detector weights for online IMP pairs (SuperPoint)")
    s.add_argument("--threads", type=int, default=None, help="torch threads per process (default: torch's choice)")
    s = verb("check-config", cmd_check_config, "validate a config file")
    s.add_argument("config")
    s = verb("download", cmd_download, "download a dataset (resumable, checksummed) and extract it")
    s.add_argument("--spec", required=True)
    s.add_argument("--out", required=True, help="dataset root folder to create")
    s.add_argument("--cache", default=None, help="download folder (default resources/downloads/<dataset>)")
    s = verb("fetch-weights", cmd_fetch_weights, "download a weights file (checksummed)")
    s.add_argument("--spec", required=True)
    s.add_argument("--out", required=True)
    s = verb("preprocess", cmd_preprocess, "prepare MegaDepth training data for one scene")
    s.add_argument("--spec", required=True)
    s.add_argument("--scene", required=True)
    s.add_argument("--weights", default=None, help="detector weights (imp_dump with SuperPoint features)")
    s.add_argument("--out", required=True)
    s = verb("preprocess-index", cmd_preprocess_index, "gather the per-scene preprocessing outputs")
    s.add_argument("--spec", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("inputs", nargs="*")
    return p


def main(argv: list[str] | None = None) -> int:
    apply_from_env()  # the config's cpu_isa, before any numeric library loads (cpu_isa.py)
    args = build_parser().parse_args(argv)
    keep_freed_memory()  # large tensors from the heap: same numbers, far less kernel time (allocator.py)
    try:
        args.fn(args)
    except MatchReproError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    return 0
