"""Token entropy coding: quantization, the temporal delta prior and compressai's rANS.

Light to import (numpy + the compressai rANS extension only); the torch rate model is loaded on
first use of ``TokenRateModel`` / ``gaussian_delta_bits``. ``params`` owns the entropy parameters
(token scale and delta prior -> quantization steps and scale indexes).
"""

from __future__ import annotations

from .coder import MAX_CHUNK, TokenCoder, measure_chunk_overhead, table_bits
from .params import measured_delta_std, prior_delta_std, quantization_steps, scale_indexes
from .quant import (
    Q_MAX,
    QUALITY_RANGE,
    dequantize,
    pack_key_token,
    quality_step,
    quantize,
    unpack_key_token,
)
from .tables import NUM_SCALES, SCALE_MIN, scale_table

_LAZY = {"TokenRateModel", "gaussian_delta_bits"}


def __getattr__(name: str):
    if name in _LAZY:
        from . import rate

        return getattr(rate, name)
    raise AttributeError(f"module 'imfcodec.entropy' has no attribute {name!r}")


__all__ = [
    "MAX_CHUNK", "NUM_SCALES", "QUALITY_RANGE", "Q_MAX", "SCALE_MIN", "TokenCoder", "dequantize",
    "measure_chunk_overhead", "measured_delta_std", "pack_key_token", "prior_delta_std", "quality_step",
    "quantization_steps", "quantize", "scale_indexes", "scale_table", "table_bits", "unpack_key_token",
    *sorted(_LAZY),
]
