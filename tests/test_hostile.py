"""Hostile and broken input (issue #5): damaged, forged and hostile streams, odd input videos, weights
that are not ours, interrupted runs, long inputs.

Property tests mutate valid streams (bit flips, truncation, lying lengths, forged header fields, zero
frames, wrong CRC, wrong model or weights hash, trailing garbage, re-CRC'd garbage payloads that reach the
entropy and key-frame decoders) and check that decoding succeeds or raises an ``IMFError``, quickly.
``IMF_FUZZ_EXAMPLES=N`` scales the number of examples (default: a CI-sized run); the coverage-guided
harness for long runs is ``tests/fuzz/``.
"""

from __future__ import annotations

import io
import os
import pickle
import signal
import struct
import subprocess
import sys
import time
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import helpers
from imfcodec.api import decode_stream, encode_video, iter_decoded, stream_info
from imfcodec.bitstream import (
    MAGIC,
    VERSION,
    Damage,
    EndPacket,
    ResyncReader,
    StreamReader,
    StreamWriter,
    TokenPacket,
    decode_varint,
    encode_varint,
    read_stream,
)
from imfcodec.bitstream.format import TYPE_HEADER, record_crc
from imfcodec.cli import main
from imfcodec.codec import EncoderSettings
from imfcodec.errors import CorruptStreamError, IMFError, InputError, WeightsError

ROOT = Path(__file__).resolve().parents[1]
TINY = "random:imf-tiny"
N_FRAMES = 8
EXAMPLES = int(os.environ.get("IMF_FUZZ_EXAMPLES", "0")) or None
MAX_SECONDS = 20.0  # per decode of a mutated 8-frame stream: anything slower is a hang

# (key codec, keyint, chunk, quality): packets cover every layout (K, T of 1..3 frames, several keys)
BASES = {
    "hevc": dict(key_codec="hevc", keyint=4, chunk=2),
    "png": dict(key_codec="png", keyint=3, chunk=3, quality=9),
    "webp": dict(key_codec="webp", keyint=0, chunk=1, quality=3),
    "av1": dict(key_codec="av1", keyint=5, chunk=3),
}


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Small tensors: one thread is fastest, and the only sane choice on a loaded 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def run(*args):
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


def write_video(path: Path, frames, codec: str, pix_fmt: str, **kw) -> Path:
    return helpers.write_video(path, frames, codec, pix_fmt, fast=True, **kw)


def gradient(h: int, w: int, seed: int = 0) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    r = 128 + 100 * np.sin((x + 3 * seed) / 11.0)
    g = 128 + 100 * np.cos((y - 2 * seed) / 13.0)
    b = 128 + 60 * np.sin((x + y + seed) / 17.0)
    return np.clip(np.stack([r, g, b], -1), 0, 255).astype(np.uint8)


# ------------------------------------------------------------------------------------------ fixtures

@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    from imfcodec.io import make_sample

    path = tmp_path_factory.mktemp("hostile") / "clip.mp4"
    make_sample(path, frames=N_FRAMES, size=64, fps=25)
    return path


@pytest.fixture(scope="module")
def streams(clip, tiny, tmp_path_factory) -> dict[str, bytes]:
    folder = tmp_path_factory.mktemp("streams")
    out = {}
    for name, kw in BASES.items():
        path = folder / f"{name}.imf"
        encode_video(clip, path, model=tiny, settings=EncoderSettings(**kw))
        out[name] = path.read_bytes()
    return out


