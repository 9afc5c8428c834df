"""Load official and our own checkpoints safely on PyTorch >= 2.6.

``torch.load`` now defaults to ``weights_only=True``, which refuses the ``argparse.Namespace``
pickled inside ``patch2pix_pretrained.pth`` (patch2pix.md §2.2). We keep the safe loader and
allow exactly that class; any other pickled object is refused with a message naming the file.
State dicts are unwrapped from ``state_dict``/``model`` entries and ``module.`` prefixes (from
DataParallel/DDP wrappers) are stripped before a strict load that lists what does not fit.
"""

from __future__ import annotations

import argparse
import pickle
from collections import OrderedDict
from pathlib import Path
from typing import Mapping

import torch

from matchrepro.errors import MatchReproError


class CheckpointError(MatchReproError):
    """A checkpoint file is missing, unsafe to unpickle, or does not fit the model."""


SAFE_GLOBALS = [argparse.Namespace]


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu"):
    """``torch.load`` with ``weights_only=True`` plus :data:`SAFE_GLOBALS`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: refused to unpickle an unexpected object ({first})") from None
    except (RuntimeError, EOFError, OSError) as e:
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({type(e).__name__}: {e})") from None


def extract_state_dict(ckpt, keys: tuple[str, ...] = ("state_dict", "model")) -> "OrderedDict[str, torch.Tensor]":
    """The tensors of a checkpoint: unwrap the first of ``keys`` present, strip ``module.``."""
    sd = ckpt
    if isinstance(ckpt, Mapping):
        for k in keys:
            if k in ckpt and isinstance(ckpt[k], Mapping):
                sd = ckpt[k]
                break
    if not isinstance(sd, Mapping):
        raise CheckpointError(f"checkpoint holds a {type(sd).__name__}, not a state dict")
    out = OrderedDict()
    for k, v in sd.items():
        while k.startswith("module."):
            k = k[len("module."):]
        out[k] = v
    return out


def load_state_dict_strict(module: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Load strictly; on mismatch raise one line with counts and the first offending keys."""
    own = module.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [f"{k} {tuple(state_dict[k].shape)} vs {tuple(own[k].shape)}"
              for k in own if k in state_dict and tuple(state_dict[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
        if shapes:
            parts.append(f"{len(shapes)} with other shapes (e.g. {shapes[0]})")
        raise CheckpointError(f"{source} does not fit {type(module).__name__}: " + "; ".join(parts))
    module.load_state_dict(state_dict, strict=True)
