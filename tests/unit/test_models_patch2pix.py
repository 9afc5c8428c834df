"""Patch2Pix/NCNet: the official state_dict layout (patch2pix.md §2.1) loads strictly, and the
fast Conv4d equals the loop formulation."""

from collections import OrderedDict

import pytest
import torch

from matchrepro.models.checkpoints import extract_state_dict, load_state_dict_strict
from matchrepro.models.conv4d import Conv4d, conv4d_loop_reference
from matchrepro.models.patch2pix import NCNet, Patch2Pix, maxpool4d, parse_regressor_out


def bn(prefix, c):
    return {f"{prefix}.weight": [c], f"{prefix}.bias": [c], f"{prefix}.running_mean": [c],
            f"{prefix}.running_var": [c], f"{prefix}.num_batches_tracked": []}


def official_backbone_and_ncn() -> dict:
    """Key -> shape, written out from the spec's listing (not from our module)."""
    k = {"extract.conv1.weight": [64, 3, 7, 7], **bn("extract.bn1", 64)}
    stages = [("layer1", 64, 64, 3), ("layer2", 64, 128, 4), ("layer3", 128, 256, 6), ("layer4", 256, 512, 3)]
    for name, cin, c, n in stages:
        for b in range(n):
            p = f"extract.{name}.{b}"
            k[f"{p}.conv1.weight"] = [c, cin if b == 0 else c, 3, 3]
            k.update(bn(f"{p}.bn1", c))
            k[f"{p}.conv2.weight"] = [c, c, 3, 3]
            k.update(bn(f"{p}.bn2", c))
            if b == 0 and name != "layer1":
                k[f"{p}.downsample.0.weight"] = [c, cin, 1, 1]
                k.update(bn(f"{p}.downsample.1", c))
    k.update({"ncn.conv.0.weight": [3, 16, 1, 3, 3, 3], "ncn.conv.0.bias": [16],
              "ncn.conv.2.weight": [3, 1, 16, 3, 3, 3], "ncn.conv.2.bias": [1]})
    return k


def official_patch2pix() -> dict:
    k = official_backbone_and_ncn()
    for r in ("regress_mid", "regress_fine"):
        k[f"{r}.conv.0.weight"] = [512, 518, 3, 3]
        k.update(bn(f"{r}.conv.1", 512))
        k[f"{r}.conv.2.weight"] = [512, 512, 3, 3]
        k.update(bn(f"{r}.conv.3", 512))
        k.update({f"{r}.fc.0.weight": [512, 512], f"{r}.fc.0.bias": [512], **bn(f"{r}.fc.1", 512),
                  f"{r}.fc.3.weight": [256, 512], f"{r}.fc.3.bias": [256], **bn(f"{r}.fc.4", 256),
                  f"{r}.fc.6.weight": [5, 256], f"{r}.fc.6.bias": [5]})
    return k


def fake_checkpoint(shapes: dict, prefix: str = "") -> OrderedDict:
    g = torch.Generator().manual_seed(0)
    sd = OrderedDict()
    for name, shape in shapes.items():
        sd[prefix + name] = (torch.tensor(7, dtype=torch.int64) if name.endswith("num_batches_tracked")
                             else torch.randn(shape, generator=g))
    return sd


@pytest.mark.parametrize("model_cls, shapes, n", [(Patch2Pix, official_patch2pix, 276), (NCNet, official_backbone_and_ncn, 220)])
def test_official_layout_loads_strictly(model_cls, shapes, n):
    expected = shapes()
    assert len(expected) == n
    model = model_cls()
    own = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert own == expected  # same names, same shapes, nothing extra
    sd = fake_checkpoint(expected, prefix="module.")  # as saved from a DDP wrapper
    load_state_dict_strict(model, extract_state_dict({"state_dict": sd}))
    assert torch.equal(model.ncn.conv[0].weight, sd["module.ncn.conv.0.weight"])


def test_parameter_counts_match_the_spec():
    m = Patch2Pix()
    count = lambda mod: sum(p.numel() for p in mod.parameters())  # noqa: E731
    assert count(m.extract) == 21_284_672 and count(m.extract.layer4) == 13_114_368
    assert count(m.ncn) == 2_609 and count(m.regress_mid) == 5_145_093


