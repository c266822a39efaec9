"""Conventional anchor codecs (x264, x265, SVT-AV1, VP9) driven through PyAV.

Every anchor is configured for *low delay*, so it plays by the same rules as imfcodec: no B-frames
or other frame reordering, no alternate-reference / lookahead-delayed frames where the encoder has a
switch for it, no scene-cut key frames (imfcodec's are switched off for the benchmark too:
``runners``), and the same key-frame interval as imfcodec (``keyint=0``: one key frame for the whole clip).

Rates come from real bytes:

* elementary stream (``es_bytes``) = the sum of the encoded packet sizes, plus the parameter sets that
  the MP4 muxer keeps out of band (H.264 SPS/PPS, HEVC VPS/SPS/PPS in ``extradata``). Encoder
  "advertising" SEI is not counted: x265 is told ``info=0`` and x264's user-data SEI (~600 bytes of
  option text, ~0.7 kbit/s on a 7 s clip) is removed with FFmpeg's ``filter_units`` bitstream filter.
  AV1 temporal delimiters and Annex-B start codes stay in: they are part of the elementary stream.
* container (``container_bytes``) = the size of the same packets muxed into an MP4 file.

Quality is always measured on what the *decoder* returns from that MP4 file (PyAV's default decoder
for the stream: FFmpeg h264 / hevc / vp9, libdav1d for AV1), never on encoder reconstructions.
Frames go in as RGB, are converted to yuv420p by swscale (BT.601, limited range, the FFmpeg default)
and decoded frames come back to RGB the same way, so every anchor pays the same 4:2:0 round trip.

**Resolution-adaptive anchors.** An engineer of a low-bandwidth call lowers the frame size when the
rate is too low for it, so every anchor also runs at a ``scale`` < 1: the RGB frames are downscaled by
swscale with area averaging (``SWS_AREA``) in the same call that converts them to yuv420p, coded and
decoded at that size, and the decoded frames are upscaled back to the working size by swscale with a
named filter (bicubic by default) in the same call that converts them to RGB. The rate is the small
stream's real bytes; quality is measured against the full-size reference. At scale 1 the path is the
unscaled one, call for call.

``startup_bytes`` is what a decoder must receive before the first frame: the out-of-band parameter
sets plus the first packet (the I-frame). The steady-state rate of a long call leaves them out.
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from imfcodec.presets import DEFAULT_EFFORT, svtav1_options, vp9_options, x264_options, x265_options

# SVT-AV1 prints a banner to stderr for every encoder it opens; 1 = errors only.
os.environ.setdefault("SVT_LOG", "1")


@dataclass(frozen=True)
class AnchorSpec:
    """One anchor codec: which PyAV encoder, which knob, which ladder of values."""

    name: str
    encoder: str
    param: str
    ladder: tuple[int, ...]
    quick: tuple[int, ...]
    options: Callable[..., dict[str, str]]  # (value, gop, threads, effort="medium") -> encoder options
    description: str
    strip_sei: bool = False
    extradata_out_of_band: bool = False

    def points(self, quick: bool = False) -> list[tuple[str, int]]:
        """(point name, value) per rate point, lowest rate first."""
        return [(f"{self.param}{v}", v) for v in (self.quick if quick else self.ladder)]


#: ``benchmarks.rd --effort``: every anchor's own speed setting of that name, the same as the hybrid mode's base
#: layer takes for ``--preset``: one table and one set of option builders, ``imfcodec.presets`` (an anchor is
#: their ``gop=N`` form: a key frame every N frames). ``medium`` is the setting of every published number.


def _x264(value: int, gop: int, threads: int, effort: str = DEFAULT_EFFORT) -> dict[str, str]:
    return x264_options(value, threads, effort, gop)


def _x265(value: int, gop: int, threads: int, effort: str = DEFAULT_EFFORT) -> dict[str, str]:
    return x265_options(value, threads, effort, gop)


def _svtav1(value: int, gop: int, threads: int, effort: str = DEFAULT_EFFORT) -> dict[str, str]:
    return svtav1_options(value, threads, effort, gop)


def _vp9(value: int, gop: int, threads: int, effort: str = DEFAULT_EFFORT) -> dict[str, str]:
    return vp9_options(value, threads, effort, gop)


# Ladders span roughly 10..60 kbit/s on 256x256 25 fps talking heads (measured on liveportrait_d12,
# 183 frames: x265 CRF 51 = 10 kbit/s / 24.6 dB, CRF 33 ~ 60; SVT-AV1 CRF 63 = 16; VP9 CRF 63 = 17).
# The lowest point is each encoder's top CRF: none of them reaches 2 kbit/s at this size and rate.
ANCHORS: dict[str, AnchorSpec] = {
    "x264": AnchorSpec("x264", "libx264", "crf", (51, 46, 41, 37, 33), (51, 41), _x264,
                       "libx264 preset medium, CRF, bframes=0, scenecut=0", strip_sei=True,
                       extradata_out_of_band=True),
    "x265": AnchorSpec("x265", "libx265", "crf", (51, 46, 41, 37, 33), (51, 41), _x265,
                       "libx265 preset medium, CRF, bframes=0, scenecut=0, closed GOP",
                       extradata_out_of_band=True),
    "svtav1": AnchorSpec("svtav1", "libsvtav1", "crf", (63, 59, 55, 51, 47), (63, 55), _svtav1,
                         "libsvtav1 preset 8, CRF, pred-struct=1 (low delay), scd=0"),
    "vp9": AnchorSpec("vp9", "libvpx-vp9", "crf", (63, 59, 55, 51, 46), (63, 55), _vp9,
                      "libvpx-vp9 deadline=good cpu-used=2, CRF (b=0), lag-in-frames=0, auto-alt-ref=0"),
}


#: Upscaling filters offered for scaled anchors (swscale interpolation names).
UPSCALE_FILTERS = {"bicubic": "BICUBIC", "lanczos": "LANCZOS", "bilinear": "BILINEAR"}
DEFAULT_UPSCALE = "bicubic"
MIN_CODED_SIZE = 16  # every anchor here codes 16x16; smaller frames are refused as a scale error


def parse_scale(text: str | float | Fraction) -> Fraction:
    """A frame-size scale such as ``1``, ``1/2``, ``0.25``: a fraction in (0, 1]."""
    try:
        value = Fraction(str(text).strip()).limit_denominator(64)
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"scale must be a fraction like 1, 1/2 or 0.25, got {text!r}") from None
    if not 0 < value <= 1:
        raise ValueError(f"scale must be in (0, 1], got {text!r}")
    return value


def scale_label(scale: Fraction) -> str:
    """``1``, ``1/2``, ``1/4``: how scales are shown in tables."""
    scale = Fraction(scale)
    return str(scale.numerator) if scale.denominator == 1 else f"{scale.numerator}/{scale.denominator}"


def coded_size(width: int, height: int, scale: Fraction) -> tuple[int, int]:
    """Frame size an anchor codes at ``scale``: rounded to even numbers (4:2:0 chroma)."""
    if scale == 1:
        return width, height
    w = max(2, int(round(width * scale / 2)) * 2)
    h = max(2, int(round(height * scale / 2)) * 2)
    if min(w, h) < MIN_CODED_SIZE:
        raise ValueError(f"scale {scale_label(scale)} of {width}x{height} is {w}x{h}, "
                         f"below the {MIN_CODED_SIZE}-pixel minimum")
    return w, h


@dataclass
class AnchorResult:
    """One encode + decode of one rate point."""

    frames: int
    es_bytes: int
    container_bytes: int
    extradata_bytes: int
    removed_sei_bytes: int
    key_frames: int
    enc_seconds: float
    dec_seconds: float
    decoded: np.ndarray
    decoder: str
    options: dict[str, str] = field(default_factory=dict)
    startup_bytes: int = 0  # out-of-band parameter sets + the first packet (the I-frame)
    coded_width: int = 0
    coded_height: int = 0


def gop_length(keyint: int, frames: int) -> int:
    """The encoder's key-frame interval: ``keyint`` frames, or the whole clip when keyint is 0."""
    return keyint if keyint > 0 else max(1, frames)


