"""Pin the instruction set that the numeric libraries use, so CPUs of different generations compute
the same float sums.

Every library under the pipeline picks its kernels by the CPU it finds: OpenCV's warps and SIFT
(dispatched up to AVX-512 SKX), torch's ATen kernels (AVX2 or AVX-512), oneDNN's convolutions
(jitted for the widest ISA), MKL's GEMMs (a code path per CPU family), the Intel IPP inside
OpenCV (its own code path per CPU, whatever OpenCV's dispatch) and the OpenBLAS that NumPy and
SciPy bundle (its matrix products, SVDs and solves: a kernel set per CPU core). The results differ in
the last bits, and a demo training run amplifies last bits into different tables
(docs/demo.md, "Same inputs, same numbers"). ``cpu_isa: avx2`` (config, demo default) asks each
library for its AVX2 path through its own documented switch:

================  =====================================  ==================================
library           variable                               effect
================  =====================================  ==================================
MKL               ``MKL_CBWR=AVX2``                      conditional numerical reproducibility, AVX2 branch
torch ATen        ``ATEN_CPU_CAPABILITY=avx2``           AVX2 kernels, never AVX-512
oneDNN            ``ONEDNN_MAX_CPU_ISA=AVX2``            jit kernels up to AVX2
OpenCV            ``OPENCV_CPU_DISABLE=AVX512-SKX,...``  AVX-512 dispatch off (set only where the CPU has it)
OpenCV's IPP      ``OPENCV_IPP=avx2``                    IPP's AVX2 code (l9), not its AVX-512 code (k0)
NumPy             ``NPY_DISABLE_CPU_FEATURES=X86_V4...`` AVX-512 dispatch off (likewise)
OpenBLAS          ``OPENBLAS_CORETYPE=Haswell``          Haswell (AVX2) kernels: what it runs on AVX2 CPUs, Zen 1-3 included
================  =====================================  ==================================

The rules export ``MATCHREPRO_CPU_ISA``; each job applies it at start (:func:`apply_from_env`),
before it imports a numeric library, on the machine that runs it (a cluster's compute node, not
the submit host). A variable the user already set is left alone. On a CPU without AVX2 (or not
x86) nothing can be pinned: the job says so in one line and runs natively. ``native`` pins
nothing.
"""

from __future__ import annotations

import os
import platform
import sys

ENV = "MATCHREPRO_CPU_ISA"
LEVELS = ("native", "avx2")
# every variable :func:`pin_settings` may set
VARIABLES = ("MKL_CBWR", "ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "OPENBLAS_CORETYPE", "OPENCV_IPP",
             "OPENCV_CPU_DISABLE", "NPY_DISABLE_CPU_FEATURES")

# OpenCV's names for the AVX-512 groups it can dispatch, and the cpuinfo flag each needs
_OPENCV_AVX512 = {"AVX512F": "avx512f", "AVX512-SKX": "avx512bw"}
# NumPy's dispatch targets above AVX2 (numpy._core._multiarray_umath.__cpu_dispatch__), with a flag each needs
_NUMPY_AVX512 = {"X86_V4": "avx512bw", "AVX512_ICL": "avx512_vbmi2", "AVX512_SPR": "avx512_fp16"}


def _first_cpu(path: str = "/proc/cpuinfo") -> dict[str, str]:
    """The first CPU's ``key: value`` lines of ``path`` (Linux), or {} where it cannot be read."""
    fields: dict[str, str] = {}
    try:
        with open(path) as f:
            for line in f:
                if not line.strip():
                    break
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
    except OSError:
        pass
    return fields


def cpu_flags(path: str = "/proc/cpuinfo") -> set[str]:
    """The first CPU's feature flags (Linux), or an empty set where they cannot be read."""
    return set(_first_cpu(path).get("flags", "").split())


def pin_settings(level: str, flags: set[str], machine: str | None = None) -> dict[str, str]:
    """Environment variables that pin ``level`` on a CPU with ``flags``: {} for ``native``.

    Raises ValueError for an unknown level, or when this CPU cannot run the level's kernels
    (the message names why)."""
    if level not in LEVELS:
        raise ValueError(f"cpu_isa must be one of {', '.join(LEVELS)}, got {level!r}")
    if level == "native":
        return {}
    machine = machine or platform.machine()
    if machine.lower() not in ("x86_64", "amd64"):
        raise ValueError(f"cpu_isa: {level} pins an x86 instruction set, and this CPU is {machine}")
    missing = sorted({"avx2", "fma"} - flags)
    if missing:
        raise ValueError(f"cpu_isa: {level} needs a CPU with AVX2 and FMA, and this one lacks {' and '.join(missing)}")
    env = {"MKL_CBWR": "AVX2", "ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "OPENBLAS_CORETYPE": "Haswell",
           "OPENCV_IPP": "avx2"}
    opencv = [name for name, flag in _OPENCV_AVX512.items() if flag in flags]
    if opencv:
        env["OPENCV_CPU_DISABLE"] = ",".join(opencv)
    numpy = [name for name, flag in _NUMPY_AVX512.items() if flag in flags]
    if numpy:
        env["NPY_DISABLE_CPU_FEATURES"] = " ".join(numpy)
    return env


def apply_from_env() -> dict[str, str]:
    """Apply ``$MATCHREPRO_CPU_ISA`` to this process's environment (call it before numpy, torch or
    cv2 is imported; child processes inherit it). Returns what it set. An unknown level or a CPU
    that cannot be pinned prints one line to stderr and changes nothing."""
    level = os.environ.get(ENV, "").strip().lower()
    if not level:
        return {}
    try:
        env = pin_settings(level, cpu_flags())
    except ValueError as e:
        print(f"warning: {e}; running with this CPU's native kernels (numbers may differ from a pinned run)",
              file=sys.stderr)
        return {}
    applied = {k: v for k, v in env.items() if k not in os.environ}
    os.environ.update(applied)
    return applied


def describe() -> dict[str, str]:
    """What this process runs on, for provenance: the CPU model, its widest vector extension, the
    pin requested and the kernels torch dispatches to."""
    cpu = _first_cpu()
    flags = set(cpu.get("flags", "").split())
    widest = next((x for x in ("avx512f", "avx2", "avx", "sse4_2") if x in flags), "unknown")
    info = {"cpu_model": cpu.get("model name", "unknown"), "machine": platform.machine(), "widest_vector_extension": widest,
            "cpu_isa": os.environ.get(ENV, "") or "native"}
    try:
        import torch
    except ImportError:
        return info
    info["torch_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    return info


def describe_line() -> str:
    """:func:`describe` as the one line the benchmark scripts print first."""
    c = describe()
    return (f"cpu: {c['cpu_model']} ({c['machine']}), widest vector extension {c['widest_vector_extension']}, "
            f"torch kernels {c.get('torch_cpu_capability', '?')}, cpu_isa {c['cpu_isa']}")
