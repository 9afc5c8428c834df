"""A generic training loop: fixed global batch, DDP when launched by torchrun, checkpoints and
resume from the exact iteration.

The task object provides ``build_model()``, ``num_samples()``, ``batch(indices)`` (a dict of
tensors for those sample indices) and ``loss(model, batch)`` (a scalar, the *mean* over the
batch). Each step draws ``batch_size`` sample indices from a permutation seeded by
(``seed``, epoch); under DDP rank r takes its contiguous ``batch_size / world_size`` part, and DDP
averages the gradients, so a step equals a single-process step on the whole global batch (up to
float rounding).

Length: ``steps``, or ``epochs`` (then ``steps = epochs * steps_per_epoch`` and the
``lr_milestones`` of the MultiStepLR schedule count epochs, stepped once per epoch as the
originals do; otherwise they count steps).

Checkpoints (rank 0 only): ``last.pth`` every ``checkpoint_every`` steps, at the end of each
epoch and when SIGTERM/SIGINT arrives (then the run exits), holding model, optimiser,
scheduler, the global step, the config, the seed and the task's ``checkpoint_extras()`` (e.g.
the architecture); ``ckpt_ep{N}.pth`` after epoch N with ``keep_epoch_checkpoints``. A
restarted run resumes from ``last.pth`` at the saved step (the same epoch permutation, the next
batch, torch's random state as saved, so a resumed CPU run ends equal to an uninterrupted one).
``lr_schedule: exponential`` replaces the MultiStepLR by IMP's per-step decay (:func:`_scheduler`);
a task with ``epoch_indices(epoch)`` chooses each epoch's sample order itself.
Validation (a task with ``has_validation``: a held-out split): every ``validate_every`` steps
(default ``checkpoint_every``) and at the last step, rank 0 calls ``task.validate(model)`` (eval
mode, no gradient, torch's random state restored afterwards so training draws are unchanged),
appends the metrics to ``validation.csv`` and saves ``best.pth`` when ``val_criterion`` (default
the task's ``val_criterion``; its direction from ``task.val_metrics``) improves. The best so
far travels in ``last.pth``, so a resumed run keeps comparing against it. ``early_stop: N`` ends
the run after N validations in a row without a new best (``last.pth`` and ``final.pth`` at that
step; a resumed run that had stopped trains no further). Validation changes nothing that is
trained, so the kept weights are the ones the full-length run keeps unless one of its later
validations beats them.
A task with ``batches(plan, num_workers)`` makes each step's batch from (step, indices, offset)
itself, e.g. online IMP pairs in ``num_workers`` DataLoader worker processes ahead of the step
(:meth:`matchrepro.datasets.imp_online.IMPOnlinePairs.loader`); ``num_workers`` does not change
what is learned, so it is not part of a run's fingerprint.
``amp`` (``bf16`` or ``fp16``, CUDA only; ignored on the CPU) runs the task's loss under
autocast, fp16 with a gradient scaler. A NaN/Inf loss, or ``None`` from the task (nothing to
learn from in this batch), skips the step and is logged as ``nan``. ``log.csv`` gets one row per
step (step, epoch, loss, lr, seconds).
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import signal
import time
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel as DDP

from matchrepro.errors import ConfigError
from matchrepro.io import atomic_path
from matchrepro.models.checkpoints import load_checkpoint
from matchrepro.training.distributed import DistInfo, barrier, cleanup, setup

DEFAULTS = {
    "steps": 100,
    "batch_size": 8,
    "lr": 1e-3,
    "lr_milestones": [],
    "lr_gamma": 0.1,
    "checkpoint_every": 50,
    "seed": 0,
    "device": "auto",
    "epochs": None,
    "keep_epoch_checkpoints": False,
    "amp": None,
    "lr_schedule": "multistep",
    "lr_decay_start": 200000,
    "lr_decay_rate": 0.999992,
    "lr_min": 1e-6,
    "validate_every": None,
    "val_criterion": None,
    "num_workers": 0,
    "early_stop": None,
}
LR_SCHEDULES = ("multistep", "exponential")
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
# Settings that say how long and where a run trains, not what it learns (see run_fingerprint).
CLUSTER_KEYS = {"gpus", "processes", "threads", "mem_mb", "runtime"}
RUN_LENGTH_KEYS = {"steps", "epochs", "checkpoint_every", "keep_epoch_checkpoints", "device", "amp",
                   "validate_every", "val_criterion", "num_workers", "early_stop"}


def run_fingerprint(model: str, params: dict, dataset: dict | None, data: str | None, init: str | None) -> str:
    """What a training run trains: model, data, initial weights and every setting except the
    run length and where it runs (so raising ``steps`` continues a run, changing ``lr`` does not)."""
    kept = {k: v for k, v in params.items() if k not in CLUSTER_KEYS | RUN_LENGTH_KEYS}
    blob = {"model": model, "params": kept, "dataset": dataset, "data": data, "init": init}
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:16]


def file_digest(path: str | Path) -> str | None:
    """SHA-256 (first 16 hex digits) of a file's bytes (``download.http.sha256_of``); ``None`` for a path
    that is not a file (e.g. a folder). Used for a run's input files: a pair index (small, it
    names its per-scene files and the preprocessing settings) and initial or feature weights."""
    from matchrepro.download.http import sha256_of

    return sha256_of(path)[:16] if Path(path).is_file() else None


def check_params(name: str, params: dict, task_defaults: dict) -> dict:
    """Task settings (defaults filled in); unknown keys are refused naming the config key."""
    known = set(task_defaults) | set(DEFAULTS) | CLUSTER_KEYS
    for k in params:
        if k not in known:
            raise ConfigError(f"training.{name}.params.{k}: unknown setting; known: {', '.join(sorted(known))}")
    return {**task_defaults, **{k: v for k, v in params.items() if k in task_defaults}}


class Interrupted(Exception):
    pass


def _save(path: Path, state: dict) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def train(task, cfg: dict, out_dir: str | Path, fingerprint: str | None = None) -> dict:
    """Run (or resume) training; returns ``{"step", "loss", "resumed_from"}``.

    ``fingerprint`` identifies what is being trained (model, data, settings other than the run
    length); a ``last.pth`` saved under another fingerprint is not resumed: the run starts over
    (``log.csv`` too), so a changed config never continues a stale run."""
    c = {**DEFAULTS, **cfg}
    out_dir = Path(out_dir)
    info: DistInfo = setup(c["device"])
    if c["batch_size"] % info.world_size:
        raise ConfigError(f"batch_size {c['batch_size']} is not divisible by {info.world_size} processes")
    local_bs = c["batch_size"] // info.world_size
    if c["amp"] is not None and c["amp"] not in AMP_DTYPES:
        raise ConfigError(f"amp must be one of {sorted(AMP_DTYPES)} or null, got {c['amp']!r}")
    amp = c["amp"] if info.device.type == "cuda" else None
    if c["amp"] and amp is None and info.is_main:
        print(f"amp={c['amp']} ignored: training on the CPU", flush=True)
    scaler = torch.amp.GradScaler("cuda", enabled=amp == "fp16")
    torch.manual_seed(c["seed"])
    model = task.build_model().to(info.device)
    opt = torch.optim.Adam(model.parameters(), lr=c["lr"])
    sched = _scheduler(opt, c)
    per_step_schedule = c["lr_schedule"] == "exponential"
    val = _validation_settings(task, c)
    workers = int(c["num_workers"])
    if workers < 0:
        raise ConfigError(f"num_workers must be >= 0, got {workers}")
    if workers and not hasattr(task, "batches"):
        raise ConfigError(f"num_workers: {type(task).__name__} makes its batches in the training process "
                          "(only online IMP pairs use DataLoader workers); remove the setting")
    patience = c["early_stop"]
    if patience is not None and (val is None or int(patience) < 1):
        raise ConfigError("early_stop needs a validation split (training.<name>.validation) and a count >= 1, "
                          f"got {patience!r}")
    best = None  # {"step", "metric", "value"} of best.pth
    step, resumed_from = 0, None
    last = out_dir / "last.pth"
    ck = load_checkpoint(last, map_location=info.device) if last.is_file() else None
    if ck is not None and fingerprint is not None and ck.get("fingerprint") != fingerprint:
        ck = None
        barrier(info)  # every rank has read it before rank 0 moves it away
        if info.is_main:
            print(f"{last} was saved by a different configuration: starting over", flush=True)
            last.replace(out_dir / "last.stale.pth")
            for name in ("log", "validation"):
                if (out_dir / f"{name}.csv").exists():
                    (out_dir / f"{name}.csv").replace(out_dir / f"{name}.stale.csv")
        barrier(info)
    if ck is not None:
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        if "scaler" in ck:
            scaler.load_state_dict(ck["scaler"])
        if "rng" in ck:  # the task's own random draws (e.g. Patch2Pix's ptmax sampling) replay exactly
            torch.set_rng_state(ck["rng"]["torch"].cpu())
            if info.device.type == "cuda" and ck["rng"].get("cuda") is not None:
                torch.cuda.set_rng_state(ck["rng"]["cuda"].cpu(), info.device)
        step = resumed_from = int(ck["step"])
        best = ck.get("best")
    net = DDP(model) if info.enabled else model
    n = task.num_samples()
    steps_per_epoch = max(1, n // c["batch_size"])
    per_epoch = c["epochs"] is not None
    total = int(c["epochs"]) * steps_per_epoch if per_epoch else int(c["steps"])
    stop = {"flag": False}

    def on_signal(signum, frame):
        stop["flag"] = True

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}

    def state():
        extras = task.checkpoint_extras() if hasattr(task, "checkpoint_extras") else {}
        rng = {"torch": torch.get_rng_state(),
               "cuda": torch.cuda.get_rng_state(info.device) if info.device.type == "cuda" else None}
        return {"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                "step": step, "config": c, "seed": c["seed"], "rng": rng, "scaler": scaler.state_dict(), "fingerprint": fingerprint, "best": best, **extras}

    log_f = None
    if info.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        new = not (out_dir / "log.csv").exists()
        log_f = open(out_dir / "log.csv", "a", newline="")
        writer = csv.writer(log_f)
        if new:
            writer.writerow(["step", "epoch", "loss", "lr", "seconds"])
        if resumed_from is not None:
            print(f"resumed from step {resumed_from} ({last})", flush=True)
    loss_val = float("nan")

    def plan(start: int):
        """(step, this rank's sample indices, their offset in the global batch) of each step left."""
        perm, perm_epoch = None, None
        for s in range(start, total):
            epoch, k = divmod(s, steps_per_epoch)
            if epoch != perm_epoch:
                if hasattr(task, "epoch_indices"):  # the task's own epoch composition (e.g. IMP's pairs per scene)
                    perm = task.epoch_indices(epoch)
                else:
                    g = torch.Generator().manual_seed(c["seed"] * 100003 + epoch)
                    perm = torch.randperm(n, generator=g)
                perm_epoch = epoch
            idx = perm[k * c["batch_size"]:(k + 1) * c["batch_size"]]
            yield s, idx[info.rank * local_bs:(info.rank + 1) * local_bs], info.rank * local_bs

    def stale() -> bool:
        """``early_stop`` validations in a row without a new best (rank 0 decides for every rank)."""
        flag = torch.tensor(float(info.is_main and best is not None
                                  and step - best["step"] >= int(patience) * val["every"]), device=info.device)
        if info.enabled:
            torch.distributed.broadcast(flag, 0)
        return bool(flag > 0)

    stopped_early = patience is not None and step < total and stale()  # a resumed run that had stopped
    if stopped_early and info.is_main:
        print(f"stopped early at step {step} before (best at step {best['step']}): nothing to train", flush=True)
    batches = None
    try:
        if not stopped_early:
            if hasattr(task, "batches"):  # the task makes step-keyed batches, in DataLoader workers if asked
                batches = task.batches(plan(step), workers)
            else:
                batches = (task.batch(idx) for _, idx, _ in plan(step))
        while step < total and not stopped_early:
            epoch = step // steps_per_epoch
            t0 = time.perf_counter()
            batch = {key: v.to(info.device) for key, v in next(batches).items()}
            with torch.autocast(info.device.type, dtype=AMP_DTYPES.get(amp, torch.float32), enabled=amp is not None):
                loss = task.loss(net, batch)
            if loss is None:
                loss = torch.tensor(float("nan"), device=info.device)
            opt.zero_grad(set_to_none=True)
            finite = torch.isfinite(loss.detach()).float()
            if info.enabled:  # every rank skips together, or DDP would wait for the others
                torch.distributed.all_reduce(finite, op=torch.distributed.ReduceOp.MIN)
            if bool(finite > 0):
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
            step += 1
            end_of_epoch = (step % steps_per_epoch) == 0
            if not per_epoch or end_of_epoch or per_step_schedule:
                sched.step()
            loss_val = float(loss.detach())
            if info.is_main:
                writer.writerow([step, epoch, f"{loss_val:.6g}", f"{sched.get_last_lr()[0]:.6g}",
                                 f"{time.perf_counter() - t0:.4f}"])
                log_f.flush()
            if val is not None and (step % val["every"] == 0 or step == total):
                if info.is_main:
                    metrics = _validate(task, model)
                    value = float(metrics.get(val["metric"], float("nan")))
                    improved = _better(value, None if best is None else best["value"], val["mode"])
                    if improved:
                        best = {"step": step, "metric": val["metric"], "value": value}
                        _save(out_dir / "best.pth", state())
                    _append_row(out_dir / "validation.csv", {"step": step, "epoch": epoch, **metrics,
                                                             "best": int(improved)})
                    print(f"validation at step {step}: {val['metric']} = {value:.4g}"
                          f" (best {best['value'] if best else float('nan'):.4g} at step {best['step'] if best else '-'})"
                          + "".join(f", {k} {v:.4g}" for k, v in metrics.items() if k != val["metric"]), flush=True)
                barrier(info)
            if info.is_main and (step % c["checkpoint_every"] == 0 or end_of_epoch or step == total):
                st = state()
                _save(last, st)
                if end_of_epoch and c["keep_epoch_checkpoints"]:
                    _save(out_dir / f"ckpt_ep{step // steps_per_epoch}.pth", st)
            if stop["flag"]:
                if info.is_main:
                    _save(last, state())
                    print(f"interrupted: checkpoint at step {step} in {last}", flush=True)
                raise Interrupted()
            if patience is not None and step % val["every"] == 0 and step < total and stale():
                stopped_early = True
                if info.is_main:
                    _save(last, state())
                    print(f"early stop at step {step}: {val['metric']} has not improved for {patience} validations "
                          f"(best {best['value']:.4g} at step {best['step']}; steps: {total})", flush=True)
        barrier(info)
        if info.is_main:
            _save(out_dir / "final.pth", state())
    finally:
        _close(batches)
        for s, h in old.items():
            signal.signal(s, h)
        if log_f:
            log_f.close()
        cleanup(info)
    return {"step": step, "loss": loss_val if math.isfinite(loss_val) else None, "resumed_from": resumed_from,
            "best": best, "stopped_early": stopped_early}


def _close(batches) -> None:
    """Stop a batch iterator's DataLoader workers (a generator closes the loader it wraps); None: nothing."""
    shutdown = getattr(batches, "_shutdown_workers", None) or getattr(batches, "close", None)
    if shutdown is not None:
        shutdown()


def _validation_settings(task, c: dict) -> dict | None:
    """``{"every", "metric", "mode"}`` when the task has a validation split, else None."""
    if not getattr(task, "has_validation", False):
        if c["validate_every"] is not None:
            raise ConfigError("validate_every is set but the run has no validation split (training.<name>.validation)")
        return None
    metric = c["val_criterion"] or task.val_criterion
    if metric not in task.val_metrics:
        raise ConfigError(f"val_criterion {metric!r} is not a validation metric of this model; "
                          f"known: {', '.join(task.val_metrics)}")
    every = int(c["validate_every"] or c["checkpoint_every"])
    if every < 1:
        raise ConfigError(f"validate_every must be >= 1, got {every}")
    return {"every": every, "metric": metric, "mode": task.val_metrics[metric]}


def _validate(task, model: torch.nn.Module) -> dict:
    """``task.validate(model)`` in eval mode without gradients; each module's train/eval mode and
    torch's random state are restored afterwards (a validated run trains exactly as one without)."""
    modes = [(m, m.training) for m in model.modules()]
    rng = torch.get_rng_state()
    cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    model.eval()
    try:
        with torch.no_grad():
            return {k: float(v) for k, v in task.validate(model).items()}
    finally:
        for m, mode in modes:
            m.train(mode)
        torch.set_rng_state(rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state_all(cuda_rng)


def _better(value: float, best: float | None, mode: str) -> bool:
    if not math.isfinite(value):
        return False
    return best is None or (value > best if mode == "max" else value < best)


def _append_row(path: Path, row: dict) -> None:
    """One CSV row; the header (this row's keys) is written with the first row."""
    new = not path.exists()
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(row))
        if new:
            w.writeheader()
        w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})


def _scheduler(opt, c: dict):
    """``multistep``: MultiStepLR(``lr_milestones``, ``lr_gamma``); ``exponential`` (IMP, imp.md
    §3.5): lr = clamp(lr0 * rate^(step - start), max lr0, min ``lr_min``), stepped every step."""
    if c["lr_schedule"] not in LR_SCHEDULES:
        raise ConfigError(f"lr_schedule must be one of {list(LR_SCHEDULES)}, got {c['lr_schedule']!r}")
    if c["lr_schedule"] == "multistep":
        return torch.optim.lr_scheduler.MultiStepLR(opt, milestones=list(c["lr_milestones"]), gamma=c["lr_gamma"])
    start, rate, floor = int(c["lr_decay_start"]), float(c["lr_decay_rate"]), float(c["lr_min"]) / float(c["lr"])
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, max(floor, rate ** (s - start))))


def launched_by_torchrun() -> bool:
    return "TORCHELASTIC_RUN_ID" in os.environ or "LOCAL_WORLD_SIZE" in os.environ