@pytest.fixture(scope="module")
def hevc_stream(streams, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("hevc") / "s.imf"
    path.write_bytes(streams["hevc"])
    return path


# ------------------------------------------------------------------------------------------ stream surgery

def split(data: bytes) -> list[list]:
    """A valid stream -> [[type byte, payload], ...] (header first, END last)."""
    recs, pos = [], len(MAGIC) + 1
    while pos < len(data):
        t = data[pos]
        it = iter(data[pos + 1:pos + 11])
        n = decode_varint(lambda: next(it, None), pos + 1, "length", CorruptStreamError)
        start = pos + 1 + len(encode_varint(n))
        recs.append([t, data[start:start + n]])
        pos = start + n + 4
    return recs


def join(recs, *, lengths: dict[int, int] | None = None, crc_ok: bool = True) -> bytes:
    """Records -> stream bytes; ``lengths`` forces a (lying) length field, CRCs made valid for it."""
    out = bytearray(MAGIC + bytes((VERSION,)))
    for i, (t, payload) in enumerate(recs):
        n = (lengths or {}).get(i, len(payload))
        length = encode_varint(n)
        crc = record_crc(t, length, payload) ^ (0 if crc_ok else 1)
        out += bytes((t,)) + length + payload + crc.to_bytes(4, "little")
    return bytes(out)


def header_of(data: bytes):
    return StreamReader(io.BytesIO(data)).header


def with_header(data: bytes, **fields) -> bytes:
    """Re-encode the header with forged fields (valid CRC): huge sizes, zero frames, other model..."""
    recs = split(data)
    h = replace(header_of(data), **fields)
    recs[0][1] = _encode_header_raw(h)
    return join(recs)


def _encode_header_raw(h) -> bytes:
    """encode_header without validation (forged values may be out of range)."""
    model, codec = h.model.encode("latin-1"), h.key_codec.encode("latin-1")
    v = encode_varint
    return b"".join((bytes((len(model) & 255,)), model, bytes(h.weights_hash), v(h.width), v(h.height),
                     v(h.fps_num), v(h.fps_den), v(h.frames), bytes((len(codec) & 255,)), codec,
                     bytes((h.key_quality & 255, h.quality & 255)), v(h.chunk), v(h.token_dim),
                     bytes(i & 255 for i in h.scale_indexes)))


def decode_all(data, tiny, *, conceal=False, limits=None):
    """('ok', frames, report) or ('refused', message, None); any other exception fails the test."""
    t0 = time.perf_counter()
    n, dec = 0, None
    try:
        for dec, frames in iter_decoded(data, model=tiny, conceal=conceal, limits=limits):
            for f in frames:
                assert f.dtype == np.uint8 and f.shape == (64, 64, 3)
            n += len(frames)
    except IMFError as e:
        msg = str(e)
        assert msg and "\n" not in msg, msg
        assert time.perf_counter() - t0 < MAX_SECONDS
        return "refused", msg, None
    assert time.perf_counter() - t0 < MAX_SECONDS
    return "ok", n, dec.report


# ------------------------------------------------------------------------------------------ mutations

BIG = st.sampled_from([0, 1, 2, 63, 64, 65, 127, 128, 4095, 4096, 4097, 65535, 2**31 - 1, 2**32, 10**6,
                       10**6 + 1, 2**40, 2**63, 2**64 - 1])


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
            "garbage_tokens", "garbage_image"]))
        steps.append(kind)
        data = _mutate(draw, kind, data)
    return name, "+".join(steps), data


def _mutate(draw, kind, data: bytes) -> bytes:
    d = bytearray(data)
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
    if hdr is None and kind in ("header", "zero_frames", "garbage_image", "fields", "garbage_tokens"):
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
        recs[0][1] = _encode_header_raw(replace(hdr, frames=draw(st.sampled_from([0, 0, 1, N_FRAMES]))))
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
        ]))
        v = draw(value)
        if field == "scale_indexes":
            v = tuple([v] * hdr.token_dim)
        recs[0][1] = _encode_header_raw(replace(hdr, **{field: v}))
        return join(recs)
    if kind == "fields" and t in (0x4B, 0x54, 0x45):  # re-encode a packet's fields with forged values
        values, used = varints(payload, 2 if t == 0x54 else 1)
        if None in values:
            return join(recs)
        frame, rest = values[0], payload[used:]
        new = encode_varint(draw(st.sampled_from([frame, frame + 1, max(0, frame - 1), 0, 2**40])))
        if t == 0x54:
            new += encode_varint(draw(st.sampled_from([0, 1, values[1] + 1, 1024, 2**32])))
        recs[i][1] = new + rest
        return join(recs)
    if kind == "garbage_tokens":  # random rANS data of a plausible length straight to the entropy decoder
        tok = [k for k, r in enumerate(recs) if r[0] == 0x54 and None not in varints(r[1], 2)[0]]
        if tok:
            k = draw(st.sampled_from(tok))
            head = b"".join(encode_varint(v) for v in varints(recs[k][1], 2)[0])
            n = draw(st.sampled_from([0, 4, 7, 8, 12, 16, 64, 4000]))
            recs[k][1] = head + draw(st.binary(min_size=min(n, 64), max_size=min(n, 64))) + bytes(max(0, n - 64))
        return join(recs)
    if kind == "garbage_image":  # key image bytes replaced or cut: the key-frame decoders see them
        keys = [k for k, r in enumerate(recs) if r[0] == 0x4B and None not in varints(r[1], 2)[0]]
        if keys:
            k = draw(st.sampled_from(keys))
            f, n = varints(recs[k][1], 2)[0]
            head_len = len(encode_varint(f)) + len(encode_varint(n)) + n
            image = recs[k][1][head_len:] or b"x"
            how = draw(st.sampled_from(["cut", "random", "flip_head"]))
            if how == "cut":
                image = image[:draw(st.integers(1, max(1, len(image) - 1)))]
            elif how == "random":
                image = draw(st.binary(min_size=1, max_size=256))
            else:
                image = bytearray(image)
                for _ in range(4):
                    image[draw(st.integers(0, min(63, len(image) - 1)))] ^= 0xFF
                image = bytes(image)
            recs[k][1] = recs[k][1][:head_len] + image
        return join(recs)
    return bytes(d)


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


def _header_field(recs, field, value) -> bytes:
    h = header_of(join(recs))
    return _encode_header_raw(replace(h, **{field: value}))


