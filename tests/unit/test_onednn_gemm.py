"""The oneDNN matrix product that IMP's CPU inference uses: the same product as torch's, on every
view layout IMP passes, used only where no gradient is needed, and IMP's outputs through it equal
those through torch's products to float32 rounding."""

from __future__ import annotations

import pytest
import torch

from matchrepro.models import onednn_gemm
from matchrepro.models.imp import IMP
from matchrepro.training.imp_task import identity_init

pytestmark = pytest.mark.skipif(not onednn_gemm.usable(torch.zeros(1)), reason="torch built without oneDNN")


def _rel_err(a: torch.Tensor, ref: torch.Tensor) -> float:
    return float((a.double() - ref).abs().max() / ref.abs().max())


@pytest.mark.parametrize("layout", ["row-major", "a transposed", "b transposed", "both transposed", "strided"])
def test_gemm_is_the_matrix_product_for_every_view_layout(layout):
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(96, 160, generator=g), torch.randn(160, 72, generator=g)
    ref = a.double() @ b.double()
    if layout == "a transposed":
        a = a.t().contiguous().t()
    elif layout == "b transposed":
        b = b.t().contiguous().t()
    elif layout == "both transposed":
        a, b = a.t().contiguous().t(), b.t().contiguous().t()
    elif layout == "strided":  # no unit stride: copied first
        a = torch.zeros(96, 320).index_copy_(1, torch.arange(0, 320, 2), a)[:, ::2]
        assert 1 not in a.stride()
    out = onednn_gemm.gemm(a, b)
    assert out.shape == (96, 72) and out.is_contiguous()
    assert _rel_err(out, ref) < 1e-6


@pytest.mark.parametrize("m,k,n", [(4, 0, 5), (0, 3, 5), (4, 3, 0), (1, 3, 1)])
def test_gemm_of_empty_and_single_dimensions(m, k, n):
    a, b = torch.randn(m, k), torch.randn(k, n)
    out = onednn_gemm.gemm(a, b)
    assert out.shape == (m, n) and torch.allclose(out, a @ b)


def test_usable_only_without_gradient_on_cpu_float32():
    w = torch.randn(4, 4, requires_grad=True)
    assert not onednn_gemm.usable(w)  # training: torch's products, which have a backward
    with torch.no_grad():
        assert onednn_gemm.usable(w)
        assert not onednn_gemm.usable(w.detach().double())
        with onednn_gemm.disabled():
            assert not onednn_gemm.usable(w)
        assert onednn_gemm.usable(w)


def _pair(n: int, dim: int, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    d0 = torch.nn.functional.normalize(torch.randn(1, n, dim, generator=g), dim=2)
    d1 = torch.nn.functional.normalize(d0 + 0.1 * torch.randn(1, n, dim, generator=g), dim=2)
    kp = torch.rand(1, n, 2, generator=g) - 0.5
    return {"keypoints0": kp, "keypoints1": kp + 0.01 * torch.randn(1, n, 2, generator=g),
            "scores0": torch.rand(1, n, generator=g), "scores1": torch.rand(1, n, generator=g),
            "descriptors0": d0, "descriptors1": d1}


@pytest.mark.parametrize("pooling", [None, "mask", "prune"])
def test_imp_inference_through_onednn_equals_torch_products(pooling, monkeypatch):
    calls = []
    linear = onednn_gemm._LINEAR
    monkeypatch.setattr(onednn_gemm, "_LINEAR", lambda *a: calls.append(1) or linear(*a))
    torch.manual_seed(0)
    model = IMP(64, pooling=pooling, min_tokens=8)
    identity_init(model, 0.02, 0.8)  # a soft mutual nearest neighbour: EIMP has keypoints to prune
    model.eval()
    data = _pair(300, 64, 1)
    with torch.no_grad():
        fast = model.match(data)
        P_fast = model(data, all_iterations=False)[-1][1]
        n_fast = len(calls)
        with onednn_gemm.disabled():
            ref = model.match(data)
            P_ref = model(data, all_iterations=False)[-1][1]
    # projections, attention scores and messages of 30 layers, both images: hundreds of products
    assert n_fast > 300 and len(calls) == n_fast
    assert torch.equal(fast["matches0"], ref["matches0"])
    assert fast["retained"] == ref["retained"]
    assert (fast["retained"][-1] != fast["retained"][0]) == (pooling is not None)
    assert _rel_err(fast["mscores0"], ref["mscores0"].double()) < 1e-4
    for a, b in zip(P_fast if isinstance(P_fast, list) else [P_fast], P_ref if isinstance(P_ref, list) else [P_ref]):
        assert _rel_err(a, b.double()) < 1e-4
