"""Format version 5 (FORMAT.md §3.7): lean base records (no frame index, a CRC-16, AV1 units without sizes) and
the key pictures in the base layer (the intra base flag, 'I' records), from the bytes up to the codec."""

from __future__ import annotations

import binascii
import io

import numpy as np
import pytest
from helpers import write_packets

from imfcodec.bitstream import (
    BasePacket,
    EndPacket,
    KeyPacket,
    ResyncReader,
    StreamHeader,
    StreamWriter,
    encode_packet,
    encode_varint,
    iter_packet_records,
    read_stream,
)
from imfcodec.bitstream.format import LeanFraming, encode_header, frame_record
from imfcodec.bitstream.obu import split_units, unit_problem
from imfcodec.errors import ArgumentError, CorruptStreamError, InputError, UnsupportedStreamError


def obu(obu_type: int, payload: bytes) -> bytes:
    """One AV1 OBU with its size field (the form the base layer stores)."""
    return bytes(((obu_type << 3) | 0x02,)) + encode_varint(len(payload)) + payload


def unit(n: int, key: bool = False) -> bytes:
    """A temporal unit as the AV1 base layer makes one: [sequence header] + one OBU_FRAME."""
    return (obu(1, b"SEQ") if key else b"") + obu(6, bytes([n]) * (3 + n))


def header(**kw) -> StreamHeader:
    base = dict(model="enh-tiny", weights_hash=bytes(range(16)), width=64, height=64, fps_num=25, fps_den=1,
                frames=0, key_codec="av1", key_quality=13, quality=0, chunk=3, token_dim=0, scale_indexes=(),
                base_codec="av1", base_width=32, base_height=32, base_quality=13, enhancer_switch=True,
                lean=True, intra_base=True)
    base.update(kw)
    return StreamHeader(**base)


INTRA = [BasePacket(0, (unit(0, True), unit(1), unit(2)), key=True), BasePacket(3, (unit(3), unit(4), unit(5))),
         BasePacket(6, (unit(6),), enhance=False), BasePacket(7, (unit(7, True), unit(8)), key=True, enhance=False)]


def write(h: StreamHeader, packets, end: int) -> bytes:
    return write_packets(h, packets, end)


def test_intra_base_round_trips_as_version_5_with_lean_records():
    data = write(header(), INTRA, 9)
    assert data[8] == 5
    h, packets = read_stream(data)
    assert h == header() and packets == INTRA + [EndPacket(9)]
    assert [r.type for r in iter_packet_records(data)] == ["I", "B", "c", "i", "E"]


def test_lean_record_costs_five_bytes_for_av1_and_sizes_for_others():
    units = (unit(1) * 10, unit(2) * 10, unit(3) * 10)  # 60, 70, 80 bytes: a 2-byte length, 1-byte sizes
    data = b"".join(units)
    rec = encode_packet(BasePacket(3, units), header())
    assert len(rec) == len(data) + 5 and rec[0] == ord("B")  # type, 2-byte length, CRC-16: no frame, no sizes
    vp9 = header(base_codec="vp9", key_codec="hevc", key_quality=16, base_quality=8, intra_base=False)
    rec = encode_packet(BasePacket(3, units), vp9)
    assert len(rec) == len(data) + 5 + 2  # sizes of all units but the last
    short = encode_packet(BasePacket(3, units[:2]), header())
    assert short[0] == ord("C") and len(short) == len(units[0] + units[1]) + 5 + 1  # its count


def test_lean_separate_key_layout_round_trips_with_unit_sizes():
    h = header(base_codec="vp9", key_codec="hevc", key_quality=16, base_quality=8, intra_base=False)
    packets = [KeyPacket(0, b"", b"IMG"), BasePacket(0, (b"A0", b"A1", b"A2")), BasePacket(3, (b"A3",), enhance=False),
               KeyPacket(4, b"", b"IMG2"), BasePacket(4, (b"A4", b"A5"))]
    data = write(h, packets, 6)
    assert data[8] == 5 and read_stream(data)[1] == packets + [EndPacket(6)]
    assert [r.type for r in iter_packet_records(data)] == ["K", "B", "c", "K", "C", "E"]


def test_crc16_is_checked():
    data = bytearray(write(header(), INTRA, 9))
    rec = list(iter_packet_records(bytes(data)))[1]
    data[rec.offset + rec.total_len - 1] ^= 0x01
    with pytest.raises(CorruptStreamError, match="CRC mismatch in the base record"):
        read_stream(bytes(data))