# ------------------------------------------------------------------------------------------ 1+3: fuzzing

FUZZ = settings(max_examples=EXAMPLES or 250, deadline=None, derandomize=EXAMPLES is None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])


def _category(msg: str) -> str:
    """'CRC mismatch in the key record at byte 1234' -> 'CRC mismatch in the key record at byte'"""
    return " ".join(w for w in msg.split()[:7] if not any(c.isdigit() for c in w))


@FUZZ
@given(data=st.data())
def test_mutated_streams_decode_or_refuse(streams, tiny, data):
    """Strict: every mutation decodes or is refused with an IMFError; concealment only refuses a damaged
    header, and with an intact header and END it always delivers every frame."""
    name, how, blob = data.draw(mutated(streams))
    base = streams[name]
    outcome, detail, _ = decode_all(blob, tiny)
    event(f"strict {outcome}" + (f": {_category(detail)}" if outcome == "refused" else ""))
    if blob != base and outcome == "ok":  # a mutation that decodes must be harmless (e.g. same bytes)
        assert detail <= 10 ** 6
    c_outcome, c_detail, report = decode_all(blob, tiny, conceal=True)
    event(f"conceal {c_outcome}" + (f", {len(report.concealed)} concealed" if report else ""))
    header_len = len(join(split(base)[:1]))
    if blob[:header_len] == base[:header_len] and len(blob) >= header_len:
        assert c_outcome == "ok", (how, c_detail)
        end = base[-7:]  # END of an 8-frame stream: type, length, varint(8), CRC
        if how.replace("flip", "").strip("+") == "" and len(blob) == len(base) and blob[-7:] == end:
            assert c_detail == N_FRAMES, (how, c_detail, report)


@FUZZ
@given(blob=st.binary(max_size=400), prefix=st.booleans())
def test_random_bytes_are_refused(tiny, blob, prefix):
    data = (MAGIC + bytes((VERSION,)) + blob) if prefix else blob
    for conceal in (False, True):
        outcome, _, _ = decode_all(data, tiny, conceal=conceal)
        assert outcome == "refused"


def _small_videos(folder: Path) -> dict[str, bytes]:
    frames = [gradient(48, 64, s) for s in range(3)]
    out = {
        "mp4": write_video(folder / "a.mp4", frames, "libx264", "yuv420p"),
        "mkv": write_video(folder / "a.mkv", frames, "ffv1", "yuv420p"),
        "y4m": write_video(folder / "a.y4m", frames, "rawvideo", "yuv420p"),
    }
    return {k: p.read_bytes() for k, p in out.items()}


