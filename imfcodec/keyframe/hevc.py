"""``hevc``: one intra picture coded by libx265, 4:4:4.

Payload: the raw Annex-B elementary stream of that picture (VPS, SPS, PPS, one IDR slice) and a
suffix SEI carrying the MD5 *decoded picture hash* of the reconstruction. x265's informational SEI
(its version and option string, ~2.3 kB!) is switched off.

Why 4:4:4: at 256x256 4:2:0 loses too much chroma on faces (skin/lip edges). Measured on five
256x256 frames (faces and skimage's astronaut), yuv444p gave higher PSNR at equal bytes over
CRF 22..34 (e.g. dagan_driving: 444 CRF 30 = 39.4 dB vs 420 CRF 26 = 40.1 dB for ~35% more bytes;
420's RGB round trip alone caps at 43-46 dB). ``tune=psnr`` (no psy-rd) gives the best PSNR per byte.

Why the MD5 hash (57 bytes): the HEVC decoder conceals truncated or damaged slices and still
returns a picture. The decoder checks the hash against what it reconstructed (``err_detect=
crccheck+explode``), and a payload whose last NAL unit is not a complete hash SEI is refused, so
any damage or truncation raises CorruptStreamError instead of yielding a silently wrong frame.

Quality: 0..51, CRF = 51 - quality; default 21 (CRF 30, about 37-40 dB on 256x256 faces).
"""

from __future__ import annotations

import numpy as np

from ..errors import CorruptStreamError
from .registry import register_keyframe_codec
from ._common import check_payload, check_quality, check_rgb, decode_frame, encode_frame

_X265_PARAMS = "log-level=error:info=0:hash=1:keyint=1:min-keyint=1:bframes=0:annexb=1"
_SEI_SUFFIX = 40  # HEVC NAL unit type SUFFIX_SEI_NUT
_PICTURE_HASH = 132  # SEI payloadType decoded_picture_hash
_MD5_SEI_RBSP_LEN = 2 + 1 + 1 + 1 + 48 + 1  # nal header, type, size, hash_type, 3 x MD5, trailing bits


def _unescape(nal: bytes) -> bytes:
    """Remove emulation-prevention bytes (00 00 03 -> 00 00)."""
    out = bytearray()
    zeros = 0
    for b in nal:
        if zeros >= 2 and b == 3:
            zeros = 0
            continue
        out.append(b)
        zeros = zeros + 1 if b == 0 else 0
    return bytes(out)


def _ends_with_md5_hash(data: bytes) -> bool:
    """Whether the last NAL unit is a complete MD5 decoded-picture-hash suffix SEI."""
    start = data.rfind(b"\x00\x00\x01")
    if start < 0:
        return False
    rbsp = _unescape(data[start + 3 :])
    return (
        len(rbsp) == _MD5_SEI_RBSP_LEN
        and (rbsp[0] >> 1) & 0x3F == _SEI_SUFFIX
        and rbsp[2] == _PICTURE_HASH
        and rbsp[3] == 49
        and rbsp[4] == 0  # hash_type 0 = MD5
        and rbsp[-1] == 0x80
    )


@register_keyframe_codec
class HevcKeyframeCodec:
    """libx265 intra-only, yuv444p 8-bit, preset medium, tune psnr."""

    name = "hevc"
    quality_range = (0, 51)
    default_quality = 21
    min_side = 16

    def encode(self, rgb: np.ndarray, quality: int) -> bytes:
        rgb = check_rgb(rgb, self.min_side)
        q = check_quality(quality, self.quality_range, self.name)
        options = {
            "crf": str(51 - q),
            "preset": "medium",
            "tune": "psnr",
            "x265-params": _X265_PARAMS,
        }
        data = encode_frame("libx265", rgb, "yuv444p", options, self.name)
        if not _ends_with_md5_hash(data):  # an x265 build that ignores hash=1 would lose integrity
            raise RuntimeError("libx265 did not emit the decoded-picture-hash SEI")
        return data

    def decode(self, data: bytes, width: int, height: int) -> np.ndarray:
        data = check_payload(data, width, height, self.name)
        if not _ends_with_md5_hash(data):
            raise CorruptStreamError("hevc key frame is truncated or damaged (no picture-hash SEI at its end)")
        options = {"err_detect": "crccheck+bitstream+buffer+explode"}
        return decode_frame("hevc", data, width, height, options, self.name)
