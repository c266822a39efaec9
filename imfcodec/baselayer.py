"""Base-layer video codecs of the hybrid mode: a low-delay conventional stream of the clip, usually
at a reduced frame size, that the decoder upscales and the enhancer lifts with the key frame's detail.

Why a codec of its own beside ``keyframe``: the base layer is a *video* stream (inter prediction across
frames), coded and decoded one access unit per frame with no reordering and no lookahead, so a frame
leaves the encoder as soon as it is read and leaves the decoder as soon as its packet arrives. Each
IMF key frame also starts a new base-layer GOP (a forced intra picture carrying the parameter sets),
so a decoder can start, or restart after damage, at any key packet with a fresh base decoder.

Colour conversion is pinned as for the key frames (BT.601 limited range, swscale area filter with
BITEXACT, one thread), and the downscale to the base size happens in the same swscale call that makes
yuv420p. In the stream an access unit is stored in a compact form: without the bytes every access unit
of its codec starts with (HEVC's first start code ``00 00 00 01``, AV1's temporal delimiter OBU
``12 00``), which the decoder puts back; at 20-40 bytes per inter picture that is 10-20 % of the base
layer. Decoding is bit-exact by the codecs' specifications, so the small RGB frame a decoder gets is
the same on every machine; upscaling and enhancement happen in the model (``imfcodec.models.enhancer``).

=======  =====================================================  =======  ===========================
name     coding                                                 range    mapping (default)
=======  =====================================================  =======  ===========================
``hevc``  libx265 preset medium, tune zerolatency, CRF, yuv420p  0..51    CRF = 51 - quality (13: CRF 38)
``av1``   libsvtav1 preset 8, low delay, CRF; libdav1d decodes   0..63    CRF = 63 - quality (13: CRF 50)
``vp9``   libvpx-vp9 good/cpu-used 2, no lag, CRF; FFmpeg decodes 0..63    CRF = 63 - quality (8: CRF 55)
=======  =====================================================  =======  ===========================

The table gives the default effort (``medium``); ``--preset`` picks another speed setting of the same encoder
(``imfcodec.presets``, the table shared with the benchmarks' anchors), which changes the bytes, not the format.

Why VP9 beside HEVC: at the base layer's rates (3-15 kbit/s at 64-128 px) VP9 is the strongest of the
conventional anchors on the held-out training clips (the BD-rates of the upscaled base against this x265
setting are in ``benchmarks/results/2026-11-28-hybrid-vp9-enh-small-60455f82/NOTES.md``), and the enhancer
lifts any base it is given, so the base codec a user picks should be the one that wins at the rate. A VP9 frame has no fixed prefix, so it is stored as it is.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable

import av
import numpy as np

from .errors import CorruptStreamError, InputError, UnsupportedStreamError
from .keyframe._common import frame_to_rgb, rgb_to_frame
from .limits import BASE_DECODER_MIN_PIXELS, MIN_BASE_SIDE, decoder_max_pixels
from .presets import (DEFAULT_EFFORT, EFFORTS, SVTAV1_EFFORT, VP9_EFFORT,  # noqa: F401 (old names)
                      svtav1_options, vp9_options, x265_options)


@dataclass(frozen=True)
class BaseCodec:
    """One registered base-layer codec: how to open its encoder and decoder."""

    name: str
    encoder: str  # PyAV/FFmpeg encoder name
    decoder: str  # PyAV/FFmpeg decoder name
    quality_range: tuple[int, int]
    default_quality: int
    options: Callable[[int, int, str], dict[str, str]]  # (quality, threads, effort) -> encoder options
    description: str
    prefix: bytes  # what every access unit starts with; left out of the stream, restored by the decoder
    #: the encoder options' additions that code key pictures at the full frame size and every other picture at
    #: half size, predicted across the sizes (one intra picture per key frame: FORMAT.md §3.7); None when the
    #: codec cannot (its reference scaling, or FFmpeg's wrapper of it, does not allow it)
    intra_base: Callable[[dict[str, str]], dict[str, str]] | None = None

    def check_quality(self, quality: int) -> int:
        lo, hi = self.quality_range
        if isinstance(quality, bool) or not isinstance(quality, (int, np.integer)) or not lo <= quality <= hi:
            raise InputError(f"{self.name} base-layer quality must be an integer in [{lo}, {hi}], got {quality!r}")
        return int(quality)


# The encoder's effort (``--preset`` in the hybrid mode): the base encoders' own speed settings per name, and
# their options, come from the one table and option builders of ``imfcodec.presets`` (shared with the
# benchmarks' anchors). Only the encoder changes; the stream and the decoder are the same format at every
# effort. The base layer codes a low-delay stream (``gop=None``): key frames only where one is forced.
# EFFORTS, DEFAULT_EFFORT, VP9_EFFORT and SVTAV1_EFFORT are re-exported from there under their old names.


def _x265(quality: int, threads: int, effort: str = DEFAULT_EFFORT) -> dict[str, str]:
    return x265_options(51 - quality, threads, effort)


def _vp9(quality: int, threads: int, effort: str = DEFAULT_EFFORT) -> dict[str, str]:
    return vp9_options(63 - quality, threads, effort)


def _svtav1(quality: int, threads: int, effort: str = DEFAULT_EFFORT) -> dict[str, str]:
    return svtav1_options(63 - quality, threads, effort)


_REGISTRY: dict[str, BaseCodec] = {}


def register_base_codec(codec: BaseCodec) -> BaseCodec:
    if codec.name in _REGISTRY:
        raise ValueError(f"base-layer codec {codec.name!r} is already registered")
    _REGISTRY[codec.name] = codec
    return codec


register_base_codec(BaseCodec("hevc", "libx265", "hevc", (0, 51), 13, _x265,
                              "libx265 preset medium, tune zerolatency (no B-frames, no lookahead), CRF",
                              b"\x00\x00\x00\x01"))
def _svtav1_intra_base(options: dict[str, str]) -> dict[str, str]:
    """SVT-AV1's fixed resize mode: key frames at 8/8 of the size, every other frame at 8/16 (AV1 predicts from
    a reference at most twice a frame's size, so 1/2 is the one base size this route gives)."""
    return {**options, "svtav1-params": options["svtav1-params"] + ":resize-mode=1:resize-denom=16:resize-kf-denom=8"}