@settings(max_examples=(EXAMPLES or 240) // 4, deadline=None, derandomize=EXAMPLES is None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mutated_input_videos_encode_or_refuse(tiny, tmp_path_factory, data):
    """Encoder input: damaged video files encode or are refused with InputError; no partial output."""
    folder = tmp_path_factory.mktemp("vid")
    videos = _small_videos_cached(tmp_path_factory)
    ext = data.draw(st.sampled_from(sorted(videos)))
    d = bytearray(videos[ext])
    kind = data.draw(st.sampled_from(["flip", "truncate", "header", "garbage"]))
    if kind == "flip":
        for _ in range(data.draw(st.integers(1, 16))):
            d[data.draw(st.integers(0, len(d) - 1))] ^= 1 << data.draw(st.integers(0, 7))
    elif kind == "truncate":
        d = d[:data.draw(st.integers(0, len(d) - 1))]
    elif kind == "header":
        for _ in range(data.draw(st.integers(1, 8))):
            d[data.draw(st.integers(0, min(len(d), 200) - 1))] = data.draw(st.integers(0, 255))
    else:
        d = bytearray(data.draw(st.binary(max_size=300)))
    src = folder / f"in.{ext}"
    src.write_bytes(bytes(d))
    out = folder / "out.imf"
    t0 = time.perf_counter()
    try:
        s = encode_video(src, out, model=tiny, max_frames=4, settings=EncoderSettings(key_codec="png"))
    except IMFError as e:
        assert "\n" not in str(e)
        assert not out.exists()
    else:
        assert 1 <= s.frames <= 4 and out.exists()
        assert decode_all(out.read_bytes(), tiny)[0] == "ok"
    assert time.perf_counter() - t0 < MAX_SECONDS
    assert leftovers(folder) == []


_VIDEOS: dict[str, bytes] = {}


def _small_videos_cached(factory) -> dict[str, bytes]:
    if not _VIDEOS:
        _VIDEOS.update(_small_videos(factory.mktemp("base")))
    return _VIDEOS


# ------------------------------------------------------------------------------------------ 1: limits

def test_stream_limits_are_overridable_at_the_cli(hevc_stream, tmp_path):
    out = tmp_path / "o.y4m"
    one_line_error(run("decode", hevc_stream, "-o", out, "--max-width", 32), "width 64", "Limits")
    one_line_error(run("decode", hevc_stream, "-o", out, "--max-height", 63), "height 64")
    one_line_error(run("decode", hevc_stream, "-o", out, "--max-frames", 5), "frame count 8")
    one_line_error(run("decode", hevc_stream, "-o", out, "--max-packet", 40), "max_packet")
    one_line_error(run("info", hevc_stream, "--max-frames", 7), "frame count 8")
    assert not out.exists() and leftovers(tmp_path) == []
    # a stream above the *default* limits decodes only when the caller raises them
    big = tmp_path / "big.imf"
    big.write_bytes(with_header(hevc_stream.read_bytes(), frames=N_FRAMES, width=5000))
    one_line_error(run("info", big), "width 5000")
    r = run("info", big, "--max-width", 5000)
    assert r.exit_code == 0, r.output
    one_line_error(run("decode", big, "-o", out, "--max-width", 5000), "5000x64")  # the model is 64x64
    r = run("decode", hevc_stream, "-o", out, "--max-width", 64, "--max-frames", 8)
    assert r.exit_code == 0 and out.exists(), r.output


def test_forged_sizes_are_refused_before_any_allocation(hevc_stream, tiny):
    data = hevc_stream.read_bytes()
    recs = split(data)
    for forged in (
        with_header(data, width=2**40), with_header(data, height=10**9), with_header(data, frames=2**50),
        with_header(data, token_dim=257), with_header(data, chunk=10**6),
        join(recs, lengths={1: 2**62}), join(recs, lengths={1: 2**26 + 1}),  # above max_packet
        join(recs, lengths={0: 2**40}),
    ):
        t0 = time.perf_counter()
        outcome, msg, _ = decode_all(forged, tiny)
        assert outcome == "refused" and time.perf_counter() - t0 < 2, msg
    # a lying length on a pipe (size unknown) does not allocate what it claims either
    r, w = os.pipe()
    with os.fdopen(w, "wb") as f:
        f.write(join(recs[:1], lengths={0: 2**25})[:200])
    with os.fdopen(r, "rb") as f, pytest.raises(CorruptStreamError, match="truncated"):
        StreamReader(f)


def test_crc_failures_are_detected_everywhere(hevc_stream, tiny):
    data = hevc_stream.read_bytes()
    for i in range(len(split(data))):
        recs = split(data)
        bad = join(recs[:i]) + join(recs[i:i + 1], crc_ok=False)[9:] + join(recs[i + 1:])[9:]
        outcome, msg, _ = decode_all(bad, tiny)
        assert outcome == "refused" and "CRC mismatch" in msg, msg


def test_no_unchecked_bytes_reach_compressai(tiny, monkeypatch):
    """Impossible token-data lengths are refused before compressai.ans is ever called."""
    import imfcodec.entropy.coder as coder
    from imfcodec.entropy import TokenCoder

    tc = TokenCoder(tiny.model.config.token_dim, [10] * tiny.model.config.token_dim)

    def boom():
        raise AssertionError("compressai.ans reached with unchecked bytes")

    monkeypatch.setattr(coder, "ans", boom)
    prev = np.zeros(tc.token_dim, np.int32)
    for n_bytes in (0, 4, 7, 9, 4 * 6 * 2 * tc.token_dim + 4 + 8, 10**6):
        with pytest.raises(CorruptStreamError):
            tc.decode_chunk(prev, bytes(n_bytes), 2)
    with pytest.raises(CorruptStreamError):
        tc.decode_chunk(prev, bytes(16), 2000)  # count above any chunk


def test_wrong_model_or_weights_hash_is_refused(hevc_stream, tmp_path):
    data = hevc_stream.read_bytes()
    for fields, needle in (({"model": "imf-nope"}, "unknown model 'imf-nope'"),
                           ({"weights_hash": bytes(16)}, "weights 00000000")):
        p = tmp_path / "m.imf"
        p.write_bytes(with_header(data, **fields))
        one_line_error(run("decode", p, "-o", tmp_path / "o.y4m"), needle)
    other = tmp_path / "other.imf"  # made with other weights (another seed): refused by the hash
    other.write_bytes(data)
    one_line_error(run("decode", other, "--model", "random:imf-tiny:1", "-o", tmp_path / "o.y4m"),
                   "other 'imf-tiny' weights")
    assert not (tmp_path / "o.y4m").exists() and leftovers(tmp_path) == []


def test_zero_frame_stream(hevc_stream, tmp_path, tiny):
    recs = split(hevc_stream.read_bytes())
    empty = tmp_path / "empty.imf"
    empty.write_bytes(join([[TYPE_HEADER, _header_field(recs, "frames", 0)], [0x45, encode_varint(0)]]))
    assert stream_info(empty)["frames"] == 0  # valid: the format allows it
    assert decode_all(empty.read_bytes(), tiny)[:2] == ("ok", 0)
    one_line_error(run("decode", empty, "-o", tmp_path / "o.mp4"), "no decodable frames")
    assert leftovers(tmp_path) == [] and not (tmp_path / "o.mp4").exists()


def test_trailing_garbage(hevc_stream, tmp_path, tiny):
    p = tmp_path / "t.imf"
    p.write_bytes(hevc_stream.read_bytes() + b"garbage")
    one_line_error(run("decode", p, "-o", tmp_path / "o.y4m"), "trailing bytes")
    outcome, n, report = decode_all(p.read_bytes(), tiny, conceal=True)
    assert (outcome, n, report.concealed) == ("ok", N_FRAMES, []) and "trailing" in report.damage[0]


# ------------------------------------------------------------------------------------------ 2: concealment

def _damage(data: bytes, record: int) -> bytes:
    """Flip one payload byte of record ``record`` (0 = header), leaving its CRC stale."""
    recs = split(data)
    offset = len(join(recs[:record]))
    d = bytearray(data)
    d[offset + 3] ^= 0x5A
    return bytes(d)


def _resync(data: bytes) -> tuple[list, ResyncReader]:
    r = ResyncReader(io.BytesIO(data))
    return list(r), r


def test_resync_reader(streams):
    """The resynchronising read behind --conceal: exact on intact streams, skips exactly the damage."""
    data = streams["png"]
    _, packets = read_stream(data)
    items, r = _resync(data)
    assert [p for _, p in items] == packets and r.end == packets[-1] and r.trailing == 0

    recs = split(data)
    at, size = len(join(recs[:3])), len(join(recs[3:4])) - len(MAGIC) - 1
    items, r = _resync(_damage(data, 3))  # one record with a stale CRC: skipped, by exactly its bytes
    damage = [i for i in items if isinstance(i, Damage)]
    assert len(damage) == 1 and (damage[0].offset, damage[0].length) == (at, size)
    assert "CRC mismatch" in damage[0].reason
    assert [p for i in items if not isinstance(i, Damage) for p in i[1:]] == packets[:2] + packets[3:]

    items, r = _resync(data[:at] + b"K\x05garbageT" + data[at:])  # garbage between records
    damage = [i for i in items if isinstance(i, Damage)]
    assert [(d.offset, d.length) for d in damage] == [(at, 10)] and r.end is not None

    items, r = _resync(data[:at + 5])  # truncated: no END
    assert r.end is None and isinstance(items[-1], Damage) and items[-1].offset == at

    items, r = _resync(data + b"xyz")
    assert r.end is not None and r.trailing == 3

    with pytest.raises(CorruptStreamError):  # the header must be intact
        ResyncReader(io.BytesIO(_damage(data, 0)))
    rfd, wfd = os.pipe()  # a pipe cannot be rescanned
    with os.fdopen(wfd, "wb") as f:
        f.write(data)
    with os.fdopen(rfd, "rb") as f, pytest.raises(InputError, match="seekable"):
        ResyncReader(f)


def test_resync_work_is_bounded(streams):
    """A file full of plausible record starts (each claiming 256 KiB) costs bounded CRC work."""
    header = join(split(streams["png"])[:1])
    hostile = header + b"K\x80\x80\x10" * (1 << 18)  # 1 MiB of candidates
    t0 = time.perf_counter()
    items, r = _resync(hostile)
    assert time.perf_counter() - t0 < 10
    assert r.end is None and len(items) == 1 and items[0].length == len(hostile) - len(header)


def test_concealment_repeats_the_last_good_frame_until_the_next_key(streams, tiny):
    data = streams["hevc"]  # keyint 4, chunk 2: K0 T1-2 T3 K4 T5-6 T7 END
    assert [r[0] for r in split(data)] == [0x48, 0x4B, 0x54, 0x54, 0x4B, 0x54, 0x54, 0x45]
    clean = [f for _, fs in iter_decoded(data, model=tiny) for f in fs]

    # damaged token packet (frames 1-2): 1-3 concealed (3 chains from the lost tokens), back at key 4
    bad = _damage(data, 2)
    assert decode_all(bad, tiny)[0] == "refused"
    frames, dec = [], None
    for dec, fs in iter_decoded(bad, model=tiny, conceal=True):
        frames += fs
    assert len(frames) == N_FRAMES and dec.report.concealed == [1, 2, 3]
    assert "CRC mismatch in the token record" in dec.report.damage[0]
    for i in (1, 2, 3):
        assert np.array_equal(frames[i], clean[0])  # the last good frame, repeated
    for i in (0, 4, 5, 6, 7):
        assert np.array_equal(frames[i], clean[i])

    # damaged key packet: its frame and the token packets that chain from it, up to the end
    outcome, n, report = decode_all(_damage(data, 4), tiny, conceal=True)
    assert (outcome, n, report.concealed) == ("ok", N_FRAMES, [4, 5, 6, 7])

    # damaged first key packet: nothing to repeat yet (mid-grey) until key 4
    frames = [f for _, fs in iter_decoded(_damage(data, 1), model=tiny, conceal=True) for f in fs]
    assert len(frames) == N_FRAMES and (frames[0] == 128).all() and np.array_equal(frames[4], clean[4])

    # damaged header: nothing can be decoded, even with concealment
    assert decode_all(_damage(data, 0), tiny, conceal=True)[0] == "refused"

    # truncated inside the last token packet: what arrived is decoded, the truncation reported
    cut = data[:len(join(split(data)[:6])) + 5]
    outcome, n, report = decode_all(cut, tiny, conceal=True)
    assert (outcome, n, report.truncated) == ("ok", 7, True)  # K0 T1-2 T3 K4 T5-6 arrived


def test_concealment_resyncs_over_inserted_and_deleted_bytes(streams, tiny):
    data = streams["png"]
    recs = split(data)
    at = len(join(recs[:3])) + 2
    for bad in (data[:at] + b"\x00" * 37 + data[at:], data[:at] + data[at + 11:]):
        outcome, n, report = decode_all(bad, tiny, conceal=True)
        assert outcome == "ok" and n == N_FRAMES and report.concealed, report


def test_cli_conceal(hevc_stream, tmp_path):
    bad = tmp_path / "bad.imf"
    bad.write_bytes(_damage(hevc_stream.read_bytes(), 2))
    out = tmp_path / "frames/"
    one_line_error(run("decode", bad, "-o", out), "CRC mismatch in the token record", "--conceal")
    assert not (tmp_path / "frames").exists() and leftovers(tmp_path) == []
    r = run("decode", bad, "-o", out, "--conceal")
    assert r.exit_code == 0, r.output
    assert "8 frames" in r.stdout and "3 frame(s) concealed: 1-3" in r.stderr and "Traceback" not in r.output
    assert len(list((tmp_path / "frames").glob("*.png"))) == N_FRAMES


# ------------------------------------------------------------------------------------------ 4: encoder input

def encode_cli(src: Path, tmp_path: Path, *extra):
    out = tmp_path / "out.imf"
    return run("encode", src, "-o", out, "--model", TINY, "--key-codec", "png", *extra), out


@pytest.mark.parametrize("case", ["text", "audio", "empty_file", "header_only_y4m", "no_frames_mp4"])
def test_unusable_inputs_are_refused_with_one_line(case, tmp_path):
    src = tmp_path / "in.mp4"
    if case == "text":
        src.write_text("this is not a video\n" * 50)
        needle = "not a readable video file"
    elif case == "audio":
        src = tmp_path / "tone.wav"
        with av.open(str(src), "w") as c:
            s = c.add_stream("pcm_s16le", rate=8000, layout="mono")
            samples = (3000 * np.sin(np.arange(800) / 3.0)).astype(np.int16)[None, :]
            frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
            frame.sample_rate = 8000
            for p in [*s.encode(frame), *s.encode()]:
                c.mux(p)
        needle = "no video stream"
    elif case == "empty_file":
        src.write_bytes(b"")
        needle = "not a readable video file"
    elif case == "header_only_y4m":
        src = tmp_path / "in.y4m"
        src.write_bytes(b"YUV4MPEG2 W64 H48 F25:1 Ip A1:1 C444\n")
        needle = "no frames"
    elif case == "no_frames_mp4":
        with av.open(str(src), "w") as c:
            s = c.add_stream("libx264", rate=25)
            s.width, s.height, s.pix_fmt = 64, 64, "yuv420p"
        needle = ""
    r, out = encode_cli(src, tmp_path)
    one_line_error(r, needle)
    assert not out.exists() and leftovers(tmp_path) == []


def _encode_ok(src: Path, tmp_path: Path, tiny, frames: int):
    r, out = encode_cli(src, tmp_path)
    assert r.exit_code == 0, r.output
    h, got = header_of(out.read_bytes()), [f for _, fs in iter_decoded(out, model=tiny) for f in fs]
    assert h.frames == frames == len(got) and (h.width, h.height) == (64, 64)
    return h, got


def test_one_frame_video(tmp_path, tiny):
    _encode_ok(write_video(tmp_path / "one.mp4", [gradient(64, 80)], "libx264", "yuv420p"), tmp_path, tiny, 1)


def test_odd_size_175x143(tmp_path, tiny):
    frames = [gradient(143, 175, s) for s in range(3)]
    _encode_ok(write_video(tmp_path / "odd.mkv", frames, "ffv1", "yuv420p"), tmp_path, tiny, 3)


def test_10_bit_video(tmp_path, tiny):
    frames = [gradient(72, 96, s) for s in range(3)]
    src = write_video(tmp_path / "ten.mp4", frames, "libx265", "yuv420p10le")
    from imfcodec.io import probe_video

    assert probe_video(src).pix_fmt == "yuv420p10le"
    _encode_ok(src, tmp_path, tiny, 3)


def test_variable_frame_rate(tmp_path, tiny):
    frames = [gradient(64, 64, s) for s in range(6)]
    pts = [0, 40, 60, 200, 210, 400]  # ms: irregular gaps
    src = write_video(tmp_path / "vfr.mkv", frames, "libx264", "yuv420p", pts=pts)
    h, _ = _encode_ok(src, tmp_path, tiny, 6)  # every frame is coded once, in order
    assert 0 < h.fps_num / h.fps_den <= 1000


def test_rotated_video(tmp_path, tiny):
    img = np.zeros((48, 64, 3), np.uint8)
    img[:16, :16] = 255  # white block at the top-left of the coded picture
    plain = write_video(tmp_path / "plain.mp4", [img, img], "libx264", "yuv444p")
    data = bytearray(plain.read_bytes())
    identity = struct.pack(">9I", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)
    at = data.find(identity, data.find(b"tkhd"))
    data[at:at + 36] = struct.pack(">9i", 0, 0x10000, 0, -0x10000, 0, 0, 0, 0, 0x40000000)
    rotated = tmp_path / "rotated.mp4"
    rotated.write_bytes(bytes(data))
    _, frames = _encode_ok(rotated, tmp_path, tiny, 2)
    key = frames[0].astype(float)  # the key frame: shown rotated clockwise, the block is top-right
    assert key[:8, -16:].mean() > 150 and key[:8, :16].mean() < 100


def test_large_frames(tmp_path, tiny):
    big = np.zeros((2160, 3840, 3), np.uint8)
    big[:, 1500:2340] = 200
    _encode_ok(write_video(tmp_path / "uhd.mp4", [big], "libx264", "yuv420p"), tmp_path, tiny, 1)
    (tmp_path / "out.imf").unlink()
    # absurd sizes are refused from the header, before a frame is decoded (no 300 MB allocation)
    huge = tmp_path / "huge.y4m"
    huge.write_bytes(b"YUV4MPEG2 W10000 H10000 F25:1 Ip A1:1 C420jpeg\nFRAME\n" + bytes(4096))
    r, out = encode_cli(huge, tmp_path)
    one_line_error(r, "10000x10000 frames are too large")
    assert not out.exists() and leftovers(tmp_path) == []
    with pytest.raises(InputError, match="too large"):
        encode_video(tmp_path / "uhd.mp4", tmp_path / "x.imf", model=tiny, max_input_pixels=1920 * 1080)


def test_debug_shows_the_traceback(tmp_path):
    txt = tmp_path / "t.mp4"
    txt.write_text("no")
    r = CliRunner().invoke(main, ["--debug", "encode", str(txt), "--model", TINY])
    assert isinstance(r.exception, InputError)


# ------------------------------------------------------------------------------------------ 6: weights

def test_only_safetensors_weights(tmp_path, tiny, hevc_stream):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    cases = {
        "evil.safetensors": pickle.dumps(Evil()),
        "evil.pt": pickle.dumps(Evil()),
        "text.safetensors": b"hello",
        "empty.safetensors": b"",
        "huge_header.safetensors": struct.pack("<Q", 2**62) + b"{}",
    }
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(2)}, str(tmp_path / "foreign.safetensors"))  # not ours: no config
    save_file({"x": torch.zeros(2)}, str(tmp_path / "mismatch.safetensors"),
              metadata={"format": "imfcodec-weights/1", "config": tiny.model.config.to_json()})
    save_file({"x": torch.zeros(2)}, str(tmp_path / "badconfig.safetensors"),
              metadata={"format": "imfcodec-weights/1", "config": '{"resolution": 33}'})
    for name, blob in cases.items():
        (tmp_path / name).write_bytes(blob)
    src = write_video(tmp_path / "c.mp4", [gradient(64, 64)], "libx264", "yuv420p")
    for name in [*cases, "foreign.safetensors", "mismatch.safetensors", "badconfig.safetensors"]:
        r = run("encode", src, "-o", tmp_path / "o.imf", "--model", tmp_path / name)
        one_line_error(r)
        r = run("decode", hevc_stream, "-o", tmp_path / "o.y4m", "--model", tmp_path / name)
        one_line_error(r)
    assert not marker.exists()  # nothing was unpickled
    with pytest.raises(WeightsError, match="do not match"):
        from imfcodec.zoo import load_weights

        load_weights(tmp_path / "mismatch.safetensors")


