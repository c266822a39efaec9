"""StreamReader: parses an .imf stream and validates every byte before anyone downstream sees it.

Error classes (all ``BitstreamError``): ``CorruptStreamError`` for damaged or malformed bytes,
``UnsupportedStreamError`` for a well-formed stream this reader will not take (other version, a value above
the caller's ``Limits``). Each message is one line naming the problem and its byte offset.
"""

from __future__ import annotations

import io
import os
import re
from dataclasses import dataclass
from typing import BinaryIO, Iterator, Union

from ..errors import BitstreamError, CorruptStreamError, InputError, UnsupportedStreamError
from .format import (
    CRC_SIZE,
    MAGIC,
    MAX_DURATION,
    MAX_TIME,
    MAX_TOKEN_DIM,
    BASE_TYPES,
    FLAG_ENHANCER_SWITCH,
    FLAG_HALF_RATE,
    FLAG_INTRA_BASE,
    FLAG_TIMED,
    LEAN_CRC_SIZE,
    LEAN_TYPES,
    PLAIN_TYPES,
    SELF_DELIMITING,
    TYPE_BASE_COUNTED,
    TYPE_BASE_COUNTED_PLAIN,
    TYPE_BASE_INTRA,
    TYPE_BASE_INTRA_PLAIN,
    TYPE_BASE,
    TYPE_BASE_PLAIN,
    TYPE_END,
    TYPE_HEADER,
    TYPE_KEY,
    TYPE_NAMES,
    TYPE_TIMING,
    TYPE_TOKENS,
    VERSIONS,
    WEIGHTS_HASH_SIZE,
    BasePacket,
    coded_frames,
    shown_frame,
    EndPacket,
    KeyPacket,
    Limits,
    Packet,
    PacketRecord,
    StreamHeader,
    TimingPacket,
    TokenPacket,
    decode_varint,
    header_problem,
    is_valid_name,
    record_crc,
    record_crc16,
)
from .obu import split_units

Source = Union[bytes, bytearray, memoryview, str, os.PathLike, BinaryIO]
_READ_PIECE = 1 << 20  # when the file size is unknown, grow buffers by at most this much at a time
_NO_LIMITS = Limits(max_width=2**64, max_height=2**64, max_frames=2**64, max_packet=2**64)


class _Source:
    """Byte source that tracks its offset and, when it can, how many bytes remain."""

    def __init__(self, f: BinaryIO) -> None:
        self.f = f
        self.pos = 0
        self.size: int | None = None
        try:
            if f.seekable():
                start = f.tell()
                end = f.seek(0, os.SEEK_END)
                f.seek(start)
                self.size = max(0, end - start)
        except (AttributeError, OSError, ValueError):
            self.size = None

    def remaining(self) -> int | None:
        return None if self.size is None else self.size - self.pos

    def read_upto(self, n: int) -> bytes:
        """Up to ``n`` bytes (fewer only at end of data), read in bounded pieces."""
        parts: list[bytes] = []
        got = 0
        while got < n:
            piece = self.f.read(min(n - got, _READ_PIECE))
            if not isinstance(piece, (bytes, bytearray)):
                raise InputError("an imfcodec stream must be opened in binary mode")
            if not piece:
                break
            parts.append(bytes(piece))
            got += len(piece)
        self.pos += got
        return b"".join(parts)

    def read_byte(self) -> int | None:
        b = self.read_upto(1)
        return b[0] if b else None

    def read_exact(self, n: int, what: str) -> bytes:
        start = self.pos
        data = self.read_upto(n)
        if len(data) != n:
            raise CorruptStreamError(f"truncated: {what} at byte {start} needs {n} bytes, "
                                     f"only {len(data)} remain")
        return data