#: the base factor where the intra-base route is the default (``BaseCodec.intra_base``: key pictures at the frame's
#: size), and every factor it can take (at 1/4 the key pictures are coded at 1/2 and shown upscaled)
INTRA_BASE_FACTOR = 2
INTRA_BASE_FACTORS = (2, 4)


def intra_key_size(base: tuple[int, int]) -> tuple[int, int]:
    """The size the intra-base route codes key pictures at over a ``base`` layer: twice its sides (AV1 predicts
    from references at most twice a picture's size), which is the frame's size for a 1/2 base."""
    return 2 * int(base[0]), 2 * int(base[1])

register_base_codec(BaseCodec("av1", "libsvtav1", "libdav1d", (0, 63), 13, _svtav1,
                              "libsvtav1 preset 8, pred-struct=1 (low delay), CRF", b"\x12\x00", _svtav1_intra_base))
register_base_codec(BaseCodec("vp9", "libvpx-vp9", "vp9", (0, 63), 8, _vp9,
                              "libvpx-vp9 deadline good, cpu-used 2, lag-in-frames 0, no alt-ref, CRF", b""))


def get_base_codec(name: str) -> BaseCodec:
    """The codec registered as ``name``; UnsupportedStreamError (a stream may name it) otherwise."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise UnsupportedStreamError(
            f"unknown base-layer codec {name!r} (known: {', '.join(list_base_codecs())})") from None


def list_base_codecs() -> list[str]:
    return sorted(_REGISTRY)


def base_size(size: int, factor: int) -> int:
    """Side of the base layer for a ``size`` frame coded at 1/``factor`` (even, for 4:2:0)."""
    if isinstance(factor, bool) or not isinstance(factor, (int, np.integer)) or factor < 1:
        raise InputError(f"a base layer is coded at 1/factor of the frame size for an integer factor >= 1, "
                         f"got {factor!r}")
    side = (size // factor) // 2 * 2
    if side < MIN_BASE_SIDE:
        raise InputError(f"a base layer at 1/{factor} of {size} px would be {side} px; "
                         f"the minimum is {MIN_BASE_SIDE}")
    return side


class BaseEncoder:
    """Streaming base-layer encoder: ``encode(rgb, intra)`` -> the access unit of that frame.

    Takes full-size RGB frames and downscales them itself; exactly one access unit per frame comes back
    (the codecs are configured for zero latency; anything else is reported as an encoder failure).
    """

    def __init__(self, codec: str, width: int, height: int, fps: Fraction, quality: int, threads: int = 1,
                 effort: str = DEFAULT_EFFORT, key_size: tuple[int, int] | None = None,
                 options: dict[str, str] | None = None):
        self.codec = get_base_codec(codec)
        self.quality = self.codec.check_quality(quality)
        self.width, self.height = int(width), int(height)
        if min(self.width, self.height) < MIN_BASE_SIDE or self.width % 2 or self.height % 2:
            raise InputError(f"base layer {self.width}x{self.height}: sides must be even and >= {MIN_BASE_SIDE}")
        # the intra-base route: the codec gets full-size frames and codes key pictures at ``key_size``, the rest
        # at the base size itself
        self.key_size = check_intra_base(self.codec, (self.width, self.height), key_size)
        if self.codec.encoder == "libsvtav1":
            os.environ.setdefault("SVT_LOG", "1")  # errors only (SVT-AV1 logs to stderr itself)
        fps = Fraction(fps)
        ctx = av.CodecContext.create(self.codec.encoder, "w")
        self.in_width, self.in_height = self.key_size or (self.width, self.height)  # the size the codec is given
        ctx.width, ctx.height, ctx.pix_fmt = self.in_width, self.in_height, "yuv420p"
        ctx.time_base = 1 / fps
        ctx.framerate = fps
        ctx.thread_count = max(1, int(threads))
        # ``options``: the live mode's rate control (``imfcodec.live``) in place of the constant quality
        if options is None:
            options = self.codec.options(self.quality, max(1, int(threads)), effort)
        ctx.options = self.codec.intra_base(options) if self.key_size else options
        self._ctx = ctx
        self._pts = 0

    def encode(self, rgb: np.ndarray, intra: bool = False) -> bytes:
        """One full-size uint8 RGB frame -> its access unit in compact form (``intra``: start a new GOP)."""
        frame = rgb_to_frame(np.ascontiguousarray(rgb), "yuv420p", self.in_width, self.in_height)
        frame.pts = self._pts
        if intra:
            frame.pict_type = av.video.frame.PictureType.I
        self._pts += 1
        try:
            packets = list(self._ctx.encode(frame))
        except av.FFmpegError as e:
            raise InputError(f"{self.codec.name} base-layer encoder failed: {e}") from e
        if len(packets) != 1:
            raise InputError(f"{self.codec.name} base-layer encoder returned {len(packets)} packets for one "
                             "frame (it must run with zero latency)")
        unit = bytes(packets[0])
        prefix = self.codec.prefix
        if not unit.startswith(prefix) or len(unit) == len(prefix):
            raise InputError(f"{self.codec.name} base-layer encoder returned an access unit that does not start "
                             f"with {prefix.hex()}")
        return unit[len(prefix):]

    def close(self) -> None:
        try:
            list(self._ctx.encode(None))
        except av.FFmpegError:
            pass


def check_intra_base(codec: BaseCodec, base: tuple[int, int], key_size: tuple[int, int] | None
                     ) -> tuple[int, int] | None:
    """``key_size`` as (width, height) when the base layer can carry key pictures of that size over a ``base``
    layer (the codec's intra-base route: ``intra_key_size(base)``), None for no key size; UnsupportedStreamError
    otherwise (a stream may ask for it)."""
    if key_size is None:
        return None
    kw, kh = int(key_size[0]), int(key_size[1])
    if codec.intra_base is None:
        raise UnsupportedStreamError(f"the {codec.name} base layer cannot carry the key pictures (only "
                                     f"{', '.join(n for n, c in _REGISTRY.items() if c.intra_base)} can)")
    if (kw, kh) != intra_key_size(base):
        raise UnsupportedStreamError(f"key pictures in the base layer are coded at twice the base's size: "
                                     f"{2 * base[0]}x{2 * base[1]} over a {base[0]}x{base[1]} base, not {kw}x{kh}")
    return kw, kh


class BaseDecoder:
    """Streaming base-layer decoder: ``decode(access_unit)`` -> the small uint8 RGB frame.

    ``restart()`` opens a fresh decoder (done at every key packet, where the encoder starts a GOP), so
    a stream can be decoded from any key packet. Hostile bytes give CorruptStreamError, and a picture of
    another size than the header's is refused (``max_pixels`` bounds what a forged SPS can allocate).
    """

    def __init__(self, codec: str, width: int, height: int, key_size: tuple[int, int] | None = None):
        self.codec = get_base_codec(codec)
        self.width, self.height = int(width), int(height)
        self.key_size = check_intra_base(self.codec, (self.width, self.height), key_size)
        self._ctx: av.CodecContext | None = None

    def restart(self) -> None:
        ctx = av.CodecContext.create(self.codec.decoder, "r")
        ctx.thread_count = 1
        w, h = self.key_size or (self.width, self.height)
        ctx.options = {"max_pixels": str(decoder_max_pixels(w, h, BASE_DECODER_MIN_PIXELS))}
        self._ctx = ctx

    def decode(self, data: bytes, key: bool = False) -> np.ndarray:
        """One access unit in compact form -> the small uint8 RGB picture (``key``: the intra-base route's key
        picture, at ``key_size``)."""
        name = self.codec.name
        if self._ctx is None:
            self.restart()
        if not data:
            raise CorruptStreamError(f"{name} base layer: empty access unit")
        try:
            frames = list(self._ctx.decode(av.Packet(self.codec.prefix + bytes(data))))
            if len(frames) != 1:
                raise CorruptStreamError(f"{name} base layer: an access unit decoded to {len(frames)} pictures")
            frame = frames[0]
            if getattr(frame, "is_corrupt", False):
                raise CorruptStreamError(f"{name} base layer: the decoder flagged a picture as corrupt")
            want = self.key_size if key else (self.width, self.height)
            if (frame.width, frame.height) != want:
                raise CorruptStreamError(f"{name} base layer decodes to {frame.width}x{frame.height}, "
                                         f"expected {want[0]}x{want[1]}")
            return frame_to_rgb(frame)
        except CorruptStreamError:
            self._ctx = None  # never feed a decoder that saw damage; the next key packet restarts it
            raise
        except Exception as e:  # any decoder failure on hostile bytes is a damaged stream
            self._ctx = None
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise CorruptStreamError(f"{name} base layer is undecodable: {msg}") from e


def code_clip(frames, codec: str, factor: int, quality: int, fps: Fraction = Fraction(25),
              key_frames: set[int] | frozenset[int] = frozenset({0}), effort: str = DEFAULT_EFFORT,
              intra_base: bool = False) -> tuple[list[bytes], list[np.ndarray]]:
    """Encode and decode a whole clip (uint8 RGB frames, full size): (access units, small decoded frames).
    ``intra_base``: the key pictures in the base layer (the decoded pictures of ``key_frames`` are then at
    ``intra_key_size``: the full size for ``factor`` 2). For the enhancer's training cache and for benchmarks."""
    frames = list(frames)
    h, w = frames[0].shape[:2]
    bw, bh = base_size(w, factor), base_size(h, factor)
    key_size = intra_key_size((bw, bh)) if intra_base else None
    enc = BaseEncoder(codec, bw, bh, fps, quality, effort=effort, key_size=key_size)
    dec = BaseDecoder(codec, bw, bh, key_size=key_size)
    units, small = [], []
    for i, rgb in enumerate(frames):
        key = i in key_frames
        unit = enc.encode(rgb, intra=key)
        if key:
            dec.restart()
        units.append(unit)
        small.append(dec.decode(unit, key=key and intra_base))
    enc.close()
    return units, small