def decode_file(source, max_frames: int, width: int, height: int, *, upscale: str = DEFAULT_UPSCALE,
                threads: int = 1) -> tuple[np.ndarray, str]:
    """Decode a coded file (path or file object) to RGB frames of ``width`` x ``height``: (frames, decoder).

    Frames coded at another size are upscaled by swscale with the ``upscale`` filter in the same call
    that converts them to RGB; more than ``max_frames`` frames is an error.
    """
    import av

    decoded = np.empty((max_frames, height, width, 3), np.uint8)
    count = 0
    with av.open(source, "r") as inp:
        vstream = inp.streams.video[0]
        vstream.codec_context.thread_count = threads
        decoder = vstream.codec_context.name
        for frame in inp.decode(vstream):
            if count >= max_frames:
                raise RuntimeError(f"{decoder}: decoder returned more frames than were encoded")
            if (frame.width, frame.height) != (width, height):
                frame = frame.reformat(width=width, height=height, format="rgb24",
                                       interpolation=UPSCALE_FILTERS[upscale])
            decoded[count] = frame.to_ndarray(format="rgb24")
            count += 1
    return decoded[:count], decoder


def encode_decode(spec: AnchorSpec, value: int, frames: np.ndarray, fps: Fraction, *, keyint: int = 0,
                  threads: int = 1, mp4_path: str | os.PathLike | None = None, scale: Fraction = Fraction(1),
                  upscale: str = DEFAULT_UPSCALE, effort: str = DEFAULT_EFFORT) -> AnchorResult:
    """Encode ``frames`` (N x H x W x 3 uint8 RGB) at one rate point, mux to MP4, decode the MP4.

    With ``scale`` < 1 the frames are coded at the smaller size (area downscaling) and the decoded
    frames come back at the input size (``upscale`` filter); see the module docstring.
    The MP4 is written to ``mp4_path`` when given (kept as evidence of the bytes measured).
    """
    import av

    if upscale not in UPSCALE_FILTERS:
        raise ValueError(f"upscale filter must be one of {', '.join(UPSCALE_FILTERS)}, got {upscale!r}")
    n, height, width, _ = frames.shape
    scale = Fraction(scale)
    cw, ch = coded_size(width, height, scale)
    scaled = (cw, ch) != (width, height)
    gop = gop_length(keyint, n)
    options = spec.options(value, gop, threads, effort)
    buf = io.BytesIO()
    out = av.open(buf, "w", format="mp4")
    stream = out.add_stream(spec.encoder, rate=Fraction(fps))
    stream.width, stream.height, stream.pix_fmt = cw, ch, "yuv420p"
    ctx = stream.codec_context
    ctx.max_b_frames = 0
    ctx.gop_size = gop
    ctx.thread_count = threads
    stream.options = options

    packets = []
    t0 = time.perf_counter()
    for i, rgb in enumerate(frames):
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        if scaled:
            frame = frame.reformat(width=cw, height=ch, format="yuv420p", interpolation="AREA")
        else:
            frame = frame.reformat(format="yuv420p")
        frame.pts = i
        packets.extend(stream.encode(frame))
    packets.extend(stream.encode(None))
    enc_seconds = time.perf_counter() - t0

    removed = 0
    if spec.strip_sei:
        before = sum(p.size for p in packets)
        bsf = av.bitstream.BitStreamFilterContext("filter_units=remove_types=6", stream)
        filtered = []
        for p in packets:
            filtered.extend(bsf.filter(p))
        filtered.extend(bsf.filter(None))
        packets = filtered
        removed = before - sum(p.size for p in packets)
    extradata = len(ctx.extradata or b"") if spec.extradata_out_of_band else 0
    es_bytes = sum(p.size for p in packets) + extradata
    key_frames = sum(1 for p in packets if p.is_keyframe)
    startup_bytes = extradata + (packets[0].size if packets else 0)
    for p in packets:
        p.stream = stream
        out.mux(p)
    out.close()
    data = buf.getvalue()
    if mp4_path is not None:
        Path(mp4_path).parent.mkdir(parents=True, exist_ok=True)
        Path(mp4_path).write_bytes(data)

    t0 = time.perf_counter()
    decoded, decoder = decode_file(io.BytesIO(data), n, width, height, upscale=upscale, threads=threads)
    dec_seconds = time.perf_counter() - t0
    if len(decoded) != n:
        raise RuntimeError(f"{spec.name} {spec.param}{value}: decoded {len(decoded)} frames, encoded {n}")
    return AnchorResult(n, es_bytes, len(data), extradata, removed, key_frames, enc_seconds, dec_seconds,
                        decoded, decoder, options, startup_bytes, cw, ch)
