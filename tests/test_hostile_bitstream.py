"""Hostile input, stream limits (issue #5, theme 1): forged sizes, lying lengths, CRC failures, other
models and weights, zero frames, trailing garbage; nothing unchecked reaches the entropy coder. Tests that
take ``mode`` run in the token and the default (hybrid) mode (conftest.py)."""

from __future__ import annotations

import contextlib
import os
import re
import tracemalloc

import numpy as np
import pytest

from helpers import (
    N_FRAMES,
    cli,
    decode_all,
    encode_header_raw,
    header_field,
    header_of,
    join,
    leftovers,
    one_line_error,
    split,
    with_header,
)
from imfcodec.api import stream_info
from imfcodec.bitstream import StreamReader, encode_varint
from imfcodec.bitstream.format import TYPE_HEADER
from imfcodec.errors import CorruptStreamError

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_stream_limits_are_overridable_at_the_cli(mode, mode_stream, tmp_path):
    hevc_stream = mode_stream
    out = tmp_path / "o.y4m"
    one_line_error(cli("decode", hevc_stream, "-o", out, "--max-width", 32), "width 64", "Limits")
    one_line_error(cli("decode", hevc_stream, "-o", out, "--max-height", 63), "height 64")
    one_line_error(cli("decode", hevc_stream, "-o", out, "--max-frames", 5), "frame count 8")
    one_line_error(cli("decode", hevc_stream, "-o", out, "--max-packet", 40), "max_packet")
    one_line_error(cli("info", hevc_stream, "--max-frames", 7), "frame count 8")
    assert not out.exists() and leftovers(tmp_path) == []
    # a stream above the *default* limits decodes only when the caller raises them
    big = tmp_path / "big.imf"
    big.write_bytes(with_header(hevc_stream.read_bytes(), frames=N_FRAMES, width=5000))
    one_line_error(cli("info", big), "width 5000")
    r = cli("info", big, "--max-width", 5000)
    assert r.exit_code == 0, r.output
    one_line_error(cli("decode", big, "-o", out, "--max-width", 5000), "5000x64")  # the network is 64x64
    r = cli("decode", hevc_stream, "-o", out, "--max-width", 64, "--max-frames", 8)
    assert r.exit_code == 0 and out.exists(), r.output


@contextlib.contextmanager
def _heap_peak():
    """The peak of Python-heap allocations (bytes, numpy arrays) in the block, as ``peak[0]``."""
    peak = [0]
    tracemalloc.start()
    try:
        yield peak
    finally:
        peak[0] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()


HEAP_BOUND = 4 << 20  # refusing takes a few KiB; every forged field below claims 32 MiB or far more


def test_forged_sizes_are_refused_before_any_allocation(mode):
    data, v = mode.stream, mode.version
    recs = split(data)
    forgeries = [
        with_header(data, width=2**40), with_header(data, height=10**9), with_header(data, frames=2**50),
        with_header(data, token_dim=257), with_header(data, chunk=10**6),
        join(recs, lengths={1: 2**62}, version=v), join(recs, lengths={1: 2**26 + 1}, version=v),  # > max_packet
        join(recs, lengths={0: 2**40}, version=v),
    ]
    if mode.hybrid:
        forgeries += [with_header(data, base_width=2**40), with_header(data, base_height=10**9),
                      join(recs, lengths={2: 2**62}, version=v)]  # the first base packet
    for forged in forgeries:
        with _heap_peak() as peak:
            outcome, msg, _ = decode_all(forged, mode.model)
        assert outcome == "refused", msg
        assert peak[0] < HEAP_BOUND, (msg, peak[0])
    # a lying length on a pipe (size unknown) does not allocate what it claims either
    r, w = os.pipe()
    with os.fdopen(w, "wb") as f:
        f.write(join(recs[:1], lengths={0: 2**25}, version=v)[:200])
    with os.fdopen(r, "rb") as f, _heap_peak() as peak, pytest.raises(CorruptStreamError, match="truncated"):
        StreamReader(f)
    assert peak[0] < HEAP_BOUND, peak[0]


def test_crc_failures_are_detected_everywhere(mode):
    for data in mode.streams.values():
        for i in range(len(split(data))):
            recs = split(data)
            bad = join(recs[:i], version=data[8]) + join(recs[i:i + 1], crc_ok=False)[9:] + join(recs[i + 1:])[9:]
            outcome, msg, _ = decode_all(bad, mode.model)
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


