"""Video output: RGB frames to .mp4 / .mkv / .y4m or a folder of PNGs.

Writing (``VideoWriter``) picks the format from the output name (or ``format=``) and is atomic for
regular files and folders: frames go to a hidden ``.NAME.*.partial`` sibling (``fsutil.AtomicOutput``)
that is renamed into place by ``close()`` and deleted if the ``with`` block raises. ``-`` (standard
output), a FIFO, a device or a socket is written in place, frame by frame (``fsutil.InPlaceOutput``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
from av.video.reformatter import Interpolation
from PIL import Image

from ..errors import IMFError, InputError
from ..fsutil import AtomicOutput, InPlaceOutput, in_place, write_error
from ._common import _MAX_FPS, PathLike, _check_size, _one_line

_SWS_EXACT = Interpolation.AREA
for _flag in ("ACCURATE_RND", "BITEXACT"):  # swscale flags (PyAV >= 14 exposes them)
    _SWS_EXACT |= getattr(Interpolation, _flag, 0)

_FILE_FORMATS = {
    # suffix: (muxer, encoder, default pix_fmt, colour matrix)
    ".mp4": ("mp4", "libx264", "yuv420p", "ITU709"),
    ".mkv": ("matroska", "libx264", "yuv444p", "ITU709"),
    ".y4m": ("yuv4mpegpipe", "rawvideo", "yuv444p", "ITU601"),
}
_PIX_FMTS = ("yuv420p", "yuv444p")
X264_CRF = 10
#: ``format=`` names: the video formats by their suffix, and ``png`` for a folder of PNG frames
FORMATS = tuple(s[1:] for s in _FILE_FORMATS) + ("png",)
STREAM_FORMAT = "y4m"  # what an in-place output (stdout, a FIFO, a device) gets when its name says nothing
# mp4 on an output that cannot seek: fragmented (a moov up front, a fragment per key frame)
_MP4_STREAMING = {"movflags": "frag_keyframe+empty_moov+default_base_moof"}


def _is_dir_target(p: Path, raw: str) -> bool:
    return raw.endswith(("/", os.sep)) or p.is_dir() or p.suffix == ""


class VideoWriter:
    """Write RGB frames to a video file or a folder of PNGs, atomically.

    Output by name: ``.mp4`` -> H.264 (libx264, CRF 10, yuv420p: plays in every browser/player;
    yuv444p if a side is odd), ``.mkv`` -> H.264 High 4:4:4 (CRF 10, full chroma, for fidelity),
    ``.y4m`` -> uncompressed 4:4:4 YUV4MPEG2 (only the 8-bit RGB->YUV rounding is lost, ~52 dB),
    a path ending in '/', an existing directory or a name without suffix -> ``frame_000000.png``...
    (bit-exact). ``pix_fmt`` ('yuv420p'/'yuv444p') overrides the default of the video formats.
    ``crf`` (0..51, 0 = lossless YUV) overrides CRF 10 of mp4/mkv. Measured on 256x256 face frames
    (dagan_driving): mp4 42-43 dB, mkv 44-46 dB, y4m 53 dB; 4:2:0 itself caps detailed colourful
    content near 40 dB (the astronaut demo clip: mp4 39 dB, mkv 41.6 dB).
    mp4/mkv are tagged BT.709 limited range; y4m (which has no tag) uses BT.601, readers' default.
    ``reproducible=True`` runs libx264 on one thread without its SIMD code (its plain C code, which codes
    the same bytes, about 3x slower): the file then depends on the frames only. With SIMD, x264's AVX-512
    code was seen to code the same frames differently in a long-running process that had done other work
    before (the demo clip in the test suite, which must reproduce the conformance streams).

    Nothing appears at ``path`` until ``close()``; an exception in the ``with`` block removes the
    temporary. ``protect`` names paths (e.g. the input video) that must never be replaced;
    ``overwrite=False`` refuses any existing output. ``format`` ('mp4', 'mkv', 'y4m', 'png') overrides
    the choice by name.

    In place, frame by frame: ``-`` (standard output), a FIFO, a device, a socket (``fsutil.in_place``);
    y4m unless ``format`` or a known suffix says otherwise, mp4 fragmented; PNG folders cannot go there.
    ``in_place`` is the kind of such an output (None for an atomic one).

    Timing: frames follow each other at ``fps``, unless ``time_base`` is given: then ``write(rgb, pts,
    duration)`` places each frame at ``pts`` for ``duration`` ticks of it (a variable frame rate; the
    last frame's duration makes the file last as long as its source). mp4 and mkv keep these times (mp4
    without B-frames then, whose reordered decode times would cut the file's duration short); y4m can only
    say one rate and a PNG folder none, so they ignore them (``keeps_timing`` is False): their frames play
    at ``fps``, which a caller sets to the average rate so the whole lasts as long.
    """

    def __init__(
        self,
        path: PathLike,
        fps: float | Fraction,
        width: int,
        height: int,
        *,
        pix_fmt: str | None = None,
        crf: int | None = None,
        overwrite: bool = True,
        protect: Iterable[PathLike] = (),
        reproducible: bool = False,
        format: str | None = None,
        time_base: Fraction | None = None,
    ) -> None:
        raw = os.fspath(path)
        self.path = Path(raw)
        self.in_place = in_place(raw)
        self.width = _check_size(width, "width")
        self.height = _check_size(height, "height")
        try:
            fps = Fraction(fps).limit_denominator(100_000)
        except (TypeError, ValueError) as e:
            raise InputError(f"fps must be a number, got {fps!r}") from e
        if not 0 < fps <= _MAX_FPS:
            raise InputError(f"fps must be in (0, {_MAX_FPS}], got {fps}")
        self.fps = fps
        self.time_base = Fraction(time_base) if time_base else None
        self._durations: dict[int, int] = {}  # pts -> duration of frames in the encoder (variable timing)
        self.frames_written = 0
        self._closed = False
        self._container: Any = None
        self._stream: Any = None
        self._out: AtomicOutput | InPlaceOutput | None = None
        if format is not None and format not in FORMATS:
            raise InputError(f"unknown output format {format!r} (use {', '.join(FORMATS)})")
        suffix = self.path.suffix.lower()
        if self.in_place:
            self.name = "stdout" if self.in_place == "stdout" else raw
            if format is None:
                format = suffix[1:] if suffix in _FILE_FORMATS else STREAM_FORMAT
            if format == "png":
                raise InputError(f"PNG frames need a folder, not {self.name} (use --format y4m, mkv or mp4)")
            suffix = "." + format
        else:
            self.name = raw
            target = self.path.resolve()
            for other in protect:
                if os.fspath(other) != "-" and Path(other).resolve() == target:
                    raise InputError(f"refusing to overwrite the input {self.path}")
            if self.path.exists() and not overwrite:
                raise InputError(f"output exists: {self.path}")
            parent = target.parent
            if not parent.is_dir():
                raise InputError(f"output folder does not exist: {parent}")

            if format == "png" or (format is None and _is_dir_target(self.path, raw)):
                self.kind = "png"
                self.time_base = None
                if self.path.exists() and (not self.path.is_dir() or any(self.path.iterdir())):
                    raise InputError(f"output folder exists and is not empty: {self.path}")
                self._out = AtomicOutput(self.path, directory=True)
                return

            if format is not None:
                suffix = "." + format
            if suffix not in _FILE_FORMATS:
                known = ", ".join(_FILE_FORMATS)
                raise InputError(f"unknown output type {suffix!r} for {self.path} (use {known} or a folder/)")
            if self.path.is_dir():
                raise InputError(f"output path is a directory: {self.path}")
        muxer, encoder, default_pix, matrix = _FILE_FORMATS[suffix]
        if pix_fmt is None:
            pix_fmt = default_pix
            if pix_fmt == "yuv420p" and (self.width % 2 or self.height % 2):
                pix_fmt = "yuv444p"  # 4:2:0 needs even sides
        if crf is not None and (isinstance(crf, bool) or not isinstance(crf, int) or not 0 <= crf <= 51):
            raise InputError(f"crf must be an integer in [0, 51], got {crf!r}")
        if pix_fmt not in _PIX_FMTS:
            raise InputError(f"pix_fmt must be one of {_PIX_FMTS}, got {pix_fmt!r}")
        if pix_fmt == "yuv420p" and (self.width % 2 or self.height % 2):
            raise InputError(f"yuv420p needs even sides, got {self.width}x{self.height}")
        self.kind = suffix[1:]
        if self.kind == "y4m":
            self.time_base = None
        self.pix_fmt = pix_fmt
        self._matrix = matrix
        if self.in_place:
            self._out = InPlaceOutput(raw)
            target: Any = self._out.file
            options = dict(_MP4_STREAMING) if muxer == "mp4" else {}
        else:
            self._out = AtomicOutput(self.path)
            target = str(self._out.tmp)
            options = {"movflags": "+faststart"} if muxer == "mp4" else {}
        try:
            self._container = av.open(target, mode="w", format=muxer, options=options)
            stream = self._container.add_stream(encoder, rate=self.fps)
            stream.width, stream.height, stream.pix_fmt = self.width, self.height, pix_fmt
            if encoder == "libx264":
                options = {"crf": str(X264_CRF if crf is None else crf), "preset": "medium"}
                if reproducible:
                    options.update({"threads": "1", "x264-params": "asm=0"})
                if self.time_base is not None and muxer == "mp4":
                    options["bf"] = "0"
                stream.options = options
                cc = stream.codec_context
                cc.colorspace, cc.color_primaries, cc.color_trc, cc.color_range = 1, 1, 1, 1
            if self.time_base is not None:
                stream.codec_context.time_base = self.time_base
                stream.time_base = self.time_base
            self._stream = stream
        except Exception as e:
            self._abort()
            raise InputError(f"cannot create {self.path}: {_one_line(e)}") from e

    # -- context manager
    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self._abort()

    def __del__(self) -> None:  # never leave a temporary behind, even if close() was forgotten
        try:
            if not self._closed:
                self._abort()
        except Exception:
            pass

    @property
    def keeps_timing(self) -> bool:
        """True when the output keeps per-frame times (``time_base`` given, mp4 or mkv)."""
        return self.time_base is not None

    # -- writing
    def write(self, rgb: np.ndarray, pts: int | None = None, duration: int | None = None) -> None:
        """Append one uint8 ``height x width x 3`` RGB frame; with a ``time_base``, at ``pts`` for
        ``duration`` ticks of it (both ignored by an output that cannot keep them)."""
        if self._closed:
            raise InputError(f"VideoWriter for {self.path} is closed")
        expected = (self.height, self.width, 3)
        if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.shape != expected:
            desc = f"{rgb.dtype} {rgb.shape}" if isinstance(rgb, np.ndarray) else type(rgb).__name__
            raise InputError(f"frame must be a uint8 array of shape {expected}, got {desc}")
        rgb = np.ascontiguousarray(rgb)
        try:
            if self.kind == "png":
                assert isinstance(self._out, AtomicOutput)
                Image.fromarray(rgb, "RGB").save(self._out.tmp / f"frame_{self.frames_written:06d}.png",
                                                 compress_level=6)
            else:
                frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(
                    format=self.pix_fmt,
                    dst_colorspace=self._matrix,
                    dst_color_range="MPEG",
                    interpolation=_SWS_EXACT,
                    threads=1,
                )
                if self.time_base is not None:
                    if pts is None or duration is None:
                        raise InputError("a VideoWriter with a time_base needs each frame's pts and duration")
                    frame.pts, frame.time_base = pts, self.time_base
                    self._durations[pts] = duration
                else:
                    frame.pts = self.frames_written
                self._mux(self._stream.encode(frame))
                if isinstance(self._out, InPlaceOutput):
                    self._out.flush()  # each frame reaches the reader as soon as it is made
        except OSError as e:
            if isinstance(e, IMFError):
                raise
            raise write_error(self.name, e) from e
        self.frames_written += 1

    def close(self) -> Path:
        """Finish the file and move it into place; returns the final path. Idempotent."""
        if self._closed:
            return self.path
        try:
            if self.frames_written == 0:
                raise InputError(f"no frames were written to {self.path}")
            if self._container is not None:
                self._mux(self._stream.encode(None))
                self._container.close()
                self._container = None
            assert self._out is not None
            self._out.commit()  # a PNG folder replaces only an empty folder (checked at open)
            self._out = None
        except BaseException as e:
            self._abort()
            if isinstance(e, OSError) and not isinstance(e, IMFError):
                raise write_error(self.name, e) from e
            raise
        self._closed = True
        return self.path

    def _mux(self, packets: Any) -> None:
        """Mux coded packets; with per-frame times, each with its frame's duration (so the last frame lasts
        as long as in the source and mkv/mp4 state the right duration)."""
        for packet in packets:
            if self.time_base is not None and packet.pts is not None:
                packet.duration = self._durations.pop(packet.pts, 0)
            self._container.mux(packet)

    def _abort(self) -> None:
        """Drop everything written so far (the temporary), leaving ``path`` untouched; an in-place
        output is only closed (what it got stays with its reader)."""
        self._closed = True
        if self._container is not None:
            try:
                self._container.close()
            except Exception:
                pass
            self._container = None
        out, self._out = self._out, None
        if out is not None:
            out.discard()
