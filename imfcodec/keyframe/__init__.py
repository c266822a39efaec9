"""Key-frame image codecs and their registry.

A key frame is coded as a single still image by a conventional codec; the codec is named in the
stream header, so every codec registers itself under a short stable name. Every codec maps an
integer ``quality`` (higher = better, range ``codec.quality_range``) onto its own knob (CRF, zlib
level, ...), so callers never need to know which way a codec's native scale runs.

=======  ===========================================  =======  ========================================
name     coding                                       range    mapping (default)
=======  ===========================================  =======  ========================================
``hevc``  libx265 intra, yuv444p, Annex-B + MD5 SEI   0..51    CRF = 51 - quality  (21 -> CRF 30)
``av1``   libsvtav1 (decoded by libdav1d), yuv420p    0..63    CRF = 63 - quality  (33 -> CRF 30)
``webp``  lossy WebP (Pillow / libwebp)               0..100   WebP quality        (85)
``png``   lossless PNG (Pillow)                       0..9     zlib level; pixels identical (6)
=======  ===========================================  =======  ========================================
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from ..errors import UnsupportedStreamError


@runtime_checkable
class KeyframeCodec(Protocol):
    """What the codec core needs from a key-frame codec (stateless; one shared instance each)."""

    name: str
    quality_range: tuple[int, int]
    default_quality: int

    def encode(self, rgb: np.ndarray, quality: int) -> bytes:
        """uint8 HxWx3 RGB -> self-contained payload bytes."""
        ...

    def decode(self, data: bytes, width: int, height: int) -> np.ndarray:
        """Payload -> uint8 (height, width, 3) RGB; CorruptStreamError on anything undecodable."""
        ...


_REGISTRY: dict[str, KeyframeCodec] = {}


def register_keyframe_codec(cls: type) -> type:
    """Class decorator: instantiate ``cls`` once and register it under ``cls.name``."""
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise TypeError(f"{cls!r} has no string 'name'")
    if name in _REGISTRY and type(_REGISTRY[name]) is not cls:
        raise ValueError(f"key-frame codec {name!r} is already registered")
    _REGISTRY[name] = cls()
    return cls


def get_keyframe_codec(name: str) -> KeyframeCodec:
    """The codec registered as ``name``; UnsupportedStreamError (a stream may name it) otherwise."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        known = ", ".join(list_keyframe_codecs())
        raise UnsupportedStreamError(
            f"unknown key-frame codec {name!r} (known: {known})"
        ) from None


def list_keyframe_codecs() -> list[str]:
    """Registered names, sorted."""
    return sorted(_REGISTRY)


# Importing the modules registers the built-in codecs.
from . import av1, hevc, png, webp  # noqa: E402,F401

__all__ = [
    "KeyframeCodec",
    "register_keyframe_codec",
    "get_keyframe_codec",
    "list_keyframe_codecs",
]
