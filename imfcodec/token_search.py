"""Encoder-side token search (``imfcodec encode --refine N``): find the integer token that decodes best.

E_T predicts a token from the current frame alone, in one forward pass. The encoder also has the
decoder, so it can do better: starting from E_T's token it runs a few gradient steps on

    J(t) = 10 log10 MSE(decode(reference, round(t)), frame) + lam * bits(round(t) - previous token)

(rounding passed straight through, bits from the same Gaussian tables the rANS coder uses) and
keeps, per frame, the integer token with the lowest J seen. Only the encoder changes: the stream
format and the decoder are untouched, so searched streams decode with any conforming decoder.
The same idea as latent refinement in learned image codecs (amortisation gap), applied to the
32-float motion token. It costs one decoder forward and backward pass per iteration.

(Not to be confused with ``IMF.refine``, the decoder's transformer stacks: this module only searches
tokens, it never changes a weight.)
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

from .entropy import Q_MAX, scale_table
from .errors import InputError
from .limits import MAX_SEARCH_ITERS as MAX_ITERS
from .models.imf import RefState


@dataclass(frozen=True)
class SearchSettings:
    """``iters`` = 0 turns the search off. ``lr`` is in quantization steps per Adam step; ``lam`` is
    the price of one bit in dB (0 = quality only). Defaults were chosen on held-out *training* clips."""

    iters: int = 0
    lr: float = 0.3
    lam: float = 0.003

    def validated(self) -> "SearchSettings":
        if isinstance(self.iters, bool) or not isinstance(self.iters, int) or not 0 <= self.iters <= MAX_ITERS:
            raise InputError(f"--refine must be an integer in 0..{MAX_ITERS}, got {self.iters!r}")
        if not (np.isfinite(self.lr) and 0 < self.lr <= 10):
            raise InputError(f"token search lr must be in (0, 10] quantization steps, got {self.lr}")
        if not (np.isfinite(self.lam) and 0 <= self.lam <= 1):
            raise InputError(f"token search lambda must be in [0, 1] dB per bit, got {self.lam}")
        return self


class Adam:
    """Adam on one tensor, as ``torch.optim.Adam(params, lr)`` updates it with its defaults (the same
    operations as torch's single-tensor path, so the same floats on a CPU). Written out because
    constructing any torch optimizer imports torch._dynamo (about 120 MB of an encoder's memory; see
    ``tests/test_token_search.py``, which holds the two to the same result)."""

    def __init__(self, param: torch.Tensor, lr: float, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8) -> None:
        self.param, self.lr, self.betas, self.eps = param, lr, betas, eps
        self.steps = 0
        self.exp_avg = torch.zeros_like(param)
        self.exp_avg_sq = torch.zeros_like(param)

    @torch.no_grad()
    def step(self) -> None:
        """One update from ``param.grad``."""
        b1, b2 = self.betas
        g = self.param.grad
        self.steps += 1
        self.exp_avg.lerp_(g, 1 - b1)
        self.exp_avg_sq.mul_(b2).addcmul_(g, g, value=1 - b2)
        step_size = self.lr / (1 - b1 ** float(self.steps))
        denom = (self.exp_avg_sq.sqrt() / (1 - b2 ** float(self.steps)) ** 0.5).add_(self.eps)
        self.param.addcdiv_(self.exp_avg, denom, value=-step_size)


def grad_state(state: RefState) -> RefState:
    """A copy of a reference cache that autograd can use (caches built under inference_mode cannot)."""
    with torch.inference_mode(False):
        return RefState([t.clone() for t in state.keys], [t.clone() for t in state.values],
                        [t.clone() for t in state.masks], state.size)


@contextmanager
def frozen(model: torch.nn.Module) -> Iterator[None]:
    """Gradients for the token only: no weight gradients are computed, flags restored after."""
    flags = [p.requires_grad for p in model.parameters()]
    try:
        for p in model.parameters():
            p.requires_grad_(False)
        yield
    finally:
        for p, f in zip(model.parameters(), flags):
            p.requires_grad_(f)


def table_scales(scale_indexes: list[int] | tuple[int, ...]) -> torch.Tensor:
    """The Gaussian scale (in quantization steps) of each channel's rANS table."""
    table = scale_table()
    return torch.tensor([table[i] for i in scale_indexes], dtype=torch.float32)


def search_tokens(model: torch.nn.Module, state: RefState, frames: torch.Tensor, q_init: np.ndarray,
                  prev_q: np.ndarray, steps: np.ndarray, scales: torch.Tensor,
                  settings: SearchSettings) -> np.ndarray:
    """Search from integer tokens ``q_init`` [B, C] for ``frames`` [B, 3, H, W] (consecutive frames, coded
    as deltas after ``prev_q`` [C]). Returns int32 [B, C]; never worse in J than ``q_init`` per frame
    (for B = 1 exactly; for B > 1 the rate term of a frame uses its neighbours' current tokens).

    ``settings.iters`` Adam steps on the straight-through objective, then a last evaluation; the best
    integer token seen wins. Every evaluation happens at an integer token (the rounded iterate), so
    they are cached by that token: an iterate that rounds to a token seen before costs nothing, and
    gives the optimiser exactly the value and gradient it would have recomputed. The first step
    never leaves E_T's token (Adam's first step moves each value by at most ``lr`` < 0.5), so the
    second iteration is always such a repeat; ``iters`` = 1 would only pay for it and return E_T's
    token, so it runs 2 steps (one move). The last evaluation builds no autograd graph.
    """
    s = settings.validated()
    q0 = np.asarray(q_init)
    if s.iters == 0:
        return q0.astype(np.int32)
    from .entropy.rate import gaussian_delta_bits

    iters = max(2, s.iters)
    with torch.inference_mode(False), frozen(model):
        # everything autograd touches is made here: tensors from an inference_mode caller cannot be saved
        # on the frames' device (--device); the chosen integers come back to the CPU for the coder
        dev = frames.device
        step = torch.tensor(np.asarray(steps, dtype=np.float32), device=dev)
        prev = torch.tensor(np.asarray(prev_q, dtype=np.float32), device=dev)[None]
        scales = scales.detach().to(dev, copy=True)
        x = frames.detach().clone()

        def objective(token: torch.Tensor) -> torch.Tensor:
            y = model.decode_frame(state, token * step)
            mse = (y - x).pow(2).mean(dim=(1, 2, 3)).clamp_min(1e-10)
            j = 10.0 * torch.log10(mse)
            if s.lam > 0:
                j = j + s.lam * gaussian_delta_bits(torch.diff(torch.cat([prev, token]), dim=0), scales).sum(1)
            return j

        def evaluate(token: torch.Tensor, grad: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
            if not grad:
                with torch.no_grad():
                    return objective(token), None
            token = token.clone().requires_grad_(True)
            with torch.enable_grad():
                j = objective(token)
                (g,) = torch.autograd.grad(j.sum(), token)
            return j.detach(), g

        u = torch.from_numpy(q0.astype(np.float32)).to(dev).requires_grad_(True)
        opt = Adam(u, lr=s.lr)
        best_j = torch.full((len(q0),), float("inf"), device=dev)
        best_q = torch.from_numpy(q0.astype(np.float32)).to(dev)
        seen: dict[bytes, tuple[torch.Tensor, torch.Tensor | None]] = {}
        for i in range(iters + 1):
            last = i == iters
            token = torch.round(u.detach()) + 0.0  # + 0.0: -0.0 becomes 0.0, one token, one key
            key = token.cpu().numpy().tobytes()
            hit = seen.get(key)
            if hit is None or (not last and hit[1] is None):
                hit = seen[key] = evaluate(token, grad=not last)
            j, g = hit
            better = j < best_j
            best_j = torch.where(better, j, best_j)
            best_q[better] = token[better]
            if last:
                break
            u.grad = g.clone()
            opt.step()
    return np.clip(best_q.cpu().numpy(), -Q_MAX, Q_MAX).astype(np.int32)
