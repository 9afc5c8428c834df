import numpy as np
import pandas as pd
import pytest

from matchrepro.errors import DatasetError
from matchrepro.reporting.published import compare, load_published
from matchrepro.reporting.worst import worst_pairs
from tests.conftest import REPO

PUB = [{"benchmark": "yfcc", "label": "IMP", "method": "imp_superpoint", "protocol": "pose_imp_yfcc",
        "metrics": {"auc@5deg": 38.45, "auc@10deg": 58.52}, "source": "README", "tag": "code"},
       {"benchmark": "yfcc", "label": "SG", "method": None, "protocol": "pose_superglue",
        "metrics": {"auc@5deg": 39.02}, "source": "README", "tag": "code"}]


def ours(source, protocol):
    return pd.DataFrame([{"method": "imp_superpoint", "dataset": "yfcc", "source": source, "protocol": protocol,
                          "auc@5deg": 40.0, "auc@10deg": 60.0}])


def test_difference_only_for_same_protocol_on_real_data():
    df = compare(ours("download", "pose_imp_yfcc"), PUB, "yfcc", "yfcc")
    row = df[(df.published_label == "IMP") & (df.metric == "auc@5deg")].iloc[0]
    assert row.status == "compared" and row.difference == pytest.approx(40.0 - 38.45)
    assert df[df.published_label == "SG"].iloc[0].status.startswith("reference only")
    demo = compare(ours("demo", "pose_imp_yfcc"), PUB, "yfcc", "yfcc")
    assert demo.difference.isna().all() and (demo[demo.published_label == "IMP"].status
                                             == "not compared: ours is on demo data").all()
    other = compare(ours("download", "pose_superglue"), PUB, "yfcc", "yfcc")
    imp = other[other.published_label == "IMP"].iloc[0]
    assert imp.status == "not compared: protocol differs (pose_superglue)" and np.isnan(imp.difference)


def test_shipped_published_numbers_are_well_formed():
    import yaml

    entries = load_published(REPO / "report" / "published.yaml")
    protocols = set(yaml.safe_load((REPO / "configs" / "paper.yaml").read_text())["protocols"])
    assert {e["benchmark"] for e in entries} == {"yfcc", "scannet", "hpatches"}
    for e in entries:
        assert e["tag"] in {"code", "3rd-party", "derived", "recalled-UNVERIFIED"}
        # a published entry that names one of our methods is tied to one of our protocols
        if e["method"] in ("imp_superpoint", "eimp_superpoint", "patch2pix", "ncnet", "superpoint_mnn"):
            assert e["protocol"] in protocols, e["label"]


def test_worst_pairs_ranks_failures_first(tmp_path):
    f = tmp_path / "p.csv"
    pd.DataFrame({"pair_index": [0, 1, 2, 3], "name0": list("abcd"), "name1": list("efgh"),
                  "pose_error_deg": [1.0, np.inf, 30.0, 2.0], "num_matches": [5, 0, 9, 7]}).to_csv(f, index=False)
    assert worst_pairs(f, 2).pair_index.tolist() == [1, 2]
    mma = tmp_path / "m.csv"
    pd.DataFrame({"pair_index": [0, 1], "mma@3px": [0.9, 0.1]}).to_csv(mma, index=False)
    assert worst_pairs(mma, 1).pair_index.tolist() == [1]
    with pytest.raises(DatasetError, match="no column 'nope'"):
        worst_pairs(f, 1, by="nope")


def _pairs_csv(path, errors, order=None):
    n = len(errors)
    df = pd.DataFrame({"pair_index": range(n), "name0": [f"s/a{i}.jpg" for i in range(n)],
                       "name1": [f"s/b{i}.jpg" for i in range(n)], "pose_error_deg": errors})
    (df if order is None else df.iloc[order]).to_csv(path, index=False)
    return path


