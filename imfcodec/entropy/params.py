"""Entropy parameters: the one place that turns a model's token statistics into coding parameters.

    token_scale [C] (token units) * quality_step(Q)   -> quantization steps [C]       (both sides)
    delta std [C] / steps, in the same units           -> scale indexes [C] (header)  (encoder only)

The *prior* is the per-channel std of frame-to-frame token deltas, in token units. It is measured on
held-out clips at export (``measure_prior``), stored in the weights' metadata as ``delta_std`` and
held by the model as its non-persistent ``delta_std`` buffer (``load_prior`` / ``prior_metadata``), the
way a CompressAI model owns its entropy bottleneck; being non-persistent, it is not in the state dict,
so it does not change the weights hash. A model whose deltas were never measured (random init, files
without the key) assumes ``UNMEASURED_DELTA_RATIO`` of its token scale. Older files may also carry a
``rate_sigma`` (the training rate model's learned std): it is not read.

The encoder compares these floats once and writes integers into the stream header; the decoder only
computes the steps (to multiply integers) and never derives a table from a float. Light to import
(numpy only); torch is imported by the functions that make tensors.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InputError
from .quant import _check_step, quality_step
from .tables import NUM_SCALES, scale_table

if TYPE_CHECKING:
    import torch

METADATA_KEY = "delta_std"  # the weights-metadata key of the prior (JSON list, token units)
UNMEASURED_DELTA_RATIO = 0.5  # delta std assumed for a model whose deltas were never measured, x token scale
TOKEN_SCALE_MIN = 1e-4  # floors of measured statistics, so a dead channel cannot give a zero step or scale
DELTA_STD_MIN = 1e-6


def _float64(x: Any) -> np.ndarray:
    """A tensor or array-like as a flat float64 array (exact for float32 input)."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64).reshape(-1)


# ---------------------------------------------------------------------------------------------- coding


def quantization_steps(token_scale: Any, quality: int) -> np.ndarray:
    """Per-channel float64 steps: token_scale (tensor or array, [C]) times ``quality_step(quality)``.

    InputError unless every step is positive and finite (a broken token scale fails here, up front).
    """
    return _check_step(_float64(token_scale) * quality_step(quality))


def scale_indexes(delta_std: Any, steps: Any = 1.0) -> list[int]:
    """Per channel, the smallest table whose scale is >= ``delta_std / steps`` (both in one unit;
    ``steps`` 1.0 when the std is already in quantization steps).

    Encoder only: it compares floats, and the resulting integers go into the header. Monotonic
    non-decreasing in the std; std <= 0.11 steps -> 0, std > ~256 steps -> 63. Adjacent tables differ
    by a factor 1.13, so rounding up costs < 0.01 bit/symbol against the best table.
    """
    std = _float64(delta_std) / np.asarray(steps, dtype=np.float64)
    if not np.all(np.isfinite(std)) or np.any(std < 0):
        raise InputError("delta std must be finite and >= 0")
    idx = np.searchsorted(np.asarray(scale_table()), std, side="left")
    return [int(i) for i in np.minimum(idx, NUM_SCALES - 1)]


def prior_delta_std(model: "torch.nn.Module") -> np.ndarray:
    """The model's prior in token units (float64 [C]): measured if it was, else the assumed ratio of
    its token scale (the scale as it is now, so a model in training follows its own scale)."""
    measured = model.delta_std
    if bool((measured > 0).all()):
        return _float64(measured)
    return _float64(model.token_scale) * UNMEASURED_DELTA_RATIO


# ---------------------------------------------------------------------------------------------- the prior


def set_prior(model: "torch.nn.Module", delta_std: Any, what: str = "delta_std") -> None:
    """Make ``delta_std`` (token units, [C], all > 0) the model's measured prior; ValueError otherwise."""
    import torch

    buf = model.delta_std
    values = torch.as_tensor(delta_std, dtype=buf.dtype)
    if values.shape != buf.shape or not bool(torch.all(values > 0)):
        raise ValueError(f"{what} does not match token_dim {buf.numel()}")
    buf.copy_(values.to(buf.device))


def load_prior(model: "torch.nn.Module", metadata: Mapping[str, str]) -> None:
    """Fill the model's prior from weights metadata (nothing to do without the key); ValueError if unusable."""
    import torch

    if METADATA_KEY not in metadata:
        return
    try:
        values = torch.tensor(json.loads(metadata[METADATA_KEY]), dtype=torch.float32)
    except (ValueError, TypeError):
        raise ValueError(f"bad {METADATA_KEY} in metadata") from None
    set_prior(model, values, what=f"{METADATA_KEY} in metadata")


def prior_metadata(model: "torch.nn.Module") -> dict[str, str]:
    """The metadata entry that stores the model's measured prior (none if it was never measured)."""
    measured = model.delta_std
    if not bool((measured > 0).all()):
        return {}
    return {METADATA_KEY: json.dumps([round(float(v), 7) for v in measured.detach().cpu().tolist()])}


def delta_rms(deltas: Sequence["torch.Tensor"]) -> "torch.Tensor":
    """Per-channel RMS (float64) of token deltas [N_i, C] pooled over sequences: the std of a
    zero-mean delta, which is what the coder's Gaussian tables model."""
    import torch

    return torch.cat([d.double() for d in deltas]).pow(2).mean(0).sqrt()


def measure_prior(clip_tokens: Sequence["torch.Tensor"]) -> tuple["torch.Tensor", "torch.Tensor"]:
    """(token_scale, delta_std), float32 [C], from float tokens [N_i, C] of clips: the per-channel std of
    all tokens, and the RMS of consecutive-frame deltas within clips (deltas never cross clips)."""
    import torch

    tokens = torch.cat(list(clip_tokens)).double()
    token_scale = tokens.std(0, unbiased=False).clamp_min(TOKEN_SCALE_MIN).float()
    deltas = [t[1:] - t[:-1] for t in clip_tokens if len(t) > 1]
    if not deltas:
        return token_scale, token_scale * UNMEASURED_DELTA_RATIO
    return token_scale, delta_rms(deltas).clamp_min(DELTA_STD_MIN).float()


def measured_delta_std(tokens: Sequence[Any] | "torch.Tensor", token_scale: Any) -> np.ndarray:
    """Std of frame-to-frame deltas of one sequence of float tokens [N, C], in token_scale units."""
    import torch

    t = torch.as_tensor(tokens).double().cpu()
    scale = torch.as_tensor(token_scale).double().cpu()
    return delta_rms([(t[1:] - t[:-1]) / scale]).numpy()
