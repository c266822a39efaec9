"""The .imf container: magic, version, a CRC-checked header, then key / token (or base) / END packets
(version 3: and timing records).

Pure Python (no torch, no numpy). ``bitstreams/FORMAT.md`` is the normative byte layout; the payload of
token packets is owned by ``imfcodec.entropy``.
"""

from __future__ import annotations

from .format import (
    MAGIC,
    MAX_CHUNK,
    MAX_NAME,
    MAX_TOKEN_DIM,
    VERSION,
    VERSIONS,
    BasePacket,
    EndPacket,
    KeyPacket,
    LeanFraming,
    Limits,
    Packet,
    PacketRecord,
    StreamHeader,
    TimingPacket,
    TokenPacket,
    decode_varint,
    encode_packet,
    encode_varint,
    header_flags,
    header_version,
    packet_overhead,
)
from .reader import (Damage, ResyncReader, StreamReader, is_imf_stream, iter_packet_records, read_records,
                     read_stream)
from .writer import StreamWriter, stream_start

__all__ = [
    "BasePacket", "Damage", "MAGIC", "MAX_CHUNK", "MAX_NAME", "MAX_TOKEN_DIM", "VERSION", "VERSIONS", "EndPacket",
    "KeyPacket", "LeanFraming", "Limits", "Packet", "PacketRecord", "ResyncReader", "StreamHeader", "StreamReader", "StreamWriter",
    "TimingPacket", "TokenPacket", "decode_varint", "encode_packet", "encode_varint", "header_flags", "header_version", "is_imf_stream",
    "iter_packet_records", "packet_overhead", "read_records", "read_stream", "stream_start",
]
