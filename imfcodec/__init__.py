"""imfcodec: a neural video codec for talking-head video built on the Implicit Motion Function.

The key frame is coded conventionally; every other frame travels as a 32-float token, quantized and
entropy-coded with CompressAI; the decoder re-synthesises frames by implicit alignment.
"""

from __future__ import annotations

__version__ = "0.1.0"

_LAZY = {
    "Encoder": ("codec", "Encoder"),
    "Decoder": ("codec", "Decoder"),
    "HybridEncoder": ("hybrid", "HybridEncoder"),
    "HybridDecoder": ("hybrid", "HybridDecoder"),
    "EncoderSettings": ("settings", "EncoderSettings"),
    "encode_video": ("api", "encode_video"),
    "decode_stream": ("api", "decode_stream"),
    "stream_info": ("api", "stream_info"),
    "create_model": ("models", "create_model"),
    "list_models": ("models", "list_models"),
    "load_model": ("zoo", "load_model"),
}


def __getattr__(name: str):
    """Import heavy modules (torch, PyAV) only when used, so `imfcodec --help` stays fast."""
    if name in _LAZY:
        import importlib

        mod, attr = _LAZY[name]
        return getattr(importlib.import_module(f".{mod}", __name__), attr)
    raise AttributeError(f"module 'imfcodec' has no attribute {name!r}")


__all__ = list(_LAZY) + ["__version__"]
