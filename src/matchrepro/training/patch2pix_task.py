"""Training tasks of the Patch2Pix family for :func:`matchrepro.training.loop.train`.

* ``ncnet`` (:class:`CoarseTask`): the backbone + NC stage trained with the supervised
  correspondence loss of :mod:`matchrepro.training.ncnet_supervision`. This is the demo's
  stand-in for ImageNet + ``ncn_ivd_5ep`` (which the full configuration downloads instead).
* ``patch2pix`` (:class:`Patch2PixTask`): the released training (patch2pix.md §3.3-3.5): the
  backbone and NC stage frozen (``requires_grad`` off; they receive no gradient in the release
  either) with their BatchNorms in training mode unless ``freeze_bn``, ``ptmax`` coarse
  proposals per pair expanded to ``panc`` = 8 anchors, the mid and fine regressors trained with
  the weighted BCE and squared-Sampson losses (:mod:`matchrepro.training.patch2pix_losses`).

Both read Patch2Pix pair files (``patch2pix_pairs`` preprocessing) over a MegaDepth root and
save ``arch`` and ``feat_idx`` in their checkpoints, so :func:`matchrepro.matchers.patch2pix.
load_model` rebuilds the trained (possibly small) network.
"""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path

import numpy as np
import torch

from matchrepro.datasets.patch2pix_training import Patch2PixPairs
from matchrepro.errors import ConfigError
from matchrepro.models.checkpoints import CheckpointError, extract_state_dict, load_checkpoint
from matchrepro.models.patch2pix import NCNet, Patch2Pix, full_arch, init_weights, predict
from matchrepro.training import patch2pix_losses as losses
from matchrepro.training import validation
from matchrepro.training.loop import check_params
from matchrepro.training.ncnet_supervision import batch_targets, coarse_loss

SHARED_ARCH_KEYS = ("widths", "blocks", "nc_kernels", "nc_channels")  # backbone + NC: must equal the init's

# validation (patch2pix.md §3.5): the first val_pairs pairs per validation scene, matched at
# val_image_size (default: image_size), pose by RANSAC at val_ransac_px
VAL_DEFAULTS = {"val_pairs": 150, "val_image_size": None, "val_ransac_px": 0.5}
COARSE_DEFAULTS = {"arch": None, "image_size": [480, 320], "raw_weight": 1.0, "temperature": 0.1, "depth_tol": 0.1,
                   **VAL_DEFAULTS, "val_threshold": 0.9}
PATCH2PIX_DEFAULTS = {
    "arch": None, "image_size": [480, 320], "feat_idx": [0, 1, 2, 3], "ptmax": 400, "panc": 8, "pshift": 8,
    "cls_dthres": [50.0, 5.0], "epi_dthres": [50.0, 5.0], "weight_cls": 10.0, "weight_epi": [1.0, 1.0],
    "freeze_bn": False, "offset_init": "released", "regression_target": "epipolar",
    "sampson_dtype": "float64",  # as released; float32 was this project's earlier computation
    **VAL_DEFAULTS, "val_threshold": 0.5,
}
SAMPSON_DTYPES = {"float64": torch.float64, "float32": torch.float32}
REGRESSION_TARGETS = ("epipolar", "reprojection")


def load_init(path: str | Path | None) -> tuple[dict | None, dict | None]:
    """(state dict, arch) of an initial checkpoint (official files carry no ``arch``)."""
    if not path:
        return None, None
    ck = load_checkpoint(path)
    arch = ck.get("arch") if isinstance(ck, dict) else None
    return extract_state_dict(ck), arch


def load_partial(model: torch.nn.Module, sd: dict, source: str, required: tuple[str, ...]) -> None:
    """Load the entries of ``sd`` that the model has (``strict=False`` as released), but refuse
    a file that lacks any tensor under the ``required`` prefixes or has one of another shape."""
    own = model.state_dict()
    need = [k for k in own if k.startswith(required)]
    missing = [k for k in need if k not in sd]
    bad = [k for k in own if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)]
    if missing or bad:
        what = f"{len(missing)} missing (e.g. {missing[0]})" if missing else f"{len(bad)} with other shapes (e.g. {bad[0]})"
        raise CheckpointError(f"{source}: initial weights do not fit {type(model).__name__}: {what}")
    model.load_state_dict({k: v for k, v in sd.items() if k in own}, strict=False)


