"""The hybrid mode's enhancer: lifts an upscaled low-resolution base frame with the key frame's detail,
aligned by IMF's implicit alignment (cross-attention), as a residual over the upscaled base.

Data flow (R = frame size; the base layer was coded at R/f and is upscaled to R by :func:`upscale`):

* once per key frame, ``prepare_key(key, key_base)``: ``key`` is the decoded key frame (full quality),
  ``key_base`` the upscaled *base-layer* frame of the same instant. Features of ``key_base`` are the
  attention keys: they live in the same domain as the queries (upscaled, coded base frames), so the
  match is between like and like. The values are the key frame's pixels and its detail
  ``key - key_base``, as 4x4 (R/4, windowed attention) and 8x8 (R/8, full attention) patches;
* per frame, ``enhance(state, base)``: features of the upscaled base frame query the key's keys; the
  gathered patches (the key frame's detail moved to where the current frame needs it), the base
  features and the base pixels go through a small residual conv net at R/4, whose output is a 4x4
  pixel-shuffled residual added to the upscaled base frame.

Design decisions:
1. The alignment is IMF's :class:`~imfcodec.models.alignment.Alignment` (single-head, sinusoidal positions,
   learned locality; windowed at R/4, full at R/8), so the hybrid mode reuses the codec's concept of
   implicit alignment instead of a flow warp. It lives in its own module, shared with the token model,
   so that the hybrid mode never imports the token model (``imfcodec.models.imf``).
2. The residual head is zero-initialised: an untrained enhancer returns exactly the bicubic base, and
   training can only start from there. The published lesson (hybrid-notes) is that a fusion that does
   not align gains nothing; this one can only gain by aligning.
3. No tokens: the base layer already tells the decoder where the face is. Measured
   (benchmarks/results/2026-11-28-enhancer-sweep): the token mode's picture as an extra input adds +0.03 dB
   (nothing on moving heads) for 0.88 kbit/s, which buys about +0.3 dB in the base layer, and an IMF decode
   per frame.
4. Everything at R/4 and coarser except the bicubic upscale and the final pixel shuffle: about
   0.5 GMAC per 256x256 frame for ``enh-small``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from imfcodec.errors import InputError
from imfcodec.models.alignment import Alignment
from imfcodec.models.config import COARSE, FINE, EnhancerConfig
from imfcodec.models.kernels import default_kernels


def upscale(base: Tensor, size: tuple[int, int]) -> Tensor:
    """The decoder's upscale of base-layer frames ([B,3,h,w] in [0,1] -> [B,3,H,W]): bicubic (a = -0.75,
    PyTorch's), clamped. The same function makes the "no enhancer" reference, so a comparison of the
    two isolates what the enhancer adds."""
    return F.interpolate(base, size=size, mode="bicubic", align_corners=False).clamp_(0, 1)


def _conv(i: int, o: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(i, o, 3, stride, 1)


class _Res(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        self.a, self.b = _conv(ch, ch), _conv(ch, ch)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.b(F.leaky_relu(self.a(x), 0.2))


class _Features(nn.Module):
    """Shared by queries (base frames) and keys (the key's base frame): R -> R/4 (and R/8)."""

    def __init__(self, cfg: EnhancerConfig) -> None:
        super().__init__()
        w1, w2 = cfg.widths
        self.down1 = _conv(3, w1, 2)
        self.down2 = _conv(w1, w2, 2)
        self.res = _Res(w2)
        self.m_fine = nn.Conv2d(w2, cfg.m_fine, 1)
        self.coarse = None
        if cfg.m_coarse:
            self.coarse = nn.Sequential(_conv(w2, cfg.m_coarse, 2), nn.LeakyReLU(0.2),
                                        nn.Conv2d(cfg.m_coarse, cfg.m_coarse, 1))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        h = F.leaky_relu(self.down1(x * 2 - 1), 0.2)
        h = F.leaky_relu(self.res(F.leaky_relu(self.down2(h), 0.2)), 0.2)
        return h, self.m_fine(h), (self.coarse(h) if self.coarse is not None else None)


def fine_values(picture: Tensor, picture_base: Tensor) -> Tensor:
    """The values a reference offers at R/4: its pixels and its detail over its upscaled base frame, as 4x4
    patches ([B, 96, H/4, W/4])."""
    return torch.cat([F.pixel_unshuffle(picture, FINE), F.pixel_unshuffle(picture - picture_base, FINE)], 1)


@dataclass
class KeyState:
    """What the decoder caches per key frame: attention keys/values at each scale."""

    fine: tuple[Tensor, Tensor, Tensor]
    coarse: tuple[Tensor, Tensor, Tensor] | None
    size: tuple[int, int]
    cache: dict = dataclasses.field(default_factory=dict)  # what the fast window kernel derives per key frame


class Enhancer(nn.Module):
    """See the module docstring."""

    def __init__(self, config: EnhancerConfig) -> None:
        super().__init__()
        self.config = cfg = config
        self.kernels = default_kernels()  # "fast" or "reference", as IMF's decoder (models.kernels.KERNELS)
        self.features = _Features(cfg)
        cells = cfg.resolution // FINE
        self.align_fine = Alignment(cfg.m_fine, "window", cfg.window, cfg.locality, cfg.pos_freqs,
                                    native_cells=cells)
        self.align_coarse = (Alignment(cfg.m_coarse, "full", cfg.window, cfg.locality, cfg.pos_freqs,
                                       native_cells=cfg.resolution // COARSE) if cfg.m_coarse else None)
        patch = 3 * FINE * FINE
        fuse_in = cfg.widths[1] + patch + 2 * patch + (patch if cfg.m_coarse else 0)
        self.fuse_in = nn.Conv2d(fuse_in, cfg.fuse_width, 1)
        self.fuse = nn.Sequential(*[_Res(cfg.fuse_width) for _ in range(cfg.fuse_blocks)])
        self.head = _conv(cfg.fuse_width, patch)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def _check(self, x: Tensor, what: str) -> None:
        if x.dim() != 4 or x.shape[1] != 3:
            raise InputError(f"{what} must be [B,3,H,W], got {list(x.shape)}")
        h, w = x.shape[-2:]
        if h % COARSE or w % COARSE or min(h, w) < 2 * COARSE:
            raise InputError(f"{what} size {h}x{w} must be multiples of {COARSE} and >= {2 * COARSE}")

    def prepare_key(self, key: Tensor, key_base: Tensor) -> KeyState:
        """Key frame [1,3,H,W] and its upscaled base frame (same size), both in [0, 1]."""
        return self._prepare_key(key, key_base)[0]

    def _prepare_key(self, key: Tensor, key_base: Tensor) -> tuple[KeyState, Tensor, Tensor]:
        """``prepare_key``'s state plus the fine attention features of ``key_base`` and the fine values
        (``fine_values``): what a recurrent enhancer's memory starts from, without computing them twice."""
        self._check(key, "key frame")
        if key_base.shape != key.shape:
            raise InputError(f"key base {list(key_base.shape)} differs from key frame {list(key.shape)}")
        _, m_fine, m_coarse = self.features(key_base)
        v_fine = fine_values(key, key_base)
        fine = self.align_fine.prepare(m_fine, v_fine)
        coarse = None
        if self.align_coarse is not None:
            coarse = self.align_coarse.prepare(m_coarse, F.pixel_unshuffle(key - key_base, COARSE))
        return KeyState(fine, coarse, (int(key.shape[-2]), int(key.shape[-1]))), m_fine, v_fine

    def enhance(self, state: KeyState, base: Tensor, extra: Sequence[Tensor] = ()) -> Tensor:
        """Upscaled base frames [B,3,H,W] in [0, 1] -> enhanced frames, same shape. Training passes the
        result through a straight-through clamp; at inference it is clamped to [0, 1]. ``extra``: more
        fusion inputs at R/4, for variants whose ``fuse_in`` takes them (benchmarks.enhancer_sweep)."""
        base, _, fused = self._fused(state, base, extra)
        return self._output(base, self.fuse(F.leaky_relu(fused, 0.2)))

    def _fused(self, state: KeyState, base: Tensor, extra: Sequence[Tensor] = ()) -> tuple[Tensor, Tensor, Tensor]:
        """(base, in the layout the kernels want; its fine attention features; the fusion's input before its
        activation, ``fuse_in`` of the base features, pixels and what the key's alignments gathered)."""
        self._check(base, "base frame")
        if tuple(base.shape[-2:]) != state.size:
            raise InputError(f"base frames are {tuple(base.shape[-2:])}, the key frame {state.size}")
        fast = self.kernels == "fast"
        if fast and not self.training:  # NHWC convolutions: oneDNN skips its layout reorders (same maths)
            base = base.contiguous(memory_format=torch.channels_last)
        h, m_fine, m_coarse = self.features(base)
        parts = [h, F.pixel_unshuffle(base, FINE),
                 self.align_fine.attend(m_fine, *state.fine, fast=fast, cache=state.cache)]
        if self.align_coarse is not None:
            coarse = self.align_coarse.attend(m_coarse, *state.coarse, fast=fast)
            parts.append(F.pixel_shuffle(coarse, COARSE // FINE))
        return base, m_fine, self.fuse_in(torch.cat([*parts, *extra], 1))

    def _output(self, base: Tensor, x: Tensor) -> Tensor:
        """The fused features ``x`` as a residual over ``base``: straight-through clamp in training, clamped
        at inference."""
        out = base + F.pixel_shuffle(self.head(F.leaky_relu(x, 0.2)), FINE)
        if self.training:
            return out + (out.clamp(0, 1) - out).detach()
        return out.clamp(0, 1).contiguous()

    def forward(self, key: Tensor, key_base: Tensor, base: Tensor) -> Tensor:
        """Training convenience: one key per sample (batched keys, batched base frames)."""
        return self.enhance(self.prepare_key(key, key_base), base)
