"""``webp``: lossy WebP through Pillow (libwebp), 4:2:0.

Payload: a complete RIFF/WEBP file. Decoding first checks the RIFF length against the payload
length (libwebp may otherwise decode a truncated file partially) and the declared picture size
before any pixels are allocated.

Quality: 0..100, passed to libwebp unchanged; default 85. ``method=6`` (slowest, smallest) since
a key frame is one small picture.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from ..errors import CorruptStreamError, InputError
from .registry import register_keyframe_codec
from ._common import check_payload, check_quality, check_rgb, check_size


@register_keyframe_codec
class WebpKeyframeCodec:
    """Pillow WebP, lossy."""

    name = "webp"
    quality_range = (0, 100)
    default_quality = 85

    def encode(self, rgb: np.ndarray, quality: int) -> bytes:
        rgb = check_rgb(rgb)
        q = check_quality(quality, self.quality_range, self.name)
        if max(rgb.shape[:2]) > 16383:
            raise InputError("webp key frame: WebP pictures are at most 16383 pixels wide or high")
        buf = io.BytesIO()
        Image.fromarray(rgb, "RGB").save(buf, format="WEBP", quality=q, method=6, lossless=False, exact=False)
        return buf.getvalue()

    def decode(self, data: bytes, width: int, height: int) -> np.ndarray:
        data = check_payload(data, width, height, self.name)
        if len(data) < 20 or data[:4] != b"RIFF" or data[8:12] != b"WEBP":
            raise CorruptStreamError("webp key frame: not a RIFF/WEBP payload")
        if int.from_bytes(data[4:8], "little") + 8 != len(data):
            raise CorruptStreamError("webp key frame: RIFF length does not match the payload (truncated?)")
        try:
            with Image.open(io.BytesIO(data), formats=["WEBP"]) as im:
                if im.size != (width, height):
                    raise CorruptStreamError(
                        f"webp key frame decodes to {im.size[0]}x{im.size[1]}, expected {width}x{height}"
                    )
                rgb = np.asarray(im.convert("RGB"))
        except CorruptStreamError:
            raise
        except Exception as e:
            raise CorruptStreamError(f"webp key frame is undecodable: {type(e).__name__}") from e
        return check_size(np.ascontiguousarray(rgb), width, height, self.name)
