"""Differentiable rate of token deltas for training (the R in R + lambda * D).

Same family as the coder: per channel, a zero-mean Gaussian discretised to integer steps. The
learnable parameter is ``log_sigma``: the log std of a frame-to-frame token delta in units of the
model's ``token_scale`` -- quality independent. At quality Q the scale in steps is
``exp(log_sigma) / quality_step(Q)``, so one trained model exports tables for every quality:

    scale_indexes = TokenCoder.choose_scale_indexes(sigma / quality_step(Q))
                  = export_scale_indexes(sigma, Q)

which is what the encoder writes into the stream header (the decoder never sees a float). A
codec may instead measure the std of real deltas (``delta_std`` buffer) and use the same function.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .coder import TokenCoder
from .quant import quality_step
from .tables import SCALE_MIN


def gaussian_delta_bits(delta_steps: Tensor, scale_steps: Tensor, floor: float = 1e-9) -> Tensor:
    """-log2 P(delta) per element for a unit-bin Gaussian of ``scale_steps`` (>= SCALE_MIN).

    Evaluated on |delta| in the lower tail (Phi of negative arguments), which stays accurate where
    1 - Phi would cancel. Gradients flow to both the (noisy) delta and the scale.
    """
    s = scale_steps.clamp_min(SCALE_MIN)
    d = delta_steps.abs()
    p = torch.special.ndtr((0.5 - d) / s) - torch.special.ndtr((-0.5 - d) / s)
    return -torch.log2(p.clamp_min(floor))


class TokenRateModel(nn.Module):
    """Bits per frame of token deltas; ``forward(delta_steps [..., C], quality_step) -> [...]``.

    ``delta_steps`` is (t_i - t_{i-1}) / (token_scale * quality_step), with uniform noise in
    [-0.5, 0.5) added by the module in training mode (``add_noise=None`` follows self.training)
    as the usual differentiable proxy for rounding.
    """

    def __init__(self, token_dim: int, init_sigma: float = 0.5) -> None:
        super().__init__()
        self.log_sigma = nn.Parameter(torch.full((token_dim,), math.log(init_sigma)))

    def scale_steps(self, quality_step_value: float | Tensor = 1.0) -> Tensor:
        return (self.log_sigma.exp() / quality_step_value).clamp_min(SCALE_MIN)

    def forward(self, delta_steps: Tensor, quality_step_value: float | Tensor = 1.0,
                add_noise: bool | None = None) -> Tensor:
        if add_noise is None:
            add_noise = self.training
        if add_noise:
            delta_steps = delta_steps + torch.empty_like(delta_steps).uniform_(-0.5, 0.5)
        s = self.scale_steps(quality_step_value).to(delta_steps.dtype)
        return gaussian_delta_bits(delta_steps, s).sum(-1)

    def export_scale_indexes(self, quality: int) -> list[int]:
        """Integer tables for the stream header at ``quality``."""
        return export_scale_indexes(self.log_sigma.detach().exp(), quality)


def export_scale_indexes(sigma_in_token_scale: Any, quality: int) -> list[int]:
    """Delta std per channel in token_scale units (learned or measured) -> header scale indexes."""
    if isinstance(sigma_in_token_scale, Tensor):
        sigma_in_token_scale = sigma_in_token_scale.detach().cpu().double().numpy()
    sigma = np.asarray(sigma_in_token_scale, dtype=np.float64)
    return TokenCoder.choose_scale_indexes(sigma / quality_step(quality))


def measured_delta_std(tokens: Sequence[Any] | Tensor, token_scale: Any) -> np.ndarray:
    """Std of frame-to-frame deltas of float tokens [N, C] in token_scale units (for calibration)."""
    t = torch.as_tensor(tokens).double().cpu()
    scale = torch.as_tensor(token_scale).double().cpu()
    d = (t[1:] - t[:-1]) / scale
    return d.pow(2).mean(0).sqrt().numpy()