class _Cursor:
    """Reads fields out of a CRC-checked payload; offsets in errors are absolute stream offsets."""

    def __init__(self, data: bytes, base: int, where: str) -> None:
        self.data, self.base, self.where, self.i = data, base, where, 0

    def _byte(self) -> int | None:
        if self.i >= len(self.data):
            return None
        self.i += 1
        return self.data[self.i - 1]

    def varint(self, what: str) -> int:
        return decode_varint(self._byte, self.base + self.i, f"{self.where} {what}", CorruptStreamError)

    def take(self, n: int, what: str) -> bytes:
        if n > len(self.data) - self.i:
            raise CorruptStreamError(f"{self.where}: {what} at byte {self.base + self.i} needs {n} bytes, "
                                     f"the payload has {len(self.data) - self.i} left")
        self.i += n
        return self.data[self.i - n:self.i]

    def u8(self, what: str) -> int:
        return self.take(1, what)[0]

    def rest(self) -> bytes:
        out = self.data[self.i:]
        self.i = len(self.data)
        return out

    def done(self) -> None:
        if self.i != len(self.data):
            raise CorruptStreamError(f"{self.where}: {len(self.data) - self.i} unexpected bytes at byte "
                                     f"{self.base + self.i}")


class StreamReader:
    """Validating parser: the header on construction (``.header``), then packets by iteration.

    Iteration raises ``CorruptStreamError`` if the stream ends without an END packet or has bytes after it,
    so a loop that finishes without an exception has seen a complete, intact stream. ``.end`` holds the END
    packet once reached. The reader reads sequentially and never allocates more than the file holds.
    """

    def __init__(self, fileobj: BinaryIO, limits: Limits = Limits()) -> None:
        self.limits = limits
        self._src = _Source(fileobj)
        self._check_magic()
        version = self._src.read_byte()
        if version is None:
            raise CorruptStreamError(f"truncated: stream ends at byte {len(MAGIC)} before the version byte")
        if version not in VERSIONS:
            raise UnsupportedStreamError(f"stream version {version} at byte {len(MAGIC)} is not supported "
                                         f"(this reader handles versions {', '.join(map(str, VERSIONS))})")
        self.version: int = version
        rec, payload = self._read_record(first=True)
        self.header_record: PacketRecord = rec
        self.header: StreamHeader = self._parse_header(payload, rec.offset + rec.total_len - len(payload) - CRC_SIZE)
        self.end: EndPacket | None = None
        self._next_frame = 0
        self._key_pending = False  # hybrid: a key packet was read, its frame's base packet must follow
        self._timed = 0  # version 3: frames the timing records have covered so far
        self._time_end = 0  # version 3: their end time in ticks (the sum of their durations)

    # ------------------------------------------------------------------------------------------ public

    def __iter__(self) -> Iterator[Packet]:
        for _rec, packet in self.records():
            yield packet

    def records(self) -> Iterator[tuple[PacketRecord, Packet]]:
        """Yield (record position/size, validated packet) for every packet after the header, END last."""
        while self.end is None:
            offset = self._src.pos
            if self._src.remaining() == 0:
                raise CorruptStreamError(f"truncated: stream ends at byte {offset} without an END packet")
            rec, packet = self._next_record()
            if self.end is not None:
                self._check_trailing()
            yield rec, packet

    def _next_record(self) -> tuple[PacketRecord, Packet]:
        """The next record, validated; an END packet is kept in ``.end``."""
        rec, payload = self._read_record(first=False)
        packet = self._parse_packet(rec, payload)
        if isinstance(packet, EndPacket):
            self.end = packet
        return rec, packet

    # ------------------------------------------------------------------------------------------ framing

    def _check_magic(self) -> None:
        data = self._src.read_upto(len(MAGIC))
        if data == MAGIC:
            return
        if not data:
            raise BitstreamError("not an imfcodec stream (empty file)")
        if len(data) < len(MAGIC) and MAGIC.startswith(data):
            raise CorruptStreamError(f"truncated: stream ends at byte {len(data)} inside the signature")
        if data[:4] == MAGIC[:4]:
            raise CorruptStreamError("damaged imfcodec signature at byte 0 "
                                     "(line endings altered by a text-mode transfer?)")
        raise BitstreamError("not an imfcodec stream (bad magic at byte 0)")

    def _read_record(self, first: bool) -> tuple[PacketRecord, bytes]:
        src = self._src
        offset = src.pos
        t = src.read_byte()
        if t is None:
            raise CorruptStreamError(f"truncated: stream ends at byte {offset} without an END packet")
        if first and t != TYPE_HEADER:
            raise CorruptStreamError(f"expected the header record at byte {offset}, found type 0x{t:02x}")
        known = ((TYPE_KEY, TYPE_TOKENS, TYPE_END) + ((TYPE_BASE,) if self.version >= 2 else ())
                 + ((TYPE_TIMING,) if self.version >= 3 else ()) + ((TYPE_BASE_PLAIN,) if self.version >= 4 else ())
                 + (LEAN_TYPES if self.version >= 5 else ()))
        if not first and t not in known:
            kind = "a second header record" if t == TYPE_HEADER else f"unknown packet type 0x{t:02x}"
            raise CorruptStreamError(f"{kind} at byte {offset}")
        name = TYPE_NAMES[t]
        len_start = src.pos
        length_bytes = bytearray()

        def byte() -> int | None:
            b = src.read_byte()
            if b is not None:
                length_bytes.append(b)
            return b

        n = decode_varint(byte, len_start, f"{name} record length", CorruptStreamError)
        lean = self.version >= 5 and t in LEAN_TYPES  # a version 5 base record: CRC-16
        crc_size = LEAN_CRC_SIZE if lean else CRC_SIZE
        remaining = src.remaining()
        if remaining is not None and n + crc_size > remaining:
            raise CorruptStreamError(f"bad length or truncation: {name} record at byte {offset} declares "
                                     f"{n} payload bytes, only {max(0, remaining - crc_size)} remain")
        if n > self.limits.max_packet:
            raise UnsupportedStreamError(f"{name} record at byte {offset} declares {n} payload bytes, above "
                                         f"the limit of {self.limits.max_packet} (Limits.max_packet)")
        payload = src.read_exact(n, f"{name} record payload")
        crc = int.from_bytes(src.read_exact(crc_size, f"{name} record CRC"), "little")
        if crc != (record_crc16 if lean else record_crc)(t, bytes(length_bytes), payload):
            raise CorruptStreamError(f"CRC mismatch in the {name} record at byte {offset}")
        total = 1 + len(length_bytes) + n + crc_size
        return PacketRecord(offset, chr(t), n, total), payload

    def _check_trailing(self) -> None:
        pos = self._src.pos
        left = self._src.remaining()
        if left is None:
            left = 1 if self._src.read_byte() is not None else 0
            self._src.pos = pos
        if left:
            raise CorruptStreamError(f"{'trailing bytes' if self._src.size is None else f'{left} trailing bytes'}"
                                     f" after the END packet, at byte {pos}")

    # ------------------------------------------------------------------------------------------ header

    def _parse_header(self, payload: bytes, base: int) -> StreamHeader:
        where = f"header at byte {self.header_record.offset}"
        c = _Cursor(payload, base, where)

        def name(what: str) -> str:
            n = c.u8(f"{what} length")
            raw = c.take(n, what)
            if not is_valid_name(raw):
                raise CorruptStreamError(f"{where}: {what} is not 1..64 printable ASCII bytes")
            return raw.decode("ascii")

        model = name("model name")
        weights_hash = c.take(WEIGHTS_HASH_SIZE, "weights hash")
        width, height = c.varint("width"), c.varint("height")
        fps_num, fps_den = c.varint("fps numerator"), c.varint("fps denominator")
        frames = c.varint("frame count")
        key_codec = name("key codec name")
        key_quality, quality = c.u8("key quality"), c.u8("token quality")
        chunk, token_dim = c.varint("chunk size"), c.varint("token_dim")
        lowest = 0 if self.version >= 2 else 1  # 0 (no tokens) only with a base layer, checked below
        if not lowest <= token_dim <= MAX_TOKEN_DIM:
            raise CorruptStreamError(f"{where}: token_dim {token_dim} is outside {lowest}..{MAX_TOKEN_DIM}")
        scale_indexes = tuple(c.take(token_dim, "scale indexes"))
        base: tuple = ()
        if self.version >= 2:
            n = c.u8("base codec length")
            raw = c.take(n, "base codec name")
            if n and not is_valid_name(raw):
                raise CorruptStreamError(f"{where}: base codec name is not 0..64 printable ASCII bytes")
            base = (raw.decode("ascii"),)
            if n:
                base += (c.varint("base width"), c.varint("base height"), c.u8("base quality"))
            else:
                base += (0, 0, 0)
        flags = FLAG_TIMED if self.version == 3 else 0
        if self.version >= 4:
            flags = c.u8("flags")
            known = FLAG_TIMED | FLAG_ENHANCER_SWITCH | (FLAG_INTRA_BASE if self.version >= 5 else 0) \
                | (FLAG_HALF_RATE if self.version >= 6 else 0)
            if flags & ~known:
                raise CorruptStreamError(f"{where}: unknown header flags 0x{flags:02x}")
        if flags & FLAG_TIMED:
            time_base = (c.varint("time base numerator"), c.varint("time base denominator"))
            if 0 in time_base:
                raise CorruptStreamError(f"{where}: time base {time_base[0]}/{time_base[1]} (a timed "
                                         f"stream times its frames: both terms must be at least 1)")
            base += time_base
        elif self.version >= 2:
            base += (0, 0)
        c.done()
        h = StreamHeader(model, weights_hash, width, height, fps_num, fps_den, frames, key_codec, key_quality,
                         quality, chunk, token_dim, scale_indexes, *base,
                         enhancer_switch=bool(flags & FLAG_ENHANCER_SWITCH), lean=self.version >= 5,
                         intra_base=bool(flags & FLAG_INTRA_BASE), half_rate=bool(flags & FLAG_HALF_RATE))
        problem = header_problem(h, _NO_LIMITS)
        if problem:  # outside what the format allows (e.g. width 0, chunk > MAX_CHUNK)
            raise CorruptStreamError(f"{where}: {problem}")
        problem = header_problem(h, self.limits)
        if problem:  # legal, but above this reader's Limits
            raise UnsupportedStreamError(f"{where}: {problem} (reader Limits)")
        return h

    # ------------------------------------------------------------------------------------------ packets

    def _parse_packet(self, rec: PacketRecord, payload: bytes) -> Packet:
        h, lim = self.header, self.limits
        t = ord(rec.type)
        where = f"{TYPE_NAMES[t]} packet at byte {rec.offset}"
        c = _Cursor(payload, rec.offset + rec.total_len - rec.payload_len - CRC_SIZE, where)
        if t == TYPE_END:
            if self._key_pending:
                raise CorruptStreamError(f"{where}: the key packet of frame {self._next_frame} has no base packet")
            frames = c.varint("frame count")
            c.done()
            if coded_frames(h, frames) != self._next_frame:
                raise CorruptStreamError(f"{where}: says {frames} frames but the packets hold {self._next_frame}"
                                         + (" (a half-rate stream codes every other frame)" if h.half_rate else ""))
            if h.frames and frames != h.frames:
                raise CorruptStreamError(f"{where}: says {frames} frames but the header says {h.frames}")
            if h.timed and self._timed != frames:
                raise CorruptStreamError(f"{where}: the timing records cover {self._timed} frames but the stream "
                                         f"holds {frames}")
            return EndPacket(frames)
        if t == TYPE_TIMING:
            if self._key_pending:
                raise CorruptStreamError(f"{where}: expected the base packet of frame {self._next_frame} after "
                                         f"its key packet, found a timing record")
            frame, count = _timing_head(c)
            if frame != self._timed:
                raise CorruptStreamError(f"{where}: times frames from {frame}, expected frame {self._timed}")
            end = frame + count
            if end > lim.max_frames:  # checked before the durations are read: a forged count costs nothing
                raise UnsupportedStreamError(f"{where}: frame {end - 1} is beyond the limit of "
                                             f"{lim.max_frames} frames (Limits.max_frames)")
            if h.frames and end > h.frames:
                raise CorruptStreamError(f"{where}: times frame {end - 1}, beyond the header's {h.frames} frames")
            timing = _timing_durations(c, frame, count, self._time_end)
            self._timed = end
            self._time_end += sum(timing.durations)
            return timing
        _check_packet_type(t, h, where)
        if self._key_pending and t not in BASE_TYPES + LEAN_TYPES:
            raise CorruptStreamError(f"{where}: expected the base packet of frame {self._next_frame} after its "
                                     f"key packet, found a {TYPE_NAMES[t]} packet")
        if h.lean and t in LEAN_TYPES:
            packet = _lean_base_packet(c, h, t, self._next_frame)
            if packet.frame != self._next_frame:
                raise CorruptStreamError(f"{where}: starts at frame {packet.frame}, expected frame {self._next_frame}")
            if not packet.key and self._next_frame == 0 and not self._key_pending:
                raise CorruptStreamError(f"{where}: base packet before any key packet")
            return self._advance(where, packet.frame, packet.count, packet)
        frame = c.varint("frame index")
        if frame != self._next_frame:
            raise CorruptStreamError(f"{where}: starts at frame {frame}, expected frame {self._next_frame}")
        if t == TYPE_KEY:
            packet: Packet = _key_packet(c, h, frame)
            count = 1
        elif t in BASE_TYPES:
            if frame == 0 and not self._key_pending:
                raise CorruptStreamError(f"{where}: base packet before any key packet")
            packet = _base_packet(c, h, frame, t)
            count = packet.count
        else:
            if self._next_frame == 0:
                raise CorruptStreamError(f"{where}: token packet before any key packet")
            count = c.varint("frame count")
            if not 1 <= count <= h.chunk:
                raise CorruptStreamError(f"{where}: frame count {count} is outside 1..{h.chunk} (chunk size)")
            packet = TokenPacket(frame, count, c.rest())
        return self._advance(where, frame, count, packet)

    def _advance(self, where: str, frame: int, count: int, packet: Packet) -> Packet:
        """The limits every packet's frames must be within, then the stream position moves past them."""
        h, lim = self.header, self.limits
        if frame + count > lim.max_frames:
            raise UnsupportedStreamError(f"{where}: frame {frame + count - 1} is beyond the limit of "
                                         f"{lim.max_frames} frames (Limits.max_frames)")
        if h.frames and frame + count > h.frames:
            raise CorruptStreamError(f"{where}: frame {frame + count - 1} is beyond the header's "
                                     f"{h.frames} frames")
        if h.timed and shown_frame(h, frame + count - 1) >= self._timed:  # a frame's time comes before the frame
            raise CorruptStreamError(f"{where}: frame {max(shown_frame(h, frame), self._timed)} has no timing (its "
                                     f"timing record must come before it)")
        if h.hybrid and isinstance(packet, KeyPacket):  # a key packet shares its frame with the base packet that follows
            self._key_pending = True
            return packet
        self._key_pending = False
        self._next_frame = frame + count
        return packet