@pytest.mark.parametrize("bad, why", [
    (obu(6, b"xx")[:1] + b"\x7f", "declares 127 bytes, only 0 remain"),  # a size beyond the payload
    (obu(6, b"xx")[:1] + b"\xff", "its size runs past the data"),  # a size field cut short
    (bytes((6 << 3,)) + b"\x02xx", "no size field"),
    (bytes((0x80 | (6 << 3) | 2,)) + b"\x01x", "forbidden bit"),
    (obu(2, b"") + unit(1), "type 2"),  # a temporal delimiter is never stored
    (obu(1, b"SEQ"), "0 complete frames"),  # no frame
    (unit(1) + unit(2), "more than 1 frames"),
])
def test_av1_units_that_do_not_split_are_refused(bad, why):
    with pytest.raises(ValueError, match=why):
        split_units(bad, 1)
    payload = encode_varint(0) + encode_varint(1) + bad
    h = header()
    data = write(h, [], 0)
    forged = data[:-7] + frame_record(ord("I"), payload, lean=True) + encode_packet(EndPacket(1))
    with pytest.raises(CorruptStreamError, match="do not split into 1 frames"):
        read_stream(forged)


def test_writer_refuses_what_a_reader_would():
    w = StreamWriter(io.BytesIO(), header())
    with pytest.raises(InputError, match="key packets are not allowed"):
        w.write(KeyPacket(0, b"", b"IMG"))
    with pytest.raises(InputError, match="first packet must be a key"):
        w.write(BasePacket(0, (unit(0),)))
    with pytest.raises(InputError, match="cannot be stored without its size"):
        w.write(BasePacket(0, (b"\x12\x00" + unit(0),), key=True))  # with its temporal delimiter
    assert unit_problem(unit(0, True)) is None
    w = StreamWriter(io.BytesIO(), header(intra_base=False, key_codec="hevc", key_quality=16))
    w.write(KeyPacket(0, b"", b"IMG"))
    with pytest.raises(InputError, match="key=True needs"):
        w.write(BasePacket(0, (unit(0),), key=True))


def test_header_rules_of_version_5():
    with pytest.raises(InputError, match="need lean base records"):
        write(header(lean=False), [], 0)
    with pytest.raises(InputError, match="need a base layer"):
        write(header(base_codec="", base_width=0, base_height=0, base_quality=0, enhancer_switch=False,
                     intra_base=False, token_dim=1, scale_indexes=(0,), key_codec="png"), [], 0)
    # the intra base flag in a version 4 stream is an unknown flag
    v4 = header(lean=False, intra_base=False)
    payload = bytearray(encode_header(v4))
    payload[-1] |= 0x04
    data = write(v4, [], 0)
    start = 9
    forged = data[:start] + frame_record(ord("H"), bytes(payload)) + encode_packet(EndPacket(0))
    with pytest.raises(CorruptStreamError, match="unknown header flags 0x06"):
        read_stream(forged)


def test_key_and_intra_records_are_kept_apart():
    sep = header(intra_base=False, key_codec="hevc", key_quality=16)
    start = write(sep, [], 0)[:-7]
    forged = start + encode_packet(BasePacket(0, (unit(0, True),), key=True), header()) + encode_packet(EndPacket(1))
    with pytest.raises(CorruptStreamError, match="intra base packet in a stream whose header has no key pictures"):
        read_stream(forged)
    start = write(header(), [], 0)[:-7]
    forged = start + encode_packet(KeyPacket(0, b"", b"I")) + encode_packet(EndPacket(0))
    with pytest.raises(CorruptStreamError, match="a key packet in a stream whose key pictures are in the base"):
        read_stream(forged)
    forged = start + encode_packet(BasePacket(0, (unit(0),)), header()) + encode_packet(EndPacket(3))
    with pytest.raises(CorruptStreamError, match="base packet before any key packet"):
        read_stream(forged)


def test_resync_cannot_place_lean_records_after_damage():
    data = bytearray(write(header(), INTRA + [BasePacket(9, (unit(9), unit(10), unit(11)))], 12))
    recs = list(iter_packet_records(bytes(data)))
    data[recs[0].offset + 3] ^= 0xFF  # damage the first 'I' record's payload
    items = list(ResyncReader(io.BytesIO(bytes(data))))
    kinds = [type(x).__name__ if not isinstance(x, tuple) else x[0].type for x in items]
    # the damaged 'I', then the 'B' and 'c' whose frames are unknown, then the intact 'i' that states its frame
    assert kinds == ["Damage", "Damage", "Damage", "i", "B", "E"]
    assert "unknown after the damage" in items[1].reason
    assert items[3][1].frame == 7 and items[4][1].frame == 9  # counted on from the 'i' record


def test_lean_framing_of_headers():
    assert LeanFraming.of(header()) == LeanFraming(3, True)
    assert LeanFraming.of(header(base_codec="hevc", intra_base=False, key_codec="hevc")) == LeanFraming(3, False)
    assert LeanFraming.of(header(lean=False, intra_base=False)) is None
    crc = binascii.crc_hqx(b"123456789", 0xFFFF)
    assert crc == 0x29B1  # CRC-16/CCITT-FALSE's check value: the CRC FORMAT.md names


