"""File-level operations behind the CLI: encode a video file (or frames already in memory), decode a
stream file, describe a stream.

Outputs that are regular files or folders are written atomically (temporary sibling, renamed at the end),
so a failed or interrupted run never leaves a half-written file. ``-`` (standard output), a FIFO, a
device or a socket is written in place as the work goes (``fsutil.in_place``); ``-`` as an input is
standard input. torch is imported only by the functions that need a model, so ``stream_info`` (``imfcodec
info``) starts fast.

An existing output is never replaced unless ``overwrite=True`` (``errors.OutputExistsError``, before any
work); in-place outputs are written, not replaced. ``progress=True`` prints what the command line prints
(frames done, on stderr); a callable gets the number of frames each step did. Bad argument values raise
``errors.ArgumentError`` (an ``InputError`` and a ``ValueError``) naming the argument (``fps=``).
"""

from __future__ import annotations

import contextlib
import io
import itertools
import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Union

from .bitstream import (
    BasePacket,
    Damage,
    EndPacket,
    KeyPacket,
    Limits,
    ResyncReader,
    StreamReader,
    StreamWriter,
    TimingPacket,
    TokenPacket,
    encode_packet,
    stream_start,
)
from .bitstream.format import coded_frames, shown_frame
from .errors import ArgumentError, BitstreamError, CorruptStreamError, IMFError, InputError
from .fsutil import STDIO, AtomicOutput, InPlaceOutput, as_path, check_output_folder, check_overwrite, in_place, \
    open_output, scratch_file, stdin_reader, write_error
from .settings import EncoderSettings
from .timing import Clock, Timing, TimingRecorder

if TYPE_CHECKING:
    import numpy as np

    from .zoo import LoadedModel

Progress = Callable[[int], None]  # called with the number of frames just done; ``progress=True``: lines on stderr
Started = Callable[[Union[int, None]], None]
Source = Union[str, os.PathLike, bytes, bytearray, memoryview, BinaryIO]


@dataclass
class EncodeSummary:
    """One encode, measured from the bytes written."""

    output: str
    frames: int
    seconds: float
    bytes: int
    key_bytes: int
    token_bytes: int
    overhead_bytes: int
    kbps: float
    key_frames: list[int] = field(default_factory=list)
    model: str = ""
    base_bytes: int = 0  # hybrid mode: the base layer's access units
    duration_s: float = 0.0  # how long the frames play (their timestamps, or frames / fps)
    timing: str = "constant"  # "constant", "per-frame" (a timing record), or "lost" (see EncodedStream)
    scene_cuts: list[int] = field(default_factory=list)  # the key frames put at scene cuts (settings.scenecut)
    unenhanced_frames: int = 0  # hybrid mode: frames the encoder's guard sent without the enhancer (it would hurt)
    live: object = None  # the live mode: its encoder's ``imfcodec.live.LiveStats`` (bucket departures, skips, keys)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


@dataclass
class EncodedStream:
    """What ``encode_frames_to_file`` wrote: sizes by what the bytes carry, and where key frames are."""

    path: str
    frames: int
    bytes: int  # the whole file
    key_image_bytes: int  # key-frame images (the key-frame codec's payloads)
    key_token_bytes: int  # key frames' raw integer tokens
    token_bytes: int  # entropy-coded tokens of the other frames
    key_frames: list[int] = field(default_factory=list)
    base_bytes: int = 0  # hybrid mode: the base layer's access units (compact form, one per frame)
    timing: Timing | None = None  # the per-frame timing the stream carries (None: the constant rate)
    timing_lost: bool = False  # the source's timing was not constant, but an in-place output cannot keep it
    scene_cuts: list[int] = field(default_factory=list)  # the key frames put at scene cuts (settings.scenecut)
    unenhanced_frames: int = 0  # hybrid mode: frames the encoder's guard sent without the enhancer


@dataclass
class DecodeSummary:
    output: str
    frames: int
    seconds: float
    key_frames: list[int] = field(default_factory=list)
    concealed: list[int] = field(default_factory=list)
    damage: list[str] = field(default_factory=list)  # first reasons bytes were skipped (concealment)
    damage_count: int = 0
    truncated: bool = False  # concealment: the stream ended without its END packet
    duration_s: float = 0.0  # how long the decoded frames play
    timing: str = "constant"  # "constant", "per-frame" (kept in the output) or "averaged" (y4m, PNGs)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


def atomic_output(path: str | os.PathLike) -> AtomicOutput:
    """``with atomic_output(path) as tmp``: a temporary path next to ``path``, renamed into place
    (with the usual file mode) only on success (``fsutil.AtomicOutput``)."""
    return AtomicOutput(path)


