"""The .imf container: round trips, exact overhead, and every validation rule failing on purpose."""

from __future__ import annotations

import dataclasses
import io
import re
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imfcodec.bitstream import (
    MAGIC,
    VERSION,
    EndPacket,
    KeyPacket,
    Limits,
    PacketRecord,
    StreamHeader,
    StreamReader,
    StreamWriter,
    TimingPacket,
    TokenPacket,
    decode_varint,
    encode_packet,
    encode_varint,
    is_imf_stream,
    iter_packet_records,
    packet_overhead,
    read_stream,
)
from imfcodec.errors import BitstreamError, CorruptStreamError, InputError, UnsupportedStreamError

TOKEN_DIM = 4


def make_header(**kw) -> StreamHeader:
    base = dict(model="imf-tiny", weights_hash=bytes(range(16)), width=64, height=64, fps_num=25, fps_den=1,
                frames=6, key_codec="png", key_quality=9, quality=6, chunk=3, token_dim=TOKEN_DIM,
                scale_indexes=(1, 2, 3, 63))
    base.update(kw)
    return StreamHeader(**base)


def key(frame: int, image: bytes = b"IMAGE") -> KeyPacket:
    return KeyPacket(frame=frame, key_token=bytes(range(2 * TOKEN_DIM)), image=image)


PACKETS = [key(0), TokenPacket(1, 3, b"\x01\x02\x03"), TokenPacket(4, 1, b"\xff" * 10), key(5, b"I2")]


def write_stream(header: StreamHeader | None = None, packets=PACKETS, end: int = 6) -> bytes:
    buf = io.BytesIO()
    w = StreamWriter(buf, header or make_header())
    for p in packets:
        w.write(p)
    w.close(EndPacket(end))
    assert w.bytes_written == len(buf.getvalue())
    return buf.getvalue()


def parse_all(data: bytes, limits: Limits = Limits()):
    return read_stream(data, limits)


def record(type_byte: bytes, payload: bytes) -> bytes:
    """A well-formed record (valid CRC) with arbitrary content, to reach checks behind the CRC."""
    length = encode_varint(len(payload))
    return type_byte + length + payload + zlib.crc32(type_byte + length + payload).to_bytes(4, "little")


def header_payload(h: StreamHeader, *, token_dim_field: int | None = None, extra: bytes = b"") -> bytes:
    from imfcodec.bitstream.format import encode_header

    raw = encode_header(h)
    if token_dim_field is not None:  # overwrite token_dim varint (second-to-last field) for malformed headers
        raw = raw[: -len(h.scale_indexes) - 1] + encode_varint(token_dim_field) + bytes(h.scale_indexes)
    return raw + extra


def stream_with_header_payload(payload: bytes) -> bytes:
    return MAGIC + bytes((1,)) + record(b"H", payload)  # version 1: a header without base-layer fields


def splice_packets(*records: bytes, header: StreamHeader | None = None) -> bytes:
    return stream_with_header_payload(header_payload(header or make_header())) + b"".join(records)


def payload(p) -> bytes:
    """The payload of a packet's record (strip type, 1-byte length and CRC)."""
    rec = encode_packet(p)
    assert rec[1] < 0x80
    return rec[2:-4]


# ------------------------------------------------------------------------------------------ timing (version 3)

TIMED = dict(time_num=1, time_den=1000)
DURATIONS = (40, 80, 33, 250, 40, 41)


def write_timed(packets=None, header: StreamHeader | None = None, end: int = 6) -> bytes:
    """A version 3 stream: the timing record first, then PACKETS (or ``packets``)."""
    if packets is None:
        packets = [TimingPacket(0, DURATIONS)] + PACKETS
    return write_stream(header or make_header(**TIMED), packets, end)


