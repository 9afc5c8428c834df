"""Throughput of the MegaDepth preprocessing on demo scenes: pairs per second per core.

Builds demo MegaDepth scenes (not timed), then times Patch2Pix pair selection and the IMP
ground-truth dump (SIFT features + reprojection matching) scene by scene in this process
(one core). Usage: ``python benchmarks/megadepth_preprocessing.py [--scenes N --images M]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from matchrepro.config import demo_settings
from matchrepro.demo.builders import build_megadepth
from matchrepro.preprocessing import imp_dump, patch2pix_pairs, scene_ids, scene_info_path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenes", type=int, default=2)
    ap.add_argument("--images", type=int, default=12)
    ap.add_argument("--size", type=int, nargs=2, default=[640, 480])
    a = ap.parse_args()
    import cv2

    cv2.setNumThreads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "megadepth"
        t = time.perf_counter()
        build_megadepth(root, demo_settings(kind="megadepth", scenes=a.scenes, images_per_scene=a.images,
                                            size=a.size, points3d=6000))
        print(f"built {a.scenes} demo scenes x {a.images} images at {a.size[0]}x{a.size[1]} "
              f"in {time.perf_counter() - t:.1f} s (not counted)")
        feats = {"type": "sift", "max_keypoints": 4096, "root_sift": True, "contrast_threshold": 0.04}
        totals = {"patch2pix_pairs": [0, 0.0], "imp_dump": [0, 0.0]}
        for s in scene_ids(root):
            info = scene_info_path(root, s)
            t = time.perf_counter()
            n = patch2pix_pairs.run(info, {"exclude_scenes": []}, Path(tmp) / f"{s}.npz")
            totals["patch2pix_pairs"][0] += n
            totals["patch2pix_pairs"][1] += time.perf_counter() - t
            t = time.perf_counter()
            n = imp_dump.run(root, info, feats, {"min_keypoints": 256}, Path(tmp) / f"{s}.h5")
            totals["imp_dump"][0] += n
            totals["imp_dump"][1] += time.perf_counter() - t
        for name, (n, sec) in totals.items():
            rate = n / sec if sec else float("nan")
            print(f"{name:16s} {n:5d} pairs in {sec:6.2f} s = {rate:8.1f} pairs/s/core"
                  + ("  (includes SIFT on every image)" if name == "imp_dump" else ""))
    return 0 if np.isfinite(rate) else 1


if __name__ == "__main__":
    raise SystemExit(main())