def _check_packet_type(t: int, h: StreamHeader, where: str) -> None:
    """Token packets only without a base layer, base packets only with one (FORMAT.md §4)."""
    if t == TYPE_TOKENS and h.hybrid:
        raise CorruptStreamError(f"{where}: token packet in a stream with a base layer")
    if t in BASE_TYPES and not h.hybrid:
        raise CorruptStreamError(f"{where}: base packet in a stream without a base layer")
    if t in PLAIN_TYPES and not h.enhancer_switch:
        raise CorruptStreamError(f"{where}: an unenhanced base packet in a stream whose header has no enhancer "
                                 f"switch")
    if t == TYPE_KEY and h.intra_base:
        raise CorruptStreamError(f"{where}: a key packet in a stream whose key pictures are in the base layer")
    if t in (TYPE_BASE_INTRA, TYPE_BASE_INTRA_PLAIN) and not h.intra_base:
        raise CorruptStreamError(f"{where}: an intra base packet in a stream whose header has no key pictures in "
                                 f"the base layer")


def _key_packet(c: _Cursor, h: StreamHeader, frame: int) -> KeyPacket:
    n = c.varint("key token length")
    if n != 2 * h.token_dim:
        raise CorruptStreamError(f"{c.where}: key token is {n} bytes, expected {2 * h.token_dim}")
    key_token = c.take(n, "key token")
    image = c.rest()
    if not image:
        raise CorruptStreamError(f"{c.where}: empty key-frame image")
    return KeyPacket(frame, key_token, image)


