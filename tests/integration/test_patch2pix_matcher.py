"""Patch2Pix and NCNet run as workflow matchers from a checkpoint in the official format.

The CLI runs in this process (tests/cli_in_process.py): the same entry point as ``python -m
matchrepro``, without a 3 s interpreter start-up per call."""

import argparse
import json

import h5py
import numpy as np
import pytest
import torch

from matchrepro.config import demo_settings, load_config
from matchrepro.demo import builders
from matchrepro.models.patch2pix import Patch2Pix
from tests.cli_in_process import run_cli
from tests.conftest import REPO


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("p2p")
    builders.build_hpatches(tmp / "hp", demo_settings(kind="hpatches", illumination=1, viewpoint=1, size=[176, 128]))
    torch.manual_seed(0)
    net = Patch2Pix()
    ckpt = {"last_epoch": 0, "backbone": "ResNet34", "feat_idx": [0, 1, 2, 3], "change_stride": True,
            "regressor_config": argparse.Namespace(psize=[16, 16], panc=8),
            "state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}}
    torch.save(ckpt, tmp / "patch2pix_pretrained.pth")
    cfg = load_config(REPO / "configs" / "paper.yaml")
    ds = dict(cfg["datasets"]["hpatches"], root=str(tmp / "hp"), exclude=[], expected_sequences=None)
    ds.pop("shards")
    return tmp, cfg, ds


@pytest.mark.parametrize("method", ["patch2pix", "ncnet"])
def test_match_and_evaluate(setup, method):
    tmp, cfg, ds = setup
    m = dict(cfg["methods"][method])
    m["matcher"] = dict(m["matcher"], threshold=0.0)
    spec = {"dataset": ds, "method": m, "features": None, "resize": m["resize"]}
    out = tmp / f"{method}.h5"
    r = run_cli(["match-dataset", "--spec", json.dumps(spec), "--weights", str(tmp / "patch2pix_pretrained.pth"),
                 "--out", str(out)])
    assert r.returncode == 0, r.stderr[-3000:]
    with h5py.File(out, "r") as f:
        g = f["pair_000000"]
        k0, k1, mt = g["keypoints0"][()], g["keypoints1"][()], g["matches"][()]
        assert len(k0) == len(k1) == len(mt) > 0 and np.array_equal(mt[:, 0], mt[:, 1])
        # 176 x 128 is already a multiple of 16 and below 1024: scale 1, coordinates inside the image
        assert np.allclose(g.attrs["scale0"], 1.0)
        assert k0[:, 0].max() <= 176 and k1[:, 1].max() <= 128
    espec = dict(spec, protocol=cfg["protocols"]["hpatches_mma"], max_keypoints=None)
    r = run_cli(["evaluate", "--spec", json.dumps(espec), "--predictions", str(out), "--out", str(tmp / f"{method}.json"),
                 "--pairs-out", str(tmp / f"{method}.csv")])
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((tmp / f"{method}.json").read_text())["summary"]
    assert 0.0 <= summary["mma@3px"] <= 1.0 and summary["mean_matches"] > 0


def test_wrong_checkpoint_is_refused_with_one_line(setup):
    tmp, cfg, ds = setup
    torch.save({"state_dict": {"extract.conv1.weight": torch.zeros(1)}}, tmp / "bad.pth")
    m = cfg["methods"]["patch2pix"]
    spec = {"dataset": ds, "method": m, "features": None, "resize": m["resize"]}
    r = run_cli(["match-dataset", "--spec", json.dumps(spec), "--weights", str(tmp / "bad.pth"), "--out", str(tmp / "bad.h5")])
    assert r.returncode == 1 and not (tmp / "bad.h5").exists()
    line = r.stderr.strip().splitlines()[-1]
    assert line.startswith(f"error: {tmp / 'bad.pth'} does not fit Patch2Pix: 275 missing")


def test_patch2pix_refines_another_methods_cached_matches(setup):
    """A ``refines`` method reads the base cache, moves each match by at most 8 + 8 px (two
    regressor levels) and keeps the confident ones; a refiner without the base cache is refused."""
    tmp, cfg, ds = setup
    base = dict(cfg["methods"]["ncnet"], name="ncnet")
    base["matcher"] = dict(base["matcher"], threshold=0.0)
    bspec = {"dataset": ds, "method": base, "features": None, "resize": base["resize"]}
    weights = str(tmp / "patch2pix_pretrained.pth")
    run = lambda spec, out, *extra: run_cli(  # noqa: E731
        ["match-dataset", "--spec", json.dumps(spec), "--weights", weights, "--out", str(out), *extra])
    r = run(bspec, tmp / "base.h5")
    assert r.returncode == 0, r.stderr[-3000:]
    ref = dict(cfg["methods"]["patch2pix"], name="p2p_refined", refines="ncnet")
    ref["matcher"] = dict(ref["matcher"], threshold=0.0)
    rspec = {"dataset": ds, "method": ref, "features": None, "resize": ref["resize"]}
    r = run(rspec, tmp / "refined.h5", "--base", str(tmp / "base.h5"))
    assert r.returncode == 0, r.stderr[-3000:]
    with h5py.File(tmp / "base.h5", "r") as fb, h5py.File(tmp / "refined.h5", "r") as fr:
        assert sorted(fb.keys()) == sorted(fr.keys())
        for key in fb.keys():
            b0, b1 = fb[key]["keypoints0"][()], fb[key]["keypoints1"][()]
            r0, r1, s = fr[key]["keypoints0"][()], fr[key]["keypoints1"][()], fr[key]["scores"][()]
            assert 0 < len(r0) <= len(b0) and np.all((s > 0) & (s <= 1))
            # every refined match lies within 16 px of some base match, in both images
            d = np.maximum(np.abs(r0[:, None] - b0[None]).max(2), np.abs(r1[:, None] - b1[None]).max(2))
            assert d.min(1).max() <= 16.0 + 1e-3
    r = run(rspec, tmp / "nobase.h5")
    assert r.returncode == 1 and "refines" in r.stderr.strip().splitlines()[-1] and not (tmp / "nobase.h5").exists()


class _Network:
    """The model functions straight, at a given threshold (the path that predates the cached
    refined matches): one model load, then keypoints0/1, matches and scores of one pair."""

    def __init__(self, tmp, ds, method):
        from matchrepro.datasets.benchmark import open_benchmark
        from matchrepro.matchers.patch2pix import Patch2PixMatcher

        self.bench, self.method = open_benchmark(ds), method
        self.matcher = Patch2PixMatcher(method, tmp / "patch2pix_pretrained.pth", "cpu")

    def __call__(self, threshold, pair, base=None, keep_all_if_none=True):
        from matchrepro.matchers.patch2pix import to_tensor
        from matchrepro.models.patch2pix import predict, refine_matches
        from matchrepro.pipeline.extract import load_upright

        p = self.bench.pairs[pair]
        (im0, s0, _), (im1, s1, _) = (load_upright(self.bench.image_dir / n, r, self.method["resize"], grayscale=False)
                                      for n, r in ((p.name0, p.rot0), (p.name1, p.rot1)))
        x0, x1 = to_tensor(im0, self.matcher.device), to_tensor(im1, self.matcher.device)
        with torch.no_grad():
            if base is None:
                out = predict(self.matcher.model, x0, x1, threshold)
            else:
                m = np.concatenate([base[0] / np.asarray(s0), base[1] / np.asarray(s1)], 1)
                out = refine_matches(self.matcher.model, x0, x1, torch.from_numpy(m).float(), threshold,
                                     keep_all_if_none)
        return self.matcher._to_original(out, s0, s1)


def test_from_cache_of_equals_the_network_at_its_threshold_bit_for_bit(setup):
    """``from_cache_of`` re-thresholds the refined matches a Patch2Pix cache keeps (no network):
    at a threshold splitting the matches, and at one no match passes (the release keeps all, a
    refiner with ``refine_fallback: none`` keeps none), the cache equals what the model functions
    give at that threshold; a base from another network or dataset is refused in one line."""
    tmp, cfg, ds = setup
    weights = str(tmp / "patch2pix_pretrained.pth")
    run = lambda spec, out, *extra: run_cli(  # noqa: E731
        ["match-dataset", "--spec", json.dumps(spec), "--out", str(out), *extra])
    base = dict(cfg["methods"]["patch2pix"], name="patch2pix")
    bspec = {"dataset": ds, "method": base, "features": None, "resize": base["resize"]}
    r = run(bspec, tmp / "p2p_all.h5", "--weights", weights)
    assert r.returncode == 0, r.stderr[-3000:]
    with h5py.File(tmp / "p2p_all.h5", "r") as f:
        keys = sorted(f.keys())
        everything = np.concatenate([f[k]["all_scores"][()] for k in keys])
        assert all(len(f[k]["all_scores"]) >= len(f[k]["scores"]) for k in keys)
    split = float(np.median(everything))
    assert (everything > split).any() and (everything <= split).any()
    network = _Network(tmp, ds, dict(cfg["methods"]["patch2pix_c09"], name="c"))
    for threshold in (split, 1.0):
        m = dict(cfg["methods"]["patch2pix_c09"], name="c", from_cache_of="patch2pix")
        m["matcher"] = dict(m["matcher"], threshold=threshold)
        spec = {"dataset": ds, "method": m, "features": None, "resize": m["resize"]}
        out = tmp / f"c{threshold}.h5"
        r = run(spec, out, "--base", str(tmp / "p2p_all.h5"))
        assert r.returncode == 0, r.stderr[-3000:]
        with h5py.File(out, "r") as f:
            assert sorted(f.keys()) == keys and json.loads(f.attrs["config"])["method"]["name"] == "c"
            for k in keys:
                want = network(threshold, int(k[5:]))
                for name in ("keypoints0", "keypoints1", "matches", "scores"):
                    np.testing.assert_array_equal(f[k][name][()], want[name])
                    assert f[k][name].dtype == want[name].dtype
                assert threshold < 1.0 or len(want["scores"]) == len(f[k]["scores"]) > 0  # none passes 1.0: all kept
    # a refiner: cached refined matches of another method's matches, re-thresholded with fallback none
    nc = dict(cfg["methods"]["ncnet"], name="ncnet")
    r = run({"dataset": ds, "method": nc, "features": None, "resize": nc["resize"]}, tmp / "nc.h5", "--weights", weights)
    assert r.returncode == 0, r.stderr[-3000:]
    ref = dict(cfg["methods"]["patch2pix"], name="ref", refines="ncnet")
    r = run({"dataset": ds, "method": ref, "features": None, "resize": ref["resize"]}, tmp / "ref.h5",
            "--weights", weights, "--base", str(tmp / "nc.h5"))
    assert r.returncode == 0, r.stderr[-3000:]
    strict = dict(ref, name="ref_strict", from_cache_of="ref")
    strict["matcher"] = dict(ref["matcher"], threshold=1.0, refine_fallback="none")
    r = run({"dataset": ds, "method": strict, "features": None, "resize": strict["resize"]}, tmp / "strict.h5",
            "--base", str(tmp / "ref.h5"))
    assert r.returncode == 0, r.stderr[-3000:]
    with h5py.File(tmp / "strict.h5", "r") as f, h5py.File(tmp / "nc.h5", "r") as fn:
        for k in fn.keys():
            g = fn[k]
            pts = (g["keypoints0"][()][g["matches"][()][:, 0]], g["keypoints1"][()][g["matches"][()][:, 1]])
            want = network(1.0, int(k[5:]), base=pts, keep_all_if_none=False)
            assert len(f[k]["scores"]) == len(want["scores"]) == 0
    # refused: a base made by another network (NCNet's cache), or for another dataset
    m = dict(cfg["methods"]["patch2pix_c09"], name="c", from_cache_of="patch2pix")
    spec = {"dataset": ds, "method": m, "features": None, "resize": m["resize"]}
    r = run(spec, tmp / "bad_base.h5", "--base", str(tmp / "nc.h5"))
    line = r.stderr.strip().splitlines()[-1]
    assert r.returncode == 1 and "not made by the network of methods.c.from_cache_of" in line and not (tmp / "bad_base.h5").exists()
    r = run(dict(spec, dataset=dict(ds, name="other")), tmp / "bad_ds.h5", "--base", str(tmp / "p2p_all.h5"))
    line = r.stderr.strip().splitlines()[-1]
    assert r.returncode == 1 and "different 'dataset' config" in line and not (tmp / "bad_ds.h5").exists()
