"""IMP / EIMP over cached keypoints (imp.md §1, §4): weights in, matches out.

Keypoints are upright-original pixels (the features cache's frame); they are normalised with
the upright-original image size, as the release does with the stored image's W and H.

Method config (``matcher:``): ``variant`` imp | eimp, ``threshold`` (p, 0.2), ``pooling``
(eimp: ``mask`` as the released batch code, ``prune`` physically removes pruned keypoints),
``dual_softmax``, and ``iterative`` with ``iterative_threshold_px`` (imp.md §1.5/§4.3: MAGSAC
between iterations, early stop when the pose changes by ≤ 1.5°), ``uncertainty`` (eimp iterative:
pool with θ_m = 0.2 × inlier ratio, the release's ``--use_uncertainty``; without it the release
runs the plain iterative loop with no pooling) and ``iterative_variant``:

``released`` (eval/matching.py ``matching_iterative*`` as it runs):
  * the "inlier" mask starts all true and only the MAGSAC inliers are overwritten with the
    cheirality test, so MAGSAC outliers stay marked; an early stop returns the p = 0.1 matches
    under that mask, and θ_m = 0.2 × its mean;
  * the stopped pose is the reported pose (returned as ``pose``; IMP's protocols use it);
  * a pose is also estimated after iteration 15: within 1.5° of the previous one it stops there;
  * a pose iteration with fewer than 25 matches does not pool.
``corrected`` (this project's earlier reading): the mask is the MAGSAC inlier set, no pose is
returned (the evaluator re-estimates from the matches), the loop ends at iteration 15 before any
pose, and an iteration with fewer than 25 matches still pools with θ_m = 0.2.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from matchrepro.evaluation.metrics import rotation_error_deg, translation_error_deg
from matchrepro.evaluation.pose_superglue import estimate_relative_pose_magsac
from matchrepro.models.checkpoints import CheckpointError, extract_state_dict, load_checkpoint, load_state_dict_strict
from matchrepro.models.imp import NUM_ITERATIONS, POOL_ITERATIONS, IMP, normalize_keypoints

ITERATIVE_POSE_ITERATIONS = tuple(sorted(POOL_ITERATIONS | {NUM_ITERATIONS - 1}))  # 0-based {3,5,...,13,14}
ITERATIVE_MIN_MATCHES = 25
ITERATIVE_THRESHOLD = 0.1
EARLY_STOP_DEG = 1.5
ITERATIVE_VARIANTS = ("released", "corrected")


def load_imp(weights: str | Path, variant: str | None = None, device="cpu", **kw) -> IMP:
    """An IMP/EIMP from an official file (``{'model': state_dict}``, ``module.`` stripped) or one
    of ours (which also stores ``variant``); D is read from the keypoint encoder's last layer."""
    ck = load_checkpoint(weights, map_location="cpu")
    sd = extract_state_dict(ck)
    key = "kenc.encoder.12.weight"
    if key not in sd:
        raise CheckpointError(f"{weights}: not an IMP/EIMP checkpoint (no {key})")
    dim = int(sd[key].shape[0])
    variant = variant or (ck.get("variant") if isinstance(ck, dict) else None) or "imp"
    if variant == "eimp":
        kw.setdefault("pooling", "mask")
    else:
        kw.pop("pooling", None)
    model = IMP(dim, **kw)
    load_state_dict_strict(model, sd, str(weights))
    return model.eval().to(device)


def _pose_change_deg(a, b) -> float:
    """max(ΔR, Δt) in degrees between two (R, t) estimates (t compared as directions, unfolded)."""
    return max(rotation_error_deg(a[0], b[0]), translation_error_deg(a[1], b[1], fold=False))