def default_output(input_path: str | os.PathLike, suffix: str) -> Path:
    """``clip.mp4`` -> ``clip.imf``; the decoder asks for ``.decoded.mp4``: ``clip.imf`` ->
    ``clip.decoded.mp4``, never the video the stream was made from. Never the input itself. Standard
    input (``-``) -> standard output (``-``)."""
    if os.fspath(input_path) == STDIO:
        return Path(STDIO)
    p = Path(input_path)
    out = p.with_suffix(suffix)
    if out.resolve() == p.resolve():
        out = p.with_name(p.stem + ".decoded" + suffix)
    return out


MAX_INPUT_PIXELS = 8192 * 8192
"""Largest input picture ``encode_video`` accepts (8K UHD is 7680x4320 = 33 Mpx); checked before any
frame is decoded so a forged or absurd size cannot make the decoder allocate gigabytes."""

_COPY_PIECE = 1 << 20


def check_input_size(path: str | os.PathLike, max_pixels: int = MAX_INPUT_PIXELS) -> None:
    """Refuse a video whose declared picture size is absurd, before decoding a frame of it.
    (Unreadable files and streams without a decoder are refused by ``io.probe_video``.)"""
    import av

    try:
        container = av.open(str(path), mode="r", metadata_errors="replace")
    except Exception:
        return  # not openable: probe_video reports it properly
    try:
        for stream in container.streams.video[:1]:
            cc = stream.codec_context
            if cc is None:
                return  # no decoder: probe_video reports it
            w, h = int(getattr(cc, "width", 0) or 0), int(getattr(cc, "height", 0) or 0)
            if w * h > max_pixels:
                raise InputError(f"{path}: {w}x{h} frames are too large to encode "
                                 f"(the limit is {max_pixels:,} pixels)")
    finally:
        container.close()


def encode_frames_to_file(frames: Iterable[np.ndarray], output_path: str | os.PathLike, *, fps: Fraction | int,
                          model: str | LoadedModel | None = None, settings: EncoderSettings | None = None,
                          progress: Progress | bool | None = None, timing: TimingRecorder | None = None,
                          device: str | None = None, overwrite: bool = False) -> EncodedStream:
    """Encode RGB frames (uint8 HxWx3 at the model's resolution: a list, an array or any iterator)
    into an .imf file; the one way the API and the benchmarks write streams.

    Memory stays flat however many frames come: packets are written as they are made to a spool file
    (its header says 0 frames), and at the end the output is the header with the real frame count
    followed by the spooled packets, copied in pieces. Nothing appears at the output path until the
    end; an error or Ctrl-C leaves neither the output nor a temporary behind. ``model`` as in
    ``encode_video``. The mode is ``modes.choose(settings, model)``; ``settings`` None are the command line's
    defaults (``default_settings``).

    An in-place output (``-`` for standard output, a FIFO, a device, a socket: ``fsutil.in_place``) gets
    the stream as it is made instead, each packet flushed when it is complete, with a header that says
    0 frames (unknown, FORMAT.md §3.1); its END packet carries the count. An output folder that does
    not exist is refused (InputError), as by ``encode_video`` and ``decode_stream``. ``device`` as in
    ``encode_video``. An existing output file is refused unless ``overwrite`` (``errors.OutputExistsError``).

    ``timing`` records the frames' timestamps as they are read (``io.VideoSource.timing``); when they are
    not the constant rate ``fps``, a file output gets them as timing records after its header (format
    version 3, ``bitstreams/FORMAT.md``), with the average rate in the header. An in-place output's header
    is written before any frame is seen, so it keeps the constant rate ``fps`` (``timing_lost`` says when
    that dropped a variable timing). Without ``timing`` the frames are at ``fps``.
    """
    out = as_path(output_path)
    _check_fps(fps)
    check_output_folder(out)
    check_overwrite(out, overwrite)
    mode, settings = _encoding_mode(model, settings)
    loaded = _on_device(mode.load_network(model, settings), _device(device))
    with _progress(progress, "encode") as (progress, started):
        if started is not None:
            started(len(frames) if hasattr(frames, "__len__") else None)
        return _write_stream(frames, out, mode.open_encoder(loaded, fps, settings), progress, timing)


def _check_fps(fps) -> None:
    """``fps`` must be a frame rate: a positive finite number (a Fraction, an int or a float) up to 1000."""
    from .io._common import _MAX_FPS

    try:
        if isinstance(fps, bool):
            raise TypeError
        rate = Fraction(fps)
    except (TypeError, ValueError, OverflowError):
        raise ArgumentError(f"fps= must be a frame rate (a positive number), got {fps!r}") from None
    if not 0 < rate <= _MAX_FPS:
        raise ArgumentError(f"fps= must be a frame rate in (0, {_MAX_FPS}], got {fps!r}")


