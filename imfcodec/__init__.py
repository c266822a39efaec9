"""imfcodec: a neural video codec for talking-head video.

Key frames are coded conventionally; the frames between them travel in one of two modes (``imfcodec.modes``):
the default *hybrid* mode (a low-resolution conventional base layer, lifted to full size by a learned enhancer
that draws detail from the key frame) or the *token* mode (a 32-float token per frame, quantized and
entropy-coded, re-synthesised by the Implicit Motion Function's implicit alignment).
"""

from __future__ import annotations

import os as _os

# Spinning OpenMP workers make torch several times slower when another process shares the cores (the
# Python API was measured 7x slower than the CLI on a shared 2-core machine); passive waiting costs
# nothing measurable on an idle one. OpenMP reads this once, when torch loads it, so it is set here,
# before anything imports torch, for every entry point: `import imfcodec`, the CLI, the trainer, the
# benchmarks. A user's own setting wins; a program that imported torch before imfcodec keeps torch's.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"

_LAZY = {
    "Encoder": ("modes.token", "Encoder"),
    "Decoder": ("modes.token", "Decoder"),
    "HybridEncoder": ("modes.hybrid", "HybridEncoder"),
    "HybridDecoder": ("modes.hybrid", "HybridDecoder"),
    "EncoderSettings": ("settings", "EncoderSettings"),
    "choose_mode": ("modes", "choose"),
    "encode_video": ("api", "encode_video"),
    "default_settings": ("api", "default_settings"),
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
