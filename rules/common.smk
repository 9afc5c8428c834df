# Config validation, wildcard constraints and input functions (the only Python in the rules).
import json
import os
import shlex
import sys

from snakemake.settings.types import DeploymentMethod

SRC = str(Path(workflow.basedir) / "src")
sys.path.insert(0, SRC)

# Rules run `python -m matchrepro ...`: the interpreter running Snakemake comes first on PATH
# (so a venv works without being activated), unless --sdm conda gives each rule its own env.
# The package they import is this checkout's src/, whatever the environment has installed (a
# venv installed editable from another checkout would otherwise run that checkout's code).
_pythonpath = f"export PYTHONPATH={shlex.quote(SRC)}${{{{PYTHONPATH:+:$PYTHONPATH}}}}; "  # braces doubled for Snakemake
# The config's cpu_isa reaches every job as MATCHREPRO_CPU_ISA, which the job applies on its own
# machine before loading a numeric library (src/matchrepro/cpu_isa.py).
_cpu_isa = config.get("cpu_isa", "native")
if _cpu_isa != "native":
    _pythonpath += f"export MATCHREPRO_CPU_ISA={shlex.quote(_cpu_isa)}; "
if DeploymentMethod.CONDA not in workflow.deployment_settings.deployment_method:
    _bin = shlex.quote(str(Path(sys.executable).parent))
    shell.prefix(f"export PATH={_bin}:\"$PATH\"; {_pythonpath}")
else:
    shell.prefix(_pythonpath)

from matchrepro.config import (
    check_local_datasets,
    effective_features,
    effective_resize,
    validate_config,
)
from matchrepro.errors import ConfigError
from matchrepro.preprocessing import scene_ids
from matchrepro.scheduler_wakeups import one_pending_wakeup

# Snakemake's rate-limit timers otherwise multiply while ready jobs wait for cores, and the
# scheduler ends up taking a quarter of a core on the demo (src/matchrepro/scheduler_wakeups.py).
one_pending_wakeup()

CONFIG_SOURCE = ", ".join(str(f) for f in workflow.overwrite_configfiles) or "config.yaml"
try:
    validate_config(config, CONFIG_SOURCE)
    check_local_datasets(config, CONFIG_SOURCE)
except ConfigError as e:
    raise WorkflowError(f"matchrepro: {e}") from None


PACKAGE = Path(workflow.basedir) / "src" / "matchrepro"
PUBLISHED = str(Path(workflow.basedir) / "report" / "published.yaml")


def code(*modules):
    """Source files of the package that a step runs (an input, so editing them re-runs the
    step and everything after it). ``modules``: sub-packages or ``.py`` files of matchrepro.
    ``io.py`` (the file formats) always counts; the CLI dispatch (``cli.py``) does not."""
    files = {PACKAGE / "io.py"}
    for m in modules:
        p = PACKAGE / m
        files |= set(p.glob("*.py")) if p.is_dir() else {p}
    return sorted(str(f) for f in files)


def _datasets_with(sharded):
    names = [n for n, d in config["datasets"].items() if (d["shards"] > 1) == sharded]
    return "|".join(sorted(names)) or "__none__"


def get_shards(dataset):
    n = config["datasets"][dataset]["shards"]
    return [f"{k}-of-{n}" for k in range(n)]


def _names(section):
    return "|".join(sorted(config[section])) or "__none__"


wildcard_constraints:
    dataset=_names("datasets"),
    method=_names("methods"),
    features=_names("features"),
    protocol=_names("protocols"),
    weights=_names("weights"),
    model=_names("training"),
    prep=_names("preprocessing"),
    scene="[0-9A-Za-z_]+",
    benchmark=_names("benchmarks"),
    shard=r"\d+-of-\d+",


def dataset_spec(name):
    """A dataset block without its scheduling knob (``shards`` never changes a result)."""
    return {k: v for k, v in config["datasets"][name].items() if k != "shards"}


