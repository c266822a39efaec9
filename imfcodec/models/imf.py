"""The Implicit Motion Function (IMF, Gao et al., CVPR 2024) as a codec model.

Data flow (R = frame size; scales are always ordered coarse to fine: R/32, R/16, R/8, R/4):

* encoder side:  ``t = E_T(x_cur)``, a ``token_dim`` vector per frame (all that is transmitted);
* decoder side, once per key frame: ``prepare_reference(x_ref, t_ref)`` runs E_F (dense features
  of the reference) and IMF_D(t_ref) (the reference's motion features) and caches attention keys
  and values per scale in a :class:`RefState`;
* decoder side, per frame: ``decode_frame(ref, t_cur)`` runs IMF_D(t_cur), the implicit motion
  alignment IMF_A (cross-attention current-motion -> reference-motion, values = reference
  features) and the frame decoder D_F.

Design decisions (gaps in the paper, or deliberate changes for a CPU-trained codec):

1. Alignment attention is single-head, as in the paper's equation (Q = m_c + pos, K = m_r + pos,
   V = f_r, no projections: IMF_D's side convs are already the learned projections). The
   transformer blocks that refine aligned features are multi-head (``tf_heads``, paper config 8).
2. ``tf_blocks`` counts transformer blocks *per scale*, configurable (0 allowed). The paper says
   "4 stacked blocks"; imf-paper uses 4 at R/32, R/16, R/8 and 1 at R/4, where full self-attention
   over 64x64 tokens is by far the most expensive part of the model.
3. Positional embeddings: fixed 2-D sinusoids of the *normalised* cell centre ((i+0.5)/h), passed
   through a learned linear layer (one per scale and use). They are resolution-agnostic, so a
   model trained at 128 runs at 256.
4. Locality prior: every alignment has a learned, resolution-agnostic distance penalty
   ``-a * |p - p'|^2`` (in cells of that scale) added to the logits. In full attention it is
   implemented exactly by appending 3 channels to Q and K (so no N x N bias tensor is built and
   the fused SDPA kernel is used); in windowed attention it is a learned relative-position bias
   per window offset initialised to ``-a * (dx^2 + dy^2)``. With equal tokens (m_c == m_r) the
   content term also peaks at p, so an untrained model aligns each position to itself.
5. Windowed (local) attention, ``align_modes[i] == "window"``: each query attends to the k x k
   neighbourhood of the same position in the reference (keys/values padded once per reference
   and cached in the RefState). The reference kernels compute it as a loop over shifted views; the fast
   kernels (the default, ``IMF.kernels``) as batched matmuls over 4x4 query tiles and their key regions
   (see "Kernels" in ``Alignment``). Used at the fine scale of the small configs; full attention elsewhere.
6. ``pixel_skip`` (deliberate addition, on for small configs, off for imf-paper): at R/4 the
   values also carry the reference pixels as 4x4 space-to-depth patches (48 channels), so the
   attention outputs *aligned reference pixels*. D_F predicts a residual added to their
   depth-to-space, through a zero-initialised head. With the identity-at-init alignment an
   untrained model reproduces the reference frame ("repeat the key frame" baseline) and training
   only has to improve on it.
7. D_F widths: the paper's FeatResBlock widths do not match E_F; here each scale's aligned
   features go through ``df_feat_blocks`` FeatResBlocks at their own width, are concatenated with
   the upsampled trunk and fused by a 3x3 conv to ``df_widths[i]``. After R/4 come
   ``len(df_up_widths)`` UpConvResBlocks (0..2); a pixel-shuffle head covers the remaining factor.
8. IMF_D: StyleGAN2-style generator from a learned constant at R/32 (interpolated when run at
   another resolution), ``imfd_convs`` StyledConvs per scale (the first of each finer scale
   upsamples), and a linear (no activation) StyledConv side output m per scale. No noise inputs
   (the decoder must be deterministic). An optional mapping MLP turns the token into the style.
9. No BatchNorm anywhere (tiny CPU batches); E_F/D_F are plain residual conv nets.
10. Inputs and outputs are in [0, 1]; networks see 2x - 1. Without pixel_skip the output is a
    sigmoid; with it, a clamp that passes gradients straight through during training.
11. ``align_offsets`` (deliberate addition, imf-small-v2): each scale reads a 2-D offset per cell
    from the motion features (zero-initialised 1x1 conv) for queries and keys, and the locality
    penalty is measured between the *offset* positions. Why: with only the paper's Q = m_c + pos,
    K = m_r + pos, a query can move its attention only by reshaping high-dimensional features
    against a sinusoidal code, and a CPU-trained imf-small (827 steps) never learned to move it
    at all (the locality stayed at its initial value, the decoder copied the reference). The
    offset gives the gradient a direct path from "the pixel is elsewhere" to the token; the
    content term still takes part, so the alignment is still attention, not a warp.
12. ``coarse_pixels`` (deliberate addition, imf-small-v2): the full attention at R/8 also
    gathers 8x8 reference pixel patches, handed to D_F's head beside the fine aligned pixels.
    The fine window at R/4 reaches only +-3 cells (12 pixels at 256); large head motions need
    pixels from further away. Zero-initialised head: an untrained model is unchanged.
13. ``et_input`` / ``et_pool`` (deliberate change, imf-small-v2): E_T sees the frame at a fixed
    size and keeps a 4x4 layout before its MLP. A global average pool makes a conv encoder almost
    translation-invariant, so the token could not say where the head moved; and a token that
    depends on the coding resolution breaks the 128 -> 256 training curriculum.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from imfcodec.errors import InputError, WeightsError
from imfcodec.models.layers import (
    ConvLayer,
    DownConvResBlock,
    EqualLinear,
    FeatResBlock,
    ResBlock,
    StyledConv,
    UpConvResBlock,
    conv3x3,
    randn,
)

NUM_SCALES = 4
FINEST_FACTOR = 4  # the finest alignment scale is R/4
COARSEST_FACTOR = 32
COARSE_PIXEL_SCALE = 2  # index of R/8, where ``coarse_pixels`` gathers 8x8 reference patches
COARSE_PIXEL_FACTOR = 8

# Decoder kernels (``IMF.kernels``): "fast" (the default) or "reference". Same model, same weights, same
# maths; the fast kernels only reorder the work (see "Kernels" below) and agree with the reference to float
# rounding, far inside the 1-level tolerance of decoded frames (tests/test_models.py checks both ways,
# gradients included). "reference" is the plain eager code the model was written and trained with, kept as
# the portable reference and the fallback: ``IMFCODEC_KERNELS=reference`` selects it for a whole process.
KERNELS = ("fast", "reference")
WINDOW_TILE = 4  # fast window attention: query tiles of 4x4 cells (their 10x10 key regions, window 7)
FULL_BLOCK = 1 << 19  # fast full attention: logits per block of query rows (2 MB of float32)


def default_kernels() -> str:
    name = os.environ.get("IMFCODEC_KERNELS", "fast").strip().lower() or "fast"
    if name not in KERNELS:
        raise InputError(f"IMFCODEC_KERNELS must be one of {', '.join(KERNELS)}, got {name!r}")
    return name


def flush_denormals() -> bool:
    """Flush denormal floats to zero (FTZ/DAZ) for this process; returns whether the CPU supports it.

    Called once when this module is imported, i.e. before any entry point (CLI, ``imfcodec.api``,
    ``codec.Encoder``/``Decoder``, training, the benchmarks) has run a tensor op, because the flag is per
    thread: torch's intra-op worker threads copy it from the main thread when they are created, at the
    first parallel op, and never look at it again. Attention probabilities far from the query underflow
    to denormals (1.2 % of them at R/8 with the shipped weights), which costs some CPUs several times the
    time of a normal multiply (issue 12 measured 1.3-1.4x on ``decode_frame`` at 1 thread); the AMD Zen 5
    build machine has no such penalty and shows no difference. Values below 1.2e-38 change no decoded
    pixel (tests/test_conformance.py, token streams byte-identical).
    """
    import numpy as np

    for t in (np.float16, np.float32, np.float64):  # numpy caches these; made under DAZ, they would warn
        np.finfo(t)
    return bool(torch.set_flush_denormal(True))


FLUSH_DENORMALS = flush_denormals()


@dataclass(frozen=True)
class IMFConfig:
    """Every hyper-parameter of an IMF model. Tuples are ordered coarse to fine where they are
    per scale (R/32, R/16, R/8, R/4). JSON-serialisable via to_dict()/from_dict()."""

    name: str = "imf-custom"
    resolution: int = 256
    token_dim: int = 32
    # E_F: stem conv 7x7 at R, then DownConvResBlocks to R/2, R/4, R/8, R/16, R/32
    ef_stem: int = 64
    ef_widths: tuple[int, ...] = (64, 128, 256, 512, 512)
    # E_T: ConvLayer(et_widths[0]) at R, then one ResBlock (/2) per further width
    et_widths: tuple[int, ...] = (64, 64, 128, 256, 512, 512, 512)
    et_mlp_layers: int = 4
    et_mlp_width: int = 512
    et_input: int = 0  # >0: E_T sees the frame resized to this size (resolution-independent token)
    et_pool: int = 1   # E_T pools its last feature map to et_pool x et_pool and flattens it
    # IMF_D: trunk widths and motion-feature (attention) dims per scale
    imfd_widths: tuple[int, ...] = (512, 512, 512, 256)
    m_dims: tuple[int, ...] = (512, 512, 512, 256)
    imfd_convs: int = 2
    style_dim: int = 512
    mapping_layers: int = 0
    # IMF_A
    align_modes: tuple[str, ...] = ("full", "full", "full", "full")
    align_window: int = 7
    align_locality: float = 3.0
    align_offsets: bool = False
    pos_freqs: int = 8
    tf_blocks: tuple[int, ...] = (4, 4, 4, 1)
    tf_heads: int = 8
    tf_mlp_ratio: float = 4.0
    # D_F
    df_widths: tuple[int, ...] = (512, 512, 256, 128)
    df_feat_blocks: int = 3
    df_up_widths: tuple[int, ...] = (128, 64)
    pixel_skip: bool = False
    coarse_pixels: bool = False
    # discriminator (training only)
    disc_widths: tuple[int, ...] = (64, 128, 256, 512)

    kind = "imf"  # what zoo.load_weights builds from a file's metadata (not a field)

    def __post_init__(self) -> None:
        per_scale = ("imfd_widths", "m_dims", "align_modes", "tf_blocks", "df_widths")
        for key in per_scale:
            if len(getattr(self, key)) != NUM_SCALES:
                raise WeightsError(f"config {self.name}: {key} needs {NUM_SCALES} entries")
        if len(self.ef_widths) != 5:
            raise WeightsError(f"config {self.name}: ef_widths needs 5 entries")
        if any(m not in ("full", "window") for m in self.align_modes):
            raise WeightsError(f"config {self.name}: align_modes must be 'full' or 'window'")
        if len(self.df_up_widths) > 2:
            raise WeightsError(f"config {self.name}: at most 2 df_up_widths")
        if self.align_window % 2 != 1:
            raise WeightsError(f"config {self.name}: align_window must be odd")
        if self.resolution % COARSEST_FACTOR:
            raise WeightsError(f"config {self.name}: resolution must be a multiple of 32")
        if len(self.et_widths) < 2:
            raise WeightsError(f"config {self.name}: et_widths needs at least 2 entries")
        if self.et_input < 0 or (self.et_input and self.et_input < 2 ** (len(self.et_widths) - 1)):
            raise WeightsError(f"config {self.name}: et_input must be 0 or >= 2^(len(et_widths)-1)")
        if not 1 <= self.et_pool <= 8:
            raise WeightsError(f"config {self.name}: et_pool must be 1..8")
        if self.coarse_pixels and (not self.pixel_skip or self.align_modes[COARSE_PIXEL_SCALE] != "full"):
            raise WeightsError(f"config {self.name}: coarse_pixels needs pixel_skip and full "
                               "attention at R/8")

    def to_dict(self) -> dict[str, Any]:
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v)
                for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IMFConfig:
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise WeightsError(f"unknown model config keys: {', '.join(unknown)}")
        kwargs = {k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items()}
        return cls(**kwargs)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> IMFConfig:
        return cls.from_dict(json.loads(text))

    @property
    def min_size(self) -> int:
        """Smallest frame side the model accepts (E_T needs >= 1 pixel after its downsamplings)."""
        if self.et_input:
            return COARSEST_FACTOR
        return max(COARSEST_FACTOR, 2 ** (len(self.et_widths) - 1))


# --------------------------------------------------------------------------------------------
# helpers


def to_signed(x: Tensor) -> Tensor:
    return x * 2.0 - 1.0


_SINCOS_CACHE: dict[tuple, Tensor] = {}


def sincos_2d(h: int, w: int, freqs: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """[h*w, 4*freqs] sinusoids of normalised cell centres: identical physical positions get
    identical embeddings at any resolution. Cached (constants, never require grad)."""
    key = (h, w, freqs, str(device), dtype)
    emb = _SINCOS_CACHE.get(key)
    if emb is None:
        if len(_SINCOS_CACHE) > 64:
            _SINCOS_CACHE.clear()
        with torch.inference_mode(False), torch.no_grad():
            emb = _sincos_2d(h, w, freqs, device, dtype)
        _SINCOS_CACHE[key] = emb
    return emb


def _sincos_2d(h: int, w: int, freqs: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    ys = (torch.arange(h, device=device, dtype=dtype) + 0.5) / h
    xs = (torch.arange(w, device=device, dtype=dtype) + 0.5) / w
    f = math.pi * (2.0 ** torch.arange(freqs, device=device, dtype=dtype))
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    py = yy.reshape(-1, 1) * f
    px = xx.reshape(-1, 1) * f
    return torch.cat([px.sin(), px.cos(), py.sin(), py.cos()], dim=1)


@dataclass(frozen=True)
class _WindowConsts:
    key_valid: Tensor  # [1, nT, S*S] bool: the key is inside the frame (not padding)
    rel_index: Tensor  # [Tq, S*S] long: index into rel_bias of the (query, key) offset
    in_window: Tensor  # [Tq, S*S] bool: the key is in the query's window
    query_pos: Tensor  # [Tq, 2] (x, y) of each query in its tile's key region
    key_pos: Tensor    # [S*S, 2] (x, y) of each key in the region


_WINDOW_CACHE: dict[tuple, _WindowConsts] = {}


def _window_consts(h: int, w: int, t: int, window: int, device: torch.device, dtype: torch.dtype) -> _WindowConsts:
    """Index tables of the fast window kernel (tiles of t x t queries, regions of S = t + 2r keys)."""
    key = (h, w, t, window, str(device), dtype)
    c = _WINDOW_CACHE.get(key)
    if c is None:
        if len(_WINDOW_CACHE) > 64:
            _WINDOW_CACHE.clear()
        r = window // 2
        s = t + 2 * r
        with torch.inference_mode(False), torch.no_grad():
            ones = F.pad(torch.ones(1, 1, h, w, device=device, dtype=dtype), (r, r, r, r))
            valid = ones.unfold(2, s, t).unfold(3, s, t).reshape(1, (h // t) * (w // t), s * s) > 0.5
            qy, qx = (g.reshape(-1) + r for g in torch.meshgrid(torch.arange(t, device=device),
                                                                torch.arange(t, device=device), indexing="ij"))
            ky, kx = (g.reshape(-1) for g in torch.meshgrid(torch.arange(s, device=device),
                                                            torch.arange(s, device=device), indexing="ij"))
            dy = ky.view(1, -1) - qy.view(-1, 1) + r
            dx = kx.view(1, -1) - qx.view(-1, 1) + r
            inside = (dy >= 0) & (dy < window) & (dx >= 0) & (dx < window)
            index = dy.clamp(0, window - 1) * window + dx.clamp(0, window - 1)  # rel_bias order: (dy, dx)
            c = _WindowConsts(valid, index, inside, torch.stack([qx, qy], 1).to(dtype),
                              torch.stack([kx, ky], 1).to(dtype))
        _WINDOW_CACHE[key] = c
    return c


def _tiles(x: Tensor, t: int) -> Tensor:
    """[B, C, h, w] -> [B, (h/t)(w/t), t*t, C]: non-overlapping t x t tiles, row-major within a tile."""
    b, c, h, w = x.shape
    return x.reshape(b, c, h // t, t, w // t, t).permute(0, 2, 4, 3, 5, 1).reshape(b, (h // t) * (w // t), t * t, c)


def cell_coords(h: int, w: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """[h*w, 2] centred (x, y) coordinates in cells of this grid."""
    ys = torch.arange(h, device=device, dtype=dtype) - (h - 1) / 2
    xs = torch.arange(w, device=device, dtype=dtype) - (w - 1) / 2
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=1)


def inv_softplus(y: float) -> float:
    return y + math.log(-math.expm1(-y))


# --------------------------------------------------------------------------------------------
# modules


class DenseFeatureEncoder(nn.Module):
    """E_F: multi-scale features of the reference frame at R/32, R/16, R/8, R/4 (coarse first)."""

    def __init__(self, cfg: IMFConfig) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, cfg.ef_stem, 7, padding=3)
        chans = [cfg.ef_stem, *cfg.ef_widths]
        self.blocks = nn.ModuleList(DownConvResBlock(a, b) for a, b in zip(chans[:-1], chans[1:]))

    @property
    def out_channels(self) -> list[int]:
        return [b.conv2.out_channels for b in self.blocks][1:][::-1]

    def forward(self, x: Tensor) -> list[Tensor]:
        h = F.leaky_relu(self.stem(to_signed(x)), 0.2)
        feats = []
        for block in self.blocks:
            h = block(h)
            feats.append(h)
        return feats[1:][::-1]


class LatentTokenEncoder(nn.Module):
    """E_T: frame -> token. With ``et_input`` the frame is first resized to a fixed size, so the
    token does not depend on the coding resolution; ``et_pool`` > 1 keeps a coarse spatial layout
    (pool to et_pool x et_pool and flatten) instead of a global average, which would make the
    token nearly blind to where the face is, i.e. to the motion it must describe."""

    def __init__(self, cfg: IMFConfig) -> None:
        super().__init__()
        w = cfg.et_widths
        self.input_size = cfg.et_input
        self.pool = cfg.et_pool
        self.stem = ConvLayer(3, w[0], 3)
        self.blocks = nn.Sequential(*(ResBlock(a, b) for a, b in zip(w[:-1], w[1:])))
        self.final = ConvLayer(w[-1], w[-1], 3)
        mlp: list[nn.Module] = []
        dim = w[-1] * self.pool * self.pool
        for _ in range(cfg.et_mlp_layers):
            mlp.append(EqualLinear(dim, cfg.et_mlp_width, activation=True))
            dim = cfg.et_mlp_width
        mlp.append(EqualLinear(dim, cfg.token_dim))
        self.mlp = nn.Sequential(*mlp)

    def forward(self, x: Tensor) -> Tensor:
        if self.input_size and x.shape[-2:] != (self.input_size, self.input_size):
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear",
                              align_corners=False, antialias=True)
        h = self.final(self.blocks(self.stem(to_signed(x))))
        return self.mlp(F.adaptive_avg_pool2d(h, self.pool).flatten(1))


class LatentTokenDecoder(nn.Module):
    """IMF_D: token -> motion features m at the 4 scales, StyleGAN2-style generator."""

    def __init__(self, cfg: IMFConfig) -> None:
        super().__init__()
        self.cfg = cfg
        mapping: list[nn.Module] = []
        dim = cfg.token_dim
        for _ in range(cfg.mapping_layers):
            mapping.append(EqualLinear(dim, cfg.style_dim, activation=True))
            dim = cfg.style_dim
        self.mapping = nn.Sequential(*mapping)
        sd = dim
        r0 = cfg.resolution // COARSEST_FACTOR
        self.const = nn.Parameter(randn(1, cfg.imfd_widths[0], r0, r0))
        self.convs = nn.ModuleList()
        self.sides = nn.ModuleList()
        prev = cfg.imfd_widths[0]
        for i, (width, mdim) in enumerate(zip(cfg.imfd_widths, cfg.m_dims)):
            stage = nn.ModuleList()
            for j in range(cfg.imfd_convs):
                stage.append(StyledConv(prev, width, 3, sd, upsample=(i > 0 and j == 0)))
                prev = width
            if cfg.imfd_convs == 0 and i > 0:
                raise WeightsError("imfd_convs must be >= 1")
            self.convs.append(stage)
            self.sides.append(StyledConv(width, mdim, 1, sd, activate=False))

    def forward(self, token: Tensor, size: tuple[int, int], fast: bool = False) -> list[Tensor]:
        """``fast``: the fast kernels (modulated convolutions as batched channels-last convolutions)."""
        style = self.mapping(token)
        h0, w0 = size[0] // COARSEST_FACTOR, size[1] // COARSEST_FACTOR
        const = self.const
        if const.shape[-2:] != (h0, w0):
            const = F.interpolate(const, size=(h0, w0), mode="bilinear", align_corners=False)
        h = const.expand(token.shape[0], -1, -1, -1)
        if fast:
            h = h.contiguous(memory_format=torch.channels_last)
        out = []
        for stage, side in zip(self.convs, self.sides):
            for conv in stage:
                h = conv(h, style, fast)
            out.append(side(h, style, fast))
        return out


class Alignment(nn.Module):
    """One scale of IMF_A: cross-attention from current motion features to reference motion
    features, gathering reference values. ``prepare`` (once per reference) builds keys/values;
    ``attend`` (per frame) runs the attention. Modes: "full" or "window" (k x k neighbourhood).

    With ``offsets`` a zero-initialised 1x1 conv reads a 2-D position offset (in cells) from each
    motion feature map, for queries (from m_c) and keys (from m_r) alike, and the locality
    penalty becomes ``-a * |(p + o_c(p)) - (p' + o_r(p'))|^2``: a query attends to the reference
    cells whose offset position matches its own. The content term ``q.k`` is unchanged, so
    this is still attention between motion features; the offsets only give IMF_D a direct,
    differentiable handle on *where* a query looks (see the module docstring, decision 11)."""

    def __init__(self, m_dim: int, mode: str, window: int, locality: float, pos_freqs: int,
                 offsets: bool = False, native_cells: int = 1):
        super().__init__()
        self.native_cells = native_cells  # grid side at the config's resolution
        self.m_dim, self.mode, self.window, self.pos_freqs = m_dim, mode, window, pos_freqs
        self.pos = nn.Linear(4 * pos_freqs, m_dim)
        if mode == "full":
            self.locality = nn.Parameter(torch.tensor(inv_softplus(locality)))
        else:
            r = window // 2
            # on the CPU even when the model is built on the meta device (a few floats): torch's meta
            # kernels for arange and arithmetic import torch._dynamo and sympy (layers.randn)
            d = torch.arange(-r, r + 1, dtype=torch.float32, device="cpu")
            dist2 = (d.view(-1, 1) ** 2 + d.view(1, -1) ** 2).reshape(-1)  # offset order: (dy, dx)
            self.rel_bias = nn.Parameter(-locality * dist2)
            # the offset terms' gain: fixed (the learned rel_bias carries the distance penalty)
            self.register_buffer("offset_gain", torch.tensor(float(locality)), persistent=False)
            self.register_buffer("window_offsets", torch.stack(torch.meshgrid(d, d, indexing="ij"))
                                 .flip(0).reshape(2, -1).t().contiguous(), persistent=False)  # (dx, dy)
        self.offset = None
        if offsets:
            self.offset = nn.Conv2d(m_dim, 2, 1)
            nn.init.zeros_(self.offset.weight)
            nn.init.zeros_(self.offset.bias)

    def _pos(self, h: int, w: int, ref: Tensor) -> Tensor:
        emb = self.pos(sincos_2d(h, w, self.pos_freqs, ref.device, ref.dtype))  # [N, d]
        return emb.t().reshape(1, self.m_dim, h, w)

    def _offset(self, m: Tensor) -> Tensor:
        """[B, 2, h, w] learned (x, y) offsets in cells of m's grid. The conv predicts them in
        cells at the config's resolution, rescaled to the grid at hand, so an offset is the same
        fraction of the frame at any resolution (a model trained at 128 moves as far at 256)."""
        h, w = m.shape[-2:]
        o = self.offset(m)
        return o * o.new_tensor([w / self.native_cells, h / self.native_cells]).view(1, 2, 1, 1)

    def _coords(self, m: Tensor) -> Tensor:
        """[B, N, 2] (x, y) cell positions of m's grid, moved by the learned offsets if any."""
        b, _, h, w = m.shape
        c = cell_coords(h, w, m.device, m.dtype).unsqueeze(0)
        if self.offset is None:
            return c.expand(b, -1, -1)
        return c + self._offset(m).flatten(2).transpose(1, 2)

    def prepare(self, m_r: Tensor, v_r: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Keys, values and (window mode) the -inf mask of padded neighbours."""
        b, _, h, w = m_r.shape
        k = m_r + self._pos(h, w, m_r)
        if self.mode == "full":
            a = F.softplus(self.locality)
            c = self._coords(m_r)  # [B, N, 2]
            k = k.flatten(2).transpose(1, 2)  # [B, N, d]
            extra = torch.cat([c * torch.sqrt(2 * a), -a * c.pow(2).sum(2, keepdim=True)], dim=2)
            k = torch.cat([k, extra], dim=2).unsqueeze(1)
            v = v_r.flatten(2).transpose(1, 2).unsqueeze(1)  # [B, 1, N, Cv]
            return k, v, torch.zeros(0, device=m_r.device)
        r = self.window // 2
        if self.offset is not None:  # the reference offsets travel as 2 extra key channels
            k = torch.cat([k, self._offset(m_r)], dim=1)
        k = F.pad(k, (r, r, r, r))
        v = F.pad(v_r, (r, r, r, r))
        ones = F.pad(torch.ones(1, 1, h, w, device=m_r.device, dtype=m_r.dtype), (r, r, r, r))
        valid = torch.cat([ones[:, :, dy:dy + h, dx:dx + w] for dy, dx in self._offsets()], 1)
        mask = torch.zeros_like(valid).masked_fill(valid < 0.5, float("-inf"))  # [1, k2, h, w]
        return k, v, mask

    def _offsets(self) -> list[tuple[int, int]]:
        return [(dy, dx) for dy in range(self.window) for dx in range(self.window)]

    def attend(self, m_c: Tensor, k: Tensor, v: Tensor, mask: Tensor, *, fast: bool = False,
               cache: dict | None = None) -> Tensor:
        """Aligned values [B, Cv, h, w] for current motion features ``m_c`` against a prepared reference.
        ``fast`` selects the fast kernels (see "Kernels" below; the reference ops otherwise); ``cache`` is a
        per-reference dict where the fast window kernel keeps what it derives from constant keys/values."""
        if fast:
            return self._attend_full_fast(m_c, k, v) if self.mode == "full" else \
                self._attend_window_fast(m_c, k, v, cache)
        b, d, h, w = m_c.shape
        q = (m_c + self._pos(h, w, m_c)) * (1.0 / math.sqrt(d))
        if self.mode == "full":
            q = self._full_query(q, m_c).unsqueeze(1)
            if k.shape[0] != b:
                k, v = k.expand(b, -1, -1, -1), v.expand(b, -1, -1, -1)
            out = F.scaled_dot_product_attention(q, k, v, scale=1.0)  # [B, 1, N, Cv]
            return out.squeeze(1).transpose(1, 2).reshape(b, -1, h, w)
        # Windowed attention as a loop over the k*k offsets of shifted views of the padded
        # keys/values: same result as unfolding, but no k*k-times larger buffers (measured 3-5x
        # faster on CPU than unfold + einsum at 64x64, window 7).
        offs = self._offsets()
        bias = self.rel_bias.view(1, -1, 1, 1) + mask  # [1, k2, h, w]
        logits = torch.stack([(q * k[:, :d, dy:dy + h, dx:dx + w]).sum(1) for dy, dx in offs], 1)
        if self.offset is not None:
            logits = logits + self._offset_logits(m_c, k[:, d:], offs)
        attn = (logits + bias).softmax(dim=1)  # [B, k2, h, w]
        if not torch.is_grad_enabled():  # inference: accumulate in place
            out = torch.zeros(b, v.shape[1], h, w, device=v.device, dtype=v.dtype)
            for i, (dy, dx) in enumerate(offs):
                out.addcmul_(attn[:, i:i + 1], v[:, :, dy:dy + h, dx:dx + w])
            return out
        out = attn[:, :1] * v[:, :, :h, :w]
        for i, (dy, dx) in enumerate(offs[1:], start=1):
            out = out + attn[:, i:i + 1] * v[:, :, dy:dy + h, dx:dx + w]
        return out

    def _full_query(self, q: Tensor, m_c: Tensor) -> Tensor:
        """Full mode: [B, N, d + 3] queries, the locality prior as 3 extra channels (decision 4)."""
        a = F.softplus(self.locality)
        c = self._coords(m_c)
        extra = torch.cat([c * torch.sqrt(2 * a), torch.ones_like(c[:, :, :1])], dim=2)
        return torch.cat([q.flatten(2).transpose(1, 2), extra], dim=2)

    # ---- Kernels: the fast path. Same maths as ``attend``'s reference ops, organised for big matmuls.
    # Full attention: SDPA picks its slow "math" path here (the value width differs from the query width),
    # which is bmm + softmax + bmm plus checks; doing that directly is the same arithmetic, and a batch of
    # frames against one reference becomes one tall matmul instead of B copies of the keys. The output is
    # returned as a channels-last view of the [B, N, Cv] result, no transpose copy.
    # Window attention: instead of ~200 small strided element-wise ops over 49 shifted views, the query
    # grid is cut into WINDOW_TILE^2 tiles; every query of a tile sees the same (T+2r)^2 key region, so
    # one batched matmul per tile gives all its logits, neighbours outside a query's window get -inf (as
    # padding does in the reference), then softmax and one batched matmul with the region's values. That
    # computes (T+2r)^2 / window^2 = 2x the needed products, as dense GEMMs. Key/value regions depend only
    # on the reference and are cut once per key frame (``cache``). The offset terms of decision 11,
    # ``a (2 o_c.(o + o_n) - 2 o.o_n - |o_n|^2)`` with o = p' - p, are split into query-key products
    # (extra channels of q and k) and a per-key bias, dropping ``-2a o_c.p``, which is the same for every
    # key of a query and cancels in the softmax.

    def _attend_full_fast(self, m_c: Tensor, k: Tensor, v: Tensor) -> Tensor:
        b, d, h, w = m_c.shape
        q = self._full_query((m_c + self._pos(h, w, m_c)) * (1.0 / math.sqrt(d)), m_c)  # [B, N, d+3]
        bk, n = k.shape[0], h * w
        q = q.reshape(bk, (b // bk) * n, -1)  # frames sharing one reference: one tall matmul
        kt, v = k[:, 0].transpose(1, 2), v[:, 0]
        rows = max(64, FULL_BLOCK // kt.shape[-1])
        if q.shape[1] <= rows:
            out = torch.matmul(torch.matmul(q, kt).softmax(-1), v)  # [Bk, G*N, Cv]
        else:  # rows are independent: blocks whose logits stay in cache (3x faster for 5 frames at R/8)
            out = torch.cat([torch.matmul(torch.matmul(q[:, i:i + rows], kt).softmax(-1), v)
                             for i in range(0, q.shape[1], rows)], 1)
        return out.view(b, h, w, -1).permute(0, 3, 1, 2)

    def _window_tile(self, h: int, w: int) -> int:
        return next(t for t in (WINDOW_TILE, 2, 1) if h % t == 0 and w % t == 0)

    def _window_regions(self, k: Tensor, v: Tensor, h: int, w: int, t: int) -> tuple[Tensor, Tensor, Tensor]:
        """Per reference: keys [Bk, nT, Ck, S*S] and values [Bk, nT, S*S, Cv] of each tile's key region
        (S = t + 2r), and the per-key logit bias [Bk, nT, 1, 1, S*S] (-inf on padding)."""
        r = self.window // 2
        s = t + 2 * r
        consts = _window_consts(h, w, t, self.window, k.device, k.dtype)
        bk = k.shape[0]
        kr = k.unfold(2, s, t).unfold(3, s, t)  # [Bk, Ck, nty, ntx, S, S] views
        vr = v.unfold(2, s, t).unfold(3, s, t)
        n_t = kr.shape[2] * kr.shape[3]
        kr = kr.permute(0, 2, 3, 1, 4, 5).reshape(bk, n_t, k.shape[1], s * s)
        vr = vr.permute(0, 2, 3, 4, 5, 1).reshape(bk, n_t, s * s, v.shape[1])
        bias = torch.zeros(bk, n_t, s * s, device=k.device, dtype=k.dtype)
        if self.offset is not None:
            d = self.m_dim
            o_n = kr[:, :, d:d + 2]  # [Bk, nT, 2, S*S]: each key's own offset
            kp = consts.key_pos.t().expand(bk, n_t, 2, s * s)
            bias = -self.offset_gain * (2 * (kp * o_n).sum(2) + (o_n * o_n).sum(2))
            kr = torch.cat([kr, kp], 2)
        bias = bias.masked_fill(~consts.key_valid, float("-inf"))
        return kr, vr, bias.view(bk, n_t, 1, 1, s * s)

    def _attend_window_fast(self, m_c: Tensor, k: Tensor, v: Tensor, cache: dict | None) -> Tensor:
        b, d, h, w = m_c.shape
        t = self._window_tile(h, w)
        constant = not (k.requires_grad or v.requires_grad or self.offset_gain.requires_grad)
        key = ("window", t, h, w)
        regions = cache.get(key) if cache is not None and constant else None
        if regions is None:
            regions = self._window_regions(k, v, h, w, t)
            if cache is not None and constant:
                cache[key] = regions
        kr, vr, kbias = regions
        consts = _window_consts(h, w, t, self.window, m_c.device, m_c.dtype)
        bk, n_t, g, tq = kr.shape[0], kr.shape[1], b // kr.shape[0], t * t
        q = _tiles((m_c + self._pos(h, w, m_c)) * (1.0 / math.sqrt(d)), t)  # [B, nT, Tq, d]
        if self.offset is not None:
            o_c = _tiles(self._offset(m_c), t)  # [B, nT, Tq, 2]
            gain2 = 2 * self.offset_gain
            q = torch.cat([q, gain2 * (o_c + consts.query_pos), gain2 * o_c], 3)
        q = q.view(bk, g, n_t, tq, -1).transpose(1, 2).reshape(bk, n_t, g * tq, -1)
        rel = self.rel_bias[consts.rel_index].masked_fill(~consts.in_window, float("-inf"))  # [Tq, S*S]
        logits = torch.matmul(q, kr).view(bk, n_t, g, tq, -1)
        attn = (logits + kbias + rel).softmax(-1).view(bk, n_t, g * tq, -1)
        out = torch.matmul(attn, vr)  # [Bk, nT, G*Tq, Cv]
        cv = out.shape[-1]
        out = out.view(bk, h // t, w // t, g, t, t, cv).permute(0, 3, 1, 4, 2, 5, 6)
        return out.reshape(b, h, w, cv).permute(0, 3, 1, 2)  # channels-last [B, Cv, h, w]

    def _offset_logits(self, m_c: Tensor, o_r: Tensor, offs: list[tuple[int, int]]) -> Tensor:
        """Window mode: the offset-dependent part of ``-a |o + o_r(p+o) - o_c(p)|^2`` (the
        ``-a |o|^2`` part is rel_bias; ``-a |o_c|^2`` is the same for every neighbour)."""
        h, w = m_c.shape[-2:]
        o_c = self._offset(m_c)  # [B, 2, h, w]
        terms = []
        for i, (dy, dx) in enumerate(offs):
            o = self.window_offsets[i].view(1, 2, 1, 1)
            o_n = o_r[:, :, dy:dy + h, dx:dx + w]  # the neighbour's own offset
            terms.append((2 * o_c * (o + o_n) - 2 * o * o_n - o_n * o_n).sum(1))
        return self.offset_gain * torch.stack(terms, 1)


class TransformerBlock(nn.Module):
    """Pre-LN transformer block: x + MHSA(LN(x)), then x + W2 GELU(W1 LN(x))."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.heads = heads if dim % heads == 0 else 1
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        hidden = max(1, int(dim * mlp_ratio))
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, n, c = x.shape
        qkv = self.qkv(self.norm1(x)).view(b, n, 3, self.heads, c // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        a = F.scaled_dot_product_attention(q, k, v)
        x = x + self.proj(a.transpose(1, 2).reshape(b, n, c))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class TransformerStack(nn.Module):
    """Refines one scale's aligned features; adds a learned projection of the sinusoidal
    positional embedding first (self-attention alone is blind to position)."""

    def __init__(self, dim: int, blocks: int, heads: int, mlp_ratio: float, pos_freqs: int):
        super().__init__()
        self.pos_freqs = pos_freqs
        self.pos = nn.Linear(4 * pos_freqs, dim)
        self.blocks = nn.ModuleList(TransformerBlock(dim, heads, mlp_ratio) for _ in range(blocks))

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        t = x.flatten(2).transpose(1, 2)
        t = t + self.pos(sincos_2d(h, w, self.pos_freqs, x.device, x.dtype))
        for block in self.blocks:
            t = block(t)
        return t.transpose(1, 2).reshape(b, c, h, w)


class FrameDecoder(nn.Module):
    """D_F: fuses aligned features coarse to fine, upsamples to R, predicts the frame (or, with
    pixel_skip, a residual on the aligned reference pixels through a zero-initialised head)."""

    def __init__(self, cfg: IMFConfig, feat_channels: list[int]) -> None:
        super().__init__()
        self.pixel_skip = cfg.pixel_skip
        dw = cfg.df_widths
        self.proj = nn.Conv2d(feat_channels[0], dw[0], 3, padding=1)
        self.feat_blocks = nn.ModuleList(
            nn.Sequential(*(FeatResBlock(c) for _ in range(cfg.df_feat_blocks)))
            for c in feat_channels
        )
        self.ups = nn.ModuleList(UpConvResBlock(dw[i - 1], dw[i]) for i in range(1, NUM_SCALES))
        self.fuse = nn.ModuleList(
            conv3x3(dw[i] + feat_channels[i], dw[i]) for i in range(1, NUM_SCALES)
        )
        chans = [dw[-1], *cfg.df_up_widths]
        self.final_ups = nn.ModuleList(UpConvResBlock(a, b) for a, b in zip(chans[:-1], chans[1:]))
        self.shuffle = FINEST_FACTOR >> len(cfg.df_up_widths)
        s2 = self.shuffle * self.shuffle
        self.coarse_pixels = cfg.coarse_pixels
        head_in = chans[-1] + (3 * s2 if cfg.pixel_skip else 0) + (3 * s2 if cfg.coarse_pixels else 0)
        self.head = nn.Conv2d(head_in, 3 * s2, 3, padding=1)
        if cfg.pixel_skip:
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)

    def forward(self, aligned: list[Tensor], base: Tensor | None,
                coarse: Tensor | None = None, channels_last: bool = False) -> Tensor:
        """``channels_last`` (the fast kernels): run the convolutions on NHWC tensors, which oneDNN
        computes without reordering every activation to and from its blocked layout (same maths)."""
        if channels_last:
            cl = torch.channels_last
            aligned = [a.contiguous(memory_format=cl) for a in aligned]
            base = None if base is None else base.contiguous(memory_format=cl)
            coarse = None if coarse is None else coarse.contiguous(memory_format=cl)
            return self._forward(aligned, base, coarse).contiguous()
        return self._forward(aligned, base, coarse)

    def _forward(self, aligned: list[Tensor], base: Tensor | None, coarse: Tensor | None) -> Tensor:
        h = self.proj(self.feat_blocks[0](aligned[0]))
        for i in range(1, NUM_SCALES):
            h = self.ups[i - 1](h)
            h = F.leaky_relu(self.fuse[i - 1](torch.cat([h, self.feat_blocks[i](aligned[i])], 1)), 0.2)
        for up in self.final_ups:
            h = up(h)
        if base is None:
            return torch.sigmoid(F.pixel_shuffle(self.head(h), self.shuffle))
        pix = [base] if coarse is None else [base, coarse]
        pix = [F.pixel_unshuffle(p, self.shuffle) if self.shuffle > 1 else p for p in pix]
        res = F.pixel_shuffle(self.head(torch.cat([h, *pix], 1)), self.shuffle)
        x = base + res
        if self.training:  # straight-through clamp: keep gradients that pull values back
            return x + (x.clamp(0.0, 1.0) - x).detach()
        return x.clamp(0.0, 1.0)


@dataclass
class RefState:
    """Per-key-frame decoder cache: per-scale attention keys/values (and window masks), plus
    the frame size. Built by IMF.prepare_reference; batch 1 broadcasts over a batch of tokens."""

    keys: list[Tensor]
    values: list[Tensor]
    masks: list[Tensor]
    size: tuple[int, int] = field(default=(0, 0))
    # what the fast kernels derive from constant keys/values, per scale (IMF.decode_frame fills it)
    cache: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def batch_size(self) -> int:
        return int(self.keys[0].shape[0])

    def detach(self) -> RefState:
        return RefState([t.detach() for t in self.keys], [t.detach() for t in self.values],
                        [t.detach() for t in self.masks], self.size)


class IMF(nn.Module):
    """The full model. See the module docstring for the data flow and design decisions."""

    def __init__(self, config: IMFConfig) -> None:
        super().__init__()
        self.config = config
        cfg = config
        self.feature_encoder = DenseFeatureEncoder(cfg)
        self.token_encoder = LatentTokenEncoder(cfg)
        self.token_decoder = LatentTokenDecoder(cfg)
        feat_ch = self.feature_encoder.out_channels  # coarse to fine
        self.align = nn.ModuleList(
            Alignment(m, mode, cfg.align_window, cfg.align_locality, cfg.pos_freqs,
                      cfg.align_offsets, cfg.resolution // (COARSEST_FACTOR >> i))
            for i, (m, mode) in enumerate(zip(cfg.m_dims, cfg.align_modes))
        )
        self.refine = nn.ModuleList(
            TransformerStack(c, n, cfg.tf_heads, cfg.tf_mlp_ratio, cfg.pos_freqs) if n > 0
            else nn.Identity()
            for c, n in zip(feat_ch, cfg.tf_blocks)
        )
        self.frame_decoder = FrameDecoder(cfg, feat_ch)
        self.kernels = default_kernels()  # "fast" or "reference": see KERNELS
        self.register_buffer("token_scale", torch.ones(cfg.token_dim))
        # The entropy prior: per-channel std of frame-to-frame token deltas, in token units, measured at
        # export and filled from the weights' metadata (entropy.params.load_prior); zeros = never measured.
        # Not persistent: it is not in the state dict, so it leaves the weights hash alone.
        self.register_buffer("delta_std", torch.zeros(cfg.token_dim), persistent=False)

    # ---- input checks
    def _check_frames(self, x: Tensor, what: str) -> None:
        if x.dim() != 4 or x.shape[1] != 3:
            raise InputError(f"{what} must be [B,3,H,W], got {list(x.shape)}")
        h, w = x.shape[-2:]
        if h % COARSEST_FACTOR or w % COARSEST_FACTOR or min(h, w) < self.config.min_size:
            raise InputError(
                f"{what} size {h}x{w} must be multiples of 32 and >= {self.config.min_size}")

    def _check_token(self, t: Tensor) -> None:
        if t.dim() != 2 or t.shape[1] != self.config.token_dim:
            raise InputError(f"token must be [B,{self.config.token_dim}], got {list(t.shape)}")

    # ---- API
    def encode_token(self, x: Tensor) -> Tensor:
        """E_T: [B,3,H,W] in [0,1] -> [B, token_dim]."""
        self._check_frames(x, "frame")
        return self.token_encoder(x)

    def prepare_reference(self, x_ref: Tensor, t_ref: Tensor) -> RefState:
        """Everything that depends only on the key frame: E_F(x_ref), IMF_D(t_ref), and the
        per-scale attention keys/values built from them (window scales pre-padded)."""
        self._check_frames(x_ref, "reference")
        self._check_token(t_ref)
        if t_ref.shape[0] != x_ref.shape[0]:
            raise InputError("reference frames and tokens differ in batch size")
        size = (int(x_ref.shape[-2]), int(x_ref.shape[-1]))
        feats = self.feature_encoder(x_ref)
        motion = self.token_decoder(t_ref, size)
        keys, values, masks = [], [], []
        for i, (al, f, m) in enumerate(zip(self.align, feats, motion)):
            if i == NUM_SCALES - 1 and self.config.pixel_skip:
                f = torch.cat([f, F.pixel_unshuffle(x_ref, FINEST_FACTOR)], dim=1)
            if i == COARSE_PIXEL_SCALE and self.config.coarse_pixels:
                f = torch.cat([f, F.pixel_unshuffle(x_ref, COARSE_PIXEL_FACTOR)], dim=1)
            k, v, mask = al.prepare(m, f)
            keys.append(k)
            values.append(v)
            masks.append(mask)
        return RefState(keys, values, masks, size)

    def decode_frame(self, ref: RefState, t_cur: Tensor) -> Tensor:
        """Per-frame decoder work: IMF_D(t_cur), IMF_A against the cached reference, D_F.
        A batch-1 RefState broadcasts over a batch of tokens. Returns [B,3,H,W] in [0,1]."""
        self._check_token(t_cur)
        b = t_cur.shape[0]
        if ref.batch_size not in (1, b):
            raise InputError(f"reference batch {ref.batch_size} does not match token batch {b}")
        if self.kernels not in KERNELS:
            raise InputError(f"kernels must be one of {', '.join(KERNELS)}, got {self.kernels!r}")
        fast = self.kernels == "fast"
        motion = self.token_decoder(t_cur, ref.size, fast)
        aligned = []
        base = coarse = None
        for i in range(NUM_SCALES):
            out = self.align[i].attend(motion[i], ref.keys[i], ref.values[i], ref.masks[i], fast=fast,
                                       cache=ref.cache.setdefault(i, {}) if fast else None)
            if i == NUM_SCALES - 1 and self.config.pixel_skip:
                c = out.shape[1] - 3 * FINEST_FACTOR**2
                base = F.pixel_shuffle(out[:, c:], FINEST_FACTOR)
                out = out[:, :c]
            if i == COARSE_PIXEL_SCALE and self.config.coarse_pixels:
                c = out.shape[1] - 3 * COARSE_PIXEL_FACTOR**2
                coarse = F.pixel_shuffle(out[:, c:], COARSE_PIXEL_FACTOR)
                out = out[:, :c]
            aligned.append(self.refine[i](out))
        return self.frame_decoder(aligned, base, coarse, channels_last=fast)

    def forward(
        self,
        x_ref: Tensor,
        x_cur: Tensor,
        t_ref: Tensor | None = None,
        t_cur: Tensor | None = None,
    ) -> Tensor:
        """Training convenience: tokens from E_T of both frames unless given (e.g. quantized)."""
        if t_ref is None and t_cur is None and x_ref.shape == x_cur.shape:
            t_ref, t_cur = self.encode_token(torch.cat([x_ref, x_cur], 0)).chunk(2, 0)
        else:
            t_ref = self.encode_token(x_ref) if t_ref is None else t_ref
            t_cur = self.encode_token(x_cur) if t_cur is None else t_cur
        return self.decode_frame(self.prepare_reference(x_ref, t_ref), t_cur)
