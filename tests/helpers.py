"""Shared test helpers (imported as ``helpers``: pytest puts tests/ on sys.path)."""

from __future__ import annotations

import contextlib
import faulthandler
import io
import itertools
import signal
import subprocess
import threading
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from imfcodec.api import iter_decoded
from imfcodec.bitstream import (
    MAGIC,
    VERSION,
    EndPacket,
    StreamReader,
    StreamWriter,
    TokenPacket,
    decode_varint,
    encode_varint,
)
from imfcodec.bitstream.format import LEAN_CRC_SIZE, LEAN_TYPES, record_crc, record_crc16
from imfcodec.codec import EncoderSettings
from imfcodec.errors import CorruptStreamError, IMFError


def write_video(path: Path, frames, codec: str, pix_fmt: str, *, fmt: str | None = None, rate=25,
                pts=None, options=None, fast: bool = False) -> Path:
    """Encode RGB frames with PyAV into a test clip. ``pts``: millisecond timestamps (variable
    frame rate); ``fast``: libx264 preset ultrafast unless ``options`` says otherwise. ``frames``
    may be any iterable (a generator keeps long clips out of memory)."""
    frames = iter(frames)
    first = next(frames)
    h, w = first.shape[:2]
    with av.open(str(path), "w", format=fmt) as c:
        s = c.add_stream(codec, rate=rate)
        s.width, s.height, s.pix_fmt = w, h, pix_fmt
        if pts is not None:
            s.time_base = s.codec_context.time_base = Fraction(1, 1000)
        opts = dict(options or {})
        if codec == "libx265":
            opts["x265-params"] = "log-level=error"
        if codec == "libx264" and fast:
            opts.setdefault("preset", "ultrafast")
        if opts:
            s.options = opts
        for i, rgb in enumerate(itertools.chain([first], frames)):
            f = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format=pix_fmt)
            f.pts = i if pts is None else pts[i]
            if pts is not None:
                f.time_base = Fraction(1, 1000)
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def timed_clip(path: Path, pts, time_base: Fraction, last: int, *, rate=25, fmt: str | None = None) -> Path:
    """A 64x64 libx264 clip whose frames are at ``pts`` (ticks of ``time_base``), each shown until the next
    and the last for ``last`` ticks (packet durations set, no B-frames: the container states the real
    duration). A moving bar, so every frame differs."""
    durations = {p: q - p for p, q in zip(pts, list(pts[1:]) + [pts[-1] + last])}
    with av.open(str(path), "w", format=fmt) as c:
        s = c.add_stream("libx264", rate=rate)
        s.width = s.height = 64
        s.pix_fmt = "yuv420p"
        s.options = {"bf": "0", "preset": "ultrafast"}
        s.time_base = s.codec_context.time_base = time_base

        def mux(packets):
            for packet in packets:
                packet.duration = durations[packet.pts]
                c.mux(packet)

        for i, p in enumerate(pts):
            rgb = gradient(64, 64)
            rgb[:, (3 * i) % 64] = 255
            f = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
            f.pts, f.time_base = p, time_base
            mux(s.encode(f))
        mux(s.encode())
    return path


def video_times(path: Path) -> tuple[list[Fraction], Fraction, float]:
    """(each frame's presentation time in seconds from the first frame's, the end of the last frame, the
    container's duration in seconds) of a video file, as PyAV reads it."""
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        frames = [(f.pts, f.duration) for f in c.decode(s)]
        tb, duration = s.time_base, (c.duration or 0) / 1e6
    start = frames[0][0]
    times = [(p - start) * tb for p, _ in frames]
    return times, times[-1] + frames[-1][1] * tb, duration


# ------------------------------------------------------------------------------------------ hang guards
# Tests never assert how fast something is (timings live in benchmarks/). They only refuse to hang:
# an operation still running after HANG_SECONDS is a hang, whatever the machine's load.

HANG_SECONDS = 300


class Hang(AssertionError):
    """An operation was still running long after any plausible time."""


_guarding = False


