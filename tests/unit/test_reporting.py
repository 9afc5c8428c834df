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