def spec(**blocks):
    """A JSON object of config blocks, passed to the CLI as one quoted argument; as a param
    it also makes Snakemake re-run a step exactly when one of its blocks changes."""
    return json.dumps(blocks, sort_keys=True)


def dataset_root(dataset):
    """Folder of a dataset: built (demo), downloaded, or given (local: no rule makes it)."""
    return config["datasets"][dataset]["root"]


def get_dataset_input(wildcards):
    d = config["datasets"][wildcards.dataset]
    return [] if d["source"] == "local" else [dataset_root(wildcards.dataset)]


def weights_path(name):
    """A weights file: downloaded (``weights:``) or trained (``training:``)."""
    if name in config["weights"]:
        return f"resources/weights/{name}.pth"
    return f"results/training/{name}/model_best.pth"


def get_match_inputs(wildcards):
    """Dataset, features, weights and base cache of a match job; a ``from_cache_of`` method
    needs only the dataset (its pair list) and the cache it re-thresholds (no network runs)."""
    m = config["methods"][wildcards.method]
    inputs = {"dataset": get_dataset_input(wildcards)}
    if m["from_cache_of"]:
        return inputs | {"base": f"results/matches/{m['from_cache_of']}/{wildcards.dataset}.h5"}
    if m["features"]:
        inputs["features"] = f"results/features/{m['features']}/{wildcards.dataset}.h5"
    if m["weights"]:
        inputs["weights"] = weights_path(m["weights"])
    if m["refines"]:
        inputs["base"] = f"results/matches/{m['refines']}/{wildcards.dataset}.h5"
    return inputs


def get_feature_inputs(wildcards):
    f = config["features"][wildcards.features]
    inputs = {"dataset": get_dataset_input(wildcards)}
    if f["weights"]:
        inputs["weights"] = weights_path(f["weights"])
    return inputs


def match_args(wildcards, input):
    """``--features`` and ``--weights`` arguments of the match command, where the method has them."""
    args = [f"--features {input.features}" if "features" in input.keys() else ""]
    args.append(f"--weights {input.weights}" if "weights" in input.keys() else "")
    args.append(f"--base {input.base}" if "base" in input.keys() else "")
    return " ".join(a for a in args if a)


def extract_spec(wildcards):
    return spec(
        dataset=dataset_spec(wildcards.dataset),
        features=effective_features(config, wildcards.features, wildcards.dataset),
        resize=effective_resize(config, wildcards.dataset, features=wildcards.features),
    )


def match_spec(wildcards):
    m = config["methods"][wildcards.method]
    f = m["features"]
    return spec(
        dataset=dataset_spec(wildcards.dataset),
        method=m,
        features=effective_features(config, f, wildcards.dataset) if f else None,
        resize=effective_resize(config, wildcards.dataset, wildcards.method, f),
    )


def evaluate_spec(wildcards):
    m = config["methods"][wildcards.method]
    f = m["features"]
    # a refiner's matches come from its base method's keypoints: that budget is the row's
    fb = f or (config["methods"][m["refines"]]["features"] if m["refines"] else None)
    budget = effective_features(config, fb, wildcards.dataset)["max_keypoints"] if fb else None
    return spec(
        dataset=dataset_spec(wildcards.dataset),
        method=m,
        protocol=config["protocols"][wildcards.protocol],
        resize=effective_resize(config, wildcards.dataset, wildcards.method, f),
        features=effective_features(config, fb, wildcards.dataset) if fb else None,
        max_keypoints=budget,
    )


def get_all_metrics(wildcards=None):
    return [
        f"results/metrics/{m}/{b['dataset']}/{p}.json"
        for b in config["benchmarks"].values()
        for m in b["methods"]
        for p in b["protocols"]
    ]


def tables_spec(wildcards=None):
    return spec(benchmarks={n: b["dataset"] for n, b in config["benchmarks"].items()})