def test_timing_round_trip_and_version_rule():
    data = write_timed()
    assert data[8] == 3
    h, packets = parse_all(data)
    assert h.timed and (h.time_num, h.time_den) == (1, 1000)
    assert packets[0] == TimingPacket(0, DURATIONS) and packets[1:-1] == PACKETS
    # without a time base nothing changes: the same packets make the same version 1 bytes as before
    assert write_stream()[8] == 1 and not parse_all(write_stream())[0].timed
    # records may also come piecewise, each before the frames it times
    split_up = [TimingPacket(0, DURATIONS[:1]), key(0), TimingPacket(1, DURATIONS[1:5]), *PACKETS[1:3],
                TimingPacket(5, DURATIONS[5:]), PACKETS[3]]
    assert parse_all(write_timed(split_up))[1][:-1] == split_up
    # with a base layer too: version 3 carries the version 2 fields
    hybrid = make_header(**TIMED, token_dim=0, scale_indexes=(), quality=0, base_codec="hevc", base_width=32,
                         base_height=32, base_quality=13, frames=2)
    from imfcodec.bitstream import BasePacket

    recs = [TimingPacket(0, (1, 2)), KeyPacket(0, b"", b"I"), BasePacket(0, (b"A",)), BasePacket(1, (b"B",))]
    data = write_stream(hybrid, recs, 2)
    assert data[8] == 3 and parse_all(data) == (hybrid, recs + [EndPacket(2)])


def test_timing_record_overhead():
    """One byte of frame index and count, then a varint per frame (1 byte below 128 ticks, 2 below 16384)."""
    assert len(encode_packet(TimingPacket(0, (40,) * 100))) == 1 + 1 + 1 + 1 + 100 + 4
    assert len(encode_packet(TimingPacket(0, (1001,) * 100))) == 1 + 2 + 1 + 1 + 200 + 4


def test_timing_reader_rules():
    """The reader rules of FORMAT.md §3.5 and §4 for timing records, each failing on purpose."""
    h = make_header(**TIMED)
    hdr = header_payload(h)

    def stream(*records: bytes) -> bytes:
        return MAGIC + bytes((3,)) + record(b"H", hdr) + b"".join(records)

    def timing(frame: int, *values: int, count: int | None = None) -> bytes:
        body = encode_varint(frame) + encode_varint(len(values) if count is None else count)
        return record(b"D", body + b"".join(map(encode_varint, values)))

    rest = [encode_packet(p) for p in PACKETS]
    end = record(b"E", encode_varint(6))
    good = timing(0, *DURATIONS)
    assert len(parse_all(stream(good, *rest, end))[1]) == 6
    cases = {
        "duration 0": (stream(timing(0, 40, 0, 1, 1, 1, 1), *rest, end), "duration 0 of frame 1 is outside"),
        "duration above 32 bits": (stream(timing(0, 2**32, 1, 1, 1, 1, 1), *rest, end), "duration 4294967296"),
        "count 0": (stream(timing(0, count=0), *rest, end), "frame count 0 is outside"),
        "lying count": (stream(timing(0, 1, 2, count=2**40), *rest, end), "frame count 1099511627776 is outside"),
        "count short of its values": (stream(timing(0, 1, 2, 3, count=2), *rest, end), "1 unexpected bytes"),
        "not from frame 0": (stream(timing(1, *DURATIONS[1:]), *rest, end), "times frames from 1, expected frame 0"),
        "overlap": (stream(timing(0, 1, 1), timing(1, 1, 1, 1, 1, 1), *rest, end), "from 1, expected frame 2"),
        "a frame before its time": (stream(timing(0, 1), *rest, end), "frame 1 has no timing"),
        "no timing at all": (stream(*rest, end), "frame 0 has no timing"),
        "after the frames": (stream(*rest, timing(0, *DURATIONS), end), "frame 0 has no timing"),
        "more timed than sent": (stream(timing(0, *DURATIONS, 5), *rest, end), "beyond the header's 6 frames"),
        "beyond the header": (stream(timing(0, *DURATIONS), timing(6, 9), *rest, end), "beyond the header's 6"),
        "varint overlong": (stream(record(b"D", b"\x00\x01\x80\x00"), *rest, end), "non-minimal"),
    }
    for name, (data, needle) in cases.items():
        with pytest.raises(CorruptStreamError, match=re.escape(needle)):
            parse_all(data)
    # END compares the timed frames with the stream's when the header does not know the count
    h0 = make_header(**TIMED, frames=0)
    data = MAGIC + bytes((3,)) + record(b"H", header_payload(h0)) + timing(0, *DURATIONS, 7) + b"".join(rest) + end
    with pytest.raises(CorruptStreamError, match="timing records cover 7 frames but the stream holds 6"):
        parse_all(data)
    # reader Limits: a timing record past max_frames is unsupported, not corrupt
    data = MAGIC + bytes((3,)) + record(b"H", header_payload(h0)) + good + b"".join(rest) + end
    with pytest.raises(UnsupportedStreamError, match="Limits.max_frames"):
        parse_all(data, Limits(max_frames=5))
    # a timing record is a record type of version 3 only
    v1 = MAGIC + bytes((1,)) + record(b"H", header_payload(make_header())) + good + b"".join(rest) + end
    with pytest.raises(CorruptStreamError, match="unknown packet type 0x44"):
        parse_all(v1)
    # a version 3 header needs a time base; its terms are 32-bit like the frame rate's
    from imfcodec.bitstream.format import encode_header

    for tb, needle in (((0, 1000), "time base 0/1000"), ((1, 0), "time base 1/0"),
                       ((2**32, 1), "time_num 4294967296 is outside")):
        raw = encode_header(make_header()) + bytes((0,)) + encode_varint(tb[0]) + encode_varint(tb[1])
        with pytest.raises(CorruptStreamError, match=re.escape(needle)):
            parse_all(MAGIC + bytes((3,)) + record(b"H", raw) + b"".join(rest) + end)


