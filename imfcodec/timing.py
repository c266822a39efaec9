"""Presentation timing: when each frame is shown, from the source's timestamps to the decoded file's.

A stream either plays at the constant rate of its header (``fps_num/fps_den``; formats 1 and 2, and what
the encoder still writes for a constant-rate source, so those streams are byte for byte what they were) or
carries a duration per frame in ticks of a time base (format 3, timing records; ``bitstreams/FORMAT.md``).
``TimingRecorder`` watches the source's frames as the encoder reads them and decides which at the end;
``Timing`` is the per-frame form; ``Clock`` gives the decoder each frame's presentation time.

Pure Python (no torch, no numpy, no PyAV): ``imfcodec info`` uses it.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, replace
from fractions import Fraction

from .bitstream.format import MAX_DURATION, MAX_FPS_TERM, MAX_TIME, StreamHeader, TimingPacket

#: a time base finer than this is rescaled to it (its terms must fit the header's 32-bit fields)
FALLBACK_TIME_BASE = Fraction(1, 90_000)
#: durations per timing record the encoder writes (about 2-3 bytes each; a record stays well under a MiB)
RECORD_FRAMES = 65_536


@dataclass(frozen=True)
class Timing:
    """Per-frame timing: frame i is shown for ``durations[i]`` ticks of ``time_base`` seconds, from the
    sum of the durations before it (frame 0 at 0)."""

    time_base: Fraction
    durations: array  # of int ('q'), each 1..MAX_DURATION

    @property
    def frames(self) -> int:
        return len(self.durations)

    @property
    def ticks(self) -> int:
        return sum(self.durations)

    @property
    def seconds(self) -> float:
        return float(self.ticks * self.time_base)

    def average_rate(self) -> Fraction:
        """Frames per second on average, with terms that fit the header (what a constant-rate output
        such as y4m plays the frames at, so that it lasts as long)."""
        rate = Fraction(self.frames) / (self.ticks * self.time_base)
        if rate.numerator > MAX_FPS_TERM or rate.denominator > MAX_FPS_TERM:
            rate = rate.limit_denominator(1_000_000)
        return rate if rate.numerator <= MAX_FPS_TERM else Fraction(MAX_FPS_TERM, 1)

    def packets(self, limit: int = RECORD_FRAMES) -> list[TimingPacket]:
        """The timing records that carry these durations (at most ``limit`` frames each)."""
        d = self.durations
        return [TimingPacket(i, tuple(d[i:i + limit])) for i in range(0, len(d), limit)]

    def header(self, h: StreamHeader) -> StreamHeader:
        """``h`` with this time base and the average rate: a version 3 header."""
        rate = self.average_rate()
        return replace(h, fps_num=rate.numerator, fps_den=rate.denominator,
                       time_num=self.time_base.numerator, time_den=self.time_base.denominator)


class TimingRecorder:
    """The source's timestamps as frames are read (``add``); ``finish`` says whether they need a timing
    record or are the constant rate ``fps`` (within a tick, so a millisecond time base holding 30000/1001 fps
    still counts as constant).

    Timestamps that cannot be trusted or kept give the constant rate, as before: none (raw elementary
    streams), any frame without one, or any that does not increase.
    """

    def __init__(self, time_base: Fraction | None, fps: Fraction) -> None:
        self.fps = Fraction(fps)
        self.time_base = Fraction(time_base) if time_base else None
        self._pts = array("q")
        self._last_duration: int | None = None
        self._usable = self.time_base is not None and self.time_base > 0

    def add(self, pts: int | None, duration: int | None = None) -> None:
        """One more frame: its timestamp and (if the container says) duration, in ``time_base`` ticks."""
        if not self._usable:
            return
        if pts is None or (self._pts and pts <= self._pts[-1]) or not -2**62 < pts < 2**62:
            self._usable = False
            self._pts = array("q")
            return
        self._pts.append(pts)
        self._last_duration = duration if duration and duration > 0 else None

    @property
    def frames(self) -> int:
        return len(self._pts)

    def finish(self) -> Timing | None:
        """The per-frame timing, or None when the frames are at the constant rate ``fps`` (or their
        timestamps are unusable): then the stream is what it always was."""
        if not self._usable or not self._pts:
            return None
        pts, tb = self._pts, self.time_base
        step = 1 / (self.fps * tb)  # ticks per frame at the nominal rate, N / D
        n, d = step.numerator, step.denominator
        last = self._last_duration
        p0 = pts[0]
        constant = all(abs((p - p0) * d - i * n) < d for i, p in enumerate(pts))  # within a tick, in integers
        if constant and (last is None or abs((pts[-1] - p0 + last) * d - len(pts) * n) < d):
            return None  # (a last frame of unknown duration is taken to last as long as the rate says)
        if last is None:  # the container did not say: the frame before it, else the nominal rate
            last = pts[-1] - pts[-2] if len(pts) > 1 else max(1, round(step))
        durations = array("q", (b - a for a, b in zip(pts, pts[1:])))
        durations.append(last)
        if tb.numerator > MAX_FPS_TERM or tb.denominator > MAX_FPS_TERM:
            durations, tb = _rescale(pts, last, tb)
        if not durations or max(durations) > MAX_DURATION or sum(durations) > MAX_TIME:
            return None  # not representable (a frame shown for days): the constant rate, as before
        return Timing(tb, durations)


def _rescale(pts: array, last: int, tb: Fraction) -> tuple[array, Fraction]:
    """Durations in ``FALLBACK_TIME_BASE`` instead of a time base too fine for the header; empty if two
    frames fall on one tick there."""
    new = FALLBACK_TIME_BASE
    ends = [round((p - pts[0]) * tb / new) for p in pts] + [round((pts[-1] - pts[0] + last) * tb / new)]
    d = array("q", (b - a for a, b in zip(ends, ends[1:])))
    return (d if d and min(d) >= 1 else array("q")), new


class Clock:
    """Presentation times of a stream's frames, for the decoder: per-frame from its timing records
    (``add``), else the header's constant rate. ``time_base`` is what the times are counted in."""

    def __init__(self, header: StreamHeader) -> None:
        self.timed = header.timed
        # a half-rate stream (version 6) shows twice as many frames as it codes
        self.fps = Fraction(header.fps_num, header.fps_den) * (2 if header.half_rate else 1)
        self.time_base = Fraction(header.time_num, header.time_den) if self.timed else 1 / self.fps
        self._step = max(1, round(1 / (self.fps * self.time_base)))  # ticks per frame at the average rate
        self._durations = array("q")  # of frames from self._first on
        self._first = 0
        self._shown = 0
        self._pts = 0

    def add(self, packet: TimingPacket) -> None:
        """A timing record's durations (the reader has checked them). In concealment a record may follow
        a lost one: the frames in between get the average rate; a record that overlaps is cut."""
        known = self._first + len(self._durations)
        if packet.frame > known:
            self._durations.extend([self._step] * (packet.frame - known))
        self._durations.extend(packet.durations[max(0, known - packet.frame):])

    @property
    def shown(self) -> int:
        """Frames shown so far (``next`` calls)."""
        return self._shown

    @property
    def end(self) -> int:
        """When the frames shown so far end, in ``time_base`` ticks."""
        return self._pts if self.timed else self._shown

    def next(self) -> tuple[int, int]:
        """(pts, duration) of the next frame shown, in ``time_base`` ticks. A frame without timing (only in
        concealment, after a damaged timing record) follows the one before at the average rate."""
        if not self.timed:
            self._shown += 1
            return self._shown - 1, 1
        i = self._shown - self._first
        d = self._durations[i] if i < len(self._durations) else self._step
        pts = self._pts
        self._pts += d
        self._shown += 1
        if i >= 4096:  # forget what was shown now and then: memory stays flat in a long stream
            del self._durations[:i + 1]
            self._first += i + 1
        return pts, d
