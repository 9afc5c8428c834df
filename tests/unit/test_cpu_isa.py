"""cpu_isa: which variables pin which library, and that a job applies them before loading one."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from matchrepro.cpu_isa import ENV, VARIABLES, cpu_flags, pin_settings

REPO = Path(__file__).resolve().parents[2]
AVX2 = {"avx", "avx2", "fma"}
AVX512 = AVX2 | {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"}


def test_native_pins_nothing():
    assert pin_settings("native", AVX512, "x86_64") == {}


def test_avx2_on_an_avx2_cpu_pins_mkl_aten_onednn_openblas_and_ipp_only():
    assert pin_settings("avx2", AVX2, "x86_64") == {
        "MKL_CBWR": "AVX2", "ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "OPENBLAS_CORETYPE": "Haswell",
        "OPENCV_IPP": "avx2"}


def test_avx2_on_an_avx512_cpu_also_turns_off_opencv_and_numpy_avx512_dispatch():
    env = pin_settings("avx2", AVX512, "x86_64")
    assert env["OPENCV_CPU_DISABLE"] == "AVX512F,AVX512-SKX"
    assert env["NPY_DISABLE_CPU_FEATURES"] == "X86_V4"
    env = pin_settings("avx2", AVX512 | {"avx512_vbmi2", "avx512_fp16"}, "x86_64")
    assert env["NPY_DISABLE_CPU_FEATURES"] == "X86_V4 AVX512_ICL AVX512_SPR"


@pytest.mark.parametrize("level, flags, machine, message", [
    ("avx512", AVX512, "x86_64", "cpu_isa must be one of native, avx2"),
    ("avx2", AVX2, "aarch64", "this CPU is aarch64"),
    ("avx2", {"avx", "sse4_2"}, "x86_64", "needs a CPU with AVX2 and FMA"),
])
def test_levels_a_cpu_cannot_run_are_refused_with_the_reason(level, flags, machine, message):
    with pytest.raises(ValueError, match=message):
        pin_settings(level, flags, machine)


def test_cpu_flags_reads_the_first_cpu(tmp_path):
    f = tmp_path / "cpuinfo"
    f.write_text("processor\t: 0\nflags\t\t: fpu avx2 fma\n\nprocessor\t: 1\nflags\t\t: fpu\n")
    assert cpu_flags(str(f)) == {"fpu", "avx2", "fma"}
    assert cpu_flags(str(tmp_path / "missing")) == set()


def _job(code: str, **env) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if k not in VARIABLES}
    full.update(env, PYTHONPATH=str(REPO / "src"))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full, timeout=120)


needs_avx2 = pytest.mark.skipif(platform.machine() != "x86_64" or not AVX2 <= cpu_flags(),
                                reason="pins AVX2, which this CPU lacks")


@needs_avx2
def test_a_cli_process_applies_the_pin_before_torch_loads_and_a_user_setting_wins(tmp_path):
    """The CLI's provenance step as a job runs it: the pin is in its environment, torch dispatches
    AVX2 kernels, the provenance records both; a variable the user set stays as set."""
    spec = json.dumps({"config": {"seed": 0}})
    code = ("import sys; from matchrepro.cli import main; "
            f"sys.exit(main(['provenance', '--spec', {spec!r}, '--out', {str(tmp_path / 'p.html')!r}]))")
    r = _job(code, **{ENV: "avx2", "ONEDNN_MAX_CPU_ISA": "AVX"})
    assert r.returncode == 0, r.stderr
    cpu = json.loads((tmp_path / "p.json").read_text())["cpu"]
    assert cpu["cpu_isa"] == "avx2" and cpu["torch_cpu_capability"] == "AVX2", cpu
    code = ("import os; from matchrepro.cli import apply_from_env; apply_from_env(); "
            "print(os.environ['MKL_CBWR'], os.environ['ATEN_CPU_CAPABILITY'], os.environ['ONEDNN_MAX_CPU_ISA'])")
    assert _job(code, **{ENV: "avx2", "ONEDNN_MAX_CPU_ISA": "AVX"}).stdout.split() == ["AVX2", "avx2", "AVX"]


def test_an_unpinnable_level_warns_in_one_line_and_changes_nothing():
    code = ("import os; from matchrepro.cpu_isa import apply_from_env; "
            "print(apply_from_env(), 'MKL_CBWR' in os.environ)")
    r = _job(code, **{ENV: "avx512"})
    assert r.stdout.split() == ["{}", "False"]
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("warning: cpu_isa must be one of native, avx2"), r.stderr


@needs_avx2
def test_the_pin_reaches_numpys_openblas_before_it_loads():
    """A CLI process with the pin computes NumPy's matrix products with OpenBLAS's Haswell kernels,
    bit for bit what a process started with OPENBLAS_CORETYPE=Haswell computes (on an AVX-512 CPU
    OpenBLAS would otherwise pick its SkylakeX kernels, whose sums round differently)."""
    product = ("import numpy as np, hashlib; g = np.random.default_rng(0); "
               "a, b = g.normal(size=(300, 257)), g.normal(size=(257, 311)); "
               "print(hashlib.sha1((a @ b).tobytes() + np.linalg.svd(a[:9, :9])[1].tobytes()).hexdigest())")
    pinned = _job("from matchrepro.cli import apply_from_env; apply_from_env(); " + product, **{ENV: "avx2"})
    direct = _job(product, OPENBLAS_CORETYPE="Haswell")
    assert pinned.returncode == 0 and direct.returncode == 0, pinned.stderr + direct.stderr
    assert pinned.stdout == direct.stdout


@needs_avx2
def test_the_pin_reaches_opencvs_ipp():
    """OpenCV's bundled Intel IPP picks its own code path by CPU (AVX-512 "k0" on an AVX-512 CPU,
    whatever OpenCV's own dispatch); a pinned process runs its AVX2 path, "l9"."""
    code = "from matchrepro.cli import apply_from_env; apply_from_env(); import cv2; print(cv2.ipp.getIppVersion())"
    r = _job(code, **{ENV: "avx2"})
    assert r.returncode == 0, r.stderr
    assert "(l9)" in r.stdout, r.stdout