def test_timing_end_time_is_bounded():
    """Presentation times stay within int64 (what containers hold), whatever the frame count allows."""
    from imfcodec.bitstream.format import MAX_TIME
    from imfcodec.bitstream.reader import _Cursor, _timing_packet

    body = encode_varint(0) + encode_varint(2) + encode_varint(2**32 - 1) * 2
    assert _timing_packet(_Cursor(body, 0, "t"), MAX_TIME - 2**33 + 2).count == 2  # ends at MAX_TIME
    with pytest.raises(CorruptStreamError, match="frame 1 ends at tick"):
        _timing_packet(_Cursor(body, 0, "t"), MAX_TIME - 2**33 + 3)


def test_timing_writer_enforces_reader_rules():
    h = make_header(**TIMED)
    cases = [
        ([key(0)], "frame 0 has no timing"),
        ([TimingPacket(1, (1,))], "starts at frame 1, expected 0"),
        ([TimingPacket(0, ())], "times no frames"),
        ([TimingPacket(0, (0,))], "durations must be integers in 1..4294967295"),
        ([TimingPacket(0, (1,) * 7)], "beyond the stream's"),
    ]
    for packets, needle in cases:
        w = StreamWriter(io.BytesIO(), h)
        with pytest.raises(InputError, match=re.escape(needle)):
            for p in packets:
                w.write(p)
    with pytest.raises(InputError, match="need a header with a time base"):
        StreamWriter(io.BytesIO(), make_header()).write(TimingPacket(0, (1,)))
    w = StreamWriter(io.BytesIO(), h)
    w.write(TimingPacket(0, DURATIONS[:5]))
    for p in PACKETS[:3]:
        w.write(p)
    with pytest.raises(InputError, match="cover 5 frames but 5 were written|frame 5 has no timing"):
        w.write(PACKETS[3])
    with pytest.raises(InputError, match="time_den 0 is outside"):
        StreamWriter(io.BytesIO(), make_header(time_num=1, time_den=0))


# ------------------------------------------------------------------------------------------ round trips