def test_checkpoints_load_without_running_code(tmp_path):
    """--resume PATH uses torch.load(weights_only=True): a pickled payload is refused, one line."""
    from imfcodec.train.__main__ import main as train_main
    from imfcodec.train.trainer import load_checkpoint

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    evil = tmp_path / "evil.pt"
    torch.save({"format": "imfcodec-train/1", "e": Evil()}, str(evil))
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    for path in (evil, junk):
        with pytest.raises(InputError, match="not a loadable imfcodec training checkpoint"):
            load_checkpoint(path)
        assert train_main(["--resume", str(path), "--out", str(tmp_path / "run")]) == 1
    assert not marker.exists()


# ------------------------------------------------------------------------------------------ 5: atomic output

def _long_stream(tiny, path: Path, frames: int) -> Path:
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


def _cheap_clip(path: Path, frames: int) -> Path:
    base = gradient(64, 64)
    return write_video(path, (np.roll(base, i % 64, axis=1) for i in range(frames)), "libx264", "yuv420p")


def _interrupt(args: list[str], folder: Path, sig: int) -> subprocess.CompletedProcess:
    """Run the CLI, send ``sig`` once its temporary output exists, return the finished process."""
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "imfcodec.cli", *args], cwd=folder, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not any(p.name.endswith(".partial") for p in folder.iterdir()):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no temporary output appeared"
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.mark.parametrize("command, sig", [("encode", signal.SIGINT), ("decode", signal.SIGINT),
                                          ("decode", signal.SIGTERM)])
