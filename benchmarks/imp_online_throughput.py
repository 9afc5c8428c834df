"""IMP training pairs per second: offline (imp_dump files) against online (features and ground
truth made while training, with and without augmentations), on the demo's IMP scenes.

    python benchmarks/imp_online_throughput.py [--config config.yaml] [--scenes 2] [--pairs 40]
                                               [--num-keypoints 256] [--threads 2]

Builds the config's ``megadepth_imp`` demo dataset in a scratch folder (``--scenes`` of them),
runs the offline dump (``imp_dump``, timed: its cost is paid once per dataset) and the online
pair lists (``imp_pairs``), then draws ``--pairs`` training pairs from each sampler
(:class:`IMPPairs`, :class:`IMPOnlinePairs`) and prints pairs per second. Data only: the
network step is the same in both modes (``benchmarks/imp_speed.py`` times it).
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="config.yaml")
    ap.add_argument("--scenes", type=int, default=2)
    ap.add_argument("--pairs", type=int, default=40)
    ap.add_argument("--num-keypoints", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
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


if __name__ == "__main__":
    main()
