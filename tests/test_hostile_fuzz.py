"""Hostile input, fuzzing (issue #5, themes 1 and 3): mutated streams, random bytes and damaged input
videos, and the coverage-guided harness.

Property tests mutate valid streams (bit flips, truncation, lying lengths, forged header fields, zero
frames, wrong CRC, wrong model or weights hash, trailing garbage, re-CRC'd garbage payloads that reach the
entropy, key-frame and base-layer decoders) and check that decoding succeeds or raises an ``IMFError`` (and
does not hang: ``helpers.no_hang``). Tests that take ``mode`` run on the token mode's streams (format
version 1) and the default hybrid mode's (version 2, base packets; conftest.py).
``IMF_FUZZ_EXAMPLES=N`` scales the number of examples (default: a CI-sized run); the coverage-guided
harness for long runs is ``tests/fuzz/``.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import threading
from dataclasses import replace
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from helpers import (
    N_FRAMES,
    decode_all,
    encode_header_raw,
    fast_video,
    gradient,
    header_of,
    join,
    join as _join,
    leftovers,
    no_hang,
    run_no_hang,
    split,
    varints,
)
from imfcodec.api import encode_video, iter_decoded
from imfcodec.bitstream import MAGIC, VERSION, encode_varint
from imfcodec.codec import EncoderSettings
from imfcodec.errors import IMFError

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = int(os.environ.get("IMF_FUZZ_EXAMPLES", "0")) or None

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ------------------------------------------------------------------------------------------ mutations

BIG = st.sampled_from([0, 1, 2, 63, 64, 65, 127, 128, 4095, 4096, 4097, 65535, 2**31 - 1, 2**32, 10**6,
                       10**6 + 1, 2**40, 2**63, 2**64 - 1])


def _mangled(draw, data: bytes, flip_within: int | None = None) -> bytes:
    """Coded bytes damaged one of three ways: cut short, replaced by random bytes, or 4 bytes flipped (within the
    first ``flip_within`` bytes when given: a codec's header)."""
    how = draw(st.sampled_from(["cut", "random", "flip"]))
    if how == "cut":
        return data[:draw(st.integers(1, max(1, len(data) - 1)))]
    if how == "random":
        return draw(st.binary(min_size=1, max_size=256))
    out = bytearray(data)
    last = len(out) - 1 if flip_within is None else min(flip_within, len(out)) - 1
    for _ in range(4):
        out[draw(st.integers(0, last))] ^= 0xFF
    return bytes(out)


@st.composite
def mutated(draw, streams_by_name):
    """(base name, mutation description, bytes): 1-3 mutations, raw or structure-aware."""
    name = draw(st.sampled_from(sorted(streams_by_name)))
    data = streams_by_name[name]
    steps = []
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from([
            "flip", "flip", "truncate", "trailing", "insert", "delete", "payload", "payload", "length",
            "header", "zero_frames", "bad_crc", "drop", "duplicate", "swap", "end_count", "fields",
            "garbage_tokens", "garbage_image", "garbage_base"]))
        steps.append(kind)
        data = _mutate(draw, kind, data)
    return name, "+".join(steps), data