def test_interrupted_run_leaves_nothing(command, sig, tmp_path, tiny):
    work = tmp_path / "work"
    work.mkdir()
    if command == "encode":
        src = _cheap_clip(tmp_path / "long.mp4", 1000)
        args = ["encode", str(src), "-o", "out.imf", "--model", TINY, "--key-codec", "png"]
    else:
        src = _long_stream(tiny, tmp_path / "long.imf", 1500)
        args = ["decode", str(src), "-o", "out.mp4"]
    done = _interrupt(args, work, sig)
    assert done.returncode == 130, done.stderr
    assert done.stderr.strip().splitlines()[-1] == "interrupted: no output was written", done.stderr
    assert "Traceback" not in done.stderr
    assert list(work.iterdir()) == []


def test_failed_runs_leave_nothing(tmp_path, tiny, hevc_stream):
    bad = tmp_path / "bad.imf"
    bad.write_bytes(hevc_stream.read_bytes()[:-20])  # decodes most frames, then fails
    for out in ("o.mp4", "o.y4m", "pngs/"):
        one_line_error(run("decode", bad, "-o", tmp_path / out), "truncat")
    existing = tmp_path / "keep.imf"
    existing.write_bytes(b"old")
    txt = tmp_path / "t.mp4"
    txt.write_text("no video")
    one_line_error(run("encode", txt, "-o", existing, "--model", TINY))
    assert existing.read_bytes() == b"old"  # a failed run never touches an existing output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.imf", "keep.imf", "t.mp4"]