def zero_offset_init(model: Patch2Pix) -> None:
    """Start both regressors at zero offset (a deviation for short demo runs, ``offset_init:
    zero``): the offset rows of the last Linear get zero weights and the bias atanh(1/2), so
    ``16 tanh(relu(o)) - 8`` is exactly 0 and refinement begins as the identity instead of the
    released Xavier start, whose offsets spread over [-8, 8) px."""
    bias = 0.5 * math.log(3.0)  # atanh(0.5)
    for reg in (model.regress_mid, model.regress_fine):
        last = reg.fc[-1]
        with torch.no_grad():
            last.weight[:4].zero_()
            last.bias[:4].fill_(bias)


class _PairsTask:
    kind = ""
    val_metrics = validation.PATCH2PIX_METRICS
    val_criterion = "pose_rate"  # the release keeps immatch_best_ckpt by this rate (or the error)

    def __init__(self, name: str, params: dict, data_index: str | Path, dataset_root: str | Path,
                 init: str | Path | None, depth: bool, val_index: str | Path | None = None):
        self.name = name
        self.init_sd, init_arch = load_init(init)
        arch = self.p["arch"] if self.p["arch"] is not None else init_arch
        self.arch = full_arch(arch)
        if init_arch is not None:
            theirs = full_arch(init_arch)
            diff = [k for k in SHARED_ARCH_KEYS if theirs[k] != self.arch[k]]
            if diff:
                raise ConfigError(f"training.{name}.params.arch.{diff[0]} is {self.arch[diff[0]]} but the initial "
                                  f"weights {init} have {theirs[diff[0]]}")
        self.data = Patch2PixPairs(data_index, dataset_root, self.p["image_size"], depth=depth)
        self.init_path = init
        self.val = None
        if val_index is not None:
            self.val = Patch2PixPairs(val_index, dataset_root, self.p["val_image_size"] or self.p["image_size"])
            shared = self.val.scenes() & self.data.scenes()
            if shared:
                raise ConfigError(f"training.{name}.validation: scenes {sorted(shared)} are also training scenes")
        self.has_validation = self.val is not None

    def validate(self, model) -> dict:
        """Pose validation of the released training (patch2pix.md §3.5) on the validation pairs:
        pass rates at 1..10°, mean / median error, ``pose_rate`` and the mean number of matches."""
        errors, counts = [], []
        dev = next(model.parameters()).device
        for i in self.val.first_per_scene(int(self.p["val_pairs"])):
            s = self.val[i]
            out = predict(model, s["im1"][None].to(dev), s["im2"][None].to(dev), float(self.p["val_threshold"]))
            m = out["matches"].cpu().numpy().astype(np.float64)
            T = s["T_1to2"].numpy().astype(np.float64)
            errors.append(validation.patch2pix_pose_error(m[:, :2], m[:, 2:], s["K1"].numpy().astype(np.float64),
                                                          s["K2"].numpy().astype(np.float64), T[:3, :3], T[:3, 3],
                                                          float(self.p["val_ransac_px"])))
            counts.append(len(m))
        return validation.pose_summary(errors, counts)

    def num_samples(self) -> int:
        return len(self.data)

    def batch(self, idx) -> dict:
        return self.data.batch(idx)

    def checkpoint_extras(self) -> dict:
        return {"arch": self.arch, "kind": self.kind}


