"""StreamWriter: emits a valid .imf stream, refusing anything a conforming reader would reject."""

from __future__ import annotations

from typing import BinaryIO

from ..errors import InputError
from .format import (
    MAGIC,
    MAX_DURATION,
    MAX_TIME,
    TYPE_HEADER,
    BasePacket,
    EndPacket,
    KeyPacket,
    Limits,
    Packet,
    LeanFraming,
    StreamHeader,
    TimingPacket,
    TokenPacket,
    coded_frames,
    encode_header,
    shown_frame,
    encode_payload,
    frame_record,
    header_problem,
    header_version,
)
from .obu import unit_problem


def _uint(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def stream_start(header: StreamHeader, limits: Limits = Limits()) -> bytes:
    """Signature, version and header record: the bytes every stream starts with.

    Public so that a writer that learns the frame count only at the end can put a new start in front
    of packets it spooled; InputError for a header a conforming reader would refuse. The version byte is
    the lowest that carries the header (``format.header_version``): 1 without a base layer, else 2.
    """
    problem = header_problem(header, limits)
    if problem:
        raise InputError(f"invalid stream header: {problem}")
    return MAGIC + bytes((header_version(header),)) + frame_record(TYPE_HEADER, encode_header(header))


class StreamWriter:
    """Writes magic, version and header on construction, then one record per ``write``.

    The writer enforces the same rules as ``StreamReader`` (contiguous frame indices starting with a key
    frame, counts within the chunk size, key-token length; with a base layer, one base packet per frame,
    each key packet followed by its frame's base packet; with timing, every frame timed before it is sent) so
    an encoder bug surfaces at encode time as an
    ``InputError`` instead of as an undecodable file. It never closes ``fileobj``: the caller owns it.
    """

    def __init__(self, fileobj: BinaryIO, header: StreamHeader, limits: Limits = Limits()) -> None:
        start = stream_start(header, limits)
        self._f = fileobj
        self.header = header
        self.limits = limits
        self.next_frame = 0
        self.bytes_written = 0
        self.closed = False
        self._key_pending = False  # base layer: a key packet was written, its frame's base packet is due
        self.timed_frames = 0  # version 3: frames the timing records written so far cover
        self._time_end = 0
        self._framing = LeanFraming.of(header)  # version 5: base packets in lean records
        self._write(start)

    def write(self, packet: Packet) -> int:
        """Append a key, token, base or timing packet; returns the bytes written (the whole record)."""
        if isinstance(packet, EndPacket):
            raise InputError("use close(end) to write the END packet")
        if isinstance(packet, TimingPacket):
            self._check_timing(packet)
            n = self._record(packet)
            self.timed_frames += packet.count
            self._time_end += sum(packet.durations)
            return n
        self._check(packet)
        n = self._record(packet)
        if self.header.hybrid and isinstance(packet, KeyPacket):
            self._key_pending = True  # the key shares its frame with the base packet that follows
        else:
            self._key_pending = False
            self.next_frame += packet.count if isinstance(packet, (TokenPacket, BasePacket)) else 1
        return n

    def close(self, end: EndPacket) -> int:
        """Write the END packet and flush; returns its size. ``end.frames`` must match the frames sent."""
        if self.closed:
            raise InputError("stream writer is already closed")
        if not isinstance(end, EndPacket):
            raise InputError(f"close() needs an EndPacket, got {type(end).__name__}")
        if self._key_pending:
            raise InputError(f"the key packet of frame {self.next_frame} has no base packet")
        if coded_frames(self.header, end.frames) != self.next_frame:
            raise InputError(f"END says {end.frames!r} frames but {self.next_frame} were written")
        if self.header.timed and self.timed_frames != end.frames:
            raise InputError(f"the timing records cover {self.timed_frames} frames but {end.frames} were written")
        if self.header.frames and end.frames != self.header.frames:
            raise InputError(f"END says {end.frames} frames but the header says {self.header.frames}")
        n = self._record(end)
        self.closed = True
        flush = getattr(self._f, "flush", None)
        if flush is not None:
            flush()
        return n

    # ------------------------------------------------------------------------------------------ internals

    def _check(self, p: Packet) -> None:
        if self.closed:
            raise InputError("cannot write after close()")
        h = self.header
        if not isinstance(p, (KeyPacket, TokenPacket, BasePacket)):
            raise InputError(f"not a packet: {type(p).__name__}")
        if isinstance(p, TokenPacket) and h.hybrid:
            raise InputError("token packets are not allowed in a stream with a base layer")
        if isinstance(p, BasePacket) and not h.hybrid:
            raise InputError("base packets need a header with a base layer")
        if self._key_pending and not isinstance(p, BasePacket):
            raise InputError(f"the key packet of frame {self.next_frame} must be followed by its base packet")
        if isinstance(p, KeyPacket) and h.intra_base:
            raise InputError("key packets are not allowed when the key pictures are in the base layer (intra_base)")
        if not _uint(p.frame) or p.frame != self.next_frame:
            raise InputError(f"packet starts at frame {p.frame!r}, expected {self.next_frame}")
        if isinstance(p, BasePacket):
            if p.key is not False and (p.key is not True or not h.intra_base):
                raise InputError(f"base packet at frame {p.frame}: key=True needs a header with key pictures in the "
                                 f"base layer (intra_base; key must be True or False)")
            if self.next_frame == 0 and not self._key_pending and not p.key:
                raise InputError("the first packet must be a key packet")
            if not isinstance(p.units, tuple) or not 1 <= len(p.units) <= h.chunk:
                raise InputError(f"base packet at frame {p.frame} holds {len(p.units)!r} units, not 1..{h.chunk}")
            if not all(isinstance(u, (bytes, bytearray)) and u for u in p.units):
                raise InputError(f"base packet at frame {p.frame} has an empty access unit")
            if self._framing is not None and self._framing.self_delimiting:
                for u in p.units:
                    problem = unit_problem(u)
                    if problem:
                        raise InputError(f"base packet at frame {p.frame}: a {h.base_codec} unit that cannot be "
                                         f"stored without its size: {problem}")
            if p.enhance is not True and (p.enhance is not False or not h.enhancer_switch):
                raise InputError(f"base packet at frame {p.frame}: enhance=False needs a header with the enhancer "
                                 f"switch (enhance must be True or False)")
            last = p.frame + p.count - 1
        elif isinstance(p, KeyPacket):
            if len(p.key_token) != 2 * h.token_dim:
                raise InputError(f"key token is {len(p.key_token)} bytes, expected {2 * h.token_dim}")
            if not p.image:
                raise InputError(f"key packet at frame {p.frame} has an empty image")
            last = p.frame
        else:
            if self.next_frame == 0:
                raise InputError("the first packet must be a key packet")
            if not _uint(p.count) or not 1 <= p.count <= h.chunk:
                raise InputError(f"token packet count {p.count!r} is outside 1..{h.chunk}")
            last = p.frame + p.count - 1
        if last >= self.limits.max_frames:
            raise InputError(f"frame {last} exceeds the limit of {self.limits.max_frames} frames")
        if h.timed and shown_frame(h, last) >= self.timed_frames:
            raise InputError(f"frame {shown_frame(h, last)} has no timing: write its timing record first")

    def _check_timing(self, p: TimingPacket) -> None:
        if self.closed:
            raise InputError("cannot write after close()")
        if not self.header.timed:
            raise InputError("timing records need a header with a time base")
        if self._key_pending:
            raise InputError(f"the key packet of frame {self.next_frame} must be followed by its base packet")
        if not _uint(p.frame) or p.frame != self.timed_frames:
            raise InputError(f"timing record starts at frame {p.frame!r}, expected {self.timed_frames}")
        if not isinstance(p.durations, tuple) or not p.durations:
            raise InputError(f"timing record at frame {p.frame} times no frames")
        if not all(_uint(d) and 1 <= d <= MAX_DURATION for d in p.durations):
            raise InputError(f"timing record at frame {p.frame}: durations must be integers in 1..{MAX_DURATION}")
        if self._time_end + sum(p.durations) > MAX_TIME:
            raise InputError(f"timing record at frame {p.frame} ends beyond tick {MAX_TIME}")
        if p.frame + p.count > self.limits.max_frames or (self.header.frames and p.frame + p.count > self.header.frames):
            raise InputError(f"timing record at frame {p.frame} times frames beyond the stream's")

    def _record(self, p: Packet) -> int:
        lean = self._framing is not None and isinstance(p, BasePacket)
        type_byte, payload = encode_payload(p, self._framing if lean else None)
        if len(payload) > self.limits.max_packet:
            raise InputError(f"packet payload of {len(payload)} bytes exceeds {self.limits.max_packet}")
        return self._write(frame_record(type_byte, payload, lean=lean))

    def _write(self, data: bytes) -> int:
        written = self._f.write(data)
        if written is not None and written != len(data):  # raw (unbuffered) files may write short
            view = memoryview(data)[written:]
            while view:
                k = self._f.write(view)
                if not k:
                    raise OSError("short write to the output stream")
                view = view[k:]
        self.bytes_written += len(data)
        return len(data)
