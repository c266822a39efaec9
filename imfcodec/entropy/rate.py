"""Differentiable rate of token deltas for training (the R in R + lambda * D).

Same family as the coder: per channel, a zero-mean Gaussian discretised to integer steps. The
learnable parameter is ``log_sigma``: the log std of a frame-to-frame token delta in units of the
model's ``token_scale`` -- quality independent. At quality Q the scale in steps is
``exp(log_sigma) / quality_step(Q)``; ``TokenRateModel.export_scale_indexes(Q)`` gives the tables
that implies, through ``entropy.params.scale_indexes`` like every other std. The codec's own tables
come from the prior measured at export (``entropy.params``), not from this learned std.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .params import measured_delta_std, scale_indexes  # noqa: F401 - measured_delta_std: also imported from here
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
        """Integer tables for a stream header at ``quality`` implied by the learned std."""
        return scale_indexes(self.log_sigma.detach().exp(), quality_step(quality))

