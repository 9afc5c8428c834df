"""The SLURM test's workflow runs, started in a background thread as soon as pytest has collected
that test, so that they overlap the rest of the suite.

Why: the SLURM run is mostly waiting. The Snakemake SLURM executor polls job status at a
back-off interval (``slurm-init-seconds-before-status-checks``, then +10 s per poll that finds
nothing finished), so each level of the DAG waits ~10 s whatever its jobs cost; the 14 jobs of
the small config take about 100 s of wall time but a fraction of that in CPU. Started at
collection time, the cluster (and its Debian packages, where CI installs them) and both runs
proceed while other tests use the CPUs; the test itself then only waits for the end and checks.

``start(items)`` is called from ``tests/conftest.py`` after collection; ``result()`` (the test)
waits for the thread and returns what it measured; ``stop()`` (session end) waits for the thread,
so the cluster's daemons are always stopped before pytest exits, and removes the scratch folder.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from tests.background_runs import failure, snakemake_command
from tests.conftest import REPO

TEST_FILE = "tests/slurm/test_slurm_workflow.py"
BENCHMARKS = ("yfcc", "hpatches")  # a sharded and an unsharded benchmark
TIMEOUT_S = 900  # per workflow run


@dataclass
class Runs:
    """What the two runs left: their working folders, the SLURM run's output, and any error."""

    base: Path
    local: Path = field(init=False)
    remote: Path = field(init=False)
    slurm_log: str = ""
    unavailable: str | None = None  # why no cluster could be started (the test skips)
    error: str | None = None  # a run that failed (the test fails with it)
    procs: list = field(default_factory=list)  # the running Snakemake processes (stopped on Ctrl-C)

    def __post_init__(self):
        self.local, self.remote = self.base / "local", self.base / "slurm"


_thread: threading.Thread | None = None
_runs: Runs | None = None


def small_config(work: Path) -> Path:
    """The demo config, smaller: YFCC in 2 shards (match_pairs_shard, evaluate_shard, gather) and
    HPatches unsharded, SIFT + mutual NN on fewer scenes/pairs, and a toy training run on the 'GPU'.
    The learned demo methods train and match locally (tests/workflow)."""
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    d = cfg["datasets"]
    d["yfcc"]["demo"].update(scenes=1, images_per_scene=4, pairs_per_scene=3, middlebury=False)
    d["yfcc"]["shards"] = 2
    d["hpatches"]["demo"].update(illumination=1, viewpoint=1)
    cfg["benchmarks"] = {k: cfg["benchmarks"][k] for k in BENCHMARKS}
    cfg["benchmarks"]["yfcc"]["protocols"] = ["pose_superglue"]
    cfg["benchmarks"]["hpatches"]["protocols"] = ["hpatches_mma", "homography_loftr"]
    cfg["methods"] = {"sift_mnn": cfg["methods"]["sift_mnn"]}
    for b in cfg["benchmarks"].values():
        b["methods"] = ["sift_mnn"]
    cfg["training"] = {"toy_gpu": {"model": "toy", "params": {"steps": 20, "gpus": 1, "threads": 1}}}
    path = work / "small.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def snakemake_cmd(work: Path, cfg: Path, *args) -> list[str]:
    return snakemake_command(work, TIMEOUT_S, "results/tables", "results/training/toy_gpu/model_best.pth",
                             "--configfile", str(cfg), *args)


def _run_both(runs: Runs) -> None:
    from tests.slurm.cluster import Cluster, ClusterUnavailable

    runs.local.mkdir(parents=True)
    runs.remote.mkdir()
    cfg = small_config(runs.base)
    try:
        with Cluster(runs.base / "state"):
            # the SLURM run mostly waits on the executor's polling: the local reference overlaps it
            slurm, local = (subprocess.Popen(snakemake_cmd(work, cfg, *args), stdout=subprocess.PIPE,
                                             stderr=subprocess.PIPE, text=True)
                            for work, args in ((runs.remote, ("--profile", str(REPO / "profiles" / "slurm-ci"))),
                                               (runs.local, ("--cores", "2"))))
            runs.procs = [slurm, local]
            done = {}
            for name, p in (("local", local), ("SLURM", slurm)):
                out, err = p.communicate()
                done[name] = subprocess.CompletedProcess(p.args, p.returncode, out, err)
            runs.slurm_log = done["SLURM"].stdout + done["SLURM"].stderr
            for name, r in done.items():
                if r.returncode != 0 and runs.error is None:
                    runs.error = failure(f"{name} run", r)
    except ClusterUnavailable as e:
        runs.unavailable = str(e)
    except Exception as e:  # reported by the test, not lost in the thread
        runs.error = f"{type(e).__name__}: {e}"


def start(items=None) -> None:
    """Start the runs in a background thread, once, if the SLURM test is among ``items`` (pytest's
    selected items; None: start unconditionally)."""
    global _thread, _runs
    if _thread is not None:
        return
    if items is not None and not any(TEST_FILE in item.nodeid for item in items):
        return
    _runs = Runs(Path(tempfile.mkdtemp(prefix="matchrepro-slurm-")))
    _thread = threading.Thread(target=_run_both, args=(_runs,), name="slurm-workflow-runs", daemon=True)
    _thread.start()


def result() -> Runs:
    """Wait for the runs (starting them now if collection did not) and return them."""
    start()
    _thread.join()
    return _runs


def stop(interrupted: bool = False) -> None:
    """Session end: wait for the thread (its cluster stops with it; after an interrupted session
    the runs are terminated first); remove the scratch folder unless a run failed (then it is kept
    for a look and its path is in the test's message)."""
    if _thread is None:
        return
    if interrupted:
        for p in _runs.procs:
            p.terminate()
    _thread.join()
    if _runs.error is None:
        shutil.rmtree(_runs.base, ignore_errors=True)
