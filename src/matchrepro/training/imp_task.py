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
from pathlib import Path

import numpy as np
import torch

from matchrepro.datasets.imp_online import IMPOnlinePairs
from matchrepro.datasets.imp_training import IMPPairs
from matchrepro.evaluation.pose_superglue import estimate_relative_pose_magsac, pose_errors
from matchrepro.errors import ConfigError
from matchrepro.models.checkpoints import extract_state_dict, load_checkpoint, load_state_dict_strict
from matchrepro.models.imp import IMP, NUM_ITERATIONS
from matchrepro.training import imp_losses, validation
from matchrepro.training.loop import check_params

IMP_DEFAULTS = {
    "num_keypoints": 1024, "inliers_range": [32, 512], "pairs_per_scene": 80, "keypoint_shift": 0.5,
    "pool_confidence": 0.1, "pool_min_tokens": 256, "dual_softmax": False,
    "pose_loss": False, "pose_loss_weight": 1.0, "pose_match_threshold": 0.2,
    "init_mode": "released", "identity_temperature": 0.05, "identity_bin_cosine": 0.7,
    # validation: the first val_pairs pairs per validation scene, sampled as in training with a fixed
    # seed; matches at p = val_threshold; pose by MAGSAC at val_ransac_px (IMP's protocol solver)
    "val_pairs": 150, "val_threshold": 0.2, "val_ransac_px": 1.0,
    # online pairs (data: an imp_pairs run): augmentation strengths in [0, 1] and the GT radius
    "augment_photometric": 0.0, "augment_perspective": 0.0, "max_error_px": 5.0,
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


def model_input(batch: dict) -> dict:
    """The network's inputs from a training batch: normalised keypoints, scores, descriptors."""
    return {f"{k}{i}": batch[f"{src}{i}"] for i in (0, 1)
            for k, src in (("keypoints", "norm_keypoints"), ("scores", "scores"), ("descriptors", "descriptors"))}


def _index_kind(index) -> str | None:
    """The preprocessing kind an index.json was made by (None for a hand-written index)."""
    import json

    try:
        return json.loads(Path(index).read_text()).get("preprocessing", {}).get("kind")
    except (OSError, ValueError):
        return None


class IMPTask:
    val_metrics = validation.IMP_METRICS
    val_criterion = "auc@10"

    def __init__(self, name: str, variant: str, params: dict, data_index, init=None, val_index=None,
                 dataset_root=None, features: dict | None = None, feature_weights=None):
        self.name, self.variant = name, variant
        self.p = check_params(name, params, IMP_DEFAULTS)
        lo, hi = self.p["inliers_range"]
        if not 0 <= lo <= hi:
            raise ConfigError(f"training.{name}.params.inliers_range must be [lo, hi] with 0 <= lo <= hi, got {[lo, hi]}")
        self.online = _index_kind(data_index) == "imp_pairs"
        if self.online:  # pairs, features and GT made while training (datasets/imp_online.py)
            if dataset_root is None:
                raise ConfigError(f"training.{name}.data: online IMP pairs need the MegaDepth dataset")
            self.data = IMPOnlinePairs(data_index, dataset_root, features, feature_weights, self.p["num_keypoints"],
                                       (lo, hi), self.p["pairs_per_scene"], self.p["keypoint_shift"],
                                       seed=int(params.get("seed", 0)), photometric=self.p["augment_photometric"],
                                       perspective=self.p["augment_perspective"], max_error_px=self.p["max_error_px"])
        else:
            for k in ("augment_photometric", "augment_perspective"):
                if self.p[k]:
                    raise ConfigError(f"training.{name}.params.{k}: augmentations need online pairs "
                                      "(data: an imp_pairs preprocessing run)")
            self.data = IMPPairs(data_index, self.p["num_keypoints"], (lo, hi), self.p["pairs_per_scene"],
                                 self.p["keypoint_shift"], seed=int(params.get("seed", 0)))
        self.init = init
        self.val = None
        if val_index is not None:
            self.val = IMPPairs(val_index, self.p["num_keypoints"], (lo, hi), self.p["pairs_per_scene"],
                                self.p["keypoint_shift"], seed=0)
            shared = self.val.scenes() & self.data.scenes()
            if shared:
                raise ConfigError(f"training.{name}.validation: scenes {sorted(shared)} are also training scenes")
        self.has_validation = self.val is not None

    def validate(self, model) -> dict:
        """Matching precision / recall against the dump's GT matches and pose AUC (%) on the
        validation pairs (the same sampling as training, seed 0: the loop restores the RNG)."""
        torch.manual_seed(0)
        dev = next(model.parameters()).device
        pred, gt, errors = [], [], []
        for scene in self.val.scene_pairs:
            for i in scene[: int(self.p["val_pairs"])]:
                b = {k: v.to(dev) for k, v in self.val.batch([i]).items()}
                m0 = model.match(model_input(b), float(self.p["val_threshold"]))["matches0"].cpu().numpy()
                gt0 = b["gt0"][0].cpu().numpy()
                i0 = np.flatnonzero(m0 >= 0)
                j0 = np.flatnonzero(gt0 >= 0)
                pred.append(np.stack([i0, m0[i0]], 1))
                gt.append(np.stack([j0, gt0[j0]], 1))
                k0, k1 = b["keypoints0"][0].cpu().numpy(), b["keypoints1"][0].cpu().numpy()
                est = estimate_relative_pose_magsac(k0[i0], k1[m0[i0]], b["K0"][0].cpu().numpy(),
                                                    b["K1"][0].cpu().numpy(), float(self.p["val_ransac_px"]))
                errors.append(pose_errors(est, b["T_0to1"][0].cpu().numpy().astype(np.float64))[2])
        return validation.matching_summary(pred, gt, errors)

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

    def batches(self, plan, num_workers: int = 0):
        """Each step's batch (see matchrepro.training.loop): dump pairs are sampled in this process
        from torch's global generator, as released; online pairs from per-step seeds, by
        ``num_workers`` DataLoader workers when asked."""
        if self.online:
            return self.data.loader(plan, num_workers)
        if num_workers:
            raise ConfigError(f"training.{self.name}.params.num_workers: dump pairs are read from memory in the "
                              "training process; DataLoader workers are for online pairs (data: an imp_pairs run)")
        return (self.data.batch(idx) for _, idx, _ in plan)

    def checkpoint_extras(self) -> dict:
        return {"variant": self.variant, "dim": self.data.dim, "kind": self.variant}

    def loss(self, net, batch) -> torch.Tensor:
        outs = net(model_input(batch))
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
