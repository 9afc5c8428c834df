"""IMP / EIMP and SuperPoint: the official state-dict layouts (imp.md §2.2, §2.4) load strictly,
and the released head, sharing schedule and pooling behave as specified."""

from collections import OrderedDict

import numpy as np
import pytest
import torch

from matchrepro.models.checkpoints import CheckpointError, extract_state_dict, load_state_dict_strict
from matchrepro.models.imp import (
    IMP, SHARED_LAYERS, _head_major, mutual_matches, normalize_keypoints, sinkhorn_prob,
)
from matchrepro.models.superpoint import SuperPoint, simple_nms

FULL = [0, 1, 2, 3, 4, 5, 8, 9, 12, 13, 16, 17, 20, 21, 24, 25, 28, 29]
SHARED = [6, 7, 10, 11, 14, 15, 18, 19, 22, 23, 26, 27]


def official_imp_layout(D: int) -> "OrderedDict[str, tuple]":
    """Names and shapes written out from imp.md §2.2, independently of our modules."""
    out = OrderedDict(bin_score=())
    for idx, (o, i) in zip((0, 3, 6, 9, 12), ((32, 3), (64, 32), (128, 64), (256, 128), (D, 256))):
        out[f"kenc.encoder.{idx}.weight"] = (o, i, 1)
        out[f"kenc.encoder.{idx}.bias"] = (o,)
    for l in range(30):
        p = f"gnn.layers.{l}"
        convs = ([f"{p}.attn.merge"] + [f"{p}.attn.proj.{k}" for k in range(3)]) if l in FULL else [f"{p}.proj", f"{p}.merge"]
        for c in convs:
            out[f"{c}.weight"], out[f"{c}.bias"] = (D, D, 1), (D,)
        out[f"{p}.mlp.0.weight"], out[f"{p}.mlp.0.bias"] = (2 * D, 2 * D, 1), (2 * D,)
        out[f"{p}.mlp.3.weight"], out[f"{p}.mlp.3.bias"] = (D, 2 * D, 1), (D,)
    for i in range(15):
        out[f"final_proj.{i}.weight"], out[f"final_proj.{i}.bias"] = (D, D, 1), (D,)
    return out


@pytest.mark.parametrize("D,params", [(256, 19_231_809), (128, 4_869_953)])
def test_official_imp_and_eimp_layouts_load_strictly(D, params):
    layout = official_imp_layout(D)
    assert len(layout) == 353 and sum(int(np.prod(s)) for s in layout.values()) == params
    g = torch.Generator().manual_seed(D)
    # a 1-GPU DDP checkpoint: {'epoch', 'iteration', 'model', 'min_loss'} with 'module.' keys
    ckpt = {"epoch": 885, "iteration": 1, "min_loss": 0.1,
            "model": OrderedDict((f"module.{k}", torch.randn(s, generator=g)) for k, s in layout.items())}
    sd = extract_state_dict(ckpt)
    for pooling in (None, "mask", "prune"):
        model = IMP(D, pooling=pooling)
        load_state_dict_strict(model, sd)
        assert torch.equal(model.gnn.layers[6].proj.weight, sd["gnn.layers.6.proj.weight"])
        assert torch.equal(model.final_proj[14].bias, sd["final_proj.14.bias"])
    assert list(IMP(D).state_dict()) == list(layout)  # bin_score first, as released
    # the plain GM layout (all 30 layers with attn.*) does not load
    gm = dict(sd)
    gm["gnn.layers.6.attn.merge.weight"] = torch.zeros(D, D, 1)
    with pytest.raises(CheckpointError, match="unexpected"):
        load_state_dict_strict(IMP(D), gm)