def _mutate(draw, kind, data: bytes) -> bytes:
    """``data`` with one mutation of ``kind``; structure-aware ones keep its format version (1 token, 2 base
    layer), so that a version-2 header still parses and the mutation reaches the packets."""
    d = bytearray(data)
    v = data[len(MAGIC)] if len(data) > len(MAGIC) and 1 <= data[len(MAGIC)] <= VERSION else 1

    def join(recs, **kw) -> bytes:
        return _join(recs, version=v, **kw)
    pos = lambda: draw(st.integers(0, max(0, len(d) - 1)))  # noqa: E731
    if kind == "flip":
        for _ in range(draw(st.integers(1, 8))):
            if d:
                d[pos()] ^= 1 << draw(st.integers(0, 7))
        return bytes(d)
    if kind == "truncate":
        return bytes(d[:pos()])
    if kind == "trailing":
        return bytes(d) + draw(st.binary(min_size=1, max_size=64))
    if kind == "insert":
        p = pos()
        return bytes(d[:p]) + draw(st.binary(min_size=1, max_size=32)) + bytes(d[p:])
    if kind == "delete":
        p = pos()
        return bytes(d[:p] + d[p + draw(st.integers(1, 64)):])
    try:
        recs = split(data)
        hdr = header_of(join(recs[:1]))
    except (IMFError, IndexError, StopIteration):
        recs, hdr = (recs if "recs" in locals() else None), None
    if not recs:  # an earlier raw mutation broke the framing: flip bits instead
        return _mutate(draw, "flip", data)
    if hdr is None and kind in ("header", "zero_frames", "garbage_image", "fields", "garbage_tokens",
                                "garbage_base"):
        kind = "payload"
    i = draw(st.integers(0, len(recs) - 1))
    t, payload = recs[i]
    if kind == "payload":  # flip payload bits and fix the CRC: the parsers and decoders see them
        p = bytearray(payload)
        for _ in range(draw(st.integers(1, 4))):
            if p:
                p[draw(st.integers(0, len(p) - 1))] ^= 1 << draw(st.integers(0, 7))
        recs[i][1] = bytes(p)
        return join(recs)
    if kind == "length":  # a lying length field, with or without a CRC that matches the lie
        return join(recs, lengths={i: draw(BIG | st.integers(0, len(payload) + 8))}, crc_ok=draw(st.booleans()))
    if kind == "bad_crc":
        return join(recs[:i]) + join(recs[i:i + 1], crc_ok=False)[len(MAGIC) + 1:] + join(recs[i + 1:])[len(MAGIC) + 1:]
    if kind == "drop":
        return join(recs[:i] + recs[i + 1:])
    if kind == "duplicate":
        return join(recs[:i + 1] + recs[i:])
    if kind == "swap":
        j = draw(st.integers(0, len(recs) - 1))
        recs[i], recs[j] = recs[j], recs[i]
        return join(recs)
    if kind == "end_count":
        recs[-1][1] = encode_varint(draw(BIG))
        return join(recs)
    if kind == "zero_frames":  # header + END 0, header frames 0 or not
        recs[0][1] = encode_header_raw(replace(hdr, frames=draw(st.sampled_from([0, 0, 1, N_FRAMES]))), v)
        return join([recs[0], [0x45, encode_varint(0)]])
    if kind == "header":
        field, value = draw(st.sampled_from([
            ("width", BIG), ("height", BIG), ("frames", BIG), ("fps_num", BIG), ("fps_den", BIG),
            ("chunk", BIG), ("token_dim", st.sampled_from([0, 1, 31, 33, 256, 257])),
            ("quality", st.integers(0, 255)), ("key_quality", st.integers(0, 255)),
            ("model", st.sampled_from(["imf-small", "imf-paper", "imf-nope", "x" * 64, "\x07bell"])),
            ("weights_hash", st.binary(min_size=16, max_size=16)),
            ("key_codec", st.sampled_from(["hevc", "av1", "png", "webp", "nope", "HEVC"])),
            ("scale_indexes", st.integers(0, 255)),
            ("base_width", BIG), ("base_height", BIG), ("base_quality", st.integers(0, 255)),
            ("base_codec", st.sampled_from(["", "vp9", "hevc", "av1", "mpeg2", "VP9"])),
        ]))
        value = draw(value)
        if field == "scale_indexes":
            value = tuple([value] * hdr.token_dim)
        recs[0][1] = encode_header_raw(replace(hdr, **{field: value}), v)
        return join(recs)
    if kind == "fields" and t in (0x4B, 0x54, 0x42, 0x45):  # re-encode a packet's fields with forged values
        values, used = varints(payload, 2 if t in (0x54, 0x42) else 1)
        if None in values:
            return join(recs)
        frame, rest = values[0], payload[used:]
        new = encode_varint(draw(st.sampled_from([frame, frame + 1, max(0, frame - 1), 0, 2**40])))
        if t in (0x54, 0x42):  # T and B: frame, count
            new += encode_varint(draw(st.sampled_from([0, 1, values[1] + 1, 1024, 2**32])))
        recs[i][1] = new + rest
        return join(recs)
    if kind == "garbage_tokens":  # random rANS data of a plausible length straight to the entropy decoder
        tok = [k for k, r in enumerate(recs) if r[0] == 0x54 and None not in varints(r[1], 2)[0]]
        if tok:
            k = draw(st.sampled_from(tok))
            head = b"".join(encode_varint(x) for x in varints(recs[k][1], 2)[0])
            n = draw(st.sampled_from([0, 4, 7, 8, 12, 16, 64, 4000]))
            recs[k][1] = head + draw(st.binary(min_size=min(n, 64), max_size=min(n, 64))) + bytes(max(0, n - 64))
        return join(recs)
    if kind == "garbage_image":  # key image bytes replaced or cut: the key-frame decoders see them
        keys = [k for k, r in enumerate(recs) if r[0] == 0x4B and None not in varints(r[1], 2)[0]]
        if keys:
            k = draw(st.sampled_from(keys))
            f, n = varints(recs[k][1], 2)[0]
            head_len = len(encode_varint(f)) + len(encode_varint(n)) + n
            image = _mangled(draw, recs[k][1][head_len:] or b"x", flip_within=64)  # flips in its header
            recs[k][1] = recs[k][1][:head_len] + image
        return join(recs)
    if kind == "garbage_base":  # a base packet's access units replaced, cut or flipped: the base decoder sees them
        bases = [k for k, r in enumerate(recs) if r[0] == 0x42 and None not in varints(r[1], 3)[0]]
        if bases:
            k = draw(st.sampled_from(bases))
            (f, n, size), used = varints(recs[k][1], 3)
            unit = _mangled(draw, recs[k][1][used:used + size] or b"x")
            recs[k][1] = (encode_varint(f) + encode_varint(n) + encode_varint(len(unit)) + unit
                          + recs[k][1][used + size:])
        return join(recs)
    return bytes(d)


