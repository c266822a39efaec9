"""Byte-level definitions of the .imf container, shared by the reader and the writer.

``bitstreams/FORMAT.md`` is the normative description; this module is its executable form. Everything
here is pure Python (no torch, no numpy) so that a stream can be inspected and validated without the model.
"""

from __future__ import annotations

import binascii
import zlib
from dataclasses import dataclass
from typing import Callable, Union

from ..errors import BitstreamError
# Wire limits and a reader's Limits: defined in imfcodec.limits; the entropy coder and the codec import them from here.
from ..limits import MAX_CHUNK, MAX_DURATION, MAX_FPS_TERM, MAX_NAME, MAX_TIME, MAX_TOKEN_DIM, Limits  # noqa: F401

MAGIC = b"\x8bIMF\r\n\x1a\n"
"""PNG-style signature: a high-bit byte, CR LF, ^Z and LF, so 7-bit and text-mode transfers are caught."""
VERSION = 6
"""The newest format version. A writer uses the lowest version that can carry its header
(``header_version``): token-only streams are version 1, streams with a base layer version 2, streams with
per-frame timing (a time base in the header, timing records) version 3, streams whose encoder may switch the
enhancer off for a base packet (a flags byte in the header, ``b`` records) version 4, streams with lean base
records (no frame index, a 16-bit CRC, unit sizes only where the base codec does not carry them) and
optionally their key pictures in the base layer itself version 5, streams whose base layer codes every other
frame (the decoder shows each picture and then one interpolated between it and the next) version 6."""
VERSIONS = (1, 2, 3, 4, 5, 6)  # what this reader accepts

# Record types (one ASCII byte each).
TYPE_HEADER = 0x48  # 'H'
TYPE_KEY = 0x4B  # 'K'
TYPE_TOKENS = 0x54  # 'T'
TYPE_BASE = 0x42  # 'B' (version 2: one base-layer access unit)
TYPE_TIMING = 0x44  # 'D' (version 3: how long each frame is shown)
TYPE_BASE_PLAIN = 0x62  # 'b' (version 4 with the enhancer switch: a base packet shown without the enhancer)
TYPE_END = 0x45  # 'E'
# version 5 (lean base records; 'B' and 'b' then hold exactly ``chunk`` frames and no frame index)
TYPE_BASE_COUNTED = 0x43  # 'C': a lean base packet of fewer or other than ``chunk`` frames (its count first)
TYPE_BASE_COUNTED_PLAIN = 0x63  # 'c': the same, shown without the enhancer
TYPE_BASE_INTRA = 0x49  # 'I': a lean base packet that starts with a key picture coded by the base layer
TYPE_BASE_INTRA_PLAIN = 0x69  # 'i': the same, shown without the enhancer
TYPE_NAMES = {TYPE_HEADER: "header", TYPE_KEY: "key", TYPE_TOKENS: "token", TYPE_BASE: "base",
              TYPE_TIMING: "timing", TYPE_BASE_PLAIN: "unenhanced base", TYPE_END: "END",
              TYPE_BASE_COUNTED: "base", TYPE_BASE_COUNTED_PLAIN: "unenhanced base",
              TYPE_BASE_INTRA: "intra base", TYPE_BASE_INTRA_PLAIN: "unenhanced intra base"}
BASE_TYPES = (TYPE_BASE, TYPE_BASE_PLAIN)
LEAN_TYPES = (TYPE_BASE, TYPE_BASE_PLAIN, TYPE_BASE_COUNTED, TYPE_BASE_COUNTED_PLAIN, TYPE_BASE_INTRA,
              TYPE_BASE_INTRA_PLAIN)  # the base records of a version 5 stream
PLAIN_TYPES = (TYPE_BASE_PLAIN, TYPE_BASE_COUNTED_PLAIN, TYPE_BASE_INTRA_PLAIN)
# version 4 header flags (a u8 after the version 2 fields)
FLAG_TIMED = 0x01  # a time base follows and timing records time every frame (as in version 3)
FLAG_ENHANCER_SWITCH = 0x02  # base packets may be 'b' records: their frames are shown without the enhancer
FLAG_INTRA_BASE = 0x04  # version 5: key pictures are coded by the base layer at full size ('I' records, no 'K')
FLAG_HALF_RATE = 0x08  # version 6: the stream's frames are every other shown frame; the decoder interpolates
# base codecs whose access units carry their own sizes, so that lean records store none (FORMAT.md §3.7)
SELF_DELIMITING = ("av1",)

CRC_SIZE = 4
LEAN_CRC_SIZE = 2  # version 5 base records: CRC-16
VARINT_MAX_BYTES = 10  # enough for any value < 2**64
WEIGHTS_HASH_SIZE = 16
MAX_U8 = 255


