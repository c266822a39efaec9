"""The generator's optimizer: lr schedule, Adam parameter groups, re-keying Adam's state when the
groups change, and the EMA of the weights.

The schedule is a pure function of the step and the groups are a pure function of the config, so a
resumed run continues exactly where it stopped, also across a change of ``lr_align_scalars``.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from imfcodec.errors import InputError

#: names (last component, under ``align.``) of the alignment's scalar parameters
ALIGN_SCALARS = ("locality", "rel_bias")


def lr_at(cfg: Any, step: int) -> float:
    """The lr at ``step`` for either network's config (``lr``, ``warmup_steps``, ``lr_decay``): linear
    warm-up, then constant, then an optional cosine decay ``[start_step, end_step, final_fraction]``.

    The one schedule of both trainers; a pure function of the step, so a resumed run continues the same
    schedule, and a run that has been going at constant lr can be annealed from where it stands."""
    if cfg.warmup_steps > 0 and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.lr_decay is None:
        return cfg.lr
    start, end, final = float(cfg.lr_decay[0]), float(cfg.lr_decay[1]), float(cfg.lr_decay[2])
    t = min(max((step - start) / (end - start if end > start else 1.0), 0.0), 1.0)
    return cfg.lr * (final + (1.0 - final) * 0.5 * (1.0 + math.cos(math.pi * t)))


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    """``lr`` on every group, times the group's ``lr_mult`` (``param_groups``; 1 if it has none)."""
    for g in opt.param_groups:
        g["lr"] = lr * g.get("lr_mult", 1.0)


def is_align_scalar(name: str) -> bool:
    """Whether parameter ``name`` is one of the alignment's scalars (``ALIGN_SCALARS``)."""
    return name.startswith("align.") and name.rsplit(".", 1)[-1] in ALIGN_SCALARS


def split_params(model: torch.nn.Module, params: list[torch.nn.Parameter],
                 split: bool) -> list[list[torch.nn.Parameter]]:
    """``params`` as one group, or (``split``) as [everything else, the alignment scalars]."""
    if not split:
        return [params]
    scalar_ids = {id(p) for n, p in model.named_parameters() if is_align_scalar(n)}
    return [[p for p in params if id(p) not in scalar_ids],
            [p for p in params if id(p) in scalar_ids]]


def param_groups(model: torch.nn.Module, params: list[torch.nn.Parameter],
                 align_mult: float) -> list[dict[str, Any]]:
    """One group, or two when ``lr_align_scalars`` (``align_mult``) != 1: the alignment's locality
    and window bias are a handful of scalars that must move by O(1), and Adam moves any parameter
    by about lr per step whatever its gradient, so at lr 2e-4 they would need ~10^4 steps."""
    groups = split_params(model, params, float(align_mult) != 1.0)
    return [{"params": ps, "lr_mult": lr_mult(i, align_mult)} for i, ps in enumerate(groups)]


def lr_mult(group_index: int, align_mult: float) -> float:
    """Group 0 holds every other parameter; group 1 (if any) the alignment scalars."""
    return 1.0 if group_index == 0 else float(align_mult)


def load_optimizer(opt: torch.optim.Optimizer, state: dict[str, Any], model: torch.nn.Module,
                   params: list[torch.nn.Parameter], align_mult: float) -> None:
    """Load Adam's state, also across a change of ``lr_align_scalars`` (1 <-> 2 groups): the
    per-parameter moments are re-keyed by each parameter's position in the new groups."""
    saved_groups = state["param_groups"]
    if len(saved_groups) == len(opt.param_groups):
        opt.load_state_dict(state)
        for i, g in enumerate(opt.param_groups):  # the multiplier follows the config
            g["lr_mult"] = lr_mult(i, align_mult)
        return
    old_params = [p for ps in split_params(model, params, len(saved_groups) == 2) for p in ps]
    old_keys = [i for g in saved_groups for i in g["params"]]
    if len(saved_groups) > 2 or len(old_keys) != len(old_params):
        raise InputError("checkpoint optimizer does not match the model's parameters")
    by_param = {id(p): state["state"].get(k) for p, k in zip(old_params, old_keys)}
    cur = opt.state_dict()
    new_state: dict[int, Any] = {}
    idx = 0
    for group in opt.param_groups:
        for p in group["params"]:
            if by_param.get(id(p)) is not None:
                new_state[idx] = by_param[id(p)]
            idx += 1
    cur["state"] = new_state
    opt.load_state_dict(cur)


@torch.no_grad()
def update_ema(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """Move the EMA copy towards ``model``'s weights; buffers (token_scale, ...) are copied."""
    for pe, p in zip(ema.parameters(), model.parameters()):
        pe.lerp_(p.detach(), 1.0 - decay)
    for be, b in zip(ema.buffers(), model.buffers()):
        be.copy_(b)