def train_inputs(wildcards):
    """Pair index, dataset folder (unless local), initial weights and validation pairs of a run."""
    t = config["training"][wildcards.model]
    inputs = {}
    if t["data"]:
        inputs["data"] = f"resources/preprocessed/{t['data']}/index.json"
        d = _prep_dataset(t["data"])
        if config["datasets"][d]["source"] != "local":
            inputs["dataset"] = dataset_root(d)
    if t["init"]:
        inputs["init"] = weights_path(t["init"])
    if t["validation"]:
        inputs["val_data"] = f"resources/preprocessed/{t['validation']}/index.json"
    f = _online_features(t)
    if f and config["features"][f]["weights"]:
        inputs["feature_weights"] = weights_path(config["features"][f]["weights"])
    return inputs


def _online_features(t):
    """The features an online-pairs run (data: an imp_pairs run) extracts while training."""
    p = config["preprocessing"].get(t["data"]) if t["data"] else None
    return p["params"].get("features") if p and p["kind"] == "imp_pairs" else None


TRAIN_CODE = {
    "toy": ["training/toy.py"],
    "ncnet": ["training/patch2pix_task.py", "training/ncnet_supervision.py", "training/patch2pix_losses.py",
              "training/validation.py", "evaluation/metrics.py",
              "models/patch2pix.py", "models/resnet.py", "models/conv4d.py", "models/checkpoints.py",
              "datasets/patch2pix_training.py", "datasets/megadepth.py", "preprocessing/patch2pix_pairs.py",
              "geometry/depth_warp.py"],
}
TRAIN_CODE["patch2pix"] = TRAIN_CODE["ncnet"]
TRAIN_CODE["imp"] = TRAIN_CODE["eimp"] = ["training/imp_task.py", "training/imp_losses.py", "models/imp.py",
                                          "training/validation.py", "evaluation/metrics.py",
                                          "evaluation/pose_superglue.py", "datasets/imp_online.py",
                                          "datasets/augment.py", "preprocessing/imp_dump.py", "features",
                                          "models/checkpoints.py", "datasets/imp_training.py"]


def train_code(wildcards):
    """The modules a training run executes (so editing another model never retrains this one)."""
    model = config["training"][wildcards.model]["model"]
    return code("training/loop.py", "training/distributed.py", *TRAIN_CODE.get(model, ["training", "models", "datasets"]))


def train_spec(wildcards):
    t = config["training"][wildcards.model]
    f = _online_features(t)
    blocks = {"features": config["features"][f]} if f else {}
    return spec(training=t, dataset=dataset_spec(_prep_dataset(t["data"])) if t["data"] else None, **blocks)


def train_args(wildcards, input):
    """``--data``, ``--init``, ``--val-data`` and ``--feature-weights`` of the train command, where
    the run has them."""
    args = [f"--data {input.data}" if "data" in input.keys() else ""]
    args.append(f"--init {input.init}" if "init" in input.keys() else "")
    args.append(f"--val-data {input.val_data}" if "val_data" in input.keys() else "")
    args.append(f"--feature-weights {input.feature_weights}" if "feature_weights" in input.keys() else "")
    return " ".join(a for a in args if a)


def _kind(*kinds):
    names = [n for n, p in config["preprocessing"].items() if p["kind"] in kinds]
    return "|".join(sorted(names)) or "__none__"


def _prep_dataset(prep):
    return config["preprocessing"][prep]["dataset"]


def preprocess_inputs(wildcards):
    d = _prep_dataset(wildcards.prep)
    inputs = {} if config["datasets"][d]["source"] == "local" else {"dataset": dataset_root(d)}
    f = config["preprocessing"][wildcards.prep]["params"].get("features")
    if f and config["features"][f]["weights"]:
        inputs["weights"] = weights_path(config["features"][f]["weights"])
    return inputs


def weights_arg(wildcards, input):
    """``--weights`` of commands whose detector has weights (SuperPoint)."""
    return f"--weights {input.weights}" if "weights" in input.keys() else ""


def uses_gpu_features(prep):
    f = config["preprocessing"][prep]["params"].get("features")
    return f is not None and config["features"][f]["type"] != "sift"