def test_superpoint_v1_layout_loads_strictly():
    shapes = {"conv1a": (64, 1, 3, 3), "conv1b": (64, 64, 3, 3), "conv2a": (64, 64, 3, 3), "conv2b": (64, 64, 3, 3),
              "conv3a": (128, 64, 3, 3), "conv3b": (128, 128, 3, 3), "conv4a": (128, 128, 3, 3),
              "conv4b": (128, 128, 3, 3), "convPa": (256, 128, 3, 3), "convPb": (65, 256, 1, 1),
              "convDa": (256, 128, 3, 3), "convDb": (256, 256, 1, 1)}
    sd = OrderedDict()
    for k, s in shapes.items():
        sd[f"{k}.weight"], sd[f"{k}.bias"] = torch.randn(s) * 0.05, torch.randn(s[0]) * 0.05
    assert len(sd) == 24 and sum(v.numel() for v in sd.values()) == 1_300_865
    sp = SuperPoint({"max_keypoints": 50, "keypoint_threshold": 0.0})
    load_state_dict_strict(sp, sd)
    out = sp(torch.rand(1, 1, 120, 160))[0]
    k = out["keypoints"]
    assert len(k) == 50 and torch.all(k == k.round())  # integer pixels, top-k
    assert torch.all(out["scores"][:-1] >= out["scores"][1:])
    assert k[:, 0].min() >= 4 and k[:, 0].max() < 156 and k[:, 1].min() >= 4 and k[:, 1].max() < 116  # 4 px border
    assert torch.allclose(out["descriptors"].norm(dim=1), torch.ones(50), atol=1e-5)


def test_simple_nms_keeps_isolated_maxima_only():
    s = torch.zeros(1, 20, 20)
    s[0, 5, 5], s[0, 5, 7], s[0, 15, 15] = 0.9, 0.5, 0.7
    kept = simple_nms(s, 4)
    assert kept[0, 5, 5] == 0.9 and kept[0, 15, 15] == 0.7 and kept[0, 5, 7] == 0


def test_interleaved_heads_and_sharing_schedule():
    order = _head_major(16)  # head-major position h * 4 + i holds channel 4 i + h (head c mod 4)
    for head in range(4):
        assert order[head * 4:(head + 1) * 4].tolist() == [c for c in range(16) if c % 4 == head]
    assert sorted(SHARED_LAYERS) == SHARED


def test_sinkhorn_marginals_and_mutual_matches():
    g = torch.Generator().manual_seed(0)
    S = torch.randn(2, 5, 5, generator=g) * 3
    P = sinkhorn_prob(S, torch.tensor(1.0), iters=200)
    r = torch.ones(6)
    r[-1] = 6
    assert torch.allclose(P.sum(2), r.expand(2, 6), atol=1e-4)  # r = (1, ..., 1, N+1)
    assert torch.allclose(P.sum(1), r.expand(2, 6), atol=1e-4)  # c = (1, ..., 1, M+1)
    # mutual argmax with a threshold on P itself
    P = torch.zeros(1, 4, 4)
    P[0, 0, 1], P[0, 1, 0], P[0, 2, 2] = 0.9, 0.15, 0.5
    P[0, 1, 1] = 0.3  # row 1's best is column 1, but column 1's best is row 0: not mutual
    m0, m1, s0, s1 = mutual_matches(P, 0.2)
    assert m0.tolist() == [[1, -1, 2]] and m1.tolist() == [[-1, 0, 2]]
    assert s0[0, 0] == pytest.approx(0.9) and s1[0, 2] == pytest.approx(0.5)


def test_keypoint_normalisation_eval_and_training():
    k = torch.tensor([[[320.0, 240.0], [0.0, 0.0]]])
    size = torch.tensor([[640.0, 480.0]])
    n = normalize_keypoints(k, size)
    assert torch.allclose(n[0, 0], torch.zeros(2)) and torch.allclose(n[0, 1], torch.tensor([-320, -240]) / 448.0)
    assert torch.allclose(normalize_keypoints(k, size, 0.5)[0, 0], torch.full((2,), -0.5 / 448.0))


def _pair(n=400, matched=120, seed=0):
    """Descriptors with ``matched`` exact partners (image-1 index = image-0 index), the rest random."""
    g = torch.Generator().manual_seed(seed)
    d0 = torch.nn.functional.normalize(torch.randn(1, n, 128, generator=g), dim=2)
    d1 = torch.nn.functional.normalize(torch.randn(1, n, 128, generator=g), dim=2)
    d1[:, :matched] = d0[:, :matched]
    k = torch.rand(1, n, 2, generator=g) - 0.5
    return {"keypoints0": k, "keypoints1": k.clone(), "scores0": torch.rand(1, n, generator=g),
            "scores1": torch.rand(1, n, generator=g), "descriptors0": d0, "descriptors1": d1}


