"""Token entropy coding: quantization, the temporal delta prior and compressai's rANS.

Light to import (numpy + the compressai rANS extension only); the torch rate model is loaded on
first use of ``TokenRateModel`` / ``export_scale_indexes`` / ``gaussian_delta_bits``.
"""

from __future__ import annotations

from .coder import MAX_CHUNK, TokenCoder, measure_chunk_overhead, table_bits
from .quant import (
    Q_MAX,
    QUALITY_RANGE,
    channel_steps,
    dequantize,
    pack_key_token,
    quality_step,
    quantize,
    unpack_key_token,
)
from .tables import NUM_SCALES, SCALE_MIN, scale_table

_LAZY = {"TokenRateModel", "export_scale_indexes", "gaussian_delta_bits", "measured_delta_std"}


def __getattr__(name: str):
    if name in _LAZY:
        from . import rate

        return getattr(rate, name)
    raise AttributeError(f"module 'imfcodec.entropy' has no attribute {name!r}")


__all__ = [
    "MAX_CHUNK", "NUM_SCALES", "QUALITY_RANGE", "Q_MAX", "SCALE_MIN", "TokenCoder", "channel_steps",
    "dequantize", "measure_chunk_overhead", "pack_key_token", "quality_step", "quantize",
    "scale_table", "table_bits", "unpack_key_token", *sorted(_LAZY),
]