def test_paired_auc_difference_is_the_difference_with_a_paired_interval(tmp_path):
    """The difference is other's AUC minus base's on the same pairs; its interval comes from
    resampling pairs for both at once, so a method that is better by 1 degree on every pair
    gets an interval above zero, far narrower than the two per-method intervals suggest."""
    from matchrepro.evaluation import metrics
    from matchrepro.evaluation.evaluate import bootstrap_auc
    from matchrepro.reporting.compare import format_comparison, paired_auc_difference

    rng = np.random.default_rng(3)
    base = np.concatenate([rng.uniform(1.5, 25.0, 40), [np.inf, np.nan]])
    better = base - 1.0  # better on every pair (failures stay failures)
    a = _pairs_csv(tmp_path / "a.csv", base)
    b = _pairs_csv(tmp_path / "b.csv", better, order=rng.permutation(len(base)))  # row order must not matter
    df = paired_auc_difference(a, b, thresholds=[10, 20]).set_index("threshold_deg")
    for t in (10, 20):
        expected = 100 * (metrics.pose_auc(better, [t])[0] - metrics.pose_auc(base, [t])[0])
        assert df.loc[t, "difference"] == pytest.approx(expected) and expected > 0
        assert 0 < df.loc[t, "ci_low"] <= df.loc[t, "difference"] <= df.loc[t, "ci_high"]
        assert df.loc[t, "not_above_fraction"] == 0.0
        (lo_a, hi_a), = bootstrap_auc(base, [t])
        (lo_b, hi_b), = bootstrap_auc(better, [t])
        assert df.loc[t, "ci_low"] > lo_b - hi_a and df.loc[t, "ci_high"] - df.loc[t, "ci_low"] < 0.5 * (hi_a - lo_a)
    same = paired_auc_difference(a, a, thresholds=[10])
    assert same.difference.iloc[0] == 0 and same.ci_low.iloc[0] == same.ci_high.iloc[0] == 0
    assert same.not_above_fraction.iloc[0] == 1.0 and same.num_pairs.iloc[0] == len(base)
    text = format_comparison(df.reset_index(), "sift_mnn", "imp")
    assert text.splitlines()[0] == "imp minus sift_mnn, 42 pairs, paired bootstrap over pairs:"
    assert "AUC@10deg:" in text and "not above in 0.0 %" in text


def test_paired_difference_of_error_arrays_is_the_csv_comparison(tmp_path):
    """The array form (benchmarks/imp_speed.py scores EIMP against IMP with it) gives the CSV
    form's numbers on the same pairs, and refuses arrays of different lengths."""
    from matchrepro.reporting.compare import paired_auc_difference, paired_auc_difference_of_errors

    rng = np.random.default_rng(5)
    base = np.concatenate([rng.uniform(0.5, 30.0, 30), [np.inf]])
    other = base * rng.uniform(0.6, 1.3, len(base))
    d = paired_auc_difference_of_errors(base, other, thresholds=[10], resamples=200, seed=1)
    assert d.num_pairs.iloc[0] == 31 and d.ci_low.iloc[0] < d.difference.iloc[0] < d.ci_high.iloc[0]
    csv = paired_auc_difference(_pairs_csv(tmp_path / "a.csv", base), _pairs_csv(tmp_path / "b.csv", other),
                                thresholds=[10], resamples=200, seed=1)
    assert csv.equals(d)
    with pytest.raises(ValueError, match="one length"):
        paired_auc_difference_of_errors(base, other[:-1])


def test_paired_comparison_refuses_different_pairs(tmp_path):
    from tests.cli_in_process import run_cli

    a = _pairs_csv(tmp_path / "a.csv", [1.0, 2.0, 3.0])
    b = _pairs_csv(tmp_path / "b.csv", [1.0, 2.0])
    r = run_cli(["compare", str(a), str(b)])
    assert r.returncode != 0 and "do not hold the same pairs (3 and 2 rows)" in r.stderr and str(b) in r.stderr
    pd.DataFrame({"pair_index": [0], "mma@3px": [0.5]}).to_csv(tmp_path / "m.csv", index=False)
    r = run_cli(["compare", str(a), str(tmp_path / "m.csv")])
    assert r.returncode != 0 and "not relative-pose per-pair results" in r.stderr
    ok = run_cli(["compare", str(a), str(a), "--thresholds", "10", "--resamples", "50"])
    assert ok.returncode == 0 and "AUC@10deg: " in ok.stdout and "= +0.00" in ok.stdout


def test_training_curves_plot_every_run_and_skip_nan_steps(tmp_path):
    import subprocess
    import sys

    from tests.cli_in_process import run_cli

    logs = []
    for name, n in (("ncnet_demo", 30), ("patch2pix_demo", 20)):
        d = tmp_path / name
        d.mkdir()
        loss = np.linspace(5, 1, n)
        loss[3] = np.nan  # a skipped step
        pd.DataFrame({"step": np.arange(1, n + 1), "epoch": 0, "loss": loss, "lr": 1e-3, "seconds": 0.1}).to_csv(
            d / "loss.csv", index=False)
        logs.append(str(d / "loss.csv"))
    out = tmp_path / "fig"
    r = run_cli(["training-curves", "--logs", *logs, "--out", str(out)])  # in this process (no 3 s start-up)
    assert r.returncode == 0, r.stderr
    assert (out / "loss_curves.png").stat().st_size > 5000 and (out / "loss_curves.pdf").is_file()
    r = subprocess.run([sys.executable, "-m", "matchrepro", "training-curves", "--logs", str(tmp_path / "no.csv"),
                        "--out", str(tmp_path / "bad")], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 1 and not (tmp_path / "bad").exists()
    assert r.stderr.strip().splitlines()[-1].startswith(f"error: {tmp_path / 'no.csv'}: cannot read the training log")