def _identity_model(pooling, min_tokens=256):
    from matchrepro.training.imp_task import identity_init

    m = IMP(128, pooling=pooling, min_tokens=min_tokens)
    identity_init(m, 0.02, 0.8)
    return m.eval()


def test_identity_start_matches_exact_duplicates():
    r = _identity_model(None).match(_pair())
    m0 = r["matches0"]
    assert torch.equal(m0[:120], torch.arange(120)) and (m0[120:] == -1).float().mean() > 0.9


def test_eimp_pruning_removes_unconfident_keypoints_and_keeps_the_matches():
    data = _pair()
    imp = _identity_model(None).match(data)
    for mode in ("mask", "prune"):
        r = _identity_model(mode).match(data)
        seen = [a + b for a, b in r["retained"]]
        assert seen[:4] == [800] * 4  # pooling starts after iteration 4 (1-based)
        assert seen[-1] < 800 and all(x >= y for x, y in zip(seen, seen[1:]))
        assert torch.equal(r["matches0"][:120], imp["matches0"][:120])
    assert all(a + b == 800 for a, b in imp["retained"])
    # below the minimum token count nothing is pooled and both forms equal IMP exactly
    for mode in ("mask", "prune"):
        r = _identity_model(mode, min_tokens=400).match(data)
        assert torch.equal(r["matches0"], imp["matches0"])


def test_shared_iterations_reuse_the_previous_attention():
    m = IMP(128)
    st = m.start(_pair(n=40))
    m.iterate(st, 2)
    before = {k: v for k, v in st.probs.items()}
    m.iterate(st, 3)  # layers 6 and 7 are shared
    assert all(st.probs[k] is before[k] for k in before)
    m.iterate(st, 4)
    assert all(st.probs[k] is not before[k] for k in before)


def test_iterative_pose_mode_stops_early_on_a_stable_pose(two_view_scene, tmp_path):
    """imp.md §1.5: poses after iterations 4, 6, ... (1-based); a pose that moved ≤ 1.5° since the
    previous one stops the stack and only that estimate's MAGSAC inliers are returned."""
    from matchrepro.matchers.imp import IMPMatcher

    p0, p1, K0, K1, _ = two_view_scene
    g = np.random.default_rng(1)
    n, extra = len(p0), 200
    desc = g.normal(size=(n, 128))
    d0 = np.concatenate([desc, g.normal(size=(extra, 128))])
    d1 = np.concatenate([desc, g.normal(size=(extra, 128))])
    feats = []
    for pts, d in ((p0, d0), (p1, d1)):
        k = np.concatenate([pts, g.uniform(0, [640, 480], (extra, 2))]).astype(np.float32)
        feats.append({"keypoints": k, "scores": np.full(len(k), 0.05, np.float32),
                      "descriptors": (d / np.linalg.norm(d, axis=1, keepdims=True)).astype(np.float32),
                      "image_size": np.array([640, 480])})
    torch.save({"model": _identity_model(None).state_dict(), "variant": "imp"}, tmp_path / "w.pth")
    plain = IMPMatcher({"matcher": {"type": "imp", "variant": "imp"}}, tmp_path / "w.pth")(*feats)
    it = IMPMatcher({"matcher": {"type": "imp", "variant": "imp", "iterative": True, "iterative_variant": "corrected",
                                 "iterative_threshold_px": 1.0}}, tmp_path / "w.pth")
    r = it(*feats, K0, K1)
    assert plain["stopped_at"] == 15 and r["stopped_at"] == 6
    m = r["matches"]
    assert 0.9 * n < len(m) <= len(plain["matches"]) and np.all(m[:, 0] == m[:, 1]) and np.all(m[:, 0] < n)
    with pytest.raises(ValueError, match="camera matrices"):
        it(*feats)