def test_wrong_model_or_weights_hash_is_refused(mode, tmp_path):
    data = mode.stream
    for fields, needle in (({"model": "imf-nope"}, "unknown model 'imf-nope'"),
                           ({"weights_hash": bytes(16)}, "weights 00000000")):
        p = tmp_path / "m.imf"
        p.write_bytes(with_header(data, **fields))
        one_line_error(cli("decode", p, "-o", tmp_path / "o.y4m"), needle)
    other = tmp_path / "other.imf"  # made with other weights (another seed): refused by the hash
    other.write_bytes(data)
    one_line_error(cli("decode", other, "--model", f"{mode.spec}:1", "-o", tmp_path / "o.y4m"),
                   f"other '{mode.model.name}' weights")
    assert not (tmp_path / "o.y4m").exists() and leftovers(tmp_path) == []


def test_zero_frame_stream(mode, tmp_path):
    v = mode.version
    recs = split(mode.stream)
    empty = tmp_path / "empty.imf"
    empty.write_bytes(join([[TYPE_HEADER, header_field(recs, "frames", 0, v)], [0x45, encode_varint(0)]], version=v))
    assert stream_info(empty)["frames"] == 0  # valid: the format allows it
    assert decode_all(empty.read_bytes(), mode.model)[:2] == ("ok", 0)
    one_line_error(cli("decode", empty, "-o", tmp_path / "o.mp4"), "no decodable frames")
    assert leftovers(tmp_path) == [] and not (tmp_path / "o.mp4").exists()


def test_trailing_garbage(mode, tmp_path):
    p = tmp_path / "t.imf"
    p.write_bytes(mode.stream + b"garbage")
    one_line_error(cli("decode", p, "-o", tmp_path / "o.y4m"), "trailing bytes")
    outcome, n, report = decode_all(p.read_bytes(), mode.model, conceal=True)
    assert (outcome, n, report.concealed) == ("ok", N_FRAMES, []) and "trailing" in report.damage[0]


# ------------------------------------------------------------------------------------------ hybrid (version 2)
# the hybrid fixture's records: H, K0, B0, B1, B2, B3, K4, B4, B5, B6, B7, E (conftest.py)

def _v2(recs) -> bytes:
    return join(recs, version=2)


def _read(data: bytes):
    from imfcodec.bitstream import read_stream

    return read_stream(data)


def test_hybrid_stream_rules(hybrid_stream, enh_tiny):
    from imfcodec.bitstream import BasePacket, KeyPacket, TokenPacket, encode_packet
    from imfcodec.errors import UnsupportedStreamError

    data = hybrid_stream.read_bytes()
    recs = split(data)
    assert data[8] == 2 and bytes(t for t, _ in recs) == b"HKBBBBKBBBBE"
    assert decode_all(data, enh_tiny)[:2] == ("ok", N_FRAMES)

    def rec(packet):
        r = encode_packet(packet)
        return [r[0], r[2:-4] if r[1] < 0x80 else None]

    k4, t1 = recs[6], rec(TokenPacket(1, 1, b"\x01\x02"))
    unknown_frames = header_field(recs, "frames", 0, version=2)
    cases = {
        "B before K": (recs[:1] + recs[2:], "base packet before any key packet"),
        "B of another frame after K": (recs[:2] + recs[3:], "starts at frame 1, expected frame 0"),
        "T in hybrid": (recs[:3] + [t1] + recs[3:], "token packet in a stream with a base layer"),
        "missing B": (recs[:4] + recs[5:], "starts at frame 3, expected frame 2"),
        "missing last B": (recs[:10] + recs[11:], "says 8 frames but the packets hold 7"),
        "duplicate K": (recs[:7] + [k4] + recs[7:], "expected the base packet of frame 4 after its key packet"),
        "K without its B": ([[TYPE_HEADER, unknown_frames]] + recs[1:7] + [[0x45, encode_varint(4)]],
                            "the key packet of frame 4 has no base packet"),
        "K with a token": (recs[:1] + [rec(KeyPacket(0, b"\x00\x00", b"I"))] + recs[2:], "key token is 2 bytes"),
        "empty B": (recs[:2] + [rec(BasePacket(0, (b"",)))] + recs[3:], "empty base-layer access unit"),
        "B over chunk": (recs[:2] + [rec(BasePacket(0, (b"A", b"B")))] + recs[3:], "frame count 2 is outside 1..1"),
    }
    for name, (bad, needle) in cases.items():
        with pytest.raises(CorruptStreamError, match=needle):
            _read(_v2(bad))
        outcome, msg, _ = decode_all(_v2(bad), enh_tiny)
        assert outcome == "refused" and needle in msg, (name, msg)

    # the header: token fields fixed with a base layer, token_dim 0 only with one, base size within the Limits
    for fields, needle in ((dict(token_dim=1, scale_indexes=(3,)), "token_dim must be 0"),
                           (dict(quality=3), "token quality must be 0"), (dict(base_width=0), "base_width 0"),
                           (dict(base_codec="", base_width=0, base_height=0, base_quality=0),
                            "token_dim 0 is allowed only in a stream with a base layer")):
        with pytest.raises(CorruptStreamError, match=needle):
            _read(with_header(data, **fields))
    for fields, needle in ((dict(base_width=5000), "base_width 5000 is outside 1..4096 (reader Limits)"),
                           (dict(base_height=2**40), "base_height")):
        with pytest.raises(UnsupportedStreamError, match=re.escape(needle)):
            _read(with_header(data, **fields))
        outcome, msg, _ = decode_all(with_header(data, **fields), enh_tiny)
        assert outcome == "refused" and needle in msg
    from imfcodec.bitstream import Limits

    # legal for the container, refused by the codec layer: a base larger than the frame, an unknown base codec
    for fields, needle in ((dict(base_width=5000), "5000x32 base layer"), (dict(base_codec="mpeg2"), "mpeg2"),
                           (dict(base_quality=200), "base quality 200")):
        outcome, msg, _ = decode_all(with_header(data, **fields), enh_tiny, limits=Limits(max_width=5000))
        assert outcome == "refused" and needle in msg, msg


