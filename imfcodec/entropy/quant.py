"""Token quantization: float tokens <-> integers, and the raw key-frame token.

step[c] = token_scale[c] * quality_step(Q) (``entropy.params.quantization_steps``). The quality ladder is geometric: each +1 divides the
step by sqrt(2) (about +0.5 bit per channel per frame at high rate), Q = 6 is one token_scale.
Only the encoder rounds; the decoder only multiplies integers by steps.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import CorruptStreamError, InputError

if TYPE_CHECKING:
    import torch

QUALITY_RANGE = (0, 12)
Q_MAX = 32767  # tokens are int16 on the wire; -32768 is never written (so a negation cannot overflow)

_SQRT2 = math.sqrt(2.0)  # IEEE sqrt is correctly rounded: identical everywhere


def quality_step(quality: int) -> float:
    """Step multiplier 2 ** ((6 - quality) / 2): Q=0 -> 8, Q=6 -> 1, Q=12 -> 1/8 (finer with Q).

    Computed with ldexp and sqrt(2) only, so encoder and decoder get the same float everywhere.
    """
    lo, hi = QUALITY_RANGE
    if isinstance(quality, bool) or not isinstance(quality, (int, np.integer)) or not lo <= quality <= hi:
        raise InputError(f"quality must be an integer in {lo}..{hi}, got {quality!r}")
    e = 6 - int(quality)
    return math.ldexp(1.0, e // 2) * (_SQRT2 if e % 2 else 1.0)


def _check_step(step: Any) -> np.ndarray:
    s = np.asarray(step, dtype=np.float64)
    if s.ndim != 1 or s.size == 0 or not np.all(np.isfinite(s)) or not np.all(s > 0):
        raise InputError("quantization step must be a 1-D array of positive finite floats")
    return s


def quantize(t: "torch.Tensor | np.ndarray", step: np.ndarray) -> np.ndarray:
    """Float tokens [..., C] -> int32, round half away from zero of t / step, saturated at +-Q_MAX.

    Division and rounding are done in float64 so the result does not depend on torch's kernels.
    """
    if hasattr(t, "detach"):
        t = t.detach().cpu().double().numpy()
    x = np.asarray(t, dtype=np.float64)
    s = _check_step(step)
    if x.ndim == 0 or x.shape[-1] != s.size:
        raise InputError(f"token last dimension must be {s.size}, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise InputError("token contains NaN or infinity")
    y = x / s
    q = np.sign(y) * np.floor(np.abs(y) + 0.5)
    return np.clip(q, -Q_MAX, Q_MAX).astype(np.int32)


def dequantize(q: np.ndarray, step: np.ndarray) -> "torch.Tensor":
    """Integers [..., C] -> float32 tensor q * step (product in float64, then one rounding)."""
    import torch

    s = _check_step(step)
    qa = np.asarray(q)
    if qa.ndim == 0 or qa.shape[-1] != s.size or not np.issubdtype(qa.dtype, np.integer):
        raise InputError(f"expected integer tokens [..., {s.size}], got {qa.dtype} {qa.shape}")
    return torch.from_numpy((qa.astype(np.float64) * s).astype(np.float32))


def pack_key_token(q: np.ndarray) -> bytes:
    """A key frame's integer token as little-endian int16 (2 bytes per channel)."""
    a = np.asarray(q)
    if a.ndim != 1 or not np.issubdtype(a.dtype, np.integer):
        raise InputError(f"key token must be a 1-D integer array, got {a.dtype} {a.shape}")
    if a.size and int(np.abs(a.astype(np.int64)).max()) > Q_MAX:
        raise InputError(f"key token values must be within +-{Q_MAX}")
    return a.astype("<i2").tobytes()


def unpack_key_token(data: bytes, token_dim: int) -> np.ndarray:
    """Inverse of pack_key_token; CorruptStreamError on a wrong length or the unused value -32768."""
    if len(data) != 2 * token_dim:
        raise CorruptStreamError(f"key token has {len(data)} bytes, expected {2 * token_dim}")
    a = np.frombuffer(bytes(data), dtype="<i2").astype(np.int32)
    if a.size and int(a.min()) < -Q_MAX:
        raise CorruptStreamError("key token holds an out-of-range value")
    return a