def test_round_trip_all_packet_kinds():
    h = make_header()
    data = write_stream(h)
    assert data.startswith(MAGIC) and data[8] == 1 and VERSION == 6  # token-only streams stay version 1
    header, packets = parse_all(data)
    assert header == h
    assert packets == PACKETS + [EndPacket(6)]
    assert isinstance(header.scale_indexes, tuple) and isinstance(header.weights_hash, bytes)


def test_round_trip_unknown_frame_count_and_reader_end_attribute():
    data = write_stream(make_header(frames=0))
    r = StreamReader(io.BytesIO(data))
    assert r.header.frames == 0 and r.end is None
    assert list(r)[-1] == EndPacket(6) == r.end


def test_empty_stream_with_only_end_is_valid():
    data = write_stream(make_header(frames=0), packets=[], end=0)
    assert parse_all(data)[1] == [EndPacket(0)]


def test_fps_rational_and_long_names_round_trip():
    h = make_header(fps_num=30000, fps_den=1001, model="m" * 64, key_codec="hevc", frames=0,
                    width=4096, height=17, token_dim=256, scale_indexes=tuple(range(256)))
    big_key = KeyPacket(0, bytes(512), b"x" * 300)  # 2-byte length varint
    data = write_stream(h, packets=[big_key], end=1)
    header, packets = parse_all(data)
    assert header == h and packets[0] == big_key


def test_reader_does_not_need_seekable_input():
    class Pipe(io.RawIOBase):
        def __init__(self, data):
            self.b = io.BytesIO(data)

        def readable(self):
            return True

        def readinto(self, buf):  # short reads, like a pipe
            chunk = self.b.read(min(len(buf), 3))
            buf[: len(chunk)] = chunk
            return len(chunk)

    data = write_stream()
    assert list(StreamReader(Pipe(data))) == PACKETS + [EndPacket(6)]
    with pytest.raises(CorruptStreamError, match="trailing"):
        list(StreamReader(Pipe(data + b"\0")))
    with pytest.raises(CorruptStreamError, match="truncated"):
        list(StreamReader(Pipe(data[:-1])))


def test_reader_starts_at_current_position_of_file():
    data = write_stream()
    f = io.BytesIO(b"junk" + data)
    f.seek(4)
    r = StreamReader(f)
    recs = [rec for rec, _ in r.records()]
    assert recs[0].offset == r.header_record.offset + r.header_record.total_len


def test_packet_records_sizes_add_up():
    data = write_stream()
    recs = list(iter_packet_records(data))
    assert [r.type for r in recs] == ["K", "T", "T", "K", "E"]
    hdr = StreamReader(io.BytesIO(data)).header_record
    assert hdr.type == "H" and hdr.offset == 9
    assert recs[0].offset == hdr.offset + hdr.total_len
    for a, b in zip(recs, recs[1:]):
        assert a.offset + a.total_len == b.offset
    assert recs[-1].offset + recs[-1].total_len == len(data)
    assert all(isinstance(r, PacketRecord) and r.total_len == r.payload_len + 6 for r in recs)


def test_iter_packet_records_accepts_path_and_file(tmp_path):
    data = write_stream()
    p = tmp_path / "a.imf"
    p.write_bytes(data)
    assert list(iter_packet_records(p)) == list(iter_packet_records(io.BytesIO(data))) == list(
        iter_packet_records(data))


def test_is_imf_stream(tmp_path):
    data = write_stream()
    p = tmp_path / "a.imf"
    p.write_bytes(data)
    assert is_imf_stream(data) and is_imf_stream(p) and is_imf_stream(str(p))
    assert not is_imf_stream(b"\x89PNG\r\n\x1a\n") and not is_imf_stream(b"")
    assert not is_imf_stream(tmp_path / "missing.imf") and not is_imf_stream(tmp_path)


# ------------------------------------------------------------------------------------------ overhead

