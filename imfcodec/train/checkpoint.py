"""Training checkpoints (``last.pt``): the format tag, the atomic write, the safe read, and the
warm start from a weights file.

Checkpoints are full training states written with torch.save (pickle) and read with
``torch.load(weights_only=True)`` and a short allowlist of named types (``_checkpoint_globals``),
so a hostile .pt file cannot run code; never widen it to anything that can. Shipped weights are
exported as safetensors (``export.export_model``), which never run code on load.
"""

from __future__ import annotations

import importlib
import logging
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from imfcodec.errors import InputError
from imfcodec.fsutil import AtomicOutput

CHECKPOINT_FORMAT = "imfcodec-train/1"


def atomic_torch_save(obj: Any, path: Path) -> None:
    """torch.save to a temp file in the same folder, then rename: never a half-written file."""
    with AtomicOutput(path) as tmp:
        torch.save(obj, tmp)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a training checkpoint with ``torch.load(weights_only=True)``: tensors and plain
    containers only, plus the few numpy/torch types a checkpoint holds (the numpy RNG state),
    allowlisted by name, so a hostile .pt file cannot run code."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"checkpoint not found: {path}")
    try:
        with torch.serialization.safe_globals(_checkpoint_globals()):
            ckpt = torch.load(str(path), map_location=map_location, weights_only=True)
    except Exception as e:  # pickle / zip errors of all kinds: one line, no traceback
        m = re.search(r"GLOBAL (\S+)", str(e))
        why = f"refers to code: {m.group(1)[:80]}" if m else type(e).__name__
        raise InputError(f"{path} is not a loadable imfcodec training checkpoint ({why})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise InputError(f"{path} is not an imfcodec training checkpoint")
    return ckpt


def _checkpoint_globals() -> list[Any]:
    """The non-tensor types in a checkpoint: numpy's legacy RNG state (an ndarray) and the
    torch version string of older checkpoints."""
    from torch.torch_version import TorchVersion

    multiarray = importlib.import_module(
        "numpy._core.multiarray" if int(np.__version__.split(".")[0]) >= 2 else "numpy.core.multiarray")
    return [multiarray._reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32)), TorchVersion]


def init_from_weights(model: torch.nn.Module, path: str | os.PathLike,
                      log_to: logging.Logger | None = None) -> tuple[list[str], list[str]]:
    """Warm start: copy every tensor of an imfcodec weights file whose name and shape match
    ``model`` (safetensors, no code runs); the rest keeps its fresh initialisation. Lets a new
    config (a new registered name) start from a shipped model's trained parts.
    Returns (copied, skipped) parameter names."""
    from safetensors.torch import load_file

    from imfcodec.zoo import read_metadata

    meta = read_metadata(path)
    if "config" not in meta:
        raise InputError(f"init_from {path}: not an imfcodec weights file")
    src = load_file(str(path))
    own = model.state_dict()
    copied, skipped = [], []
    with torch.no_grad():
        for name, t in own.items():
            s = src.get(name)
            if s is not None and s.shape == t.shape:
                t.copy_(s.to(t.dtype))
                copied.append(name)
            else:
                skipped.append(name)
    if not copied:
        raise InputError(f"init_from {path}: no tensor matches the model's names and shapes")
    if log_to is not None:
        log_to.info("init_from %s: copied %d tensors, kept %d fresh (%s)", path, len(copied),
                    len(skipped), ", ".join(skipped[:8]) + (" ..." if len(skipped) > 8 else ""))
    return copied, skipped
