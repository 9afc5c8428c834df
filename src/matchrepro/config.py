"""Load and validate the workflow configuration.

The JSON schema ``schemas/config.schema.yaml`` is the documentation of every key; it is
applied when the Snakefile is parsed and by the CLI. Defaults from the schema are filled in,
unknown keys are errors, and every error is one line naming the offending key.
"""

from __future__ import annotations

import copy
from pathlib import Path

import yaml
from jsonschema import Draft202012Validator, validators

from matchrepro.errors import ConfigError

SCHEMA_PATH = Path(__file__).parent / "schemas" / "config.schema.yaml"
# preprocessing kinds each model trains on (`data`) and validates on (`validation`)
TRAINING_DATA_KINDS = {"imp": ("imp_dump", "imp_pairs"), "eimp": ("imp_dump", "imp_pairs"),
                       "patch2pix": ("patch2pix_pairs",), "ncnet": ("patch2pix_pairs",)}
VALIDATION_KIND = {"imp": "imp_dump", "eimp": "imp_dump", "patch2pix": "patch2pix_pairs", "ncnet": "patch2pix_pairs"}


def _with_defaults(cls):
    validate_props = cls.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for prop, sub in properties.items():
                if prop not in instance:
                    default = _default_of(validator, sub)
                    if default is not _MISSING:
                        instance[prop] = copy.deepcopy(default)
        yield from validate_props(validator, properties, instance, schema)

    return validators.extend(cls, {"properties": set_defaults})


_MISSING = object()
_ROOT_SCHEMA: dict = {}


def _default_of(validator, sub):
    if "default" in sub:
        return sub["default"]
    if "$ref" in sub:  # local references only ("#/$defs/...")
        target = _ROOT_SCHEMA
        for part in sub["$ref"].lstrip("#/").split("/"):
            target = target[part]
        return target.get("default", _MISSING)
    return _MISSING


_Validator = _with_defaults(Draft202012Validator)


def load_schema() -> dict:
    return yaml.safe_load(SCHEMA_PATH.read_text())


def _path_of(error) -> str:
    parts = [str(p) for p in error.absolute_path]
    return ".".join(parts) if parts else "<top level>"


def validate_config(config: dict, source: str = "config") -> dict:
    """Validate ``config`` in place (filling defaults) and check cross references.

    Raises:
        ConfigError: ``<source>: <key.path>: <what is wrong>`` on the first problem found.
    """
    schema = load_schema()
    _ROOT_SCHEMA.clear()
    _ROOT_SCHEMA.update(schema)
    validator = _Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: (len(list(e.absolute_path)), str(e.absolute_path)))
    if errors:
        e = errors[0]
        msg = e.message
        if e.validator == "additionalProperties":
            extra = sorted(set(e.instance) - set(e.schema.get("properties", {})))
            key = _path_of(e)
            full = ".".join(p for p in [key if key != "<top level>" else "", extra[0] if extra else ""] if p)
            raise ConfigError(f"{source}: unknown key '{full}'")
        if e.validator == "required":
            missing = [r for r in e.validator_value if r not in e.instance]
            key = _path_of(e)
            full = ".".join(p for p in [key if key != "<top level>" else "", missing[0]] if p)
            raise ConfigError(f"{source}: missing key '{full}'")
        raise ConfigError(f"{source}: {_path_of(e)}: {msg}")
    _check_references(config, source)
    _fill_derived(config, source)
    return config


SELECTION_KEYS = ("threshold", "refine_fallback")
"""Matcher keys that only select among Patch2Pix's refined matches (no network change)."""


def network_of(method: dict) -> dict:
    """A method block without what only selects among its refined matches (name, description,
    ``from_cache_of`` and the matcher's :data:`SELECTION_KEYS`): two methods with equal
    ``network_of`` compute the same refined matches."""
    m = {k: v for k, v in method.items() if k not in ("name", "description", "from_cache_of")}
    m["matcher"] = {k: v for k, v in method["matcher"].items() if k not in SELECTION_KEYS}
    return m