# ------------------------------------------------------------------------------------------ 7: long inputs

def test_memory_is_flat_in_the_number_of_frames(tmp_path, tiny):
    """Smoke test (the real measurement is benchmarks/long_input.py): Python-heap peak of encode and
    decode at 1,000 frames is within 10% (+64 KiB) of 200 frames."""
    import tracemalloc

    peaks = {}
    for n in (200, 1000):
        clip = _cheap_clip(tmp_path / f"c{n}.mp4", n)
        stream = _long_stream(tiny, tmp_path / f"s{n}.imf", n)
        tracemalloc.start()
        # search_iters=0: the token search is per-frame local work (its state dies with the frame) and under
        # tracemalloc it would make 1,200 frames take minutes
        encode_video(clip, tmp_path / f"e{n}.imf", model=tiny,
                     settings=EncoderSettings(key_codec="png", search_iters=0))
        enc_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        decode_stream(stream, tmp_path / f"d{n}.y4m", model=tiny)
        dec_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        peaks[n] = (enc_peak, dec_peak)
    for i in range(2):
        assert peaks[1000][i] <= 1.1 * peaks[200][i] + 65536, peaks


# ------------------------------------------------------------------------------------------ 3: atheris harness

def test_atheris_harness_runs(tmp_path):
    """The coverage-guided harness starts, seeds its corpus and runs (CI has no atheris: skipped there)."""
    pytest.importorskip("atheris")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, str(ROOT / "tests" / "fuzz" / "fuzz_decode.py"), "--corpus",
                          str(tmp_path / "corpus"), "--artifacts", str(tmp_path / "art"), "-runs=40"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Done 40 runs" in out.stderr and not list((tmp_path / "art").iterdir())


def test_weights_whose_config_asks_for_a_huge_model_are_refused_before_allocating(tmp_path):
    """Shapes are checked on the meta device first: a lying config cannot make us allocate terabytes."""
    import json as _json

    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from imfcodec.errors import WeightsError
    from imfcodec.zoo import load_weights, random_model, save_weights

    good = tmp_path / "t.safetensors"
    save_weights(random_model("imf-tiny"), good)
    with safe_open(str(good), "pt") as f:
        meta = dict(f.metadata())
    cfg = _json.loads(meta["config"])
    cfg["imfd_widths"] = [200000] + list(cfg["imfd_widths"][1:])
    meta["config"] = _json.dumps(cfg)
    bad = tmp_path / "huge.safetensors"
    save_file(load_file(str(good)), str(bad), metadata=meta)
    with pytest.raises(WeightsError, match="do not match"):
        load_weights(bad)