def test_hybrid_version_and_record_types(hybrid_stream, hevc_stream, tiny):
    from imfcodec.bitstream import BasePacket, encode_packet

    b = encode_packet(BasePacket(1, (b"AU",)))
    v1 = split(hevc_stream.read_bytes())
    with pytest.raises(CorruptStreamError, match="unknown packet type 0x42"):  # B does not exist in version 1
        _read(join(v1[:2]) + b + join(v1[2:])[9:])
    # version 2 without a base layer is a token stream, read and decoded exactly like its version-1 self
    v2 = [[v1[0][0], encode_header_raw(header_of(join(v1)), 2)]] + v1[1:]
    assert _read(join(v2, version=2)) == _read(join(v1))
    assert decode_all(join(v2, version=2), tiny)[:2] == ("ok", N_FRAMES)
    with pytest.raises(CorruptStreamError, match="base packet in a stream without a base layer"):
        _read(join(v2[:2], version=2) + b + join(v2[2:])[9:])
    # a hybrid header is not readable as version 1 (its base fields are 'unexpected bytes') and vice versa
    data = bytearray(hybrid_stream.read_bytes())
    data[8] = 1
    with pytest.raises(CorruptStreamError):
        _read(bytes(data))


def test_hybrid_truncations(hybrid_stream):
    """(CRC failures: test_crc_failures_are_detected_everywhere[hybrid])"""
    data = hybrid_stream.read_bytes()
    for cut in range(9, len(data), 7):
        with pytest.raises(CorruptStreamError):
            _read(data[:cut])


# ------------------------------------------------------------------------------------------ timing (version 3)
# the hevc fixture made into a version 3 stream: a time base in the header and a timing record after it

def _timed(data: bytes, durations, *, at: int = 1, time_base=(1, 1000)) -> bytes:
    """``data`` (a version 1 stream) as version 3: its header with ``time_base``, a timing record of
    ``durations`` (raw varints, so forged values pass) inserted before record ``at``."""
    from dataclasses import replace

    recs = split(data)
    h = replace(header_of(data), time_num=time_base[0], time_den=time_base[1])
    recs[0][1] = encode_header_raw(h, 3)
    body = encode_varint(0) + encode_varint(len(durations)) + b"".join(map(encode_varint, durations))
    recs.insert(at, [ord("D"), body])
    return join(recs, version=3)