# ------------------------------------------------------------------------------------------ the codec


def test_av1_base_carries_the_key_pictures(enh_tiny, tmp_path):
    """The hybrid encoder with an AV1 base sends one intra picture per key frame: 'I' records whose first unit
    decodes to the full frame size, no key packets; the decoder shows the key picture as decoded."""
    from imfcodec.api import encode_frames_to_file, iter_decoded
    from imfcodec.settings import EncoderSettings
    from tests.helpers import gradient

    frames = [np.roll(gradient(64, 64, 3), 2 * i, axis=1) for i in range(9)]
    s = EncoderSettings(base_codec="av1", keyint=5, chunk=3, guard=False, enhancer="random:enh-tiny")
    assert s.validated().intra_base is True  # where the codec can, by default
    path = tmp_path / "a.imf"
    encode_frames_to_file(frames, path, model=enh_tiny, fps=25, settings=s)
    h, packets = read_stream(path)
    assert (h.lean, h.intra_base, h.key_codec, h.key_quality) == (True, True, "av1", h.base_quality)
    assert [r.type for r in iter_packet_records(path)] == ["I", "C", "I", "C", "E"]  # 0-2, 3-4, 5-7, 8
    assert not any(isinstance(p, KeyPacket) for p in packets)
    out, keys = [], []
    for dec, batch in iter_decoded(path, model=enh_tiny):
        if batch and dec.last_bases[0].shape[0] == 64:
            keys.append(len(out))
        out += batch
    assert len(out) == 9 and keys == [0, 5]
    assert dec.report.key_frames == [0, 5]
    from imfcodec.metrics import psnr

    assert psnr(out[0], frames[0]) > 30  # the key picture at full size, not an upscaled base


def test_intra_base_settings_are_checked():
    from imfcodec.settings import EncoderSettings

    with pytest.raises(ArgumentError, match="needs a base codec that can carry them"):
        EncoderSettings(base_codec="vp9", intra_base=True).validated()
    with pytest.raises(ArgumentError, match="needs a base codec that can carry them"):
        EncoderSettings(base_codec="av1", base_factor=1, intra_base=True).validated()
    assert EncoderSettings(base_codec="av1", base_factor=4, intra_base=True).validated().intra_base is True
    with pytest.raises(ArgumentError, match="key_quality= has no effect"):
        EncoderSettings(base_codec="av1", key_quality=11).validated()
    with pytest.raises(ArgumentError, match="needs lean=True"):
        EncoderSettings(base_codec="av1", lean=False, intra_base=True).validated()
    assert EncoderSettings(base_codec="av1", base_factor=4).validated().intra_base is False
    assert EncoderSettings(base_codec="av1", lean=False).validated().intra_base is False


def test_decoder_refuses_an_intra_base_it_cannot_decode(enh_tiny):
    from imfcodec.baselayer import BaseDecoder
    from imfcodec.modes.hybrid import HybridDecoder

    model = enh_tiny.model
    with pytest.raises(UnsupportedStreamError, match="cannot carry the key pictures"):
        HybridDecoder(model, header(base_codec="vp9", key_codec="vp9", base_quality=8, key_quality=8))
    with pytest.raises(UnsupportedStreamError, match="twice the base's size"):
        BaseDecoder("av1", 32, 32, key_size=(48, 48))
    HybridDecoder(model, header(base_width=16, base_height=16))  # a 1/4 base: key pictures at 1/2
    with pytest.raises(UnsupportedStreamError, match="is not the base layer's"):
        HybridDecoder(model, header(key_codec="hevc"))


def test_a_quarter_base_codes_its_key_pictures_at_half_size(enh_tiny, tmp_path):
    """The intra-base route at 1/4 (the lowest rates): key pictures coded at 1/2 (AV1 predicts from references
    at most twice a picture's size), shown upscaled to the frame; the other pictures at 1/4."""
    from imfcodec.api import encode_frames_to_file, iter_decoded
    from imfcodec.settings import EncoderSettings
    from tests.helpers import gradient

    frames = [np.roll(gradient(64, 64, 1), i, axis=0) for i in range(4)]
    s = EncoderSettings(base_codec="av1", base_factor=4, intra_base=True, guard=False, enhancer="random:enh-tiny")
    path = tmp_path / "q.imf"
    encode_frames_to_file(frames, path, model=enh_tiny, fps=25, settings=s)
    h = read_stream(path)[0]
    assert (h.intra_base, h.base_width) == (True, 16)
    got = [(list(dec.last_bases), out) for dec, out in iter_decoded(path, model=enh_tiny) if out]
    assert len(got) == 1 and [b.shape[0] for b in got[0][0]] == [32, 16, 16, 16]
    assert len(got[0][1]) == 4 and all(f.shape == (64, 64, 3) for f in got[0][1])