def test_token_packet_overhead_is_exact():
    # type 1 + length 1 + frame varint + count 1 + CRC 4
    assert len(encode_packet(TokenPacket(5, 1, bytes(10)))) == 10 + 8
    assert packet_overhead(TokenPacket(5, 1, bytes(10))) == 8
    assert packet_overhead(TokenPacket(200, 1, bytes(10))) == 9  # frame >= 128: 2-byte varint
    assert packet_overhead(TokenPacket(200, 5, bytes(50))) == 9
    assert packet_overhead(TokenPacket(20000, 5, bytes(50))) == 10  # frame >= 16384
    assert packet_overhead(TokenPacket(200, 25, bytes(250))) == 10  # payload >= 128: 2-byte length
    assert packet_overhead(EndPacket(250)) == 8
    assert packet_overhead(KeyPacket(0, bytes(64), bytes(3000))) == 1 + 2 + 1 + 1 + 4


def test_writer_returns_record_size():
    buf = io.BytesIO()
    w = StreamWriter(buf, make_header())
    start = len(buf.getvalue())
    assert w.write(key(0)) == len(encode_packet(key(0))) == len(buf.getvalue()) - start


def test_varint_round_trip_and_limits():
    for v in (0, 1, 127, 128, 300, 2**32, 2**64 - 1):
        raw = encode_varint(v)
        it = iter(raw)
        assert decode_varint(lambda: next(it, None), 0, "x", CorruptStreamError) == v
    assert len(encode_varint(2**64 - 1)) == 10
    for bad, msg in ((b"\x80" * 11, "longer than 10"), (b"\xff" * 9 + b"\x02", "exceeds 64 bits"),
                     (b"\x80\x00", "non-minimal"), (b"\x80", "truncated")):
        it = iter(bad)
        with pytest.raises(CorruptStreamError, match=msg):
            decode_varint(lambda: next(it, None), 0, "x", CorruptStreamError)
    with pytest.raises(ValueError):
        encode_varint(-1)


# ------------------------------------------------------------------------------------------ corruption

def test_flipped_byte_in_each_record_is_a_crc_error():
    data = write_stream()
    recs = [StreamReader(io.BytesIO(data)).header_record] + list(iter_packet_records(data))
    for rec in recs:
        pos = rec.offset + rec.total_len - 5  # last payload byte
        bad = bytearray(data)
        bad[pos] ^= 0x40
        with pytest.raises(CorruptStreamError, match=f"CRC mismatch .* at byte {rec.offset}"):
            parse_all(bytes(bad))
        bad = bytearray(data)
        bad[rec.offset + rec.total_len - 1] ^= 1  # the CRC itself
        with pytest.raises(CorruptStreamError, match="CRC mismatch"):
            parse_all(bytes(bad))


def test_every_truncation_raises_bitstream_error():
    data = write_stream()
    for n in range(len(data)):
        with pytest.raises(BitstreamError):
            parse_all(data[:n])


def test_every_single_bit_flip_raises_bitstream_error():
    data = write_stream()
    for i in range(len(data)):
        for bit in (0, 7):
            bad = bytearray(data)
            bad[i] ^= 1 << bit
            with pytest.raises(BitstreamError):
                parse_all(bytes(bad))


def test_missing_end_packet():
    data = write_stream()
    end = list(iter_packet_records(data))[-1]
    with pytest.raises(CorruptStreamError, match="without an END packet"):
        parse_all(data[: end.offset])


def test_trailing_garbage_after_end():
    with pytest.raises(CorruptStreamError, match="3 trailing bytes after the END packet"):
        parse_all(write_stream() + b"abc")


def test_bad_magic_and_text_mode_damage():
    data = write_stream()
    with pytest.raises(BitstreamError, match="not an imfcodec stream"):
        parse_all(b"RIFF" + data[4:])
    with pytest.raises(BitstreamError, match="not an imfcodec stream"):
        parse_all(b"")
    with pytest.raises(CorruptStreamError, match="text-mode"):
        parse_all(data.replace(b"\r\n", b"\n", 1))