def test_timing_records_decode_and_hostile_ones_are_refused(hevc_stream, tiny, tmp_path):
    data = hevc_stream.read_bytes()
    good = _timed(data, [40, 80, 33, 250, 40, 41, 1000, 7])
    assert decode_all(good, tiny)[:2] == ("ok", N_FRAMES)
    info = stream_info(good)
    assert info["version"] == 3 and info["timing"] == "per-frame" and info["duration_s"] == pytest.approx(1.491)
    cases = {
        "duration 0 (timestamps must increase)": (_timed(data, [40, 0] + [1] * 6), "duration 0 of frame 1"),
        "duration above 32 bits": (_timed(data, [2**32] + [1] * 7), "duration 4294967296 of frame 0"),
        "fewer durations than frames": (_timed(data, [40] * 7), "frame 7 has no timing"),
        "more durations than frames": (_timed(data, [40] * 9), "beyond the header's 8 frames"),
        "timing after its frame": (_timed(data, [40] * 8, at=2), "frame 0 has no timing"),
        "a time base of 0": (_timed(data, [40] * 8, time_base=(1, 0)), "time base 1/0"),
        "a time base beyond 32 bits": (_timed(data, [40] * 8, time_base=(2**32, 1)), "time_num 4294967296"),
    }
    for name, (bad, needle) in cases.items():
        outcome, msg, _ = decode_all(bad, tiny)
        assert outcome == "refused" and needle in msg, (name, msg)
        path = tmp_path / "bad.imf"
        path.write_bytes(bad)
        one_line_error(cli("decode", path, "-o", tmp_path / "o.mkv"), needle)
        one_line_error(cli("info", path), needle)
        assert not (tmp_path / "o.mkv").exists()
    # a lying count: refused from the payload size, never looped over
    recs = split(good)
    recs[1][1] = encode_varint(0) + encode_varint(2**60) + recs[1][1][2:]
    outcome, msg, _ = decode_all(join(recs, version=3), tiny)
    assert outcome == "refused" and "frame count 1152921504606846976 is outside" in msg
    # a version 1 or 2 stream has no timing records: a 'D' there is an unknown record type
    v1 = split(data)
    v1.insert(1, [ord("D"), encode_varint(0) + encode_varint(1) + encode_varint(40)])
    outcome, msg, _ = decode_all(join(v1), tiny)
    assert outcome == "refused" and "unknown packet type 0x44" in msg
    # damage in a timing record is a CRC error like any other, and concealment carries on past it
    bad = join(split(good)[:1], version=3) + join(split(good)[1:2], crc_ok=False)[9:] + join(split(good)[2:])[9:]
    assert decode_all(bad, tiny)[1].startswith("CRC mismatch in the timing record")
    outcome, n, report = decode_all(bad, tiny, conceal=True)
    assert outcome == "ok" and n == N_FRAMES and report.concealed == []


@pytest.mark.parametrize("base_codec", ["vp9", "av1"])
def test_forged_base_units_of_every_base_codec_decode_or_refuse(base_codec, hostile_clip, enh_tiny, tmp_path):
    """A forger who keeps the CRCs valid reaches the VP9 and SVT-AV1 base decoders (the default mode's and
    the third codec) with any bytes: flipped, truncated or random access units decode or are refused in one
    line, with or without --conceal, never another exception or a hang."""
    from conftest import HYBRID
    from imfcodec.api import encode_video
    from imfcodec.bitstream.format import TYPE_BASE
    from imfcodec.codec import EncoderSettings

    path = tmp_path / "h.imf"
    encode_video(hostile_clip, path, model=enh_tiny, settings=EncoderSettings(**{**HYBRID, "base_codec": base_codec}))
    recs = split(path.read_bytes())
    bases = [i for i, (t, _) in enumerate(recs) if t == TYPE_BASE]
    assert len(bases) == N_FRAMES  # chunk 1: one access unit per base packet

    def unit(payload: bytes) -> tuple[bytes, bytes]:
        """(frame and count varints, the one access unit)"""
        pos = 0
        for _ in range(3):  # frame, count, size
            while payload[pos] & 0x80:
                pos += 1
            pos += 1
            if _ == 1:
                head = payload[:pos]
        return head, payload[pos:]

    rng = np.random.default_rng(7)
    outcomes = set()
    for trial in range(24):
        k = bases[trial % len(bases)]
        head, au = unit(recs[k][1])
        au = bytearray(au)
        if trial % 3 == 0:
            for _ in range(4):
                au[rng.integers(0, len(au))] ^= int(rng.integers(1, 256))
        elif trial % 3 == 1:
            au = au[:rng.integers(1, len(au))] if len(au) > 1 else au
        else:
            au = bytearray(rng.integers(0, 256, len(au), dtype=np.uint8))
        forged = join(recs[:k] + [[TYPE_BASE, head + encode_varint(len(au)) + bytes(au)]] + recs[k + 1:], version=2)
        for conceal in (False, True):
            outcome, msg, _ = decode_all(forged, enh_tiny, conceal=conceal)
            outcomes.add(outcome)
            if outcome == "refused":
                assert "base layer" in msg, msg
    assert "refused" in outcomes  # the forgeries reached the decoder and some were caught