@dataclass(frozen=True)
class StreamHeader:
    """Everything a decoder needs before the first packet (see FORMAT.md, "Header record")."""

    model: str
    weights_hash: bytes
    width: int
    height: int
    fps_num: int
    fps_den: int
    frames: int  # 0 = unknown when the header was written; the END packet carries the real count
    key_codec: str
    key_quality: int
    quality: int
    chunk: int
    token_dim: int
    scale_indexes: tuple[int, ...]
    # version 2: the base layer of the hybrid mode ("" = none; then the three numbers are 0 and not stored)
    base_codec: str = ""
    base_width: int = 0
    base_height: int = 0
    base_quality: int = 0
    # version 3: the unit of the timing records' durations, time_num/time_den seconds (0/0: no timing
    # records, every frame lasts fps_den/fps_num seconds)
    time_num: int = 0
    time_den: int = 0
    # version 4: the encoder may mark base packets to be shown without the enhancer (``BasePacket.enhance``)
    enhancer_switch: bool = False
    # version 5: lean base records (``lean``), and key pictures coded by the base layer (``intra_base``)
    lean: bool = False
    intra_base: bool = False
    # version 6: the frames are every other frame of the video: the decoder shows each one, then the mean of it
    # and the next (a copy before a key frame and after the last frame), at twice ``fps`` (FORMAT.md §3.8)
    half_rate: bool = False

    @property
    def hybrid(self) -> bool:
        """True for a stream with a base layer (hybrid mode: key images + base packets, no tokens)."""
        return bool(self.base_codec)

    @property
    def timed(self) -> bool:
        """True for a stream with per-frame timing (version 3: timing records give every frame's duration)."""
        return bool(self.time_num)


@dataclass(frozen=True)
class KeyPacket:
    """An intra-coded key frame plus its own token as raw integers (restarts the token chain)."""

    frame: int
    key_token: bytes
    image: bytes


@dataclass(frozen=True)
class TokenPacket:
    """``count`` consecutive frames starting at ``frame``, their tokens entropy-coded in ``data``."""

    frame: int
    count: int
    data: bytes


@dataclass(frozen=True)
class EndPacket:
    """Last record of every stream; its presence proves the stream was not truncated."""

    frames: int


@dataclass(frozen=True)
class BasePacket:
    """Version 2: base-layer access units (the coded low-resolution pictures, in the codec's compact form,
    see ``imfcodec.baselayer``) of ``len(units)`` consecutive frames starting at ``frame``."""

    frame: int
    units: tuple[bytes, ...]
    #: version 4 with the enhancer switch: False shows these frames as the upscaled base pictures (a ``b``
    #: record): the encoder measured that the enhancer would make them worse
    enhance: bool = True
    #: version 5 with ``intra_base``: the first unit is a key picture, coded by the base layer at the frame's
    #: full size (an ``I`` record); the base decoder restarts there
    key: bool = False

    @property
    def count(self) -> int:
        return len(self.units)

    @property
    def data(self) -> bytes:
        """The coded pictures' bytes together (for rate accounting; the record also stores their sizes)."""
        return b"".join(self.units)

    @property
    def key_bytes(self) -> int:
        """Bytes of the key picture it starts with (``key``), 0 for a packet without one: rate accounting."""
        return len(self.units[0]) if self.key else 0


@dataclass(frozen=True)
class TimingPacket:
    """Version 3: how long each of ``len(durations)`` consecutive frames starting at ``frame`` is shown, in
    ticks of the header's time base (each >= 1, so presentation times strictly increase)."""

    frame: int
    durations: tuple[int, ...]

    @property
    def count(self) -> int:
        return len(self.durations)


Packet = Union[KeyPacket, TokenPacket, BasePacket, TimingPacket, EndPacket]


@dataclass(frozen=True)
class PacketRecord:
    """Where one record sits in the file, for tools that report per-packet sizes."""

    offset: int  # byte offset of the type byte from the start of the stream
    type: str  # 'H', 'K', 'T', 'B', 'b', 'D', 'E'; version 5 also 'C', 'c', 'I', 'i'
    payload_len: int
    total_len: int  # type + length varint + payload + CRC


# ---------------------------------------------------------------------------------------------- varints

