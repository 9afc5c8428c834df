"""IMP training pairs per second: offline (imp_dump files) against online (features and ground
truth made while training, with and without augmentations), on the demo's IMP scenes, and the
online pairs from 0, 1 and 2 DataLoader workers.

    python benchmarks/imp_online_throughput.py [--config config.yaml] [--scenes 2] [--pairs 40]
                                               [--num-keypoints 256] [--threads 2] [--workers 0 1 2]

Builds the config's ``megadepth_imp`` demo dataset in a scratch folder (``--scenes`` of them),
runs the offline dump (``imp_dump``, timed: its cost is paid once per dataset) and the online
pair lists (``imp_pairs``), then draws ``--pairs`` training pairs from each sampler
(:class:`IMPPairs`, :class:`IMPOnlinePairs`) and prints pairs per second. Data only: the
network step is the same in both modes (``benchmarks/imp_speed.py`` times it).

Workers: the training loop's path (:meth:`IMPOnlinePairs.loader`, batches of 2 keyed by step);
``steady`` leaves out the first batch (the workers' start-up: a spawned process imports torch and
OpenCV), ``total`` includes it. The batches are checked equal to the in-process ones. The issue's
reference: 11 pairs/s from SIFT in the training process before, ~50 pairs/s for the released
batch 16 on a GPU node.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from matchrepro.config import demo_settings, load_config
from matchrepro.datasets.imp_online import IMPOnlinePairs
from matchrepro.datasets.imp_training import IMPPairs
from matchrepro.demo import builders
from matchrepro.preprocessing import imp_dump, imp_pairs, scene_ids, scene_info_path


def rate(sampler, n: int) -> float:
    torch.manual_seed(0)
    order = [i % len(sampler.pairs) for i in range(n)]
    t0 = time.perf_counter()
    for k in range(0, n, 2):
        sampler.batch(order[k:k + 2])
    return n / (time.perf_counter() - t0)


def worker_rates(sampler, n: int, workers: int) -> tuple[float, float, list]:
    """(steady, total) pairs/s of ``n`` pairs in batches of 2 from ``workers`` DataLoader workers."""
    plan = [(s, [(2 * s) % len(sampler.pairs), (2 * s + 1) % len(sampler.pairs)], 0) for s in range(n // 2)]
    t0 = time.perf_counter()
    it = sampler.loader(plan, workers)
    out = [next(it)]
    t1 = time.perf_counter()
    out += list(it)
    t2 = time.perf_counter()
    return (n - 2) / (t2 - t1), n / (t2 - t0), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="config.yaml")
    ap.add_argument("--scenes", type=int, default=2)
    ap.add_argument("--pairs", type=int, default=40)
    ap.add_argument("--num-keypoints", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    import cv2

    cv2.setNumThreads(a.threads)
    cfg = load_config(a.config)
    demo = dict(cfg["datasets"]["megadepth_imp"]["demo"], scenes=a.scenes)
    feats = dict(cfg["features"]["sift_dump"], name="sift_dump")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        root = tmp / "megadepth"
        builders.build_megadepth(root, demo_settings(**demo))
        dump, lists = {}, {}
        t0 = time.perf_counter()
        for s in scene_ids(root):
            imp_dump.run(root, scene_info_path(root, s), feats, {"min_keypoints": a.num_keypoints}, tmp / f"{s}.h5")
            dump[s] = str(tmp / f"{s}.h5")
        t_dump = time.perf_counter() - t0
        t0 = time.perf_counter()
        for s in scene_ids(root):
            imp_pairs.run(scene_info_path(root, s), {}, tmp / f"{s}.npz")
            lists[s] = str(tmp / f"{s}.npz")
        t_lists = time.perf_counter() - t0
        (tmp / "dump.json").write_text(json.dumps({"preprocessing": {"kind": "imp_dump"}, "scenes": dump}))
        (tmp / "online.json").write_text(json.dumps({"preprocessing": {"kind": "imp_pairs"}, "scenes": lists}))
        offline = IMPPairs(tmp / "dump.json", a.num_keypoints, (16, 128))
        online = IMPOnlinePairs(tmp / "online.json", root, feats, None, a.num_keypoints, (16, 128))
        augmented = IMPOnlinePairs(tmp / "online.json", root, feats, None, a.num_keypoints, (16, 128),
                                   photometric=0.5, perspective=0.1)
        w, h = demo["size"]
        print(f"demo megadepth_imp: {a.scenes} scenes x {demo['images_per_scene']} images of {w}x{h}, "
              f"{len(offline.pairs)} dump pairs / {len(online.pairs)} online pairs, {a.num_keypoints} keypoints, "
              f"{a.threads} threads")
        print(f"preprocessing: imp_dump {t_dump:.1f} s, imp_pairs {t_lists:.2f} s")
        print(f"{'sampler':<46}{'pairs/s':>10}")
        for name, s in (("offline (imp_dump)", offline), ("online", online),
                        ("online + photometric 0.5 + perspective 0.1", augmented)):
            print(f"{name:<46}{rate(s, a.pairs):>10.1f}")
        for name, s in (("online", online), ("online + photometric 0.5 + perspective 0.1", augmented)):
            print(f"\n{name}, the training loop's loader (batches of 2 by step):")
            print(f"{'DataLoader workers':<22}{'steady pairs/s':>16}{'total pairs/s':>15}{'vs 0 workers':>14}")
            ref = None
            for w in a.workers:
                steady, total, batches = worker_rates(s, a.pairs, w)
                if ref is None:
                    ref, base = batches, steady
                same = all(torch.equal(x[k], y[k]) for x, y in zip(ref, batches) for k in x)
                print(f"{w:<22}{steady:>16.1f}{total:>15.1f}{steady / base:>13.2f}x"
                      + ("" if same else "   BATCHES DIFFER"))


if __name__ == "__main__":  # (spawned DataLoader workers re-import this file)
    main()
