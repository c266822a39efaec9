"""Implicit alignment (IMF_A): cross-attention that moves reference values to where the current frame
needs them, shared by the token model (``imf.IMF``, one per scale) and the hybrid mode's enhancer
(``enhancer.Enhancer``, at R/4 and R/8).

It lives apart from ``imf`` so that the enhancer, and with it the default (hybrid) mode, does not import
the token model. Design decisions 1 and 3-5 and 11 of ``imfcodec.models.imf`` describe it; the kernels
("fast" or "reference") are chosen in ``kernels``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from imfcodec.models import kernels  # noqa: F401 - flush-to-zero before any tensor op (kernels.flush_denormals)

WINDOW_TILE = 4  # fast window attention: query tiles of 4x4 cells (their 10x10 key regions, window 7)
FULL_BLOCK = 1 << 19  # fast full attention: logits per block of query rows (2 MB of float32)


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



class Alignment(nn.Module):
    """One scale of IMF_A: cross-attention from current motion features to reference motion
    features, gathering reference values. ``prepare`` (once per reference) builds keys/values;
    ``attend`` (per frame) runs the attention. Modes: "full" or "window" (k x k neighbourhood).

    With ``offsets`` a zero-initialised 1x1 conv reads a 2-D position offset (in cells) from each
    motion feature map, for queries (from m_c) and keys (from m_r) alike, and the locality
    penalty becomes ``-a * |(p + o_c(p)) - (p' + o_r(p'))|^2``: a query attends to the reference
    cells whose offset position matches its own. The content term ``q.k`` is unchanged, so
    this is still attention between motion features; the offsets only give IMF_D a direct,
    differentiable handle on *where* a query looks (decision 11 in ``imfcodec.models.imf``)."""

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
        """Full mode: [B, N, d + 3] queries, the locality prior as 3 extra channels (decision 4 in ``imf``)."""
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
