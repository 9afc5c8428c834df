"""IMP / EIMP training task for :func:`matchrepro.training.loop.train` (imp.md §3).

``model: imp`` trains DGNNS, ``model: eimp`` AdaGMN with pooling in the loop (θ_m =
``pool_confidence``, GT re-indexed to the retained keypoints). Data: an ``imp_dump``
preprocessing run (:class:`matchrepro.datasets.imp_training.IMPPairs`). The loss is the released
matching loss at every iteration, averaged over the 15 iterations; ``pose_loss: true`` adds the
paper's pose-consistency terms (``pose_loss_weight`` × (pose + geo), averaged over iterations),
off by default as in the release. Use ``lr: 1e-4`` with ``lr_schedule: exponential`` for the
released optimisation (constant for 200k steps, then ×0.999992 per step down to 1e-6).

Checkpoints carry ``variant`` and ``dim`` so :func:`matchrepro.matchers.imp.load_imp` rebuilds
the model; the state dict has the official layout.
"""

from __future__ import annotations

import math

import torch

from matchrepro.datasets.imp_training import IMPPairs
from matchrepro.errors import ConfigError
from matchrepro.models.checkpoints import extract_state_dict, load_checkpoint, load_state_dict_strict
from matchrepro.models.imp import IMP, NUM_ITERATIONS
from matchrepro.training import imp_losses
from matchrepro.training.loop import check_params

IMP_DEFAULTS = {
    "num_keypoints": 1024, "inliers_range": [32, 512], "pairs_per_scene": 80, "keypoint_shift": 0.5,
    "pool_confidence": 0.1, "pool_min_tokens": 256, "dual_softmax": False,
    "pose_loss": False, "pose_loss_weight": 1.0, "pose_match_threshold": 0.2,
    "init_mode": "released", "identity_temperature": 0.05, "identity_bin_cosine": 0.7,
}
INIT_MODES = ("released", "identity")


def identity_init(model: IMP, temperature: float, bin_cosine: float) -> None:
    """A demo deviation (``init_mode: identity``) for short CPU runs: every residual branch starts
    at zero (last conv of each layer's MLP and of the keypoint encoder) and each ``final_proj`` is
    s·I with s² = sqrt(D) / temperature, so the untrained model is the Sinkhorn over descriptor
    cosine similarities / temperature with the dustbin at cosine ``bin_cosine`` (bin_score =
    bin_cosine / temperature), i.e. a soft mutual nearest neighbour, and training starts from
    there instead of from the released random start (bin_score 1)."""
    s = (math.sqrt(model.dim) / temperature) ** 0.5
    with torch.no_grad():
        model.bin_score.fill_(bin_cosine / temperature)
        for layer in model.gnn.layers:
            layer.mlp[-1].weight.zero_()
            layer.mlp[-1].bias.zero_()
        model.kenc.encoder[-1].weight.zero_()
        model.kenc.encoder[-1].bias.zero_()
        for proj in model.final_proj:
            proj.weight.copy_(torch.eye(model.dim)[:, :, None] * s)
            proj.bias.zero_()


class IMPTask:
    def __init__(self, name: str, variant: str, params: dict, data_index, init=None):
        self.name, self.variant = name, variant
        self.p = check_params(name, params, IMP_DEFAULTS)
        lo, hi = self.p["inliers_range"]
        if not 0 <= lo <= hi:
            raise ConfigError(f"training.{name}.params.inliers_range must be [lo, hi] with 0 <= lo <= hi, got {[lo, hi]}")
        self.data = IMPPairs(data_index, self.p["num_keypoints"], (lo, hi), self.p["pairs_per_scene"],
                             self.p["keypoint_shift"], seed=int(params.get("seed", 0)))
        self.init = init

    def build_model(self) -> IMP:
        model = IMP(self.data.dim, pooling="mask" if self.variant == "eimp" else None,
                    pool_confidence=self.p["pool_confidence"], min_tokens=int(self.p["pool_min_tokens"]),
                    dual_softmax=self.p["dual_softmax"])
        if self.p["init_mode"] not in INIT_MODES:
            raise ConfigError(f"training.{self.name}.params.init_mode must be one of {list(INIT_MODES)}, "
                              f"got {self.p['init_mode']!r}")
        if self.p["init_mode"] == "identity":
            identity_init(model, float(self.p["identity_temperature"]), float(self.p["identity_bin_cosine"]))
        if self.init:
            load_state_dict_strict(model, extract_state_dict(load_checkpoint(self.init)), str(self.init))
        return model

    def num_samples(self) -> int:
        return self.data.epoch_size()

    def epoch_indices(self, epoch: int) -> torch.Tensor:
        return self.data.epoch_indices(epoch)

    def batch(self, idx) -> dict:
        return self.data.batch(idx)

    def checkpoint_extras(self) -> dict:
        return {"variant": self.variant, "dim": self.data.dim, "kind": self.variant}

    def loss(self, net, batch) -> torch.Tensor:
        data = {f"{k}{i}": batch[f"{src}{i}"] for i in (0, 1)
                for k, src in (("keypoints", "norm_keypoints"), ("scores", "scores"), ("descriptors", "descriptors"))}
        outs = net(data)
        total = 0.0
        for ni, P, ids0, ids1 in outs:
            loss = imp_losses.matching_loss(P, batch["gt0"], batch["gt1"], ids0, ids1)
            if self.p["pose_loss"]:
                loss = loss + self.p["pose_loss_weight"] * self._pose_term(P, ids0, ids1, batch)
            total = total + loss
        return total / NUM_ITERATIONS

    def _pose_term(self, P, ids0, ids1, batch) -> torch.Tensor:
        terms = []
        for b in range(len(batch["gt0"])):
            gt0, gt1 = batch["gt0"][b], batch["gt1"][b]
            kp0, kp1 = batch["keypoints0"][b], batch["keypoints1"][b]
            if len(ids0[b]) < len(gt0) or len(ids1[b]) < len(gt1):
                gt0, _ = imp_losses.restrict_gt(gt0, gt1, ids0[b], ids1[b])
                kp0, kp1 = kp0[ids0[b]], kp1[ids1[b]]
            r = imp_losses.pose_losses(P[b], kp0, kp1, gt0, batch["K0"][b], batch["K1"][b], batch["T_0to1"][b],
                                       self.p["pose_match_threshold"], self.p["keypoint_shift"])
            if r is not None:
                terms.append(r[0] + r[1])
        return torch.stack(terms).mean() if terms else torch.zeros((), device=batch["gt0"].device)