@pytest.mark.parametrize("cin,cout,k", [(1, 16, 3), (16, 1, 3), (3, 4, 5), (4, 2, 3)])
def test_conv2d_formulations_of_conv4d_equal_the_loop(cin, cout, k):
    from matchrepro.models.conv4d import conv4d_fast, conv4d_gather, conv4d_scatter, swap_kernel

    torch.manual_seed(cin * 10 + cout)
    conv = Conv4d(cin, cout, k)
    torch.nn.init.normal_(conv.bias)
    x = torch.randn(2, cin, 5, 4, 6, 3)
    with torch.no_grad():
        ref = conv4d_loop_reference(x, conv.weight, conv.bias)
        for f in (conv4d_gather, conv4d_scatter, conv4d_fast):
            assert torch.allclose(f(x, conv.weight, conv.bias), ref, atol=1e-5, rtol=1e-5), f.__name__
        # the swapped branch in the unswapped frame
        sw = conv4d_loop_reference(x.permute(0, 1, 4, 5, 2, 3), conv.weight, conv.bias).permute(0, 1, 4, 5, 2, 3)
        assert torch.allclose(conv4d_fast(x, swap_kernel(conv.weight), conv.bias), sw, atol=1e-5, rtol=1e-5)


def test_neighbourhood_consensus_gradients_equal_the_released_order():
    from matchrepro.models.patch2pix import NeighConsensus

    torch.manual_seed(0)
    nc = NeighConsensus()
    x = torch.relu(torch.randn(2, 1, 5, 4, 6, 3)).requires_grad_()
    g = torch.autograd.grad(nc(x).square().sum(), [x, *nc.parameters()])
    r = torch.autograd.grad(nc.forward_reference(x).square().sum(), [x, *nc.parameters()])
    for a, b in zip(g, r):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6 * float(b.abs().max()))


def test_fast_conv4d_equals_the_loop_formulation():
    torch.manual_seed(0)
    conv = Conv4d(3, 4, 3)
    torch.nn.init.normal_(conv.bias)
    x = torch.randn(2, 3, 5, 4, 6, 3)
    with torch.no_grad():
        fast = conv(x)
        ref = conv4d_loop_reference(x, conv.weight, conv.bias)
    assert fast.shape == (2, 4, 5, 4, 6, 3)
    assert torch.allclose(fast, ref, atol=1e-5)
    # against a direct 4-D cross-correlation on one output cell
    W = conv.weight.permute(1, 2, 0, 3, 4, 5)  # (out, in, k1, k2, k3, k4)
    xp = torch.nn.functional.pad(x, (1, 1, 1, 1, 1, 1, 1, 1))
    i, j, a, b = 2, 1, 3, 0
    direct = (xp[0, :, i:i + 3, j:j + 3, a:a + 3, b:b + 3][None] * W).sum(dim=(1, 2, 3, 4, 5)) + conv.bias
    assert torch.allclose(fast[0, :, i, j, a, b], direct, atol=1e-5)


def test_maxpool4d_decodes_the_argmax_offsets():
    corr = torch.zeros(1, 1, 4, 4, 4, 4)
    corr[0, 0, 1, 2, 3, 0] = 5.0  # pooled cell (0, 1, 1, 0), offsets (1, 0, 1, 0)
    pooled, delta = maxpool4d(corr)
    assert pooled.shape == (1, 1, 2, 2, 2, 2) and pooled[0, 0, 0, 1, 1, 0] == 5.0
    assert delta[:, 0, 0, 1, 1, 0].tolist() == [1, 0, 1, 0]
    assert delta.min() >= 0 and delta.max() <= 1


def test_regressor_output_ranges():
    out = torch.tensor([[-3.0, 0.0, 0.5, 5.0, 0.0]])
    off, conf = parse_regressor_out(out)
    # any non-positive logit gives exactly -8; the range is [-8, 8) (8 only when tanh rounds to 1)
    assert off[0, 0] == -8 and off[0, 1] == -8 and -8 <= off.min() and off.max() < 8
    assert parse_regressor_out(torch.full((1, 5), 1e3))[0].max() <= 8
    assert conf[0] == pytest.approx(0.5)
    m = Patch2Pix().eval()
    with torch.no_grad():
        assert m.regress_mid(torch.randn(3, 518, 16, 16)).shape == (3, 5)


