import argparse
from collections import OrderedDict

import pytest
import torch

from matchrepro.models.checkpoints import CheckpointError, extract_state_dict, load_checkpoint, load_state_dict_strict


class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.bn = torch.nn.BatchNorm2d(4)


class NotAllowed:
    pass


def test_patch2pix_style_checkpoint_with_namespace_loads(tmp_path):
    net = Tiny()
    sd = OrderedDict((f"module.{k}", v) for k, v in net.state_dict().items())
    ckpt = {"last_epoch": 24, "backbone": "ResNet34", "feat_idx": [0, 1, 2, 3], "change_stride": True,
            "regressor_config": argparse.Namespace(conv_dims=[512, 512], psize=[16, 16]), "state_dict": sd}
    torch.save(ckpt, tmp_path / "p.pth")
    got = load_checkpoint(tmp_path / "p.pth")
    assert got["regressor_config"].psize == [16, 16]
    state = extract_state_dict(got)
    assert list(state) == list(net.state_dict())
    other = Tiny()
    load_state_dict_strict(other, state)
    assert torch.equal(other.conv.weight, net.conv.weight)


def test_bare_and_model_wrapped_state_dicts(tmp_path):
    net = Tiny()
    torch.save(net.state_dict(), tmp_path / "bare.pth")
    torch.save({"epoch": 3, "model": net.state_dict()}, tmp_path / "imp.pth")
    for f in ("bare.pth", "imp.pth"):
        load_state_dict_strict(Tiny(), extract_state_dict(load_checkpoint(tmp_path / f)))


def test_unexpected_pickled_object_is_refused(tmp_path):
    torch.save({"state_dict": Tiny().state_dict(), "evil": NotAllowed()}, tmp_path / "x.pth")
    with pytest.raises(CheckpointError, match=r"x\.pth: refused to unpickle an unexpected object"):
        load_checkpoint(tmp_path / "x.pth")


def test_mismatch_lists_missing_unexpected_and_shapes():
    sd = Tiny().state_dict()
    sd.pop("bn.bias")
    sd["extra.weight"] = torch.zeros(1)
    sd["conv.weight"] = torch.zeros(4, 3, 5, 5)
    with pytest.raises(CheckpointError) as e:
        load_state_dict_strict(Tiny(), sd, "ckpt.pth")
    msg = str(e.value)
    assert msg.startswith("ckpt.pth does not fit Tiny: 1 missing (e.g. bn.bias); 1 unexpected (e.g. extra.weight)")
    assert "conv.weight (4, 3, 5, 5) vs (4, 3, 3, 3)" in msg and "\n" not in msg


def test_missing_file():
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_checkpoint("/nonexistent/x.pth")