def _timing_head(c: _Cursor) -> tuple[int, int]:
    """(frame, count) of a timing record (FORMAT.md §3.6), the count within what its payload can hold."""
    frame = c.varint("frame index")
    count = c.varint("frame count")
    left = len(c.data) - c.i
    if not 1 <= count <= left:  # each duration takes at least one byte: a lying count stops here
        raise CorruptStreamError(f"{c.where}: frame count {count} is outside 1..{left} (one byte or more per "
                                 f"duration in the {left} bytes left)")
    return frame, count


def _timing_packet(c: _Cursor, start: int = 0) -> TimingPacket:
    """A whole timing record (FORMAT.md §3.6), without the stream's sequence rules."""
    return _timing_durations(c, *_timing_head(c), start)


def _timing_durations(c: _Cursor, frame: int, count: int, start: int) -> TimingPacket:
    """The ``count`` durations after a timing record's head: each 1..MAX_DURATION ticks, ending before
    MAX_TIME when the frames before them end at ``start`` ticks."""
    durations = []
    end = start
    for i in range(count):
        d = c.varint("duration")
        if not 1 <= d <= MAX_DURATION:
            raise CorruptStreamError(f"{c.where}: duration {d} of frame {frame + i} is outside 1..{MAX_DURATION} "
                                     f"ticks (presentation times must increase)")
        end += d
        if end > MAX_TIME:
            raise CorruptStreamError(f"{c.where}: frame {frame + i} ends at tick {end}, beyond {MAX_TIME}")
        durations.append(d)
    c.done()
    return TimingPacket(frame, tuple(durations))


