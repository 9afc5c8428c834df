"""Patch2Pix training pieces: ptmax sampling, patch expansion, the released initialisation, the
demo's zero-offset start, the coarse stage's depth supervision and the frozen parts."""

import math

import pytest
import torch

from matchrepro.errors import ConfigError
from matchrepro.models.patch2pix import NCNet, Patch2Pix, init_weights, parse_regressor_out, sample_proposals, shift_to_anchors
from matchrepro.training.ncnet_supervision import cell_targets, volume_ce
from matchrepro.training.patch2pix_task import check_params, zero_offset_init, PATCH2PIX_DEFAULTS

SMALL = {"widths": [8, 8, 16, 16, 16], "blocks": [1, 1, 1, 1], "regressor_conv": [16, 16], "regressor_fc": [16, 8]}


def test_sample_proposals_tiles_cuts_and_handles_zero():
    torch.manual_seed(0)
    m = torch.arange(12, dtype=torch.float32).view(3, 4)
    out = sample_proposals(m, 8)
    assert out.shape == (8, 4)
    # every row is one of the inputs, and each input appears 2 or 3 times (tiled permutation)
    counts = [int((out == row).all(1).sum()) for row in m]
    assert sorted(counts) == [2, 3, 3]
    cut = sample_proposals(torch.arange(40, dtype=torch.float32).view(10, 4), 4)
    assert cut.shape == (4, 4) and len({tuple(r.tolist()) for r in cut}) == 4
    assert torch.equal(sample_proposals(torch.zeros(0, 4), 5), torch.zeros(5, 4))


def test_shift_to_anchors_order_and_offsets():
    m = torch.tensor([[100.0, 50.0, 200.0, 80.0]])
    a = shift_to_anchors(m, 8)
    expected = [[92, 42, 200, 80], [108, 42, 200, 80], [92, 58, 200, 80], [108, 58, 200, 80],
                [100, 50, 192, 72], [100, 50, 208, 72], [100, 50, 192, 88], [100, 50, 208, 88]]
    assert a.tolist() == expected


def test_released_initialisation():
    net = Patch2Pix(arch=SMALL)
    init_weights(net, seed=0)
    w = net.regress_mid.conv[0].weight
    fan_in, fan_out = w.shape[1] * 9, w.shape[0] * 9
    bound = math.sqrt(6 / (fan_in + fan_out))
    assert w.abs().max() <= bound and w.abs().max() > 0.9 * bound  # Xavier-uniform
    assert torch.all(net.regress_mid.fc[0].bias == 0)
    bn = net.extract.bn1.weight
    assert not torch.all(bn == 1) and (bn - 1).abs().max() < 0.1  # N(1, 0.02)
    assert torch.all(net.regress_mid.fc[1].weight == 1)  # BatchNorm1d keeps the defaults
    nc = net.ncn.conv[0].weight
    assert nc.abs().max() > 0 and torch.all(net.ncn.conv[0].bias == 0)


def test_zero_offset_init_starts_refinement_at_the_identity():
    net = Patch2Pix(arch=SMALL)
    init_weights(net, seed=1)
    zero_offset_init(net)
    net.eval()
    x = torch.randn(5, 2 * sum(net.level_dims()[i] for i in net.feat_idx), 16, 16)
    for reg in (net.regress_mid, net.regress_fine):
        offset, prob = parse_regressor_out(reg(x))
        assert torch.allclose(offset, torch.zeros_like(offset), atol=1e-5)
        assert prob.std() > 0  # the confidence head is untouched


def test_unknown_training_setting_names_the_key():
    with pytest.raises(ConfigError, match=r"training\.p2p\.params\.ptmx: unknown setting"):
        check_params("p2p", {"ptmx": 3}, PATCH2PIX_DEFAULTS)
    p = check_params("p2p", {"ptmax": 250, "batch_size": 1, "gpus": 1}, PATCH2PIX_DEFAULTS)
    assert p["ptmax"] == 250 and p["panc"] == 8 and "batch_size" not in p


