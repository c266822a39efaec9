"""The Implicit Motion Function (IMF, Gao et al., CVPR 2024) as a codec model.

Data flow (R = frame size; scales are always ordered coarse to fine: R/32, R/16, R/8, R/4):

* encoder side:  ``t = E_T(x_cur)``, a ``token_dim`` vector per frame (all that is transmitted);
* decoder side, once per key frame: ``prepare_reference(x_ref, t_ref)`` runs E_F (dense features
  of the reference) and IMF_D(t_ref) (the reference's motion features) and caches attention keys
  and values per scale in a :class:`RefState`;
* decoder side, per frame: ``decode_frame(ref, t_cur)`` runs IMF_D(t_cur), the implicit motion
  alignment IMF_A (cross-attention current-motion -> reference-motion, values = reference
  features) and the frame decoder D_F.

IMF_A (:class:`~imfcodec.models.alignment.Alignment`), which the hybrid mode's enhancer shares, the
kernel choice and flush-to-zero (``imfcodec.models.kernels``) and :class:`IMFConfig`
(``imfcodec.models.config``) live in their own modules, so that the enhancer does not import this one;
their names remain importable from here.

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
   (see "Kernels" in ``alignment.Alignment``). Used at the fine scale of the small configs; full attention
   elsewhere.
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

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from imfcodec.errors import InputError, WeightsError
from imfcodec.models.alignment import (  # noqa: F401 - re-exported
    FULL_BLOCK,
    WINDOW_TILE,
    Alignment,
    _sincos_2d,
    _SINCOS_CACHE,
    _tiles,
    _window_consts,
    _WINDOW_CACHE,
    _WindowConsts,
    cell_coords,
    inv_softplus,
    sincos_2d,
)
from imfcodec.models.config import (  # noqa: F401 - re-exported
    COARSE_PIXEL_FACTOR,
    COARSE_PIXEL_SCALE,
    COARSEST_FACTOR,
    FINEST_FACTOR,
    NUM_SCALES,
    IMFConfig,
)
from imfcodec.models.kernels import FLUSH_DENORMALS, KERNELS, default_kernels, flush_denormals  # noqa: F401
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


# --------------------------------------------------------------------------------------------
# helpers


def to_signed(x: Tensor) -> Tensor:
    return x * 2.0 - 1.0


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