def _check_from_cache_of(config: dict, source: str, name: str, m: dict, c: str) -> None:
    """``methods.<name>.from_cache_of: c``: both patch2pix, ``c`` runs its network, and the two
    differ only in what selects among the refined matches (:func:`network_of`)."""
    key = f"{source}: methods.{name}.from_cache_of"
    if m["matcher"]["type"] != "patch2pix":
        raise ConfigError(f"{key}: only a patch2pix matcher re-thresholds another method's cache")
    b = config["methods"].get(c)
    if b is None or c == name or b.get("from_cache_of"):
        raise ConfigError(f"{key}: '{c}' is not another method that runs its own network")
    mine, theirs = network_of(m), network_of(b)
    differ = [k for k in sorted(set(mine) | set(theirs)) if mine.get(k) != theirs.get(k)]
    if differ:
        raise ConfigError(f"{key}: '{c}' has another '{differ[0]}'; only matcher.threshold and "
                          "matcher.refine_fallback may differ")


def _check_references(config: dict, source: str) -> None:
    for name, m in config["methods"].items():
        r = m.get("refines")
        if r is not None:
            if m["matcher"]["type"] != "patch2pix":
                raise ConfigError(f"{source}: methods.{name}.refines: only a patch2pix matcher refines other matches")
            if r not in config["methods"] or r == name or config["methods"][r].get("refines"):
                raise ConfigError(f"{source}: methods.{name}.refines: '{r}' is not another (unrefined) method")
        c = m.get("from_cache_of")
        if c is not None:
            _check_from_cache_of(config, source, name, m, c)
        if m["features"] is not None and m["features"] not in config["features"]:
            raise ConfigError(f"{source}: methods.{name}.features: unknown features '{m['features']}'")
        if m["matcher"]["type"] == "nearest_neighbour" and m["features"] is None:
            raise ConfigError(f"{source}: methods.{name}.features: a nearest_neighbour matcher needs features")
        w = m.get("weights")
        if w is not None and w not in config["weights"] and w not in config["training"]:
            raise ConfigError(f"{source}: methods.{name}.weights: '{w}' is neither in weights nor in training")
    for name, b in config["benchmarks"].items():
        if b["dataset"] not in config["datasets"]:
            raise ConfigError(f"{source}: benchmarks.{name}.dataset: unknown dataset '{b['dataset']}'")
        for m in b["methods"]:
            if m not in config["methods"]:
                raise ConfigError(f"{source}: benchmarks.{name}.methods: unknown method '{m}'")
        for p in b["protocols"]:
            if p not in config["protocols"]:
                raise ConfigError(f"{source}: benchmarks.{name}.protocols: unknown protocol '{p}'")
    for name, t in config["training"].items():
        if t["model"] != "toy" and t["data"] not in config["preprocessing"]:
            raise ConfigError(f"{source}: training.{name}.data: unknown preprocessing run '{t['data']}'")
        wants = TRAINING_DATA_KINDS.get(t["model"])
        if wants and config["preprocessing"][t["data"]]["kind"] not in wants:
            raise ConfigError(f"{source}: training.{name}.data: the {t['model']} model trains on "
                              f"{' or '.join(wants)} runs, '{t['data']}' is "
                              f"{config['preprocessing'][t['data']]['kind']}")
        if t["init"] is not None and t["init"] not in config["weights"] and t["init"] not in config["training"]:
            raise ConfigError(f"{source}: training.{name}.init: unknown weights '{t['init']}'")
        v = t.get("validation")
        if v is not None:
            if v not in config["preprocessing"]:
                raise ConfigError(f"{source}: training.{name}.validation: unknown preprocessing run '{v}'")
            val_kind = VALIDATION_KIND.get(t["model"])
            if val_kind is None:
                raise ConfigError(f"{source}: training.{name}.validation: the {t['model']} model takes no "
                                  "validation split")
            if config["preprocessing"][v]["kind"] != val_kind:
                raise ConfigError(f"{source}: training.{name}.validation: the {t['model']} model validates on a "
                                  f"{val_kind} run, '{v}' is {config['preprocessing'][v]['kind']}")
            if v == t["data"]:
                raise ConfigError(f"{source}: training.{name}.validation: the validation split must not be the "
                                  "training data")
    for name, p in config["preprocessing"].items():
        if p["dataset"] not in config["datasets"]:
            raise ConfigError(f"{source}: preprocessing.{name}.dataset: unknown dataset '{p['dataset']}'")
        if config["datasets"][p["dataset"]]["format"] != "megadepth_d2net":
            raise ConfigError(f"{source}: preprocessing.{name}.dataset: '{p['dataset']}' is not a MegaDepth dataset")
        f = p["params"].get("features")
        if p["kind"] in ("imp_dump", "imp_pairs") and f not in config["features"]:
            raise ConfigError(f"{source}: preprocessing.{name}.params.features: unknown features '{f}'")
    for name, d in config["datasets"].items():
        needs = {"superglue_pairs": ["pairs_file"], "calibrated_pairs": ["pairs_file"],
                 "loftr_scannet": ["pairs_file", "intrinsics_file"], "oanet_yfcc": ["scenes"]}
        for key in needs.get(d["format"], []):
            if key not in d:
                raise ConfigError(f"{source}: missing key 'datasets.{name}.{key}'")
        if d["source"] == "demo" and "demo" not in d:
            raise ConfigError(f"{source}: missing key 'datasets.{name}.demo' (source is demo)")
        if d["source"] == "local" and "root" not in d:
            raise ConfigError(f"{source}: missing key 'datasets.{name}.root' (source is local)")
        r = d["resize"]
        if r["mode"] in ("long_side", "max_long_side") and "size" not in r:
            raise ConfigError(f"{source}: missing key 'datasets.{name}.resize.size'")
        if r["mode"] == "exact" and not {"width", "height"} <= set(r):
            raise ConfigError(f"{source}: missing key 'datasets.{name}.resize.width/height'")


