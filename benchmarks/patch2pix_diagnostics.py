"""Why the demo's Patch2Pix regressors refine little: measurements on the demo's own training pairs.

    python benchmarks/patch2pix_diagnostics.py --work <a demo working directory> [--pairs 12]
                                               [--overfit-steps 200] [--threads 2]

``--work`` is a folder where the demo ran (``benchmarks/demo_runtime.py --keep`` prints it; or the
repository itself after ``snakemake --cores all results/tables``): it reads the demo's MegaDepth
scenes, the ``patch2pix_pairs`` training pairs, the trained ``patch2pix_demo`` and ``ncnet_demo``
weights and the training settings from its ``config.yaml``. It prints, at the training resolution:

1. **Targets**: the ground-truth partner of each coarse match's image-1 point (depth + pose,
   exact in the rendered demo scenes) and its Sampson distance under the pair's F (should be ~0:
   the epipolar target agrees with the true correspondence).
2. **Errors by stage**: median distance to the true partner of the coarse, mid and fine matches,
   split into the component across the epipolar line (what the released Sampson loss sees) and
   along it (what it cannot see).
3. **Gradient**: the norm of the released loss's gradient reaching each regressor, and the share
   of proposals inside the classification / regression thresholds.
4. **Patch contents at known offsets**: a second image made by translating the first by a known
   (dx, dy); coarse points displaced by known errors e (-5..5 px); template matching inside the gathered
   image-2 patch (raw-pixel level) must find the true partner at centre - e.
5. **Single-pair overfit**: the regressors retrained from the demo start on one training pair for
   ``--overfit-steps`` steps, with the released epipolar target and with the reprojection target
   (``regression_target: reprojection``); the fine error on that pair as training goes.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
import yaml

from matchrepro.datasets.patch2pix_training import Patch2PixPairs
from matchrepro.geometry.depth_warp import sample_depth, warp_with_depth
from matchrepro.matchers.patch2pix import load_model
from matchrepro.models.patch2pix import corr_to_matches, filter_coarse, gather_patch_pairs
from matchrepro.training import patch2pix_losses as losses
from matchrepro.training.patch2pix_task import Patch2PixTask


def true_partner(item: dict, pts1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(partner pixels (N, 2) in image 2, valid (N,)) of image-1 pixels by depth and pose."""
    z = sample_depth(item["depth1"], pts1)
    p2, z2 = warp_with_depth(pts1, z, item["K1"], item["K2"], item["T_1to2"])
    return p2, (z > 0) & (z2 > 1e-6)