@contextlib.contextmanager
def _progress(progress: Progress | bool | None, desc: str, started: Started | None = None):
    """(progress, started) callbacks for ``progress``: a callable as given, True: lines on stderr as the
    command line shows them (``cliutil.ProgressLines``), closed at the end; False/None: none."""
    if progress is True:
        from .cliutil import ProgressLines

        with ProgressLines(desc) as lines:
            def both(total):
                lines.start(total)
                if started is not None:
                    started(total)

            yield lines, both
        return
    if progress is not None and progress is not False and not callable(progress):
        raise ArgumentError(f"progress= must be a callable, True or None, got {progress!r}")
    yield (progress or None), started


def _write_stream(frames: Iterable[np.ndarray], out: Path, enc, progress: Progress | None,
                  timing: TimingRecorder | None) -> EncodedStream:
    """``encode_frames_to_file``'s work once the encoder is open (its network loaded and placed once)."""
    from .modes.common import encode_frames

    sizes = [0, 0, 0, 0]  # key image, key token, token, base-layer bytes

    def write_packets(writer: StreamWriter, flush: Callable[[], None] | None = None) -> None:
        for packet in encode_frames(_counting(frames, progress), enc):
            if isinstance(packet, EndPacket):
                if enc.index == 0:
                    raise InputError("no frames to encode")
                writer.close(packet)
                break
            writer.write(packet)
            if flush is not None:
                flush()
            if isinstance(packet, KeyPacket):
                sizes[0] += len(packet.image)
                sizes[1] += len(packet.key_token)
            elif isinstance(packet, BasePacket):  # (a version 5 intra base packet's first unit is the key picture)
                sizes[0] += packet.key_bytes
                sizes[3] += len(packet.data) - packet.key_bytes
            else:
                sizes[2] += len(packet.data)

    target = open_output(out)
    kept: Timing | None = None
    lost = False
    if isinstance(target, InPlaceOutput):
        with target as f:
            try:
                writer = StreamWriter(f, enc.header)  # frames = 0: unknown
                target.flush()
                write_packets(writer, target.flush)
                size = writer.bytes_written
            except OSError as e:
                raise write_error(target.name, e) from e
        name = target.name
        lost = _source_timing(timing, _frames_in(enc)) is not None
    else:
        try:
            with target as tmp, _scratch_file(tmp) as spool_path:
                with open(spool_path, "wb") as spool:
                    writer = StreamWriter(spool, enc.header)  # header frames = 0 (unknown yet)
                    header_len = writer.bytes_written
                    write_packets(writer)
                header = replace(enc.header, frames=_frames_in(enc))
                kept = _source_timing(timing, header.frames)
                with open(spool_path, "rb") as src, open(tmp, "wb") as dst:
                    if kept is None:
                        dst.write(stream_start(header))
                    else:  # the frames' times first, so a streaming decoder has each before its frame
                        dst.write(stream_start(kept.header(header)))
                        for record in kept.packets():
                            dst.write(encode_packet(record))
                    src.seek(header_len)
                    shutil.copyfileobj(src, dst, _COPY_PIECE)
        except OSError as e:
            if isinstance(e, IMFError):
                raise
            raise write_error(out, e) from e
        size, name = out.stat().st_size, str(out)
    h = enc.header
    return EncodedStream(name, _frames_in(enc), size, sizes[0], sizes[1], sizes[2],
                         [shown_frame(h, f) for f in enc.key_frames], sizes[3], kept, lost,
                         [shown_frame(h, f) for f in enc.scene_cuts],
                         getattr(enc, "unenhanced_frames", 0) * (2 if h.half_rate else 1))


def stream_size(frames: Iterable[np.ndarray], *, fps: Fraction | int, model: LoadedModel, settings: EncoderSettings,
                timing: TimingRecorder | None = None, enhancer_switch: bool | None = None) -> tuple[int, int, float]:
    """(bytes, frames, seconds): the size of the file ``encode_frames_to_file`` would write for these frames,
    counted from the real packets and header without writing anything, and how long the frames play (the
    duration ``EncodeSummary.kbps`` divides by). For rate control's measuring passes (``ratecontrol``), which
    run without the guard (no network, several times faster): that changes the header's flags byte only, so
    ``enhancer_switch`` counts the header as the final encode will write it."""
    from .modes.common import encode_frames

    mode, settings = _encoding_mode(model, settings)
    enc = mode.open_encoder(model, fps, settings)
    size = sum(len(encode_packet(packet, enc.header)) for packet in encode_frames(frames, enc))
    if enc.index == 0:
        raise InputError("no frames to encode")
    n = _frames_in(enc)
    header = replace(enc.header, frames=n)
    if enhancer_switch is not None:
        header = replace(header, enhancer_switch=enhancer_switch)
    kept = _source_timing(timing, n)
    if kept is not None:
        header = kept.header(header)
        size += sum(len(encode_packet(record)) for record in kept.packets())
    size += len(stream_start(header))
    return size, n, kept.seconds if kept is not None else n / float(fps)