def test_bad_version():
    data = bytearray(write_stream())
    for v in (0, 7, 255):
        data[8] = v
        with pytest.raises(UnsupportedStreamError, match=f"version {v} at byte 8"):
            parse_all(bytes(data))


def test_lying_length_field():
    data = write_stream()
    rec = list(iter_packet_records(data))[1]  # a token packet, 1-byte length
    bad = bytearray(data)
    bad[rec.offset + 1] = 0x7F  # claims 127 bytes; the CRC no longer matches either way
    with pytest.raises(CorruptStreamError):
        parse_all(bytes(bad))
    # a huge length must be rejected from the file size, without trying to read it
    huge = data[: rec.offset] + b"T" + encode_varint(2**40) + b"\0" * 10
    with pytest.raises(CorruptStreamError, match=f"record at byte {rec.offset} declares {2**40}"):
        parse_all(huge)
    overflow = data[: rec.offset] + b"T" + b"\xff" * 12
    with pytest.raises(CorruptStreamError, match="longer than 10 bytes"):
        parse_all(overflow)


def test_max_packet_limit():
    data = write_stream(make_header(frames=1), packets=[key(0, b"x" * 500)], end=1)
    parse_all(data)
    with pytest.raises(UnsupportedStreamError, match="Limits.max_packet"):
        parse_all(data, Limits(max_packet=100))
    with pytest.raises(UnsupportedStreamError, match="max_packet"):  # the header is a record too
        parse_all(data, Limits(max_packet=10))


def test_unknown_packet_type_and_second_header():
    good = record(b"K", payload(key(0)))
    with pytest.raises(CorruptStreamError, match="unknown packet type 0x51 at byte"):
        parse_all(splice_packets(good, record(b"Q", b"\x01")))
    with pytest.raises(CorruptStreamError, match="second header"):
        parse_all(splice_packets(good, record(b"H", b"\x01")))
    with pytest.raises(CorruptStreamError, match="expected the header record at byte 9"):
        parse_all(MAGIC + bytes((VERSION,)) + good)


def test_header_width_and_height_limits():
    for field in ("width", "height"):
        data = stream_with_header_payload(header_payload(make_header(**{field: 100_000})))
        with pytest.raises(UnsupportedStreamError, match=f"{field} 100000 is outside 1..4096"):
            StreamReader(io.BytesIO(data))
        data = stream_with_header_payload(header_payload(make_header(**{field: 0})))
        with pytest.raises(CorruptStreamError, match=f"{field} 0"):
            StreamReader(io.BytesIO(data))
    data = stream_with_header_payload(header_payload(make_header(width=5000))) + record(b"E", b"\x00")
    assert StreamReader(io.BytesIO(data), Limits(max_width=8192)).header.width == 5000


def test_header_field_validation():
    cases = {
        "token_dim": header_payload(make_header(), token_dim_field=0),
        "token_dim 257": header_payload(make_header(), token_dim_field=257),
        "unexpected bytes": header_payload(make_header(), extra=b"\0"),
        "scale indexes": header_payload(make_header(), token_dim_field=5),  # 5 declared, 4 present
        "fps_num 0": header_payload(make_header(fps_num=0)),
        "fps_den 0": header_payload(make_header(fps_den=0)),
        "chunk size 0": header_payload(make_header(chunk=0)),
        "chunk size 5000": header_payload(make_header(chunk=5000)),
        "model name": header_payload(make_header(model="bad\nname")),
        "key codec name": header_payload(make_header(key_codec="")),
        "model name at byte 12 needs 5": b"\x05ab",  # cut short
    }
    for msg, pl in cases.items():
        with pytest.raises(CorruptStreamError, match=msg):
            StreamReader(io.BytesIO(stream_with_header_payload(pl)))


def test_header_frame_limit():
    data = stream_with_header_payload(header_payload(make_header(frames=2_000_000)))
    with pytest.raises(UnsupportedStreamError, match="frame count 2000000"):
        StreamReader(io.BytesIO(data))