class CoarseTask(_PairsTask):
    """Backbone + NC stage with the supervised correspondence loss (demo pre-training)."""

    kind = "ncnet"

    def __init__(self, name, params, data_index, dataset_root, init=None, val_index=None):
        self.p = check_params(name, params, COARSE_DEFAULTS)
        super().__init__(name, params, data_index, dataset_root, init, depth=True, val_index=val_index)

    def build_model(self) -> NCNet:
        model = NCNet(arch=self.arch)
        init_weights(model, seed=0)
        if self.init_sd is not None:
            load_partial(model, self.init_sd, str(self.init_path), ("extract.",))
        return model

    def loss(self, net, batch) -> torch.Tensor:
        nc, _, raw = net(batch["im1"], batch["im2"])
        _, _, h1, w1, h2, w2 = nc.shape
        cell = 2 * (batch["im1"].shape[3] // (2 * w1))
        t12, t21 = batch_targets(batch, (h1, w1), (h2, w2), cell, self.p["depth_tol"])
        return coarse_loss(nc, raw, t12, t21, self.p["raw_weight"], self.p["temperature"])


class Patch2PixTask(_PairsTask):
    """The released Patch2Pix regressor training."""

    kind = "patch2pix"

    def __init__(self, name, params, data_index, dataset_root, init=None, val_index=None):
        self.p = check_params(name, params, PATCH2PIX_DEFAULTS)
        if self.p["sampson_dtype"] not in SAMPSON_DTYPES:
            raise ConfigError(f"training.{name}.params.sampson_dtype: {self.p['sampson_dtype']!r} "
                              f"(expected one of {sorted(SAMPSON_DTYPES)})")
        if self.p["regression_target"] not in REGRESSION_TARGETS:
            raise ConfigError(f"training.{name}.params.regression_target must be one of {list(REGRESSION_TARGETS)}, "
                              f"got {self.p['regression_target']!r}")
        reproj = self.p["regression_target"] == "reprojection"
        super().__init__(name, params, data_index, dataset_root, init, depth=reproj, val_index=val_index)
        self.skipped = 0

    def build_model(self) -> Patch2Pix:
        model = Patch2Pix(feat_idx=self.p["feat_idx"], arch=self.arch)
        init_weights(model, seed=0)
        if self.init_sd is not None:
            load_partial(model, self.init_sd, str(self.init_path), ("extract.", "ncn."))
        if self.p["offset_init"] == "zero":
            zero_offset_init(model)
        elif self.p["offset_init"] != "released":
            raise ConfigError(f"training.{self.name}.params.offset_init must be 'released' or 'zero', "
                              f"got {self.p['offset_init']!r}")
        for prm in list(model.extract.parameters()) + list(model.ncn.parameters()):
            prm.requires_grad_(False)  # freeze_feat=87 and the NCN, which gets no gradient anyway
        model.ptmax, model.panc, model.pshift = int(self.p["ptmax"]), int(self.p["panc"]), int(self.p["pshift"])
        if model.panc not in (1, 8):
            raise ConfigError(f"training.{self.name}.params.panc must be 1 or 8, got {model.panc}")
        return model

    def checkpoint_extras(self) -> dict:
        return {**super().checkpoint_extras(), "feat_idx": list(self.p["feat_idx"])}

    def loss(self, net, batch) -> torch.Tensor | None:
        model = net.module if hasattr(net, "module") else net
        if self.p["freeze_bn"]:
            model.extract.eval()  # a deliberate deviation: the release keeps them in train mode
        outs = net(batch["im1"], batch["im2"])
        pairs = []
        for b, o in enumerate(outs):
            dist = None
            if self.p["regression_target"] == "reprojection":
                dist = partial(losses.transfer_sq, depth1=batch["depth1"][b], K1=batch["K1"][b], K2=batch["K2"][b],
                               T_1to2=batch["T_1to2"][b])
            pairs.append(losses.pair_loss(o["coarse"], o["mid"], o["prob_mid"], o["fine"], o["prob_fine"], batch["F"][b].to(SAMPSON_DTYPES[self.p["sampson_dtype"]]),
                                          self.p["cls_dthres"], self.p["epi_dthres"], self.p["weight_epi"], dist))
        self.skipped += sum(p is None for p in pairs)
        return losses.total_loss(pairs, self.p["weight_cls"])


TASKS = {"ncnet": CoarseTask, "patch2pix": Patch2PixTask}