def _base_packet(c: _Cursor, h: StreamHeader, frame: int, t: int = TYPE_BASE) -> BasePacket:
    count = c.varint("frame count")
    if not 1 <= count <= h.chunk:
        raise CorruptStreamError(f"{c.where}: frame count {count} is outside 1..{h.chunk} (chunk size)")
    units = []
    for i in range(count):
        n = c.varint("access unit size")
        if n == 0:
            raise CorruptStreamError(f"{c.where}: empty base-layer access unit (frame {frame + i})")
        units.append(c.take(n, "access unit"))
    c.done()
    return BasePacket(frame, tuple(units), enhance=t == TYPE_BASE)


def _lean_base_packet(c: _Cursor, h: StreamHeader, t: int, next_frame: int | None) -> BasePacket:
    """A version 5 base record (FORMAT.md §3.7): ``I``/``i`` give their frame and count, ``C``/``c`` their count,
    ``B``/``b`` hold ``chunk`` frames from ``next_frame`` (the frame after the stream's last packet; None when a
    resynchronising reader does not know it, which then takes frame -1); then the units, sized by the codec
    (AV1: ``obu.split_units``) or by a size before each but the last."""
    key = t in (TYPE_BASE_INTRA, TYPE_BASE_INTRA_PLAIN)
    frame = c.varint("frame index") if key else (-1 if next_frame is None else next_frame)
    count = c.varint("frame count") if key or t in (TYPE_BASE_COUNTED, TYPE_BASE_COUNTED_PLAIN) else h.chunk
    if not 1 <= count <= h.chunk:
        raise CorruptStreamError(f"{c.where}: frame count {count} is outside 1..{h.chunk} (chunk size)")
    start = c.base + c.i
    if h.base_codec in SELF_DELIMITING:
        data = c.rest()
        try:
            units = split_units(data, count)
        except ValueError as e:
            raise CorruptStreamError(f"{c.where}: the {h.base_codec} units at byte {start} do not split into "
                                     f"{count} frames: {e}") from None
    else:
        units = []
        for i in range(count - 1):
            n = c.varint("access unit size")
            if n == 0:
                raise CorruptStreamError(f"{c.where}: empty base-layer access unit (frame {frame + i})")
            units.append(c.take(n, "access unit"))
        units.append(c.rest())
        if not units[-1]:
            raise CorruptStreamError(f"{c.where}: empty base-layer access unit (its last frame)")
    return BasePacket(frame, tuple(units), enhance=t not in PLAIN_TYPES, key=key)