def _frames_in(enc) -> int:
    """Frames the encoder was given, what the stream's header and END record count (a half-rate stream's packets
    hold the even ones; an encoder without ``source_frames`` codes every frame it is given)."""
    return getattr(enc, "source_frames", enc.index)


def _source_timing(timing: TimingRecorder | None, frames: int) -> Timing | None:
    """The per-frame timing of the ``frames`` frames encoded, or None when they are at the constant rate
    (or were not all timed: frames given without a ``VideoSource``)."""
    if timing is None or timing.frames != frames:
        return None
    return timing.finish()


def default_settings(model: str | LoadedModel | None = None) -> EncoderSettings:
    """What ``settings=None`` means, as on the command line: ``EncoderSettings()`` in the mode that ``model``
    encodes in (``modes.choose``): the default mode (hybrid) at its default point, or the token mode's defaults
    when ``model`` is a token model."""
    from .modes import choose

    return EncoderSettings().in_mode(choose(EncoderSettings(), model).name)


def _encoding_mode(model: str | LoadedModel | None, settings: EncoderSettings | None):
    """(mode, validated settings) of an encode: the mode the chooser picks for these settings and this network
    (told from its config, without loading it), the settings checked once."""
    from .modes import choose

    settings = EncoderSettings() if settings is None else settings
    mode = choose(settings, model)
    return mode, settings.in_mode(mode.name).validated()


def _device(device: str | None) -> str | None:
    """``device`` checked and resolved (``auto`` quietly falls back to the CPU; ``cuda`` without a GPU is
    refused), before any model is loaded; None stays None: the model stays where it is."""
    if device is None:
        return None
    from .devices import resolve_device

    return resolve_device(device)


def _on_device(loaded: LoadedModel, device: str | None) -> LoadedModel:
    """The model moved to ``device`` (in place: a ``LoadedModel`` the caller passed moves too)."""
    if device is not None:
        loaded.model.to(device)
    return loaded


def encode_video(input_path: str | os.PathLike, output_path: str | os.PathLike | None = None, *,
                 model: str | LoadedModel | None = None, settings: EncoderSettings | None = None,
                 max_frames: int | None = None, progress: Progress | bool | None = None,
                 max_input_pixels: int = MAX_INPUT_PIXELS, started: Started | None = None,
                 device: str | None = None, overwrite: bool = False, live=None) -> EncodeSummary:
    """Encode a video file into an .imf stream (``encode_frames_to_file`` on its decoded frames, so
    memory stays flat however long the input, and a file output appears only at the end). In the hybrid
    mode (``modes.choose``) ``model`` names the enhancer, default ``settings.enhancer``.
    ``settings=None`` is the command line's default (``default_settings``): the hybrid mode at its default
    point, or the token mode's defaults when ``model`` is a token model.

    ``input_path`` ``-`` reads standard input (read once, as it arrives); ``output_path`` ``-`` (the
    default for ``-``) writes standard output. ``started(n)`` is called once the input is open, with
    the number of frames to expect (None when unknown, as for a pipe). ``progress=True`` prints frames
    done on stderr. An existing output is refused unless ``overwrite`` (``errors.OutputExistsError``).
    An input that is far from square, of which only the centre square is encoded, gets an
    ``errors.IMFWarning``.

    ``device`` (``devices``: ``cpu``, ``cuda``, ``cuda:N``, ``auto``) is where E_T and the token search
    run (the hybrid encoder runs no network); the model is moved there. None: a model named here is
    loaded on the CPU, a ``LoadedModel`` stays where it is. The stream does not depend on it beyond the
    encoder's choice of tokens: it decodes on any device.

    ``live`` (an ``imfcodec.live.LiveLink``): the live mode, every frame within the link's delay bound
    (``imfcodec.live.LiveEncoder``: hybrid, chunk 1, its own key and base rate control); ``settings`` then
    only name the enhancer."""
    out = as_path(output_path) if output_path is not None else default_output(input_path, ".imf")
    if not in_place(out):
        if os.fspath(input_path) != STDIO and out.exists() and out.resolve() == Path(input_path).resolve():
            raise InputError("output would overwrite the input")
        if out.is_dir():
            raise InputError(f"output path is a directory: {out}")
        check_output_folder(out)
        check_overwrite(out, overwrite)
    mode, settings = _encoding_mode(model, settings)  # bad settings are reported before any frame is decoded
    if live is not None:
        live = live.validated()
        if mode.name != "hybrid":
            raise ArgumentError("live= needs the hybrid mode")
    device = _device(device)
    if max_frames is not None and (isinstance(max_frames, bool) or not isinstance(max_frames, int) or max_frames < 0):
        raise ArgumentError(f"max_frames= must be a non-negative integer or None, got {max_frames!r}")
    with _progress(progress, "encode", started) as (progress, started):
        return _encode_video(input_path, out, model, mode, settings, max_frames, progress, max_input_pixels,
                             started, device, live)