def test_frame_indices_must_be_contiguous():
    k0 = record(b"K", payload(key(0)))
    end1 = record(b"E", encode_varint(1))
    cases = {
        "starts at frame 3, expected frame 1": [k0, record(b"T", payload(TokenPacket(3, 1, b"x")))],
        "starts at frame 0, expected frame 1": [k0, record(b"K", payload(key(0)))],
        "starts at frame 2, expected frame 0": [record(b"K", payload(key(2)))],
        "before any key packet": [record(b"T", payload(TokenPacket(0, 1, b"x")))],
        "says 1 frames but the packets hold 4": [k0, record(b"T", payload(TokenPacket(1, 3, b"x"))), end1],
        "says 7 frames but the packets hold 1": [k0, record(b"E", encode_varint(7))],
    }
    for msg, recs in cases.items():
        with pytest.raises(CorruptStreamError, match=msg):
            parse_all(splice_packets(*recs, header=make_header(frames=0)))


def test_counts_bounded_by_chunk_and_limits():
    k0 = record(b"K", payload(key(0)))
    for count in (0, 4):  # chunk is 3
        with pytest.raises(CorruptStreamError, match=f"frame count {count} is outside 1..3"):
            parse_all(splice_packets(k0, record(b"T", payload(TokenPacket(1, count, b"x")))))
    with pytest.raises(UnsupportedStreamError, match="frame 3 is beyond the limit of 3 frames"):
        parse_all(write_stream(make_header(frames=0)), Limits(max_frames=3))
    with pytest.raises(UnsupportedStreamError, match="frame count 6 is outside 0..5"):
        parse_all(write_stream(), Limits(max_frames=5))  # the header count is checked first
    with pytest.raises(CorruptStreamError, match="beyond the header's 2 frames"):
        parse_all(splice_packets(k0, record(b"T", payload(TokenPacket(1, 3, b"x"))),
                                 header=make_header(frames=2)))
    with pytest.raises(CorruptStreamError, match="the header says 6"):
        parse_all(splice_packets(k0, record(b"E", encode_varint(1))))


def test_key_packet_validation():
    with pytest.raises(CorruptStreamError, match="key token is 3 bytes, expected 8"):
        parse_all(splice_packets(record(b"K", b"\x00\x03abcIMG")))
    with pytest.raises(CorruptStreamError, match="empty key-frame image"):
        parse_all(splice_packets(record(b"K", b"\x00\x08" + bytes(8))))
    with pytest.raises(CorruptStreamError, match="needs 8 bytes"):
        parse_all(splice_packets(record(b"K", b"\x00\x08abc")))
    with pytest.raises(CorruptStreamError, match="non-minimal"):
        parse_all(splice_packets(record(b"K", b"\x80\x00\x08" + bytes(8) + b"I")))
    with pytest.raises(CorruptStreamError, match="unexpected bytes"):
        parse_all(splice_packets(record(b"K", payload(key(0))), record(b"E", b"\x01\x00"),
                                 header=make_header(frames=0)))


def test_error_messages_are_one_line_with_offset():
    data = write_stream()
    for bad in (data[:-3], data + b"x", b"x" + data[1:], data[:8] + b"\x07" + data[9:]):
        with pytest.raises(BitstreamError) as e:
            parse_all(bad)
        assert "\n" not in str(e.value) and "byte" in str(e.value)


def test_text_mode_file_is_rejected(tmp_path):
    p = tmp_path / "a.imf"
    p.write_bytes(write_stream())
    with open(p, encoding="latin-1") as f, pytest.raises(InputError, match="binary mode"):
        StreamReader(f)


# ------------------------------------------------------------------------------------------ writer

def test_writer_rejects_invalid_header():
    bad = [dict(weights_hash=b"short"), dict(width=0), dict(height=5000), dict(fps_den=0), dict(chunk=0),
           dict(token_dim=3), dict(model="é"), dict(key_codec="x" * 65), dict(quality=256),
           dict(scale_indexes=(1, 2, 3, 300)), dict(frames=-1), dict(width=True)]
    for kw in bad:
        with pytest.raises(InputError, match="invalid stream header"):
            StreamWriter(io.BytesIO(), make_header(**kw))


