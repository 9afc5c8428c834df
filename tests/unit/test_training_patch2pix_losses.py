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