def _encode_video(input_path, out: Path, model, mode, settings: EncoderSettings, max_frames: int | None,
                  progress: Progress | None, max_input_pixels: int, started: Started | None,
                  device: str | None, live=None) -> EncodeSummary:
    """``encode_video`` once its arguments are checked."""
    from .io import open_video

    if os.fspath(input_path) == STDIO:  # the model first: ready when the first frame arrives
        loaded = _on_device(mode.load_network(model, settings), device)
        source = open_video(input_path, max_input_pixels)
    else:  # the input first: a bad file is reported before torch is even imported
        source = open_video(input_path, max_input_pixels)
        try:
            loaded = _on_device(mode.load_network(model, settings), device)
        except BaseException:
            source.close()
            raise
    with source:
        info = source.info
        _warn_framing(source.name, info, int(loaded.model.config.resolution))
        if started is not None:
            total = info.frames
            started(min(total, max_frames) if (total and max_frames) else (max_frames or total))
        frames = source.frames(int(loaded.model.config.resolution), max_frames=max_frames)
        t0 = time.perf_counter()
        if live is not None:
            from .live import open_live_encoder

            enc = open_live_encoder(loaded, info.fps, live)
        else:
            enc = mode.open_encoder(loaded, info.fps, settings)
        s = _write_stream(frames, out, enc, progress, source.timing)
    seconds = time.perf_counter() - t0
    key_bytes = s.key_image_bytes + s.key_token_bytes
    duration = s.timing.seconds if s.timing is not None else s.frames / float(info.fps)
    return EncodeSummary(s.path, s.frames, seconds, s.bytes, key_bytes, s.token_bytes,
                         s.bytes - key_bytes - s.token_bytes - s.base_bytes, s.bytes * 8 / duration / 1000.0,
                         s.key_frames, loaded.name, s.base_bytes, duration,
                         "per-frame" if s.timing is not None else "lost" if s.timing_lost else "constant",
                         s.scene_cuts, s.unenhanced_frames, getattr(enc, "stats", None) if live is not None else None)


def _warn_framing(name: str, info, size: int) -> None:
    """An IMFWarning when the input is far from what the model sees: only its centre square is encoded, so
    a very wide or tall picture loses most of itself, and a small square is upscaled many times."""
    import warnings

    from .errors import IMFWarning
    from .io import framing_note

    note = framing_note(info, size)
    if note:
        warnings.warn(IMFWarning(f"{name}: {note}"), stacklevel=3)


def _counting(frames: Iterator, progress: Progress | None) -> Iterator:
    for rgb in frames:
        yield rgb
        if progress:
            progress(1)


_scratch_file = scratch_file  # a temporary file next to the output, always deleted at the end


@contextlib.contextmanager
def _open_source(source: Source) -> Iterator:
    """A binary file object for a path (``-``: standard input), bytes or an open binary file (not closed
    if it was given)."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        yield io.BytesIO(bytes(source))
    elif isinstance(source, (str, os.PathLike)) and os.fspath(source) == STDIO:
        yield stdin_reader()
    elif isinstance(source, (str, os.PathLike)):
        try:
            f = open(source, "rb")
        except FileNotFoundError:
            raise InputError(f"no such file: {source}") from None
        except IsADirectoryError:
            raise InputError(f"{source} is a directory, not a stream") from None
        except PermissionError:
            raise InputError(f"permission denied: {source}") from None
        with f:
            yield f
    else:
        yield source


def _start_decoding(f: BinaryIO, model: str | LoadedModel | None, limits: Limits, conceal: bool,
                    enhance: bool = True, device: str | None = None, enhancer: str | LoadedModel | None = None):
    """(reader, decoder) for the stream in ``f``: its header read and checked, the model (token model or
    enhancer) found; ``enhancer`` replaces a hybrid stream's own (``decoder_enhancer``)."""
    if not _seekable(f):  # a live stream (a pipe): load torch while its first bytes are on their way
        from .modes import common  # noqa: F401
    try:
        reader = (ResyncReader if conceal else StreamReader)(f, limits)  # a file that is no stream: said at once
    except CorruptStreamError as e:
        e.where = "header"  # the signature or the header: concealment cannot get past it
        raise
    from .zoo import LoadedModel, check_stream_model, resolve_stream_model

    h = reader.header
    if enhancer is not None:
        loaded = decoder_enhancer(h, enhancer, model)
    elif isinstance(model, LoadedModel):
        check_stream_model(model, h.model, h.weights_hash)
        loaded = model
    else:
        loaded = resolve_stream_model(h.model, h.weights_hash, model)
    return reader, _decoder(_on_device(loaded, _device(device)), h, enhance)


