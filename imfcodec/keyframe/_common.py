"""Shared helpers of the key-frame codecs: argument checks and single-frame PyAV coding.

Colour conversion is pinned (BT.601, limited range, area filter, swscale BITEXACT + ACCURATE_RND,
one thread) on both sides, so the RGB a decoder returns does not depend on what the bitstream
signals, on the CPU's SIMD level or on the thread count: decoding is deterministic.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import av
import numpy as np
from av.video.reformatter import Interpolation

from ..errors import CorruptStreamError, InputError
from ..limits import KEY_DECODER_MIN_PIXELS, MAX_KEY_SIDE, decoder_max_pixels

_SWS = Interpolation.AREA
for _flag in ("ACCURATE_RND", "BITEXACT"):  # swscale flags (PyAV >= 14 exposes them)
    _SWS |= getattr(Interpolation, _flag, 0)
_COLORSPACE = "ITU601"
_RANGE = "MPEG"


def check_rgb(rgb: Any, min_side: int = 1) -> np.ndarray:
    """A C-contiguous uint8 HxWx3 array, or InputError."""
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        desc = f"{rgb.dtype} {rgb.shape}" if isinstance(rgb, np.ndarray) else type(rgb).__name__
        raise InputError(f"key frame must be a uint8 HxWx3 RGB array, got {desc}")
    h, w = rgb.shape[:2]
    if h < min_side or w < min_side:
        raise InputError(f"key frame {w}x{h} is smaller than the codec minimum {min_side}x{min_side}")
    return np.ascontiguousarray(rgb)


def check_quality(quality: Any, quality_range: tuple[int, int], name: str) -> int:
    """``quality`` as an int inside ``quality_range``, or InputError."""
    lo, hi = quality_range
    if isinstance(quality, bool) or not isinstance(quality, (int, np.integer)) or not lo <= quality <= hi:
        raise InputError(f"{name} key-frame quality must be an integer in [{lo}, {hi}], got {quality!r}")
    return int(quality)


def check_payload(data: Any, width: Any, height: Any, name: str) -> bytes:
    """Validate decode() arguments; returns ``data`` as bytes. CorruptStreamError when unusable."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise CorruptStreamError(f"{name} key frame: payload must be bytes, got {type(data).__name__}")
    for v in (width, height):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not 1 <= v <= MAX_KEY_SIDE:
            raise CorruptStreamError(f"{name} key frame: impossible size {width!r}x{height!r}")
    data = bytes(data)
    if not data:
        raise CorruptStreamError(f"{name} key frame: empty payload")
    return data


def check_size(rgb: np.ndarray, width: int, height: int, name: str) -> np.ndarray:
    """CorruptStreamError unless the decoded image is exactly ``height x width``."""
    h, w = rgb.shape[:2]
    if (w, h) != (width, height):
        raise CorruptStreamError(f"{name} key frame decodes to {w}x{h}, expected {width}x{height}")
    return rgb


def rgb_to_frame(rgb: np.ndarray, pix_fmt: str, width: int | None = None, height: int | None = None
                 ) -> av.VideoFrame:
    """RGB -> ``pix_fmt`` with the pinned conversion; a smaller ``width`` x ``height`` downscales with
    swscale's area filter in the same call (the base layer's path)."""
    frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
    return frame.reformat(
        width=width, height=height, format=pix_fmt, dst_colorspace=_COLORSPACE, dst_color_range=_RANGE,
        interpolation=_SWS, threads=1
    )


def frame_to_rgb(frame: av.VideoFrame) -> np.ndarray:
    out = frame.reformat(
        format="rgb24", src_colorspace=_COLORSPACE, src_color_range=_RANGE, interpolation=_SWS, threads=1
    )
    return np.ascontiguousarray(out.to_ndarray())


def encode_frame(encoder: str, rgb: np.ndarray, pix_fmt: str, options: dict[str, str], name: str) -> bytes:
    """Encode one picture with a PyAV encoder (no container) and return all packets' bytes."""
    h, w = rgb.shape[:2]
    try:
        ctx = av.CodecContext.create(encoder, "w")
        ctx.width, ctx.height = w, h
        ctx.pix_fmt = pix_fmt
        ctx.time_base = Fraction(1, 25)
        ctx.framerate = Fraction(25, 1)
        ctx.options = options
        frame = rgb_to_frame(rgb, pix_fmt)
        frame.pts = 0
        packets = list(ctx.encode(frame)) + list(ctx.encode(None))
    except av.FFmpegError as e:
        raise InputError(f"{name} key-frame encoder failed on a {w}x{h} image: {e}") from e
    data = b"".join(bytes(p) for p in packets)
    if not data:
        raise InputError(f"{name} key-frame encoder produced no output for a {w}x{h} image")
    return data


def decode_frame(decoder: str, data: bytes, width: int, height: int, options: dict[str, str], name: str) -> np.ndarray:
    """Decode a one-picture elementary stream; exactly one picture of the expected size, else corrupt.

    ``max_pixels`` stops a forged header from making the decoder allocate a huge picture (the cap
    has slack so that a merely wrong size reaches the clearer size check below: ``imfcodec.limits``).
    """
    opts = {"max_pixels": str(decoder_max_pixels(width, height, KEY_DECODER_MIN_PIXELS)), **options}
    try:
        ctx = av.CodecContext.create(decoder, "r")
        ctx.thread_count = 1
        ctx.options = opts
        frames = list(ctx.decode(av.Packet(data))) + list(ctx.decode(None))
        if len(frames) != 1:
            raise CorruptStreamError(f"{name} key frame: expected one picture, decoded {len(frames)}")
        frame = frames[0]
        if getattr(frame, "is_corrupt", False):
            raise CorruptStreamError(f"{name} key frame: decoder flagged the picture as corrupt")
        if (frame.width, frame.height) != (width, height):
            raise CorruptStreamError(
                f"{name} key frame decodes to {frame.width}x{frame.height}, expected {width}x{height}"
            )
        rgb = frame_to_rgb(frame)
    except CorruptStreamError:
        raise
    except Exception as e:  # any decoder/conversion failure on hostile bytes is a damaged stream
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CorruptStreamError(f"{name} key frame is undecodable: {msg}") from e
    return check_size(rgb, width, height, name)