def test_cell_targets_from_depth_and_pose():
    """A fronto-parallel plane at depth 4 seen by the same camera moved 1 unit right: every cell
    maps to the cell ``f / 4`` pixels to its left; cells that leave the image are -1."""
    H, W, cell = 64, 96, 16
    K = torch.tensor([[128.0, 0, 48], [0, 128.0, 32], [0, 0, 1]])
    depth = torch.full((H, W), 4.0)
    T = torch.eye(4)
    T[0, 3] = -1.0  # X2 = X1 - (1, 0, 0): camera 2 sits 1 unit to the right -> points move left by 32 px
    t = cell_targets(depth, depth, K, K, T, (H // cell, W // cell), (H // cell, W // cell), cell)
    t = t.view(H // cell, W // cell)
    assert torch.all(t[:, :2] == -1)  # 32 px left of columns 0 and 1 is outside image 2
    for i in range(H // cell):
        for j in range(2, W // cell):
            assert t[i, j] == i * (W // cell) + j - 2
    # an occluder in image 2 (depth disagrees) removes the target
    d2 = depth.clone()
    d2[:, :] = 2.0
    assert torch.all(cell_targets(depth, d2, K, K, T, (4, 6), (4, 6), cell) == -1)


def test_volume_ce_prefers_the_right_cells():
    t = torch.tensor([[0, 3, -1, 1]])
    good = torch.full((1, 1, 2, 2, 2, 2), -5.0)
    for i, j in enumerate([0, 3, 2, 1]):
        good.view(4, 4)[i, j] = 5.0
    t21 = torch.tensor([[0, 3, -1, 1]])
    assert volume_ce(good, t, t21) < volume_ce(torch.zeros_like(good), t, t21)
    assert volume_ce(torch.zeros_like(good), torch.full((1, 4), -1), torch.full((1, 4), -1)) == 0


def test_backbone_and_nc_get_no_gradient_from_the_patch2pix_forward():
    torch.manual_seed(0)
    net = Patch2Pix(arch=SMALL)
    net.ptmax, net.panc = 6, 8
    net.train()
    outs = net(torch.randn(2, 3, 64, 96), torch.randn(2, 3, 64, 96))
    assert len(outs) == 2 and outs[0]["coarse"].shape == (48, 4) and outs[0]["fine"].shape == (48, 4)
    (outs[0]["fine"].sum() + outs[1]["prob_mid"].sum()).backward()
    assert all(p.grad is None for p in net.extract.parameters())
    assert all(p.grad is None for p in net.ncn.parameters())
    assert net.regress_mid.conv[0].weight.grad.abs().sum() > 0  # the fine loss reaches regress_mid too


def test_small_ncnet_runs_the_coarse_training_forward():
    net = NCNet(arch=SMALL)
    nc, delta, raw = net(torch.randn(1, 3, 64, 96), torch.randn(1, 3, 64, 96))
    assert nc.shape == raw.shape == (1, 1, 4, 6, 4, 6) and delta.shape == (4, 1, 4, 6, 4, 6)


def test_refiner_keeps_confident_matches_and_handles_empty_input():
    from matchrepro.models.patch2pix import refine_matches

    torch.manual_seed(0)
    net = Patch2Pix(arch=SMALL).eval()
    zero_offset_init(net)
    im = torch.randn(1, 3, 64, 96)
    m = torch.tensor([[10.0, 12.0, 11.0, 12.0], [40.0, 30.0, 44.0, 28.0], [90.0, 60.0, 95.0, 63.0]])
    everything = refine_matches(net, im, im, m, threshold=-1.0)
    assert torch.equal(everything["index"], torch.arange(3))
    assert torch.allclose(everything["matches"], m, atol=1e-4)  # zero offsets: the input comes back
    # nothing passes (a sigmoid never exceeds 1): immatch's Patch2PixRefined keeps all refined
    # matches (the released fallback), refine_fallback: none keeps none
    released = refine_matches(net, im, im, m, threshold=2.0)
    assert torch.equal(released["index"], torch.arange(3)) and torch.equal(released["matches"], everything["matches"])
    strict = refine_matches(net, im, im, m, threshold=2.0, keep_all_if_none=False)
    assert len(strict["matches"]) == 0 and strict["matches"].shape == (0, 4)
    empty = refine_matches(net, im, im, torch.zeros(0, 4))
    assert empty["matches"].shape == (0, 4) and len(empty["index"]) == 0
