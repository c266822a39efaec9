"""``png``: lossless PNG through Pillow (8-bit RGB).

Payload: a complete PNG file. Decoding requires it to end with the IEND chunk (truncation) and
checks the declared size before pixels are allocated; zlib's Adler-32 catches damaged data.

Quality: 0..9 is zlib's compression level (higher = smaller file, identical pixels); default 6.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from ..errors import CorruptStreamError
from .registry import register_keyframe_codec
from ._common import check_payload, check_quality, check_rgb, check_size

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"


@register_keyframe_codec
class PngKeyframeCodec:
    """Pillow PNG, lossless."""

    name = "png"
    quality_range = (0, 9)
    default_quality = 6

    def encode(self, rgb: np.ndarray, quality: int) -> bytes:
        rgb = check_rgb(rgb)
        q = check_quality(quality, self.quality_range, self.name)
        buf = io.BytesIO()
        Image.fromarray(rgb, "RGB").save(buf, format="PNG", compress_level=q)
        return buf.getvalue()

    def decode(self, data: bytes, width: int, height: int) -> np.ndarray:
        data = check_payload(data, width, height, self.name)
        if not data.startswith(_SIGNATURE) or not data.endswith(_IEND):
            raise CorruptStreamError("png key frame: not a complete PNG (bad signature or truncated)")
        try:
            with Image.open(io.BytesIO(data), formats=["PNG"]) as im:
                if im.size != (width, height):
                    raise CorruptStreamError(
                        f"png key frame decodes to {im.size[0]}x{im.size[1]}, expected {width}x{height}"
                    )
                im.load()
                rgb = np.asarray(im.convert("RGB"))
        except CorruptStreamError:
            raise
        except Exception as e:
            raise CorruptStreamError(f"png key frame is undecodable: {type(e).__name__}") from e
        return check_size(np.ascontiguousarray(rgb), width, height, self.name)
