"""Format version 4 (FORMAT.md §3.1, §3.4): the header's flags byte and the 'b' record, a base packet whose
frames the decoder shows without the enhancer. Streams that do not use the switch keep versions 1-3."""

from __future__ import annotations

import io
import zlib

import pytest
from helpers import write_packets

from imfcodec.bitstream import (
    BasePacket,
    EndPacket,
    KeyPacket,
    ResyncReader,
    StreamHeader,
    StreamWriter,
    TimingPacket,
    encode_packet,
    encode_varint,
    iter_packet_records,
    read_stream,
)
from imfcodec.bitstream.format import encode_header
from imfcodec.errors import CorruptStreamError, InputError


def header(**kw) -> StreamHeader:
    base = dict(model="enh-tiny", weights_hash=bytes(range(16)), width=64, height=64, fps_num=25, fps_den=1,
                frames=0, key_codec="hevc", key_quality=16, quality=0, chunk=2, token_dim=0, scale_indexes=(),
                base_codec="vp9", base_width=32, base_height=32, base_quality=8, enhancer_switch=True)
    base.update(kw)
    return StreamHeader(**base)


PACKETS = [KeyPacket(0, b"", b"IMG"), BasePacket(0, (b"AU0", b"AU1"), enhance=False), BasePacket(2, (b"AU2",)),
           KeyPacket(3, b"", b"IMG2"), BasePacket(3, (b"AU3",), enhance=False)]


def write(h: StreamHeader, packets=PACKETS, end: int = 4) -> bytes:
    return write_packets(h, packets, end)


def record(type_byte: bytes, payload: bytes) -> bytes:
    length = encode_varint(len(payload))
    return type_byte + length + payload + zlib.crc32(type_byte + length + payload).to_bytes(4, "little")


def test_switch_round_trips_as_version_4_with_b_records():
    data = write(header())
    assert data[8] == 4
    h, packets = read_stream(data)
    assert h == header() and packets == PACKETS + [EndPacket(4)]
    assert [r.type for r in iter_packet_records(data)] == ["K", "b", "B", "K", "b", "E"]
    # a 'b' record is a 'B' record with another type byte: the switch costs no byte per packet
    on, off = encode_packet(BasePacket(0, (b"AU",))), encode_packet(BasePacket(0, (b"AU",), enhance=False))
    assert len(on) == len(off) and on[0:1] == b"B" and off[0:1] == b"b" and on[1:-4] == off[1:-4]


def test_flags_byte_and_timing_in_version_4():
    plain = encode_header(header(enhancer_switch=False))
    assert encode_header(header()) == plain + b"\x02"  # the version 2 fields, then the flags
    timed = header(time_num=1, time_den=1000, frames=4)
    plain4 = encode_header(header(enhancer_switch=False, frames=4))
    assert encode_header(timed) == plain4 + b"\x03" + encode_varint(1) + encode_varint(1000)
    recs = [TimingPacket(0, (40, 40, 40, 40))] + PACKETS
    data = write(timed, recs)
    assert data[8] == 4 and read_stream(data) == (timed, recs + [EndPacket(4)])


def test_streams_without_the_switch_keep_their_version():
    h = header(enhancer_switch=False)
    data = write(h, [p if not isinstance(p, BasePacket) else BasePacket(p.frame, p.units) for p in PACKETS])
    assert data[8] == 2 and not read_stream(data)[0].enhancer_switch


def test_writer_refuses_b_records_without_the_switch():
    w = StreamWriter(io.BytesIO(), header(enhancer_switch=False))
    w.write(KeyPacket(0, b"", b"I"))
    with pytest.raises(InputError, match="enhancer switch"):
        w.write(BasePacket(0, (b"A",), enhance=False))
    with pytest.raises(InputError, match="needs a base layer"):
        StreamWriter(io.BytesIO(), header(base_codec="", base_width=0, base_height=0, base_quality=0,
                                          token_dim=1, scale_indexes=(1,), quality=6))


def test_reader_refuses_b_records_and_bad_flags():
    # a 'b' record in a version 2 stream is an unknown type
    v2 = write(header(enhancer_switch=False), [KeyPacket(0, b"", b"I"), BasePacket(0, (b"A",))], 1)
    end = v2.rindex(b"E")
    payload = encode_packet(BasePacket(1, (b"A",)))[2:-4]
    forged = v2[:end] + record(b"b", payload) + encode_packet(EndPacket(2))
    with pytest.raises(CorruptStreamError, match="unknown packet type 0x62"):
        read_stream(forged)
    # version 4 whose header lacks the switch flag: a 'b' record is refused by name
    raw = bytearray(encode_header(header(enhancer_switch=False)) + b"\x01" + encode_varint(1) + encode_varint(25))
    stream = b"\x8bIMF\r\n\x1a\n" + b"\x04" + record(b"H", bytes(raw))
    stream += encode_packet(TimingPacket(0, (1,))) + encode_packet(KeyPacket(0, b"", b"I"))
    stream += record(b"b", payload[:0] + encode_varint(0) + payload[1:]) + encode_packet(EndPacket(1))
    with pytest.raises(CorruptStreamError, match="no enhancer switch"):
        read_stream(stream)
    # unknown flag bits
    bad = b"\x8bIMF\r\n\x1a\n" + b"\x04" + record(b"H", encode_header(header(enhancer_switch=False)) + b"\x06")
    with pytest.raises(CorruptStreamError, match="unknown header flags 0x06"):
        read_stream(bad + encode_packet(EndPacket(0)))
    # the switch in a header without a base layer
    tok = header(base_codec="", base_width=0, base_height=0, base_quality=0, token_dim=1, scale_indexes=(1,),
                 quality=6, enhancer_switch=False)
    v4 = b"\x8bIMF\r\n\x1a\n" + b"\x04" + record(b"H", encode_header(tok) + b"\x00\x02")
    with pytest.raises(CorruptStreamError, match="needs a base layer"):
        read_stream(v4 + encode_packet(EndPacket(0)))


def test_concealing_reader_finds_b_records_after_damage():
    data = bytearray(write(header()))
    recs = list(iter_packet_records(bytes(data)))
    first_b = recs[1]
    data[first_b.offset + 3] ^= 0xFF  # damage the first 'b' record's payload
    r = ResyncReader(io.BytesIO(bytes(data)))
    got = [x for x in r]
    packets = [p for x in got if isinstance(x, tuple) for p in [x[1]]]
    assert BasePacket(3, (b"AU3",), enhance=False) in packets and BasePacket(2, (b"AU2",)) in packets
    assert r.end == EndPacket(4)
