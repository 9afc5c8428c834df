"""Float32 matrix products through oneDNN instead of MKL, for inference on the CPU.

On AMD CPUs torch's ``addmm``/``bmm`` (MKL's SGEMM) reach about half the rate that oneDNN's
matmul reaches on the same shapes: 140-180 against 300-390 GFLOP/s for IMP's 1x1 projections on
an AVX-512 Zen 5 with 2 threads (``python benchmarks/arithmetic_floor.py``). torch routes
float32 ``matmul`` to MKL, and reaches oneDNN's matmul only through the private operator that
its compiler uses for linear layers, ``torch.ops.mkldnn._linear_pointwise(input, weight, bias,
"none", [], "")`` = ``input @ weight.T + bias``. :func:`gemm` calls it with both operands as
strided views (no copies), so ``a @ b`` needs ``weight = b.T``.

The products are the same, summed in another order: the results differ from MKL's in the last
bits of float32 (about 3e-6 of the output's scale for K = 256-512).

:func:`usable` says when this path applies: CPU float32 tensors that need no gradient (the
operator has no backward), with torch built with oneDNN. Elsewhere (training, CUDA, other
dtypes) callers use torch's own products, and so does everything inside :func:`disabled`.
"""

from __future__ import annotations

import contextlib

import torch


def _operator():
    if not torch.backends.mkldnn.is_available():
        return None
    try:
        return torch.ops.mkldnn._linear_pointwise
    except (AttributeError, RuntimeError):  # a torch build without the operator
        return None


_LINEAR = _operator()
_disabled = 0  # > 0 inside disabled()


@contextlib.contextmanager
def disabled():
    """Within this block :func:`usable` is False: torch's own products (MKL's GEMM on the CPU)
    run instead, e.g. to compare the two paths or to count FLOPs with torch's counter, which
    does not know the oneDNN operator."""
    global _disabled
    _disabled += 1
    try:
        yield
    finally:
        _disabled -= 1


def usable(*tensors: torch.Tensor) -> bool:
    """True when :func:`gemm` may compute products of ``tensors``: oneDNN present, every tensor
    a CPU float32 tensor, and no gradient to track."""
    if _LINEAR is None or _disabled:
        return False
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return False
    return all(t.device.type == "cpu" and t.dtype == torch.float32 for t in tensors)


def _unit_stride(t: torch.Tensor) -> torch.Tensor:
    """``t`` (2-D) if one of its strides is 1 (a row- or column-major view), else a contiguous copy."""
    return t if 1 in t.stride() else t.contiguous()


def gemm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` for 2-D ``a (M, K)`` and ``b (K, N)`` (any row- or column-major views) as a new
    contiguous ``(M, N)`` tensor computed by oneDNN. Call only where :func:`usable` holds."""
    if a.shape[1] == 0:  # an empty sum, which oneDNN refuses
        return a.new_zeros(a.shape[0], b.shape[1])
    return _LINEAR(_unit_stride(a), _unit_stride(b.t()), None, "none", [], "")
