"""Which libraries' results change with the instruction set they use: hashes of an OpenCV warp,
its SIFT features, a NumPy matrix product and SVD (the OpenBLAS NumPy bundles), and the
Patch2Pix and IMP regression-fixture outputs, computed in a fresh
process per setting (each library reads its variable when it loads).

    python benchmarks/cpu_isa_probe.py

Rows: native kernels; the ``cpu_isa: avx2`` pins (``matchrepro/cpu_isa.py``); then one library at
a time lowered below AVX2. A hash that differs from the native row means that setting changed
that output's bits. On an AVX2-only CPU the avx2 row can differ from native only through MKL,
whose reproducible AVX2 branch is not the path it picks for every CPU.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from matchrepro.cpu_isa import VARIABLES, cpu_flags, describe_line, pin_settings  # noqa: E402

CHILD = r"""
import hashlib, sys
import numpy as np, cv2, skimage.data, torch
torch.set_num_threads(2)
sys.path.insert(0, sys.argv[1])
from tests.fixtures import regression as fx
from matchrepro.models.patch2pix import predict
h = lambda b: hashlib.sha1(b).hexdigest()[:10]
img = cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2GRAY)
warped = cv2.warpAffine(img, cv2.getRotationMatrix2D((256, 256), 10, 0.9), (512, 512))
kp, d = cv2.SIFT_create(nfeatures=2048).detectAndCompute(warped, None)
with torch.no_grad():
    p2p = predict(fx.patch2pix_model(), *fx.patch2pix_inputs(), threshold=0.0)["matches"]
    imp = fx.imp_model(None).match(fx.imp_inputs())["mscores0"]
g = np.random.default_rng(0)
a, b = g.normal(size=(300, 257)), g.normal(size=(257, 311))
blas = (a @ b).tobytes() + np.linalg.svd(a[:9, :9])[1].tobytes()
print(h(warped.tobytes()), h(np.float64([k.pt for k in kp]).tobytes() + d.tobytes()), len(kp), h(blas),
      h(p2p.numpy().tobytes()), h(imp.numpy().tobytes()), torch.backends.cpu.get_cpu_capability())
"""

def run(extra: dict[str, str]) -> str:
    env = {k: v for k, v in os.environ.items() if k not in VARIABLES}
    env.update(extra, PYTHONPATH=str(REPO / "src"))
    r = subprocess.run([sys.executable, "-c", CHILD, str(REPO)], env=env, capture_output=True, text=True)
    return r.stdout.strip() if r.returncode == 0 else f"failed: {r.stderr.strip().splitlines()[-1]}"


def main() -> int:
    print(describe_line())
    try:
        avx2 = pin_settings("avx2", cpu_flags())
    except ValueError as e:
        avx2 = None
        print(f"cpu_isa avx2 cannot be pinned here: {e}")
    settings = [("native", {})] + ([("cpu_isa: avx2", avx2)] if avx2 is not None else []) + [
        ("OpenCV without AVX2 (OPENCV_CPU_DISABLE=AVX2,FP16,AVX)", {"OPENCV_CPU_DISABLE": "AVX2,FP16,AVX"}),
        ("ATen default kernels (ATEN_CPU_CAPABILITY=default)", {"ATEN_CPU_CAPABILITY": "default"}),
        ("oneDNN up to SSE4.1 (ONEDNN_MAX_CPU_ISA=SSE41)", {"ONEDNN_MAX_CPU_ISA": "SSE41"}),
        ("MKL's AVX2 branch (MKL_CBWR=AVX2)", {"MKL_CBWR": "AVX2"}),
        ("OpenBLAS's Haswell kernels (OPENBLAS_CORETYPE=Haswell)", {"OPENBLAS_CORETYPE": "Haswell"}),
        ("OpenCV's IPP, AVX2 code (OPENCV_IPP=avx2)", {"OPENCV_IPP": "avx2"}),
    ]
    names = ("warp", "sift", "kps", "numpy", "patch2pix", "imp")
    n = len(names)
    print(f"{'setting':58s} " + " ".join(f"{c:>4s}" if c == "kps" else f"{c:10s}" for c in names) + " torch")
    native = None
    for name, env in settings:
        out = run(env)
        fields = out.split()
        if native is None:
            native = fields
        marks = "".join("*" if len(fields) == n + 1 and fields[i] != native[i] else "." for i in range(n))
        print(f"{name:58s} {out}  changed: {marks}")
    print(f"changed: one mark per output ({', '.join(names)}); * = differs from native")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