# ------------------------------------------------------------------------------------------ fuzzing

FUZZ = settings(max_examples=EXAMPLES or 250, deadline=None, derandomize=EXAMPLES is None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])


def _category(msg: str) -> str:
    """'CRC mismatch in the key record at byte 1234' -> 'CRC mismatch in the key record at byte'"""
    return " ".join(w for w in msg.split()[:7] if not any(c.isdigit() for c in w))


@pytest.mark.slow
@FUZZ
@given(data=st.data())
def test_mutated_streams_decode_or_refuse(mode, data):
    """Strict: every mutation decodes or is refused with an IMFError; concealment only refuses a damaged
    header, and with an intact header and END it always delivers every frame."""
    streams, tiny = mode.streams, mode.model
    name, how, blob = data.draw(mutated(streams))
    base = streams[name]
    outcome, detail, _ = decode_all(blob, tiny)
    event(f"strict {outcome}" + (f": {_category(detail)}" if outcome == "refused" else ""))
    if blob != base and outcome == "ok":  # a mutation that decodes must be harmless (e.g. same bytes)
        assert detail <= 10 ** 6
    c_outcome, c_detail, report = decode_all(blob, tiny, conceal=True)
    event(f"conceal {c_outcome}" + (f", {len(report.concealed)} concealed" if report else ""))
    header_len = len(join(split(base)[:1], version=mode.version))
    if blob[:header_len] == base[:header_len] and len(blob) >= header_len:
        assert c_outcome == "ok", (how, c_detail)
        end = base[-7:]  # END of an 8-frame stream: type, length, varint(8), CRC
        if how.replace("flip", "").strip("+") == "" and len(blob) == len(base) and blob[-7:] == end:
            assert c_detail == N_FRAMES, (how, c_detail, report)


@FUZZ
@given(blob=st.binary(max_size=400), prefix=st.booleans())
def test_random_bytes_are_refused(mode, blob, prefix):
    data = (MAGIC + bytes((VERSION,)) + blob) if prefix else blob
    for conceal in (False, True):
        outcome, _, _ = decode_all(data, mode.model, conceal=conceal)
        assert outcome == "refused"


def _small_videos(folder: Path) -> dict[str, bytes]:
    frames = [gradient(48, 64, s) for s in range(3)]
    out = {
        "mp4": fast_video(folder / "a.mp4", frames, "libx264", "yuv420p"),
        "mkv": fast_video(folder / "a.mkv", frames, "ffv1", "yuv420p"),
        "y4m": fast_video(folder / "a.y4m", frames, "rawvideo", "yuv420p"),
    }
    return {k: p.read_bytes() for k, p in out.items()}


def _mutated(data, d: bytearray, kind: str) -> bytearray:
    """A video file's bytes damaged the way ``kind`` says: bit flips, a truncation, overwritten header
    bytes, or ``intact``."""
    if kind == "flip":
        for _ in range(data.draw(st.integers(1, 16))):
            d[data.draw(st.integers(0, len(d) - 1))] ^= 1 << data.draw(st.integers(0, 7))
    elif kind == "truncate":
        d = d[:data.draw(st.integers(0, len(d) - 1))]
    elif kind == "header":
        for _ in range(data.draw(st.integers(1, 8))):
            d[data.draw(st.integers(0, min(len(d), 200) - 1))] = data.draw(st.integers(0, 255))
    return d