def decoder_enhancer(header, enhancer: str | LoadedModel, model: str | LoadedModel | None = None) -> LoadedModel:
    """The enhancer a hybrid stream is decoded with instead of the one its header names (``--enhancer`` at
    decode): the key images and the base layer do not depend on the enhancer, so any enhancer at the stream's
    resolution decodes it (a recurrent one, or the single-frame one, on the same bytes). The ``b`` records keep
    their meaning: the encoder's guard decided them with the header's enhancer. InputError for a token stream
    or with ``--model`` too."""
    from .modes.hybrid import load_enhancer
    from .zoo import LoadedModel

    if not header.hybrid:
        raise InputError("--enhancer is for hybrid streams; this one has tokens (its model is --model)")
    if model is not None:
        raise InputError("--model and --enhancer both name the decoder's network: pass one")
    return enhancer if isinstance(enhancer, LoadedModel) else load_enhancer(enhancer)


def _seekable(f) -> bool:
    try:
        return bool(f.seekable())
    except (AttributeError, OSError, ValueError):
        return False


def _decoding(reader, dec, conceal: bool, clock: Clock | None = None) -> Iterator:
    """(decoder, frames shown) per packet; timing records go to ``clock`` (the decoders see pictures only); a
    half-rate stream's frames with the frames between them (``halfrate.shown``)."""
    from .halfrate import shown

    return shown(_decoded(reader, dec, conceal, clock), reader.header,
                 lambda: reader.end.frames if reader.end is not None else None)


def _decoded(reader, dec, conceal: bool, clock: Clock | None = None) -> Iterator:
    """(decoder, frames) per packet, as the stream codes them."""
    def timing(packet) -> bool:  # a timing record goes to the clock, not to the decoder
        if isinstance(packet, TimingPacket):
            if clock is not None:
                clock.add(packet)
            return True
        return False

    if not conceal:
        for packet in reader:
            if not timing(packet):
                yield dec, dec.decode(packet)
        return
    for item in reader:
        if isinstance(item, Damage):
            dec.damage(item.length, f"{item.length} damaged bytes at byte {item.offset}: {item.reason}")
            yield dec, []
            continue
        if timing(item[1]):
            continue
        for frames in dec.decode_concealing(item[1]):
            yield dec, frames
    if reader.end is None:
        dec.report.truncated = True
    elif reader.trailing:
        dec.damage(0, f"{reader.trailing} trailing bytes after the END packet")
    yield dec, []


def iter_decoded(source: Source, *, model: str | LoadedModel | None = None, limits: Limits | None = None,
                 conceal: bool = False, enhance: bool = True, device: str | None = None,
                 enhancer: str | LoadedModel | None = None) -> Iterator:
    """Yield (decoder, frames) as packets are decoded; ``source`` is a path (``-``: standard input),
    bytes or a binary file, read as it arrives.

    Strict (default): raises ``BitstreamError`` at the first damaged byte (frames already yielded came
    from CRC-checked bytes). ``conceal=True``: only a damaged signature/header raises; damaged packets
    are skipped (``ResyncReader``, which needs a seekable input), their frames concealed, and
    ``decoder.report`` says which (``concealed``, ``damage``, ``truncated``). ``limits`` bound every
    size in the stream. A hybrid stream (version 2, with a base layer) is decoded by
    ``modes.hybrid.HybridDecoder``; ``enhance=False`` outputs its upscaled base frames instead of the enhanced
    ones (InputError for a token stream). ``device``: where the decoder's networks run, as in
    ``decode_stream``; ``enhancer``: decode a hybrid stream with this enhancer instead of its own
    (``decoder_enhancer``).
    """
    with _open_source(source) as f:
        reader, dec = _start_decoding(f, model, limits or Limits(), conceal, enhance, device, enhancer)
        yield from _decoding(reader, dec, conceal)


def _decoder(loaded: LoadedModel, header, enhance: bool = True):
    """The streaming decoder of the stream's mode (``modes.for_header``)."""
    from .modes import for_header

    return for_header(header).open_decoder(loaded, header, enhance)