@contextlib.contextmanager
def no_hang(what: str, seconds: float = HANG_SECONDS):
    """Fail the test with ``hang: WHAT ...`` if the block is still running after ``seconds``.

    SIGALRM interrupts Python code and C code that checks for signals; for C code that never returns,
    ``faulthandler`` ends the whole process a minute later with every thread's traceback, so a run
    cannot hang forever. A guard inside another guard leaves the outer one in charge. In a thread other
    than the main one (no signals there) only the faulthandler backstop applies."""
    global _guarding
    if _guarding:
        yield
        return
    main = threading.current_thread() is threading.main_thread() and hasattr(signal, "SIGALRM")

    def on_alarm(signum, frame):
        raise Hang(f"hang: {what} still running after {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, on_alarm) if main else None
    faulthandler.dump_traceback_later(seconds + 60, exit=True)
    _guarding = True
    try:
        if main:
            signal.setitimer(signal.ITIMER_REAL, seconds)
        yield
    finally:
        _guarding = False
        if main:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
        faulthandler.cancel_dump_traceback_later()


def run_no_hang(args, *, seconds: float = HANG_SECONDS, **kw) -> subprocess.CompletedProcess:
    """``subprocess.run`` that fails the test with ``hang: ...`` (the child killed) after ``seconds``."""
    try:
        return subprocess.run(args, timeout=seconds, **kw)
    except subprocess.TimeoutExpired as e:
        raise Hang(f"hang: {_command(args)} still running after {seconds:g} s") from e


def communicate_no_hang(proc: subprocess.Popen, input=None, *, seconds: float = HANG_SECONDS):
    """``proc.communicate(input)``; after ``seconds`` the child is killed and the test fails with ``hang``."""
    try:
        return proc.communicate(input, timeout=seconds)
    except subprocess.TimeoutExpired as e:
        proc.kill()
        proc.communicate()
        raise Hang(f"hang: {_command(proc.args)} still running after {seconds:g} s") from e


def _command(args) -> str:
    return " ".join(map(str, args))[:200]


# ------------------------------------------------------------------------------------------ hostile input
# Shared by the tests/test_hostile_*.py modules (issue #5): the CLI as a user runs it, stream surgery
# (split a valid stream into records, forge fields, re-join with valid or invalid CRCs) and cheap long
# inputs.

TINY = "random:imf-tiny"
N_FRAMES = 8  # frames of the hostile streams (conftest.py: ``streams``, ``hevc_stream``)


def cli(*args):
    """``imfcodec ARGS`` in this process (click's runner), exceptions not caught."""
    from click.testing import CliRunner

    from imfcodec.cli import main

    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def one_line_error(result, *needles):
    assert result.exit_code == 1, (result.exit_code, result.output)
    err = result.stderr.strip()
    assert err.startswith("error:") and "\n" not in err, err
    assert "Traceback" not in result.output
    for n in needles:
        assert n in err, err
    return err


def leftovers(folder: Path) -> list[str]:
    """Hidden temporaries (.NAME.*.partial / .spool) left in a folder."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def fast_video(path: Path, frames, codec: str, pix_fmt: str, **kw) -> Path:
    """``write_video`` with libx264's fastest preset."""
    return write_video(path, frames, codec, pix_fmt, fast=True, **kw)


def gradient(h: int, w: int, seed: int = 0) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    r = 128 + 100 * np.sin((x + 3 * seed) / 11.0)
    g = 128 + 100 * np.cos((y - 2 * seed) / 13.0)
    b = 128 + 60 * np.sin((x + y + seed) / 17.0)
    return np.clip(np.stack([r, g, b], -1), 0, 255).astype(np.uint8)


def write_packets(header, packets, end: int) -> bytes:
    """A whole stream in memory: ``header``, ``packets`` and END ``end``, through the reference writer."""
    buf = io.BytesIO()
    w = StreamWriter(buf, header)
    for p in packets:
        w.write(p)
    w.close(EndPacket(end))
    return buf.getvalue()


def crc_size(t: int, version: int) -> int:
    """Bytes of a record's check: a CRC-16 for a version 5 base record, else a CRC-32 (FORMAT.md §3, §3.7)."""
    return LEAN_CRC_SIZE if version >= 5 and t in LEAN_TYPES else 4


def split(data: bytes) -> list[list]:
    """A valid stream -> [[type byte, payload], ...] (header first, END last)."""
    recs, pos, version = [], len(MAGIC) + 1, data[len(MAGIC)]
    while pos < len(data):
        t = data[pos]
        it = iter(data[pos + 1:pos + 11])
        n = decode_varint(lambda: next(it, None), pos + 1, "length", CorruptStreamError)
        start = pos + 1 + len(encode_varint(n))
        recs.append([t, data[start:start + n]])
        pos = start + n + crc_size(t, version)
    return recs


def join(recs, *, lengths: dict[int, int] | None = None, crc_ok: bool = True, version: int = 1) -> bytes:
    """Records -> stream bytes; ``lengths`` forces a (lying) length field, CRCs made valid for it.
    ``version`` 2 for streams with a base layer (hybrid mode), 3 for streams with timing records, 5 for lean
    base records (their CRC-16)."""
    assert version <= VERSION
    out = bytearray(MAGIC + bytes((version,)))
    for i, (t, payload) in enumerate(recs):
        n = (lengths or {}).get(i, len(payload))
        length = encode_varint(n)
        size = crc_size(t, version)
        crc = (record_crc16 if size == 2 else record_crc)(t, length, payload) ^ (0 if crc_ok else 1)
        out += bytes((t,)) + length + payload + crc.to_bytes(size, "little")
    return bytes(out)


def header_of(data: bytes):
    return StreamReader(io.BytesIO(data)).header


def with_header(data: bytes, **fields) -> bytes:
    """Re-encode the header with forged fields (valid CRC): huge sizes, zero frames, other model...
    Keeps the stream's version (a version-2 header carries the base-layer fields)."""
    recs = split(data)
    version = data[len(MAGIC)]
    h = replace(header_of(data), **fields)
    recs[0][1] = encode_header_raw(h, version)
    return join(recs, version=version)


def encode_header_raw(h, version: int = 1) -> bytes:
    """encode_header without validation (forged values may be out of range); ``version`` 2 appends the
    base-layer fields (only the name when ``h.base_codec`` is empty), 3 the time base after them."""
    model, codec = h.model.encode("latin-1"), h.key_codec.encode("latin-1")
    v = encode_varint
    raw = b"".join((bytes((len(model) & 255,)), model, bytes(h.weights_hash), v(h.width), v(h.height),
                    v(h.fps_num), v(h.fps_den), v(h.frames), bytes((len(codec) & 255,)), codec,
                    bytes((h.key_quality & 255, h.quality & 255)), v(h.chunk), v(h.token_dim),
                    bytes(i & 255 for i in h.scale_indexes)))
    if version >= 2:
        base = h.base_codec.encode("latin-1")
        raw += bytes((len(base) & 255,)) + base
        if base:
            raw += v(h.base_width) + v(h.base_height) + bytes((h.base_quality & 255,))
    if version >= 3:
        raw += v(h.time_num) + v(h.time_den)
    return raw


def decode_all(data, tiny, *, conceal=False, limits=None):
    """('ok', frames, report) or ('refused', message, None); any other exception fails the test, and so
    does a decode that hangs."""
    n, dec = 0, None
    try:
        with no_hang("decoding a damaged stream"):
            for dec, frames in iter_decoded(data, model=tiny, conceal=conceal, limits=limits):
                for f in frames:
                    assert f.dtype == np.uint8 and f.shape == (64, 64, 3)
                n += len(frames)
    except IMFError as e:
        msg = str(e)
        assert msg and "\n" not in msg, msg
        return "refused", msg, None
    return "ok", n, dec.report


def varints(payload: bytes, n: int) -> tuple[list, int]:
    """The first ``n`` varints of a payload (None where unreadable) and the bytes they take."""
    it, out, used = iter(payload), [], 0
    for _ in range(n):
        try:
            v = decode_varint(lambda: next(it, None), 0, "v", CorruptStreamError)
        except CorruptStreamError:
            return out + [None] * (n - len(out)), used
        out.append(v)
        used += len(encode_varint(v))
    return out, used


def header_field(recs, field, value, version: int = 1) -> bytes:
    h = header_of(join(recs, version=version))
    return encode_header_raw(replace(h, **{field: value}), version)


def damaged(data: bytes, record: int) -> bytes:
    """Flip one payload byte of record ``record`` (0 = header), leaving its CRC stale."""
    recs = split(data)
    offset = len(join(recs[:record], version=data[len(MAGIC)]))
    d = bytearray(data)
    d[offset + 3] ^= 0x5A
    return bytes(d)


def long_stream(tiny, path: Path, frames: int) -> Path:
    """A valid stream of ``frames`` frames made without running the encoder on every frame: one real key
    packet, then token packets of unchanged tokens (cheap to make, full cost to decode)."""
    from imfcodec.codec import Encoder

    enc = Encoder(tiny.model, model_name=tiny.name, weights_hash=tiny.weights_hash, fps=Fraction(25),
                  settings=EncoderSettings(key_codec="png", chunk=5))
    (key,) = enc.encode(gradient(64, 64))
    q = np.tile(enc.prev_q, (5, 1))
    data = enc.coder.encode_chunk(enc.prev_q, q)
    with open(path, "wb") as f:
        w = StreamWriter(f, replace(enc.header, frames=frames))
        w.write(key)
        for first in range(1, frames, 5):
            n = min(5, frames - first)
            w.write(TokenPacket(first, n, data if n == 5 else enc.coder.encode_chunk(enc.prev_q, q[:n])))
        w.close(EndPacket(frames))
    return path


def cheap_clip(path: Path, frames: int) -> Path:
    base = gradient(64, 64)
    return fast_video(path, (np.roll(base, i % 64, axis=1) for i in range(frames)), "libx264", "yuv420p")


def two_scene_frames(before: int = 6, after: int = 6, size: int = 64) -> list[np.ndarray]:
    """A clip with one cut: ``before`` frames of the demo portrait, then ``after`` frames of a sliding
    colour gradient (another scene entirely); the cut is at frame ``before``."""
    from imfcodec.io.sample import sample_frames

    first = list(sample_frames(before, size))
    second = [np.roll(gradient(size, size, 5), 2 * i, axis=1) for i in range(after)]
    return first + second