@settings(max_examples=(EXAMPLES or 240) // 4, deadline=None, derandomize=EXAMPLES is None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mutated_input_videos_encode_or_refuse(mode, tmp_path_factory, data):
    """Encoder input: damaged video files encode or are refused with InputError; no partial output."""
    tiny = mode.model
    folder = tmp_path_factory.mktemp("vid")
    videos = _small_videos_cached(tmp_path_factory)
    ext = data.draw(st.sampled_from(sorted(videos)))
    d = bytearray(videos[ext])
    kind = data.draw(st.sampled_from(["flip", "truncate", "header", "garbage"]))
    d = _mutated(data, d, kind) if kind != "garbage" else bytearray(data.draw(st.binary(max_size=300)))
    src = folder / f"in.{ext}"
    src.write_bytes(bytes(d))
    out = folder / "out.imf"
    try:
        with no_hang("encoding a damaged input video"):
            s = encode_video(src, out, model=tiny, max_frames=4, settings=EncoderSettings(**mode.settings))
    except IMFError as e:
        assert "\n" not in str(e)
        assert not out.exists()
    else:
        assert 1 <= s.frames <= 4 and out.exists()
        assert decode_all(out.read_bytes(), tiny)[0] == "ok"
    assert leftovers(folder) == []


_VIDEOS: dict[str, bytes] = {}


def _small_videos_cached(factory) -> dict[str, bytes]:
    if not _VIDEOS:
        _VIDEOS.update(_small_videos(factory.mktemp("base")))
    return _VIDEOS


# ------------------------------------------------------------------------------------------ stdin (issue 13)


@contextlib.contextmanager
def _stdin_pipe(data: bytes):
    """``sys.stdin`` reading a real pipe that a thread fills with ``data`` (the reader may stop early)."""
    rfd, wfd = os.pipe()

    def feed():
        with contextlib.suppress(BrokenPipeError), os.fdopen(wfd, "wb") as f:
            f.write(data)

    t = threading.Thread(target=feed, daemon=True)
    t.start()
    stdin = io.TextIOWrapper(io.BufferedReader(io.FileIO(rfd, "rb")))
    try:
        with mock.patch.object(sys, "stdin", stdin):
            yield
    finally:
        stdin.close()  # a feeder still writing gets EPIPE
        t.join(timeout=60)


def _decode_stdin(tiny) -> tuple[str, object]:
    n = 0
    try:
        with no_hang("decoding a damaged stream from a pipe"):
            for _, frames in iter_decoded("-", model=tiny):
                n += len(frames)
    except IMFError as e:
        assert str(e) and "\n" not in str(e), str(e)
        return "refused", str(e)
    return "ok", n


@settings(max_examples=(EXAMPLES or 240) // 2, deadline=None, derandomize=EXAMPLES is None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mutated_streams_from_stdin_match_the_file_path(mode, data):
    """`imfcodec decode -`: a stream read from a pipe (no size known, no seeking, pieces as they come) is
    decoded or refused exactly when the same bytes in a file are, with the same frames."""
    tiny = mode.model
    name, how, blob = data.draw(mutated(mode.streams))
    outcome, detail, _ = decode_all(blob, tiny)
    with _stdin_pipe(blob):
        piped, piped_detail = _decode_stdin(tiny)
    event(f"stdin {piped}")
    assert piped == outcome, (how, detail, piped_detail)
    if outcome == "ok":
        assert piped_detail == detail, how


@settings(max_examples=(EXAMPLES or 240) // 8, deadline=None, derandomize=EXAMPLES is None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mutated_input_videos_from_stdin_encode_or_refuse(mode, tmp_path_factory, data):
    """`imfcodec encode -`: damaged videos (mp4, matroska, y4m) arriving through a pipe encode or are refused
    with one-line InputError; nothing is left at the output on refusal."""
    tiny = mode.model
    folder = tmp_path_factory.mktemp("vid")
    videos = _small_videos_cached(tmp_path_factory)
    ext = data.draw(st.sampled_from(sorted(videos)))  # an mp4 may need seeking: then it is refused
    d = bytearray(videos[ext])
    kind = data.draw(st.sampled_from(["flip", "truncate", "header", "intact"]))
    d = _mutated(data, d, kind)
    out = folder / "out.imf"
    try:
        with _stdin_pipe(bytes(d)), no_hang("encoding a damaged video from a pipe"):
            s = encode_video("-", out, model=tiny, max_frames=4, settings=EncoderSettings(**mode.settings))
    except IMFError as e:
        assert kind != "intact", str(e)
        assert "\n" not in str(e)
        assert not out.exists()
    else:
        assert 1 <= s.frames <= 4 and out.exists()
        assert decode_all(out.read_bytes(), tiny)[0] == "ok"
        if kind == "intact":
            assert s.frames == 3
    assert leftovers(folder) == []


# ------------------------------------------------------------------------------------------ atheris harness

def test_atheris_harness_runs(tmp_path):
    """The coverage-guided harness starts, seeds its corpus and runs (CI has no atheris: skipped there)."""
    pytest.importorskip("atheris")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = run_no_hang([sys.executable, str(ROOT / "tests" / "fuzz" / "fuzz_decode.py"), "--corpus",
                       str(tmp_path / "corpus"), "--artifacts", str(tmp_path / "art"), "-runs=40"],
                      capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Done 40 runs" in out.stderr and not list((tmp_path / "art").iterdir())