def decode_stream(input_path: str | os.PathLike, output_path: str | os.PathLike | None = None, *,
                  model: str | LoadedModel | None = None, progress: Progress | None = None,
                  limits: Limits | None = None, conceal: bool = False, started: Started | None = None,
                  format: str | None = None, enhance: bool = True, device: str | None = None,
                  overwrite: bool = False, enhancer: str | LoadedModel | None = None) -> DecodeSummary:
    """Decode an .imf stream to .mp4 / .mkv / .y4m / a folder of PNGs (chosen by the output name, or
    ``format``: ``io.FORMATS``).

    Atomic for a file or folder: the output appears only when the whole stream decoded (or, with
    ``conceal``, was concealed); any error or Ctrl-C leaves nothing behind. ``-`` (standard output, the
    default for input ``-``, standard input), a FIFO or a device gets each frame as it is decoded (y4m
    unless ``format`` or its name says otherwise). ``started(n)`` is called once the header is read,
    with its frame count (None when the header does not know it). ``enhance=False``: a hybrid stream's
    frames without the enhancer (the bicubic upscale of its base layer; key frames unchanged).

    With ``conceal``, frames concealed before the first decodable frame are held back until one
    arrives; a stream with no decodable frame at all (its only key frame damaged) raises InputError and
    writes nothing, rather than a clip of grey frames.

    ``device`` (``cpu``, ``cuda``, ``cuda:N``, ``auto``): where the networks synthesise frames (None: a
    model named here runs on the CPU, a ``LoadedModel`` where it is). The tokens, hence the stream's
    meaning, are the same on every device; frames differ by float rounding only.

    The default output is the input's name with ``.decoded.mp4`` (``talk.imf`` -> ``talk.decoded.mp4``,
    never the ``talk.mp4`` the stream may have been made from). An existing output is refused unless
    ``overwrite`` (``errors.OutputExistsError``; an empty folder for PNGs is not refused). ``progress=True``
    prints frames done on stderr.

    Timing: the frames follow the header's rate, or, in a stream with timing records (version 3), each
    frame keeps its own time and duration in an mp4 or mkv; y4m (one rate) and PNGs (none) get the frames
    only, at the stream's average rate, so they last as long (``DecodeSummary.timing`` "averaged").
    """
    out = as_path(output_path) if output_path is not None else default_output(input_path, ".decoded.mp4")
    if not in_place(out):
        check_output_folder(out)
        if os.fspath(input_path) != STDIO and out.exists() and out.resolve() == Path(input_path).resolve():
            raise InputError(f"refusing to overwrite the input {out}")
        check_overwrite(out, overwrite)
    if device is not None:
        from .devices import check_device

        check_device(device)  # a misspelt device is refused before the input is read
    with _progress(progress, "decode", started) as (progress, started):
        return _decode_stream(input_path, out, model, progress, limits, conceal, started, format, enhance, device,
                              enhancer)


def _decode_stream(input_path, out: Path, model, progress: Progress | None, limits: Limits | None, conceal: bool,
                   started: Started | None, format: str | None, enhance: bool, device: str | None,
                   enhancer: str | LoadedModel | None = None) -> DecodeSummary:
    """``decode_stream`` once its arguments are checked."""
    from .io import VideoWriter

    name = "stdin" if os.fspath(input_path) == STDIO else os.fspath(input_path)
    t0 = time.perf_counter()
    with _open_source(input_path) as f:
        reader, dec = _start_decoding(f, model, limits or Limits(), conceal, enhance, device, enhancer)
        header = reader.header
        if started is not None:
            started(header.frames or None)  # (the frames shown, a half-rate stream's too)
        clock = Clock(header)
        writer = VideoWriter(out, clock.fps, header.width, header.height, protect=[input_path], format=format,
                             time_base=clock.time_base if clock.timed else None)
        with writer:
            held, held_frame, good, seen = 0, None, False, 0
            for dec, frames in _decoding(reader, dec, conceal, clock):
                if not frames:
                    continue
                concealed = len(dec.report.concealed) - seen  # a batch is all concealed or all decoded
                seen += concealed
                if concealed and not good:  # nothing decodable yet: hold back (one shared grey frame)
                    held, held_frame = held + len(frames), frames[0]
                    continue
                for frame in itertools.chain(itertools.repeat(held_frame, held), frames):
                    writer.write(frame, *clock.next())
                if progress:
                    progress(held + len(frames))
                held, good = 0, True
            if dec.report.frames == 0:
                raise InputError(f"{name}: the stream holds no decodable frames; nothing was written")
            if not good:
                raise InputError(f"{name}: none of its {dec.report.frames} frames could be decoded "
                                 f"({_first_damage(dec.report)}; no later key frame to restart from); "
                                 f"nothing was written")
    report = dec.report
    timing = "constant" if not clock.timed else "per-frame" if writer.keeps_timing else "averaged"
    frames, keys, concealed = report.frames, list(report.key_frames), list(report.concealed)
    if header.half_rate:  # the frames shown: each decoded one and the one after it
        frames = clock.shown
        keys = [shown_frame(header, k) for k in keys]
        concealed = sorted({f for c in concealed for f in (shown_frame(header, c), shown_frame(header, c) + 1)})
    duration = float(clock.end * clock.time_base) if clock.timed else frames / float(clock.fps)
    return DecodeSummary(writer.name, frames, time.perf_counter() - t0, keys, concealed, list(report.damage),
                         report.damage_count, report.truncated, duration, timing)


def _first_damage(report) -> str:
    """What made the first frames undecodable, from the concealment report: the first damage it names
    (a damaged base packet is not a damaged key frame)."""
    if report.damage:
        return f"first damage: {report.damage[0]}"
    return "the stream is truncated" if report.truncated else "its first packets are damaged"


def stream_header(input_path: str | os.PathLike, limits: Limits | None = None):
    """Read and validate only the header (cheap; raises BitstreamError)."""
    with _open_source(input_path) as f:
        return StreamReader(f, limits or Limits()).header