def encode_varint(value: int) -> bytes:
    """Unsigned LEB128, minimal length (the only form a reader accepts)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0 or value >= 1 << 64:
        raise ValueError(f"varint value out of range: {value!r}")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def varint_size(value: int) -> int:
    """Bytes ``encode_varint(value)`` takes."""
    return max(1, (value.bit_length() + 6) // 7)


def decode_varint(read_byte: Callable[[], int | None], offset: int, what: str,
                  error: type[BitstreamError]) -> int:
    """Read one LEB128 varint through ``read_byte`` (returns None at end of data).

    Rejects more than 10 bytes, values >= 2**64 and non-minimal encodings, so every value has exactly one
    byte representation. ``offset`` is the position of the first byte, used in error messages.
    """
    value = 0
    for i in range(VARINT_MAX_BYTES):
        b = read_byte()
        if b is None:
            raise error(f"truncated: {what} varint at byte {offset} runs past the end of the data")
        value |= (b & 0x7F) << (7 * i)
        if not b & 0x80:
            if i and b == 0:
                raise error(f"non-minimal {what} varint at byte {offset}")
            if value >= 1 << 64:
                raise error(f"{what} varint at byte {offset} exceeds 64 bits")
            return value
    raise error(f"{what} varint at byte {offset} is longer than {VARINT_MAX_BYTES} bytes")


def record_crc(type_byte: int, length_bytes: bytes, payload: bytes) -> int:
    """CRC-32 (zlib) over the type byte, the length varint and the payload."""
    return zlib.crc32(payload, zlib.crc32(length_bytes, zlib.crc32(bytes((type_byte,)))))


def record_crc16(type_byte: int, length_bytes: bytes, payload: bytes) -> int:
    """CRC-16/CCITT (polynomial 0x1021, init 0xFFFF, no reflection: ``binascii.crc_hqx``) over the type byte,
    the length varint and the payload: the check of a version 5 base record."""
    return binascii.crc_hqx(payload, binascii.crc_hqx(length_bytes, binascii.crc_hqx(bytes((type_byte,)), 0xFFFF)))


def frame_record(type_byte: int, payload: bytes, lean: bool = False) -> bytes:
    """type | varint(len) | payload | CRC-32 little-endian (``lean``: CRC-16, a version 5 base record)."""
    length = encode_varint(len(payload))
    if lean:
        return bytes((type_byte,)) + length + payload + record_crc16(type_byte, length, payload).to_bytes(2, "little")
    return bytes((type_byte,)) + length + payload + record_crc(type_byte, length, payload).to_bytes(4, "little")


# ---------------------------------------------------------------------------------------------- checks

def is_valid_name(raw: bytes) -> bool:
    """Names are 1..64 bytes of printable ASCII (no controls that could spoof a terminal)."""
    return 1 <= len(raw) <= MAX_NAME and all(0x20 <= b <= 0x7E for b in raw)


def _uint(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def header_version(h: StreamHeader) -> int:
    """The version a writer gives a stream with this header: 5 with lean base records, else 4 with the enhancer
    switch, else 3 with per-frame timing, else 2 with a base layer, else 1 (so a stream that needs nothing new
    stays readable by older decoders)."""
    if h.half_rate:
        return 6
    if h.lean:
        return 5
    return 4 if h.enhancer_switch else 3 if h.time_num or h.time_den else 2 if h.base_codec else 1


def shown_frame(h: StreamHeader, frame: int) -> int:
    """The frame of the video that a stream's coded frame ``frame`` is shown as (2 x frame in a half-rate stream):
    what timing records count."""
    return 2 * frame if h.half_rate else frame


def coded_frames(h: StreamHeader, frames: int) -> int:
    """The frames the packets of a stream of ``frames`` frames hold: the END record and the header count the frames
    shown, and a half-rate stream (version 6) codes the even ones, ceil(frames / 2)."""
    return (frames + 1) // 2 if h.half_rate else frames


def header_flags(h: StreamHeader) -> int:
    """The flags byte of ``h`` (versions 4 and 5)."""
    return ((FLAG_TIMED if h.time_num or h.time_den else 0) | (FLAG_ENHANCER_SWITCH if h.enhancer_switch else 0)
            | (FLAG_INTRA_BASE if h.intra_base else 0) | (FLAG_HALF_RATE if h.half_rate else 0))


def header_problem(h: StreamHeader, limits: Limits) -> str | None:
    """The first reason ``h`` is not a valid header (of ``header_version(h)``) under ``limits``, or None.

    Shared by writer and reader so the writer can never produce a stream the reader rejects.
    """
    def uint(v: object) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v >= 0

    for name in ("model", "key_codec"):
        v = getattr(h, name)
        if not isinstance(v, str) or not v.isascii() or not is_valid_name(v.encode("ascii")):
            return f"{name} must be 1..{MAX_NAME} printable ASCII characters, got {v!r}"
    if not isinstance(h.weights_hash, (bytes, bytearray)) or len(h.weights_hash) != WEIGHTS_HASH_SIZE:
        return f"weights_hash must be {WEIGHTS_HASH_SIZE} bytes"
    for name, hi in (("width", limits.max_width), ("height", limits.max_height)):
        v = getattr(h, name)
        if not uint(v) or not 1 <= v <= hi:
            return f"{name} {v!r} is outside 1..{hi}"
    timed = (h.time_num, h.time_den) != (0, 0)  # 0/0: no time base (versions 1 and 2)
    for name in ("fps_num", "fps_den") + (("time_num", "time_den") if timed else ()):
        v = getattr(h, name)
        if not uint(v) or not 1 <= v <= MAX_FPS_TERM:
            return f"{name} {v!r} is outside 1..{MAX_FPS_TERM}"
    if not uint(h.frames) or h.frames > limits.max_frames:
        return f"frame count {h.frames!r} is outside 0..{limits.max_frames}"
    for name in ("key_quality", "quality"):
        v = getattr(h, name)
        if not uint(v) or v > MAX_U8:
            return f"{name} {v!r} is outside 0..{MAX_U8}"
    if not uint(h.chunk) or not 1 <= h.chunk <= MAX_CHUNK:
        return f"chunk size {h.chunk!r} is outside 1..{MAX_CHUNK}"
    if not isinstance(h.base_codec, str) or (h.base_codec and (
            not h.base_codec.isascii() or not is_valid_name(h.base_codec.encode("ascii")))):
        return f"base_codec must be empty or 1..{MAX_NAME} printable ASCII characters, got {h.base_codec!r}"
    for name in ("enhancer_switch", "lean", "intra_base", "half_rate"):
        if not isinstance(getattr(h, name), bool):
            return f"{name} must be True or False, got {getattr(h, name)!r}"
    if h.intra_base and not h.lean:
        return "key pictures in the base layer (intra_base) need lean base records (version 5)"
    if h.half_rate and not (h.lean and h.base_codec):
        return "a half-rate base (version 6) needs a base layer with lean base records"
    if h.base_codec:
        return _base_problem(h, limits)
    if h.enhancer_switch:
        return "the enhancer switch needs a base layer"
    if h.lean:
        return "lean base records (version 5) need a base layer"
    if (h.base_width, h.base_height, h.base_quality) != (0, 0, 0):
        return "base_width, base_height and base_quality must be 0 without a base layer"
    if h.token_dim == 0:
        return "token_dim 0 is allowed only in a stream with a base layer"
    if not uint(h.token_dim) or not 1 <= h.token_dim <= MAX_TOKEN_DIM:
        return f"token_dim {h.token_dim!r} is outside 1..{MAX_TOKEN_DIM}"
    idx = h.scale_indexes
    if not isinstance(idx, (tuple, list)) or len(idx) != h.token_dim:
        n = len(idx) if isinstance(idx, (tuple, list)) else "?"
        return f"{n} scale indexes for token_dim {h.token_dim}"
    if not all(uint(i) and i <= MAX_U8 for i in idx):
        return f"scale indexes must be integers in 0..{MAX_U8}"
    return None


def _base_problem(h: StreamHeader, limits: Limits) -> str | None:
    """Rules of a header with a base layer: no tokens, and a base picture size within ``limits``."""
    uint = _uint
    if h.token_dim != 0 or tuple(h.scale_indexes) != ():
        return f"token_dim must be 0 (no scale indexes) in a stream with a base layer, got {h.token_dim!r}"
    if h.quality != 0:
        return f"token quality must be 0 in a stream with a base layer, got {h.quality!r}"
    for name, hi in (("base_width", limits.max_width), ("base_height", limits.max_height)):
        v = getattr(h, name)
        if not uint(v) or not 1 <= v <= hi:
            return f"{name} {v!r} is outside 1..{hi}"
    if not uint(h.base_quality) or h.base_quality > MAX_U8:
        return f"base_quality {h.base_quality!r} is outside 0..{MAX_U8}"
    return None


def encode_header(h: StreamHeader) -> bytes:
    """Header payload (the caller has validated ``h``); the base-layer fields only in version 2."""
    model, codec = h.model.encode("ascii"), h.key_codec.encode("ascii")
    v = encode_varint
    fields = [
        bytes((len(model),)), model, bytes(h.weights_hash),
        v(h.width), v(h.height), v(h.fps_num), v(h.fps_den), v(h.frames),
        bytes((len(codec),)), codec, bytes((h.key_quality, h.quality)),
        v(h.chunk), v(h.token_dim), bytes(h.scale_indexes),
    ]
    if header_version(h) >= 2:
        base = h.base_codec.encode("ascii")
        fields += [bytes((len(base),)), base]
        if base:
            fields += [v(h.base_width), v(h.base_height), bytes((h.base_quality,))]
    version = header_version(h)
    if version >= 4:
        fields.append(bytes((header_flags(h),)))
    if version == 3 or (version >= 4 and h.time_num):
        fields += [v(h.time_num), v(h.time_den)]
    return b"".join(fields)


@dataclass(frozen=True)
class LeanFraming:
    """How a version 5 stream frames its base packets (FORMAT.md §3.7): ``chunk`` (a ``B`` record holds exactly
    that many frames, others say their count) and whether the base codec's units carry their own sizes."""

    chunk: int
    self_delimiting: bool

    @classmethod
    def of(cls, header: StreamHeader | None) -> "LeanFraming | None":
        """The framing of ``header``'s base records; None for the framing of versions 2 to 4."""
        if header is None or not header.lean:
            return None
        return cls(header.chunk, header.base_codec in SELF_DELIMITING)