def line_components(m: torch.Tensor, gt2: torch.Tensor, F: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """|error| across and along the epipolar line of each match's image-1 point in image 2."""
    x1 = torch.cat([m[:, :2], torch.ones_like(m[:, :1])], 1).double()
    line = x1 @ F.T  # a x + b y + c = 0 in image 2
    n = line[:, :2] / torch.linalg.norm(line[:, :2], dim=1, keepdim=True)
    err = (m[:, 2:] - gt2).double()
    across = (err * n).sum(1).abs()
    along = (err[:, 0] * -n[:, 1] + err[:, 1] * n[:, 0]).abs()
    return across, along


@torch.no_grad()
def stages(model, item) -> dict:
    """Coarse mutual matches and their mid / fine refinements (eval mode), batch 1."""
    im1, im2 = item["im1"][None], item["im2"][None]
    f1, f2 = model.extract.forward_all(im1), model.extract.forward_all(im2)
    corr, delta = model.coarse_volume(f1[-1], f2[-1])
    coarse, score = corr_to_matches(corr, delta, 2, model.extract.strides[-1])
    coarse, _ = filter_coarse(coarse, score, 0.0)
    sizes = [(im1.shape[3], im1.shape[2]), (im2.shape[3], im2.shape[2])]
    mid, _, fine, prob = model.refine_levels(f1, f2, coarse, sizes)
    return {"coarse": coarse, "mid": mid, "fine": fine, "prob_fine": prob}


def med(x: torch.Tensor) -> float:
    return float(x.median()) if len(x) else float("nan")


def report_errors(model, data, pairs) -> None:
    rows = {k: ([], [], []) for k in ("coarse", "mid", "fine")}
    target = []
    for i in pairs:
        item = data[i]
        st = stages(model, item)
        gt2, ok = true_partner(item, st["coarse"][:, :2])
        F = item["F"]
        target.append(torch.sqrt(losses.sampson_sq(torch.cat([st["coarse"][ok, :2], gt2[ok]], 1), F)))
        for k in rows:
            m = st[k][ok]
            # the true partner of each stage's own image-1 point (the regressors move both points)
            g, ok2 = true_partner(item, m[:, :2])
            across, along = line_components(m[ok2], g[ok2], F)
            rows[k][0].append(torch.linalg.norm(m[ok2, 2:] - g[ok2], dim=1))
            rows[k][1].append(across)
            rows[k][2].append(along)
    t = torch.cat(target)
    print(f"1. targets: Sampson distance of the true partners under F: median {med(t):.3g} px, "
          f"95th percentile {float(t.quantile(0.95)):.3g} px ({len(t)} coarse points with depth)")
    print("2. error to the true partner on the training pairs (px, medians):")
    print(f"   {'stage':<8}{'distance':>10}{'across the line':>17}{'along the line':>16}{'matches':>9}")
    for k, (d, a, b) in rows.items():
        d, a, b = torch.cat(d), torch.cat(a), torch.cat(b)
        print(f"   {k:<8}{med(d):>10.2f}{med(a):>17.2f}{med(b):>16.2f}{len(d):>9}")


def report_gradient(task, model, data, pairs) -> None:
    model.train()
    batch = data.batch(pairs[:2])
    loss = task.loss(model, batch)
    model.zero_grad()
    loss.backward()
    for name in ("regress_mid", "regress_fine"):
        reg = getattr(model, name)
        g = torch.sqrt(sum((p.grad ** 2).sum() for p in reg.parameters() if p.grad is not None))
        w = torch.sqrt(sum((p.detach() ** 2).sum() for p in reg.parameters()))
        last = reg.fc[-1].weight.grad[:4].norm()
        print(f"3. gradient: {name}: |grad| {float(g):.3g} (|w| {float(w):.3g}), offset rows of the last "
              f"layer {float(last):.3g}")
    with torch.no_grad():
        outs = model(batch["im1"], batch["im2"])
        for b, o in enumerate(outs):
            F = batch["F"][b]
            dc, dm = losses.sampson_sq(o["coarse"], F), losses.sampson_sq(o["mid"], F)
            c, e = task.p["cls_dthres"], task.p["epi_dthres"]
            print(f"   pair {b}: {len(dc)} proposals; mid positives (coarse < {c[0]} px²) {float((dc < c[0]).float().mean()):.2f}"
                  f", fine positives (mid < {c[1]} px²) {float((dm < c[1]).float().mean()):.2f}, "
                  f"regressed at fine (mid < {e[1]} px²) {float((dm < e[1]).float().mean()):.2f}")
    model.eval()


@torch.no_grad()
def report_patches(model, item, shift=(5, -3), n=200, seed=0) -> None:
    """Translate image 1 by ``shift`` px, displace the true partners by known errors and find
    them by template matching in the gathered raw-pixel patches."""
    im1 = item["im1"][None]
    dx, dy = shift
    im2 = torch.roll(im1, shifts=(dy, dx), dims=(2, 3))
    H, W = im1.shape[2:]
    g = torch.Generator().manual_seed(seed)
    p1 = torch.stack([torch.randint(20, W - 20, (n,), generator=g), torch.randint(20, H - 20, (n,), generator=g)], 1)
    e = torch.randint(-5, 6, (n, 2), generator=g)  # (a 5x5 window centre reaches offsets -6..5)
    q2 = p1 + torch.tensor([dx, dy]) + e
    matches = torch.cat([p1, q2], 1).float()
    patches = gather_patch_pairs([im1], [im2], [1], matches, [(W, H), (W, H)])  # (n, 6, 16, 16)
    a, b = patches[:, :3], patches[:, 3:]
    tpl = a[:, :, 6:11, 6:11]  # 5x5 around the centre (index 8) of image 1's patch
    found = []
    for k in range(n):
        r = torch.nn.functional.conv2d(b[k:k + 1], tpl[k:k + 1]) - 0.5 * torch.nn.functional.conv2d(
            b[k:k + 1] ** 2, torch.ones_like(tpl[k:k + 1]))  # correlation - energy/2 = -SSD/2 + const
        iy, ix = divmod(int(r.flatten().argmax()), r.shape[-1])
        found.append((ix + 2 - 8, iy + 2 - 8))  # offset of the best 5x5 centre from the patch centre
    found = torch.tensor(found)
    ok = (found == -e).all(1).float().mean()
    print(f"4. patch contents: the true partner found at centre - e in {float(ok) * 100:.1f}% of {n} "
          f"patches (shift {shift}, errors e in [-5, 5] px)")
    # the trained regressors on the same points (all levels): offset predicted vs -e
    f1, f2 = model.extract.forward_all(im1), model.extract.forward_all(im2)
    sizes = [(W, H), (W, H)]
    mid, _, fine, _ = model.refine_levels(f1, f2, matches, sizes)
    for name, m in (("mid", mid), ("fine", fine)):
        pred = m[:, 2:] - matches[:, 2:]
        r = np.corrcoef(pred.flatten().numpy(), (-e).flatten().float().numpy())[0, 1]
        print(f"   trained {name} regressor on these points: predicted offset vs -e: correlation {r:.2f}, "
              f"median error to the true partner {med(torch.linalg.norm(m[:, 2:] - (p1 + torch.tensor([dx, dy])), dim=1)):.2f} px "
              f"(before: {med(torch.linalg.norm(e.float(), dim=1)):.2f} px)")


def overfit(params: dict, index: Path, root: Path, init: Path, data, pair: int, steps: int,
            target: str) -> list[tuple[int, float, float, float]]:
    """Retrain the regressors from the demo start (the NCNet stage, as the demo's training) on one
    pair; (step, loss, coarse, fine median error px) every 50 steps."""
    task = Patch2PixTask("overfit", {**params, "regression_target": target}, index, root, init)
    torch.manual_seed(0)
    model = task.build_model()
    opt = torch.optim.Adam([q for q in model.parameters() if q.requires_grad], lr=float(params.get("lr", 1e-3)))
    batch = task.data.batch([pair])
    item = data[pair]
    out = []
    for s in range(1, steps + 1):
        model.train()
        loss = task.loss(model, batch)
        if loss is not None:
            opt.zero_grad()
            loss.backward()
            opt.step()
        if s == 1 or s % 50 == 0 or s == steps:
            model.eval()
            st = stages(model, item)
            d = {}
            for k in ("coarse", "fine"):
                g, ok = true_partner(item, st[k][:, :2])
                d[k] = med(torch.linalg.norm(st[k][ok, 2:] - g[ok], dim=1))
            out.append((s, float(loss) if loss is not None else float("nan"), d["coarse"], d["fine"]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--pairs", type=int, default=12)
    ap.add_argument("--overfit-steps", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    import os

    w = a.work.resolve()
    os.chdir(w)  # the preprocessing index names its files relative to the workflow directory
    cfg = yaml.safe_load((w / "config.yaml").read_text())
    p = cfg["training"]["patch2pix_demo"]["params"]
    index = w / "resources" / "preprocessed" / "patch2pix_pairs" / "index.json"
    root = w / "resources" / "demo" / "megadepth"
    if not index.is_file() or not (w / "results" / "training" / "patch2pix_demo" / "model_best.pth").is_file():
        raise SystemExit(f"{w}: not a demo working directory with trained Patch2Pix weights (run the demo first)")
    data = Patch2PixPairs(index, root, p["image_size"], depth=True)
    model = load_model("patch2pix", w / "results" / "training" / "patch2pix_demo" / "model_best.pth", torch.device("cpu"))
    model.eval()
    pairs = list(range(min(a.pairs, len(data))))
    print(f"demo Patch2Pix on {len(pairs)} of its {len(data)} training pairs at {p['image_size'][0]}x{p['image_size'][1]} "
          f"(scenes {sorted(data.scenes())}), weights {json.dumps(str(w / 'results/training/patch2pix_demo/model_best.pth'))}")
    report_errors(model, data, pairs)
    task = Patch2PixTask("diag", p, index, root, w / "results" / "training" / "ncnet_demo" / "model_best.pth")
    model.ptmax, model.panc, model.pshift = int(task.p["ptmax"]), int(task.p["panc"]), int(task.p["pshift"])
    report_gradient(task, model, data, pairs)
    report_patches(model, data[0])
    init = w / "results" / "training" / "ncnet_demo" / "model_best.pth"
    print(f"5. single-pair overfit (pair 0, {a.overfit_steps} steps, lr {p.get('lr')}, from the demo start):")
    for target in ("epipolar", "reprojection"):
        rows = overfit(p, index, root, init, data, 0, a.overfit_steps, target)
        print(f"   target {target}: " + "; ".join(f"step {s}: loss {l:.3g}, coarse {c:.2f} px, fine {f:.2f} px"
                                              for s, l, c, f in rows))


if __name__ == "__main__":
    main()