def _stream_mode(header):
    from .modes import for_header

    return for_header(header)


def stream_info(input_path: str | os.PathLike, limits: Limits | None = None) -> dict:
    """Header fields and per-packet sizes of a stream, from its bytes (no model needed); ``-`` reads
    standard input."""
    with _open_source(input_path) as f:
        reader = StreamReader(f, limits or Limits())
        h = reader.header
        size = reader.header_record.offset + reader.header_record.total_len
        packets = []
        key_bytes = token_bytes = base_bytes = timing_bytes = frames = ticks = unenhanced = end_len = 0
        for rec, p in reader.records():
            size = rec.offset + rec.total_len  # the reader refuses bytes after END: this is the stream's size
            if isinstance(p, KeyPacket):
                key_bytes += len(p.image) + len(p.key_token)
                packets.append({"type": "key", "frame": p.frame, "image_bytes": len(p.image),
                                "packet_bytes": rec.total_len})
            elif isinstance(p, BasePacket):
                key_bytes += p.key_bytes  # the key picture, coded by the base layer
                base_bytes += len(p.data) - p.key_bytes
                packets.append({"type": "base", "frame": p.frame, "count": p.count, "bytes": len(p.data),
                                "packet_bytes": rec.total_len, "enhance": p.enhance, "key": p.key,
                                "key_bytes": p.key_bytes})
                keyed = p.key or (len(packets) > 1 and packets[-2]["type"] == "key" and packets[-2]["frame"] == p.frame)
                unenhanced += 0 if p.enhance else p.count - keyed  # a key frame shows its key image anyway
            elif isinstance(p, TokenPacket):
                token_bytes += len(p.data)
                packets.append({"type": "tokens", "frame": p.frame, "count": p.count, "bytes": len(p.data),
                                "packet_bytes": rec.total_len})
            elif isinstance(p, TimingPacket):
                timing_bytes += rec.total_len
                ticks += sum(p.durations)
                packets.append({"type": "timing", "frame": p.frame, "count": p.count, "packet_bytes": rec.total_len})
            elif isinstance(p, EndPacket):
                frames = p.frames
                end_len = rec.total_len
    fps = Fraction(h.fps_num, h.fps_den)
    shown_fps = fps * 2 if h.half_rate else fps  # a half-rate stream codes every other frame (FORMAT.md §3.8)
    if h.timed:
        duration = float(ticks * Fraction(h.time_num, h.time_den))
    else:
        duration = frames / float(shown_fps) if frames else 0.0

    def kbps(n: int) -> float:
        return n * 8 / duration / 1000.0 if duration else 0.0

    overhead = size - key_bytes - token_bytes - base_bytes - timing_bytes  # signature, header, records' framing
    # the part of it that grows with the stream (records), apart from the signature, header and END
    start_end = reader.header_record.offset + reader.header_record.total_len + (end_len or 0)
    return {
        "mode": _stream_mode(h).stream_name, "version": reader.version,
        "model": h.model, "weights_hash": h.weights_hash.hex(), "width": h.width, "height": h.height,
        "fps": float(fps), "fps_rational": f"{h.fps_num}/{h.fps_den}", "frames": frames,
        "duration_s": duration, "timing": "per-frame" if h.timed else "constant",
        "time_base": f"{h.time_num}/{h.time_den}" if h.timed else None, "timing_bytes": timing_bytes,
        "bytes": size, "kbps": kbps(size),
        "key_bytes": key_bytes, "token_bytes": token_bytes, "base_bytes": base_bytes, "overhead_bytes": overhead,
        "key_kbps": kbps(key_bytes), "token_kbps": kbps(token_bytes), "base_kbps": kbps(base_bytes),
        "overhead_kbps": kbps(overhead), "header_end_bytes": start_end,
        "record_framing_kbps": kbps(overhead - start_end),
        "lean": h.lean, "intra_base": h.intra_base, "half_rate": h.half_rate,
        "coded_frames": coded_frames(h, frames), "shown_fps": float(shown_fps),
        "base_codec": h.base_codec or None, "base_width": h.base_width, "base_height": h.base_height,
        "base_quality": h.base_quality,
        "key_codec": h.key_codec, "key_quality": h.key_quality, "quality": h.quality, "chunk": h.chunk,
        "token_dim": h.token_dim,
        "key_frames": [p["frame"] for p in packets if p["type"] == "key" or p.get("key")],
        "enhancer_switch": h.enhancer_switch, "unenhanced_frames": unenhanced,
        "packets": packets,
    }


__all__ = ["EncodeSummary", "EncodedStream", "DecodeSummary", "encode_frames_to_file", "encode_video", "decode_stream",
           "stream_info", "stream_header", "iter_decoded", "check_input_size", "atomic_output", "default_output",
           "BitstreamError", "Limits", "MAX_INPUT_PIXELS"]