def test_writer_enforces_reader_rules():
    def writer(h=None):
        w = StreamWriter(io.BytesIO(), h or make_header())
        return w

    with pytest.raises(InputError, match="first packet must be a key"):
        writer().write(TokenPacket(0, 1, b"x"))
    w = writer()
    w.write(key(0))
    with pytest.raises(InputError, match="expected 1"):
        w.write(TokenPacket(2, 1, b"x"))
    with pytest.raises(InputError, match="outside 1..3"):
        w.write(TokenPacket(1, 4, b"x"))
    with pytest.raises(InputError, match="key token"):
        w.write(KeyPacket(1, b"12", b"img"))
    with pytest.raises(InputError, match="empty image"):
        w.write(KeyPacket(1, bytes(8), b""))
    with pytest.raises(InputError, match="close"):
        w.write(EndPacket(1))
    with pytest.raises(InputError, match="END says 2"):
        w.close(EndPacket(2))
    with pytest.raises(InputError, match="header says 6"):
        w.close(EndPacket(1))
    w = writer(make_header(frames=0))
    w.write(key(0))
    w.close(EndPacket(1))
    with pytest.raises(InputError, match="after close"):
        w.write(key(1))


def test_writer_accepts_dataclass_replace_and_bytes_like():
    h = dataclasses.replace(make_header(), frames=1)
    buf = io.BytesIO()
    w = StreamWriter(buf, h)
    w.write(KeyPacket(0, bytearray(8), memoryview(b"img")))
    w.close(EndPacket(1))
    assert parse_all(buf.getvalue())[1][0] == KeyPacket(0, bytes(8), b"img")


# ------------------------------------------------------------------------------------------ fuzzing

VALID = write_stream()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(["flip", "set", "insert", "delete", "truncate"]),
                          st.integers(0, len(VALID) - 1), st.integers(0, 255)), min_size=1, max_size=4))
def test_random_mutations_parse_or_raise_bitstream_error(edits):
    data = bytearray(VALID)
    for op, pos, val in edits:
        pos %= max(1, len(data))
        if op == "flip" and data:
            data[pos] ^= 1 << (val % 8)
        elif op == "set" and data:
            data[pos] = val
        elif op == "insert":
            data.insert(pos, val)
        elif op == "delete" and data:
            del data[pos]
        elif op == "truncate":
            del data[pos:]
    try:
        header, packets = parse_all(bytes(data))
    except BitstreamError:
        return
    assert isinstance(packets[-1], EndPacket)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_after_magic_raise_bitstream_error(tail):
    """A valid stream needs a header record with a matching CRC-32: random bytes never have one."""
    with pytest.raises(BitstreamError):
        parse_all(MAGIC + bytes((VERSION,)) + tail)


_VARINTS = st.integers(0, 2**64 - 1).map(encode_varint)
_PAYLOADS = st.one_of(
    st.binary(max_size=24),
    st.tuples(_VARINTS, _VARINTS, st.binary(max_size=12)).map(lambda t: b"".join(t)),  # varint-shaped fields
    st.tuples(st.integers(0, 8), st.integers(1, 4)).map(lambda t: payload(TokenPacket(t[0], t[1], b"d"))),
    st.integers(0, 8).map(lambda f: payload(key(f))),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(b"KTEHQ"), _PAYLOADS), max_size=6), st.booleans())
def test_random_records_with_valid_crcs_parse_or_raise_bitstream_error(recs, zero_frames):
    """Records that pass the CRC still reach every semantic check; none may crash the reader."""
    data = splice_packets(*(record(bytes((t,)), pl) for t, pl in recs),
                          header=make_header(frames=0 if zero_frames else 6))
    try:
        _header, packets = parse_all(data)
    except BitstreamError:
        return
    assert isinstance(packets[-1], EndPacket)