# ---------------------------------------------------------------------------------------------- helpers

def _open(source: Source) -> tuple[BinaryIO, bool]:
    """(binary file object, whether we opened it and must close it)."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return io.BytesIO(bytes(source)), True
    if isinstance(source, (str, os.PathLike)):
        return open(source, "rb"), True
    return source, False


def iter_packet_records(source: Source, limits: Limits = Limits()) -> Iterator[PacketRecord]:
    """Offsets and sizes of every packet after the header (END last), fully validated like StreamReader.

    ``source`` is bytes, a path or a binary file object. The header record itself is
    ``StreamReader(f).header_record``.
    """
    f, owned = _open(source)
    try:
        for rec, _packet in StreamReader(f, limits).records():
            yield rec
    finally:
        if owned:
            f.close()


def read_records(start: bytes, body: bytes, next_frame: int, limits: Limits = Limits()) -> list[Packet]:
    """The packets of ``body``, whole records without the stream's start, read as the continuation of the stream
    whose signature and header are ``start``, its next frame ``next_frame``.

    Why: a transport that numbers its messages (the live wire: one datagram per frame, ``imfcodec.live``) knows
    where each message's frames begin even after messages it never received, so it can place the lean base
    records of version 5, which state no frame index. Every record is validated as ``StreamReader`` does
    (its CRC, the packet rules from ``next_frame`` on); an END packet, if any, must be the last.
    ``CorruptStreamError`` for a damaged or misplaced record: the message is then lost as a whole."""
    if next_frame < 0:
        raise ValueError(f"next_frame must be >= 0, got {next_frame}")
    reader = StreamReader(io.BytesIO(bytes(start) + bytes(body)), limits)
    if reader._src.pos != len(start):
        raise CorruptStreamError(f"the stream start is {len(start)} bytes but its header ends at byte "
                                 f"{reader._src.pos}")
    reader._next_frame = next_frame
    packets: list[Packet] = []
    while reader._src.remaining():
        if reader.end is not None:
            raise CorruptStreamError(f"records after the END packet, at byte {reader._src.pos}")
        packets.append(reader._next_record()[1])
    return packets


def read_stream(source: Source, limits: Limits = Limits()) -> tuple[StreamHeader, list[Packet]]:
    """Parse a whole stream: (header, packets with END last). Convenient for tools and tests."""
    f, owned = _open(source)
    try:
        reader = StreamReader(f, limits)
        return reader.header, list(reader)
    finally:
        if owned:
            f.close()


def is_imf_stream(path_or_bytes: Union[bytes, bytearray, memoryview, str, os.PathLike]) -> bool:
    """True when the data (or the file at the path) starts with the imfcodec signature; never raises."""
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        return bytes(path_or_bytes[:len(MAGIC)]) == MAGIC
    try:
        with open(path_or_bytes, "rb") as f:
            return f.read(len(MAGIC)) == MAGIC
    except (OSError, TypeError, ValueError):
        return False


# ---------------------------------------------------------------------------------------------- resync

@dataclass(frozen=True)
class Damage:
    """Bytes a ``ResyncReader`` skipped: ``offset`` of the first one, how many, and why."""

    offset: int
    length: int
    reason: str


_CANDIDATE = re.compile(b"[KTBbDECcIi]")  # the type bytes a packet record can start with
_SCAN_WINDOW = 1 << 16


class ResyncReader:
    """Concealment-mode reader (not part of FORMAT.md's conforming decoder, which must not resync).

    The signature, version and header are read and validated exactly as by ``StreamReader`` (a damaged
    header raises: nothing can be decoded without it). Iteration then yields ``(PacketRecord, Packet)``
    for every record that passes its CRC and the field checks of FORMAT.md §3.2-3.6, and a ``Damage`` for
    each stretch of bytes that did not: after a bad record it scans forward, byte by byte, for the next
    position where a complete record parses with a valid CRC, and resumes there. It stops after the first
    intact END (``.end``; bytes after it are counted in ``.trailing``) or at the end of the file.
    Sequence rules (§4: contiguous frame indices, key packet first) are *not* checked: that is the
    concealing decoder's business. The work spent scanning is bounded by ``16 x file size + 64 MiB`` bytes
    of CRC; a file that needs more is reported as damaged to its end. Needs a seekable file.
    """

    def __init__(self, fileobj: BinaryIO, limits: Limits = Limits()) -> None:
        self._r = StreamReader(fileobj, limits)
        self.header = self._r.header
        self.header_record = self._r.header_record
        src = self._r._src
        if src.size is None:
            raise InputError("decoding with concealment needs a seekable input (a file, not a pipe)")
        self._base = fileobj.tell() - src.pos  # file position of the stream's byte 0
        self._budget = 16 * src.size + (64 << 20)
        self.end: EndPacket | None = None
        self.trailing = 0
        self._next: int | None = 0  # the frame after the last good packet; None after damage (version 5 only)

    def __iter__(self) -> Iterator[Union[tuple[PacketRecord, Packet], Damage]]:
        src = self._r._src
        while src.remaining() > 0:
            start = src.pos
            got = self._try(start)
            if got is None:
                self._next = None  # lean records found after the damage cannot be placed
                nxt = self._scan(start + 1)
                stop = src.size if nxt is None else nxt[0].offset
                yield Damage(start, stop - start, self._why(start))
                if nxt is None:
                    return
                got = nxt
            rec, packet = got
            self._seek(rec.offset + rec.total_len)
            if isinstance(packet, BasePacket) and packet.frame < 0:
                # a lean record (no frame index) after damage: where its frames go is unknown until the next key
                # or END, so its bytes count as damaged and those frames are concealed then
                yield Damage(rec.offset, rec.total_len, f"{TYPE_NAMES[ord(rec.type)]} packet at byte {rec.offset}: "
                             f"its frames are unknown after the damage before it")
                continue
            if isinstance(packet, KeyPacket):
                self._next = packet.frame
            elif isinstance(packet, (BasePacket, TokenPacket)):
                self._next = packet.frame + packet.count
            yield rec, packet
            if isinstance(packet, EndPacket):
                self.end = packet
                self.trailing = src.remaining()
                return

    # ------------------------------------------------------------------------------------------ internals

    def _seek(self, pos: int) -> None:
        self._r._src.f.seek(self._base + pos)
        self._r._src.pos = pos

    def _try(self, pos: int) -> tuple[PacketRecord, Packet] | None:
        """The valid record starting at ``pos``, or None (the position is left unspecified)."""
        self._seek(pos)
        try:
            rec, payload = self._r._read_record(first=False)
            return rec, self._parse(rec, payload)
        except BitstreamError:
            return None
        finally:
            self._budget -= self._r._src.pos - pos

    def _why(self, pos: int) -> str:
        self._seek(pos)
        try:
            rec, payload = self._r._read_record(first=False)
            self._parse(rec, payload)
        except BitstreamError as e:
            return str(e)
        return "unreadable record"  # pragma: no cover (only reached if _try and _why disagree)

    def _scan(self, start: int) -> tuple[PacketRecord, Packet] | None:
        size = self._r._src.size
        p = start
        while p < size and self._budget > 0:
            self._seek(p)
            window = self._r._src.f.read(min(_SCAN_WINDOW, size - p))
            if not window:
                break
            for m in _CANDIDATE.finditer(window):
                if self._budget <= 0:
                    return None
                got = self._try(p + m.start())
                if got is not None:
                    return got
            p += len(window)
        return None

    def _parse(self, rec: PacketRecord, payload: bytes) -> Packet:
        """Field checks of one packet record (FORMAT.md §3.2-3.6) and which types the header allows, without
        the sequence rules of §4."""
        h, t = self.header, ord(rec.type)
        c = _Cursor(payload, rec.offset + rec.total_len - rec.payload_len - CRC_SIZE,
                    f"{TYPE_NAMES[t]} packet at byte {rec.offset}")
        _check_packet_type(t, h, c.where)
        if h.lean and t in LEAN_TYPES:
            packet = _lean_base_packet(c, h, t, self._next)
            limit = min(self._r.limits.max_frames, h.frames or self._r.limits.max_frames)
            if packet.frame + packet.count > limit:
                raise CorruptStreamError(f"{c.where}: frame {packet.frame + packet.count - 1} is beyond the limit "
                                         f"of {limit} frames")
            return packet
        if t == TYPE_TIMING:
            timing = _timing_packet(c)
            limit = min(self._r.limits.max_frames, h.frames or self._r.limits.max_frames)
            if timing.frame + timing.count > limit:
                raise CorruptStreamError(f"{c.where}: frame {timing.frame + timing.count - 1} is beyond the limit "
                                         f"of {limit} frames")
            return timing
        frame = c.varint("frame index")
        if t == TYPE_END:
            c.done()
            count, packet = 0, EndPacket(frame)
        elif t == TYPE_KEY:
            count, packet = 1, _key_packet(c, h, frame)
        elif t in BASE_TYPES:
            packet = _base_packet(c, h, frame, t)
            count = packet.count
        else:
            count = c.varint("frame count")
            if not 1 <= count <= h.chunk:
                raise CorruptStreamError(f"{c.where}: frame count {count} is outside 1..{h.chunk} (chunk size)")
            packet = TokenPacket(frame, count, c.rest())
        limit = min(self._r.limits.max_frames, h.frames or self._r.limits.max_frames)
        if frame + count > limit:
            raise CorruptStreamError(f"{c.where}: frame {frame + count - 1} is beyond the limit of {limit} frames")
        return packet