class IMPMatcher:
    def __init__(self, method: dict, weights: str | Path, device: str = "auto"):
        m = method["matcher"]
        self.device = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                                   ("cpu" if device == "auto" else device))
        variant = m.get("variant") or "imp"
        self.iterative = bool(m.get("iterative"))
        self.uncertainty = m.get("uncertainty") is not False  # unset: true, as eval_imp --use_uncertainty
        self.procedure = m.get("iterative_variant") or "released"
        if self.procedure not in ITERATIVE_VARIANTS:
            raise ValueError(f"matcher.iterative_variant: {self.procedure!r} (expected one of {ITERATIVE_VARIANTS})")
        pooling = m.get("pooling") or ("prune" if self.iterative else "mask")
        self.model = load_imp(weights, variant, self.device, match_threshold=m.get("threshold") or 0.2,
                              dual_softmax=bool(m.get("dual_softmax")), pooling=pooling)
        if self.iterative and not self.uncertainty:  # the release's plain iterative loop: no pooling
            self.model.pooling = None
        self.threshold_px = float(m.get("iterative_threshold_px") or 1.0)

    def _data(self, a: dict, b: dict) -> dict:
        t = lambda x: torch.as_tensor(np.asarray(x, np.float32), device=self.device)[None]  # noqa: E731
        return {
            "keypoints0": normalize_keypoints(t(a["keypoints"]), t(a["image_size"])),
            "keypoints1": normalize_keypoints(t(b["keypoints"]), t(b["image_size"])),
            "scores0": t(a["scores"]), "scores1": t(b["scores"]),
            "descriptors0": t(a["descriptors"]), "descriptors1": t(b["descriptors"]),
        }

    def __call__(self, a: dict, b: dict, K0=None, K1=None) -> dict:
        """``a``, ``b``: features of the two images (``keypoints`` (N, 2) px, ``scores``,
        ``descriptors`` (N, D), ``image_size`` (w, h)). Returns ``matches (K, 2)``, ``scores (K,)``,
        ``stopped_at`` (1-based iteration of the iterative mode, 15 otherwise), ``retained``
        (keypoints of each image entering each iteration that ran, ``[(n0, n1), ...]``) and
        ``pose``: ``(R (3, 3), unit t (3,))`` of a released iterative stop (``T_0to1`` in the
        keypoints' frame with ``K0``/``K1``), else None."""
        if len(a["keypoints"]) == 0 or len(b["keypoints"]) == 0:
            return {"matches": np.zeros((0, 2), np.int64), "scores": np.zeros(0, np.float32),
                    "stopped_at": NUM_ITERATIONS, "retained": [], "pose": None}
        data = self._data(a, b)
        if self.iterative:
            if K0 is None or K1 is None:
                raise ValueError("the iterative IMP mode needs both camera matrices (a pose dataset)")
            return self._iterative(data, a["keypoints"], b["keypoints"], K0, K1)
        with torch.no_grad():
            r = self.model.match(data)
        return self._pack(r["matches0"], r["mscores0"]) | {"stopped_at": NUM_ITERATIONS, "retained": r["retained"],
                                                            "pose": None}

    @staticmethod
    def _pack(m0: torch.Tensor, s0: torch.Tensor) -> dict:
        m0, s0 = m0.cpu().numpy(), s0.cpu().numpy()
        i = np.flatnonzero(m0 >= 0)
        return {"matches": np.stack([i, m0[i]], 1).astype(np.int64), "scores": s0[i].astype(np.float32)}

    @torch.no_grad()
    def _iterative(self, data, k0, k1, K0, K1) -> dict:
        """imp.md §1.5: a pose after iterations 4, 6, ..., 14 and 15 (1-based) from matches with
        p = 0.1 (at least 25); stop when it moved ≤ 1.5° since the previous one; otherwise the
        last head with the usual threshold. The two variants differ as the module docstring says."""
        model, released = self.model, self.procedure == "released"
        st = model.start(data)
        prev, retained = None, []
        for ni in range(NUM_ITERATIONS):
            retained.append((len(st.ids0[0]), len(st.ids1[0])))
            model.iterate(st, ni)
            if ni not in ITERATIVE_POSE_ITERATIONS:
                continue
            P = model.head(st, ni)
            last = ni == NUM_ITERATIONS - 1
            if last and not released:
                break
            r = model.extract(st, P, ITERATIVE_THRESHOLD)
            out = self._pack(r["matches0"], r["mscores0"])
            confidence = None
            if len(out["matches"]) < ITERATIVE_MIN_MATCHES:
                prev = None
                if released:  # the release skips pooling on this iteration
                    continue
            else:
                m = out["matches"]
                est = estimate_relative_pose_magsac(k0[m[:, 0]], k1[m[:, 1]], K0, K1, self.threshold_px)
                cur = (est.R, est.t) if est.R is not None else None
                if released:  # all true, the MAGSAC inliers overwritten by the cheirality test
                    keep = ~est.inliers | (est.cheirality if est.cheirality is not None else est.inliers)
                else:
                    keep = est.inliers
                if cur is not None and prev is not None and _pose_change_deg(cur, prev) <= EARLY_STOP_DEG:
                    return {"matches": m[keep], "scores": out["scores"][keep], "stopped_at": ni + 1,
                            "retained": retained, "pose": cur if released else None}
                prev = cur
                if cur is not None and model.pooling is not None:
                    confidence = 0.2 * float(keep.mean())  # the uncertainty variant's θ_m
            if last:
                break
            if model.pooling is not None and ni in POOL_ITERATIONS:
                model.pool(st, P, 0.2 if confidence is None else confidence)
        r = model.extract(st, P, model.match_threshold)
        return self._pack(r["matches0"], r["mscores0"]) | {"stopped_at": NUM_ITERATIONS, "retained": retained,
                                                            "pose": None}