def preprocess_spec(wildcards):
    p = config["preprocessing"][wildcards.prep]
    f = p["params"].get("features")
    return spec(
        preprocessing=p,
        dataset=dataset_spec(p["dataset"]),
        features=config["features"][f] if f else None,
    )


def preprocess_scene_outputs(wildcards):
    """Per-scene outputs: the scenes listed in the config, else every scene_info of the dataset
    (known once the dataset is built or downloaded: those rules are checkpoints)."""
    p = config["preprocessing"][wildcards.prep]
    d = config["datasets"][p["dataset"]]
    scenes = p["params"].get("scenes")
    if not scenes:
        if d["source"] == "demo":
            root = checkpoints.build_demo_dataset.get(dataset=p["dataset"]).output[0]
        elif d["source"] == "download":
            root = checkpoints.download_dataset.get(dataset=p["dataset"]).output[0]
        else:
            root = d["root"]
        scenes = scene_ids(root, p["params"].get("exclude_scenes", []))
    ext = "h5" if p["kind"] == "imp_dump" else "npz"
    return [f"resources/preprocessed/{wildcards.prep}/{s}.{ext}" for s in scenes]


def get_benchmark_metrics(wildcards):
    b = config["benchmarks"][wildcards.benchmark]
    return [f"results/metrics/{m}/{b['dataset']}/{p}.json" for m in b["methods"] for p in b["protocols"]]


def get_benchmark_predictions(wildcards):
    b = config["benchmarks"][wildcards.benchmark]
    return [f"results/matches/{m}/{b['dataset']}.h5" for m in b["methods"]]


def get_benchmark_dataset_input(wildcards):
    b = config["benchmarks"][wildcards.benchmark]
    d = config["datasets"][b["dataset"]]
    return [] if d["source"] == "local" else [dataset_root(b["dataset"])]


def figures_spec(wildcards):
    b = config["benchmarks"][wildcards.benchmark]
    return spec(benchmark=wildcards.benchmark, dataset=dataset_spec(b["dataset"]))


def trained_runs():
    """Training runs the benchmarks use: weights of their methods and features, and the runs
    those start from (``init``), in a stable order."""
    names = []
    for b in config["benchmarks"].values():
        for m in b["methods"]:
            method = config["methods"][m]
            f = method["features"]
            for w in (method["weights"], config["features"][f]["weights"] if f else None):
                while w and w in config["training"] and w not in names:
                    names.append(w)
                    w = config["training"][w]["init"]
    return sorted(names)


def get_final_output(wildcards=None):
    return [
        "results/tables",
        *[f"results/figures/{b}" for b in config["benchmarks"]],
        *(["results/figures/training"] if trained_runs() else []),
        "results/provenance/provenance.html",
    ]


def method_gpus(wildcards):
    """Learned matchers run on a GPU on a cluster; descriptor matching and re-thresholding
    another method's cache (``from_cache_of``) do not need one."""
    m = config["methods"][wildcards.method]
    return 0 if m["matcher"]["type"] == "nearest_neighbour" or m["from_cache_of"] else 1


def method_threads(wildcards):
    """Learned matchers use ``torch_threads`` torch intra-op threads (4 by default, 2 in the demo);
    Snakemake reserves fewer cores where it has fewer (``--cores``), but the job still runs that
    many torch threads, because torch's CPU results depend on the thread count. Descriptor
    matching and re-thresholding run single-threaded."""
    return 1 if method_gpus(wildcards) == 0 else config["torch_threads"]


def train_threads(wildcards):
    """torch threads of a training run: its ``params.threads``, else ``torch_threads`` (as for
    :func:`method_threads`, passed to the job as configured, whatever ``--cores`` says)."""
    return train_param(wildcards, "threads", config["torch_threads"])


def train_param(wildcards, key, default):
    """Cluster resources of a training run, from ``training.<model>.params`` (gpus, threads,
    mem_mb, runtime); ``processes`` > 1 runs torch DDP through torchrun inside the job."""
    return config["training"][wildcards.model]["params"].get(key, default)