def _fill_derived(config: dict, source: str) -> None:
    """Default roots by source and ``name`` fields, so each block is self-describing."""
    for section in ("datasets", "features", "methods", "protocols", "training", "preprocessing", "weights"):
        for name, block in config.get(section, {}).items():
            block["name"] = name
    for name, d in config["datasets"].items():
        if "root" not in d:
            d["root"] = f"resources/demo/{name}" if d["source"] == "demo" else f"resources/datasets/{name}"
        if "demo" in d:
            d["demo"].setdefault("seed", config["seed"])


def demo_settings(**values) -> dict:
    """A demo-builder block (``datasets.<name>.demo``) with the schema's defaults filled in."""
    props = load_schema()["$defs"]["dataset"]["properties"]["demo"]["properties"]
    out = {k: copy.deepcopy(v["default"]) for k, v in props.items() if "default" in v}
    out.setdefault("seed", 0)
    unknown = set(values) - set(props) - {"pairs_file"}
    if unknown:
        raise ConfigError(f"unknown demo keys: {sorted(unknown)}")
    out.update(values)
    return out


def check_local_datasets(config: dict, source: str = "config") -> None:
    """A ``source: local`` dataset must already exist on disk (no rule can make it)."""
    for name, d in config["datasets"].items():
        if d["source"] == "local" and not Path(d["root"]).is_dir():
            raise ConfigError(f"{source}: datasets.{name}.root: dataset folder not found: {d['root']}")


def load_config(path: str | Path) -> dict:
    """Read a YAML config file and validate it."""
    path = Path(path)
    try:
        config = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    return validate_config(config, str(path))


def effective_resize(config: dict, dataset: str | None, method: str | None = None, features: str | None = None) -> dict:
    """The resize rule for (dataset, method/features): method or features override, else the
    dataset's rule (none without a dataset: images of your own)."""
    if method is not None and config["methods"][method].get("resize"):
        return config["methods"][method]["resize"]
    if features is not None and config["features"][features].get("resize"):
        return config["features"][features]["resize"]
    return config["datasets"][dataset]["resize"] if dataset is not None else {"mode": "none"}


def effective_features(config: dict, features: str, dataset: str) -> dict:
    """Features block with the dataset's keypoint budget applied."""
    f = dict(config["features"][features])
    if config["datasets"][dataset].get("max_keypoints"):
        f["max_keypoints"] = config["datasets"][dataset]["max_keypoints"]
    return f
