import copy

import pytest
import yaml

from matchrepro.config import load_config, validate_config
from matchrepro.errors import ConfigError
from tests.conftest import REPO


@pytest.fixture
def demo_config():
    return yaml.safe_load((REPO / "config.yaml").read_text())


@pytest.mark.parametrize("path", ["config.yaml", "configs/paper.yaml"])
def test_shipped_configs_validate(path):
    cfg = load_config(REPO / path)
    assert set(cfg["benchmarks"]) == {"yfcc", "scannet", "hpatches"}


def test_defaults_are_filled(demo_config):
    cfg = validate_config(demo_config)
    assert cfg["protocols"]["pose_superglue"]["auc_thresholds_deg"] == [5, 10, 20]
    assert cfg["datasets"]["yfcc"]["root"] == "resources/demo/yfcc"
    assert cfg["datasets"]["hpatches"]["demo"]["seed"] == cfg["seed"]


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda c: c["datasets"]["yfcc"].update(reszie={}), "unknown key 'datasets.yfcc.reszie'"),
        (lambda c: c["protocols"]["pose_superglue"].update(threshold_px="one"),
         "protocols.pose_superglue.threshold_px: 'one' is not of type 'number'"),
        (lambda c: c["datasets"]["yfcc"].pop("format"), "missing key 'datasets.yfcc.format'"),
        (lambda c: c.update(sede=1), "unknown key 'sede'"),
        (lambda c: c["benchmarks"]["yfcc"].update(methods=["nope"]),
         "benchmarks.yfcc.methods: unknown method 'nope'"),
        (lambda c: c["datasets"]["scannet"].update(source="local"),
         "missing key 'datasets.scannet.root' (source is local)"),
        (lambda c: c["methods"]["patch2pix_demo"].update(refines="nope"),
         "methods.patch2pix_demo.refines: 'nope' is not another (unrefined) method"),
        (lambda c: c["methods"]["ncnet_demo"].update(refines="sift_mnn"),
         "methods.ncnet_demo.refines: only a patch2pix matcher refines other matches"),
        (lambda c: c["methods"]["patch2pix_demo_c09"].update(weights="ncnet_demo"),
         "methods.patch2pix_demo_c09.from_cache_of: 'patch2pix_demo' has another 'weights'; "
         "only matcher.threshold and matcher.refine_fallback may differ"),
        (lambda c: c["methods"]["patch2pix_demo_c09"].update(from_cache_of="patch2pix_demo_c09"),
         "methods.patch2pix_demo_c09.from_cache_of: 'patch2pix_demo_c09' is not another method that runs its own network"),
        (lambda c: c["methods"]["ncnet_demo"].update(from_cache_of="patch2pix_demo"),
         "methods.ncnet_demo.from_cache_of: only a patch2pix matcher re-thresholds another method's cache"),
    ],
)
def test_bad_config_gives_one_line_naming_the_key(demo_config, edit, message):
    cfg = copy.deepcopy(demo_config)
    edit(cfg)
    with pytest.raises(ConfigError) as e:
        validate_config(cfg, "config.yaml")
    assert str(e.value) == f"config.yaml: {message}"
    assert "\n" not in str(e.value)
