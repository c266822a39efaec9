"""``av1``: one key frame coded by SVT-AV1 (libsvtav1), decoded by libdav1d.

Payload: the AV1 low-overhead bitstream (OBUs with size fields: temporal delimiter, sequence
header, frame) of that one picture, exactly as the encoder emits it after a flush. SVT-AV1 only
encodes 4:2:0, so this codec is 4:2:0 (RGB round trip alone caps near 43-46 dB on faces).
Truncation is caught by dav1d itself: every OBU carries its size.

SVT-AV1 logs to stderr through its own logger; ``SVT_LOG=1`` (errors only) is set unless the user
set it already.

Quality: 0..63, CRF = 63 - quality; default 33 (CRF 30). Preset 6 (~30 ms per 256x256 picture).
"""

from __future__ import annotations

import os

import numpy as np

from .registry import register_keyframe_codec
from ._common import check_payload, check_quality, check_rgb, decode_frame, encode_frame


@register_keyframe_codec
class Av1KeyframeCodec:
    """libsvtav1 yuv420p 8-bit, preset 6 -> libdav1d."""

    name = "av1"
    quality_range = (0, 63)
    default_quality = 33
    min_side = 8

    def encode(self, rgb: np.ndarray, quality: int) -> bytes:
        rgb = check_rgb(rgb, self.min_side)
        q = check_quality(quality, self.quality_range, self.name)
        os.environ.setdefault("SVT_LOG", "1")
        options = {"crf": str(63 - q), "preset": "6"}  # SVT-AV1 default tune is PSNR
        return encode_frame("libsvtav1", rgb, "yuv420p", options, self.name)

    def decode(self, data: bytes, width: int, height: int) -> np.ndarray:
        data = check_payload(data, width, height, self.name)
        return decode_frame("libdav1d", data, width, height, {}, self.name)