def lean_base_payload(packet: BasePacket, framing: LeanFraming) -> tuple[int, bytes]:
    """(type byte, payload) of a base packet in a version 5 stream: ``I``/``i`` (a key picture first: the frame
    index and the count), else ``B``/``b`` (exactly ``chunk`` frames: nothing) or ``C``/``c`` (the count); then
    the units, each but the last preceded by its size unless the codec's units carry their sizes."""
    units = [bytes(u) for u in packet.units]
    if packet.key:
        t = TYPE_BASE_INTRA if packet.enhance else TYPE_BASE_INTRA_PLAIN
        head = encode_varint(packet.frame) + encode_varint(len(units))
    elif len(units) == framing.chunk:
        t, head = (TYPE_BASE if packet.enhance else TYPE_BASE_PLAIN), b""
    else:
        t, head = (TYPE_BASE_COUNTED if packet.enhance else TYPE_BASE_COUNTED_PLAIN), encode_varint(len(units))
    if framing.self_delimiting:
        body = b"".join(units)
    else:
        body = b"".join(encode_varint(len(u)) + u for u in units[:-1]) + units[-1]
    return t, head + body


def encode_payload(packet: Packet, framing: LeanFraming | None = None) -> tuple[int, bytes]:
    """(type byte, payload) of a packet; no sequence checks (see StreamWriter for those). ``framing``: the
    stream's lean framing (``LeanFraming.of(header)``), which changes base packets only."""
    if isinstance(packet, BasePacket) and framing is not None:
        return lean_base_payload(packet, framing)
    if isinstance(packet, KeyPacket):
        kt = bytes(packet.key_token)
        return TYPE_KEY, encode_varint(packet.frame) + encode_varint(len(kt)) + kt + bytes(packet.image)
    if isinstance(packet, TokenPacket):
        return TYPE_TOKENS, encode_varint(packet.frame) + encode_varint(packet.count) + bytes(packet.data)
    if isinstance(packet, BasePacket):
        units = [bytes(u) for u in packet.units]
        return TYPE_BASE if packet.enhance else TYPE_BASE_PLAIN, b"".join([
                                    encode_varint(packet.frame), encode_varint(len(units)),
                                    *(encode_varint(len(u)) + u for u in units)])
    if isinstance(packet, TimingPacket):
        return TYPE_TIMING, b"".join([encode_varint(packet.frame), encode_varint(len(packet.durations)),
                                      *map(encode_varint, packet.durations)])
    if isinstance(packet, EndPacket):
        return TYPE_END, encode_varint(packet.frames)
    raise TypeError(f"not a packet: {type(packet).__name__}")


def encode_packet(packet: Packet, header: StreamHeader | None = None) -> bytes:
    """The complete record for ``packet`` as it appears in a stream (useful for size accounting); ``header``:
    the stream's (a version 5 stream frames base packets its own way), None for the framing of versions 1-4."""
    framing = LeanFraming.of(header)
    type_byte, payload = encode_payload(packet, framing)
    return frame_record(type_byte, payload, lean=framing is not None and isinstance(packet, BasePacket))


def packet_overhead(packet: Packet, header: StreamHeader | None = None) -> int:
    """Container bytes of ``packet`` beyond the coded data (key image + key token, token data, or the
    base-layer access unit) in a stream with ``header`` (None: the framing of versions 1-4)."""
    size = len(encode_packet(packet, header))
    if isinstance(packet, KeyPacket):
        return size - len(packet.image) - len(packet.key_token)
    if isinstance(packet, (TokenPacket, BasePacket)):
        return size - len(packet.data)
    return size
