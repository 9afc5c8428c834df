import pytest
import torch

from matchrepro.training.patch2pix_losses import pair_loss, sampson_sq, total_loss, weighted_bce

# K = I, R = I, t = (1, 0, 0): epipolar lines are horizontal and d = (y1 - y2)^2 / 2 exactly
F_X = torch.tensor([[0.0, 0, 0], [0, 0, -1], [0, 1, 0]])


def test_sampson_closed_form():
    m = torch.tensor([[10.0, 5, 30, 5], [0, 0, 7, 3], [2, 4, 2, 14]])
    assert torch.allclose(sampson_sq(m, F_X), torch.tensor([0.0, 4.5, 50.0]))


def test_weighted_bce_balances_classes():
    p = torch.tensor([0.9, 0.2, 0.2, 0.2])
    y = torch.tensor([True, False, False, False])
    bce = -torch.log(torch.tensor([0.9, 0.8, 0.8, 0.8]))
    want = (3.0 * bce[0] + bce[1:].sum()) / 4  # w = N_neg/N_pos for the positive
    assert weighted_bce(p, y) == pytest.approx(float(want), rel=1e-6)


def test_pair_loss_labels_from_each_stage_input():
    # coarse: y-offsets 2, 20 px -> d = 2, 200: mid labels [1, 0]
    coarse = torch.tensor([[0.0, 0, 5, 2], [0, 0, 5, 20]])
    mid = torch.tensor([[0.0, 0, 5, 1], [0, 0, 5, 10]], requires_grad=True)  # d = 0.5, 50: fine labels [1, 0]
    fine = torch.tensor([[0.0, 0, 5, 0.5], [0, 0, 5, 9]], requires_grad=True)
    pm, pf = torch.tensor([0.7, 0.4]), torch.tensor([0.6, 0.1])
    l_cls, l_epi = pair_loss(coarse, mid, pm, fine, pf, F_X)
    assert float(l_epi.detach()) == pytest.approx(0.5 + 0.125)  # mean d(mid | dc<50) + mean d(fine | dm<5)
    want_cls = weighted_bce(pm, torch.tensor([True, False])) + weighted_bce(pf, torch.tensor([True, False]))
    assert float(l_cls.detach()) == pytest.approx(float(want_cls))
    l_epi.backward()
    assert mid.grad is not None and fine.grad is not None
    assert float(total_loss([(l_cls, l_epi), None]).detach()) == pytest.approx(float((10 * l_cls + l_epi).detach()))


def test_pair_without_positives_is_skipped():
    far = torch.tensor([[0.0, 0, 5, 40]])
    assert pair_loss(far, far, torch.tensor([0.5]), far, torch.tensor([0.5]), F_X) is None
    assert total_loss([None, None]) is None


def test_transfer_error_from_depth_and_pose():
    """The demo's reprojection target: a plane at depth 4, camera 2 shifted 1 unit right, so a
    point at x maps to x - f/4 = x - 32 px; +inf where there is no depth."""
    from matchrepro.training.patch2pix_losses import transfer_sq

    K = torch.tensor([[128.0, 0, 48], [0, 128.0, 32], [0, 0, 1]])
    depth = torch.full((64, 96), 4.0)
    depth[:, 90:] = 0.0
    T = torch.eye(4)
    T[0, 3] = -1.0
    m = torch.tensor([[50.0, 20.0, 18.0, 20.0], [50.0, 20.0, 21.0, 24.0], [92.0, 10.0, 60.0, 10.0]], requires_grad=True)
    d = transfer_sq(m, depth, K, K, T)
    assert torch.allclose(d[:2], torch.tensor([0.0, 9.0 + 16.0]), atol=1e-4) and torch.isinf(d[2])
    d[:2].sum().backward()
    assert m.grad[1].abs().sum() > 0  # both points receive a gradient (x1 through the projection)
    # inside pair_loss: a match without depth is a negative and never regressed (no inf loss)
    n = 3
    out = pair_loss(m.detach(), m.detach(), torch.full((n,), 0.5), m.detach(), torch.full((n,), 0.5), None,
                    distance=lambda x: transfer_sq(x, depth, K, K, T))
    assert out is not None and all(torch.isfinite(t) for t in out)
