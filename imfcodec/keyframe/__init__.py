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

from .registry import KeyframeCodec, get_keyframe_codec, list_keyframe_codecs, register_keyframe_codec

# Importing the modules registers the built-in codecs (each imports ``register_keyframe_codec`` from
# ``.registry``, never from this package, so there is no cycle).
from . import av1, hevc, png, webp  # noqa: F401

__all__ = [
    "KeyframeCodec",
    "register_keyframe_codec",
    "get_keyframe_codec",
    "list_keyframe_codecs",
]