def test_filter_coarse_follows_np_unique_semantics():
    import numpy as np

    from matchrepro.models.patch2pix import filter_coarse

    m = torch.tensor([[12, 4, 20, 4], [4, 4, 4, 4], [12, 4, 20, 4], [4, 4, 4, 4], [28, 4, 4, 12]], dtype=torch.float32)
    s = torch.tensor([0.9, 0.2, 0.5, 0.3, 0.99])
    got, sc = filter_coarse(m, s, 0.0)
    assert got.tolist() == [[4, 4, 4, 4], [12, 4, 20, 4]]  # lexicographic, only rows seen twice
    assert sc.tolist() == pytest.approx([0.2, 0.9])  # the first occurrence's score
    none_mutual, _ = filter_coarse(m[[0, 1, 4]], s[[0, 1, 4]], 0.0)
    assert len(none_mutual) == 3  # quirk: nothing mutual -> keep everything
    high, _ = filter_coarse(m, s, 0.95)
    assert len(high) == 2  # quirk: nothing above the threshold -> keep all mutual rows
    assert np.array_equal(filter_coarse(m[:0], s[:0])[0].numpy(), np.zeros((0, 4)))


def test_predict_runs_and_handles_degenerate_inputs():
    from matchrepro.models.patch2pix import predict, refine

    torch.manual_seed(0)
    for cls in (Patch2Pix, NCNet):
        m = cls().eval()
        out = predict(m, torch.randn(1, 3, 64, 96), torch.randn(1, 3, 48, 64), threshold=0.5)
        assert out["matches"].shape[1] == 4 and len(out["matches"]) == len(out["scores"]) > 0
        x = out["matches"]
        assert (x[:, 0] <= 96).all() and (x[:, 1] <= 64).all() and (x[:, 2] <= 64).all() and (x[:, 3] <= 48).all()
    p2p = Patch2Pix().eval()
    feats = [torch.randn(1, c, 32 // s, 32 // s) for c, s in zip((3, 64, 64, 128), (1, 2, 4, 8))]
    with torch.no_grad():
        ref, prob = refine(p2p.regress_mid, feats, feats, [1, 2, 4, 8], torch.zeros(0, 4), [(32, 32), (32, 32)])
        assert ref.shape == (0, 4) and prob.shape == (0,)
        # a trailing chunk of one proposal is merged (BatchNorm1d in train mode needs > 1)
        p2p.train()
        ref, prob = refine(p2p.regress_mid, feats, feats, [1, 2, 4, 8], torch.full((3, 4), 16.0),
                           [(32, 32), (32, 32)], chunk=2)
        assert ref.shape == (3, 4) and ((ref - 16).abs() <= 8).all()


@pytest.mark.parametrize("arch", [None, {"widths": [16, 16, 32, 48, 64], "blocks": [1, 1, 1, 1],
                                         "regressor_conv": [64, 64], "regressor_fc": [64, 32]}])
def test_eval_regression_on_cells_equals_the_gathered_patches(arch):
    """The eval path that applies the first regressor convolution to layer2's cells
    (``regress_patches_eval``) gives the released formulation's outputs (convolution of the
    gathered, normalised 16x16 patches) to float32 rounding, at image corners and borders, on
    cell boundaries, with fractional points, images of two sizes and non-trivial BatchNorm
    statistics."""
    from matchrepro.models.patch2pix import gather_patch_pairs, init_weights, regress_patches_eval

    torch.manual_seed(0)
    p2p = Patch2Pix(arch=arch)
    init_weights(p2p, seed=1)
    for m in p2p.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 2.0)
    p2p.eval()
    (w1, h1), (w2, h2) = sizes = [(96, 64), (64, 48)]
    dims = p2p.level_dims()[:4]
    f1 = [torch.randn(1, c, h1 // s, w1 // s) for c, s in zip(dims, (1, 2, 4, 8))]
    f2 = [torch.randn(1, c, h2 // s, w2 // s) for c, s in zip(dims, (1, 2, 4, 8))]
    pts = torch.tensor([[0, 0, 0, 0], [w1, h1, w2, h2], [w1 - 1, 0, 0, h2 - 1], [8, 8, 16, 16], [7.9, 15.99, 8.01, 23.5],
                        [41.3, 30.7, 33.2, 20.1], [95, 1, 63, 47]])
    pts = torch.cat([pts, torch.rand(40, 4) * torch.tensor([w1, h1, w2, h2], dtype=torch.float32)])
    with torch.no_grad():
        for reg in (p2p.regress_mid, p2p.regress_fine):
            ref = reg(gather_patch_pairs(f1, f2, [1, 2, 4, 8], pts, sizes))
            out = regress_patches_eval(reg, f1, f2, [1, 2, 4, 8], pts, sizes)
            assert out.shape == ref.shape == (len(pts), 5)
            assert float((out - ref).abs().max()) <= 1e-5 * float(ref.abs().max())
