"""imfcodec.timing: which sources need per-frame timing, the durations kept, and the decoder's clock."""

from __future__ import annotations

from fractions import Fraction

import pytest

from imfcodec.bitstream import StreamHeader, TimingPacket
from imfcodec.timing import FALLBACK_TIME_BASE, RECORD_FRAMES, Clock, TimingRecorder

NTSC = Fraction(30000, 1001)


def record(pts, time_base, fps, last=None) -> object:
    r = TimingRecorder(time_base, fps)
    for i, p in enumerate(pts):
        r.add(p, last if i == len(pts) - 1 else None)
    return r.finish()


def test_constant_rates_need_no_timing():
    """A constant-rate source keeps making version 1/2 streams: exact ticks, rounded ticks, any start."""
    assert record([i * 1001 for i in range(128)], Fraction(1, 30000), NTSC) is None
    assert record([round(i * 1000 / NTSC) for i in range(128)], Fraction(1, 1000), NTSC) is None  # mkv: ms
    assert record([int(i * 1000 / NTSC) for i in range(128)], Fraction(1, 1000), NTSC) is None  # truncated
    assert record([507 + 512 * i for i in range(50)], Fraction(1, 15360), 30, last=512) is None
    assert record([3600 * i for i in range(75)], Fraction(1, 90000), 25) is None  # mpeg-ps, no durations
    assert record([0], Fraction(1, 1000), 25, last=40) is None  # one frame, as long as the rate says


def test_variable_timing_is_kept():
    tb = Fraction(1, 1000)
    t = record([0, 40, 60, 200, 210, 400], tb, 24)
    assert t.time_base == tb and list(t.durations) == [40, 20, 140, 10, 190, 190]  # last: the one before
    t = record([0, 40, 60, 200, 210, 400], tb, 24, last=600)
    assert list(t.durations)[-1] == 600 and t.seconds == 1.0 and t.average_rate() == 6
    # a constant rate with dropped frames, and a last frame held longer than the rate says
    assert record([0, 1001, 3003, 4004], Fraction(1, 30000), NTSC) is not None
    t = record([i * 512 for i in range(100)], Fraction(1, 12800), 25, last=12800)
    assert t.seconds == pytest.approx(99 * 0.04 + 1) and t.frames == 100
    # the first timestamp is the stream's start
    assert list(record([1000, 1040, 1100], tb, 25, last=40).durations) == [40, 60, 40]


def test_timestamps_that_cannot_be_kept_give_the_constant_rate():
    tb = Fraction(1, 1000)
    assert record([0, 40, 40, 120], tb, 25) is None  # not increasing
    assert record([0, 80, 40, 120], tb, 25) is None
    assert record([0, None, 80], tb, 25) is None  # a frame without a timestamp
    assert record([0, 10, 500], None, 25) is None  # no time base (raw elementary streams)
    assert record([0, 2**33], Fraction(1, 1), 25) is None  # a frame shown for 272 years
    assert TimingRecorder(tb, 25).finish() is None  # no frames


def test_a_time_base_too_fine_for_the_header_is_rescaled():
    tb = Fraction(1, 2**40)
    step = 2**40 // 10
    t = record([0, step, 3 * step], tb, 25, last=step)
    assert t.time_base == FALLBACK_TIME_BASE and list(t.durations) == [9000, 18000, 9000]
    assert record([0, 1, 2], tb, 25, last=1) is None  # frames closer than 1/90000 s cannot be told apart


def test_average_rate_and_header():
    t = record([0, 40, 60, 200, 210, 400], Fraction(1, 1000), 24, last=600)
    h = t.header(StreamHeader("imf-tiny", bytes(16), 64, 64, 24, 1, 6, "png", 9, 6, 5, 1, (1,)))
    assert (h.fps_num, h.fps_den, h.time_num, h.time_den, h.timed) == (6, 1, 1, 1000, True)
    t = record([0, 3, 5], Fraction(1, 4294967291), 25, last=7)  # a prime: the average's terms are too big
    rate = t.average_rate()
    assert rate.numerator < 2**32 and rate.denominator < 2**32 and rate == pytest.approx(3 * 4294967291 / 12)


def test_records_split_long_timing():
    t = record([0] + [i * 3 + 1 for i in range(1, RECORD_FRAMES + 5)], Fraction(1, 1000), 25, last=3)
    packets = t.packets()
    assert [(p.frame, p.count) for p in packets] == [(0, RECORD_FRAMES), (RECORD_FRAMES, 5)]
    assert sum(sum(p.durations) for p in packets) == t.ticks


def _header(**kw) -> StreamHeader:
    return StreamHeader("imf-tiny", bytes(16), 64, 64, kw.pop("fps_num", 25), 1, 0, "png", 9, 6, 5, 1, (1,), **kw)


def test_clock():
    c = Clock(_header())
    assert not c.timed and c.time_base == Fraction(1, 25) and [c.next() for _ in range(3)] == [(0, 1), (1, 1), (2, 1)]
    assert c.end == 3
    c = Clock(_header(fps_num=8, time_num=1, time_den=1000))
    c.add(TimingPacket(0, (40, 80)))
    c.add(TimingPacket(2, (200,)))
    assert [c.next() for _ in range(3)] == [(0, 40), (40, 80), (120, 200)] and c.end == 320
    # concealment: a lost record's frames get the average rate (125 ms at 8 fps), an overlap is cut
    c.add(TimingPacket(5, (10, 20)))
    c.add(TimingPacket(6, (99, 30)))
    assert [c.next() for _ in range(5)] == [(320, 125), (445, 125), (570, 10), (580, 20), (600, 30)]
    assert c.next() == (630, 125)  # a frame beyond every record


def test_clock_memory_stays_flat():
    c = Clock(_header(fps_num=8, time_num=1, time_den=1000))
    for i in range(0, 20_000, 1000):
        c.add(TimingPacket(i, (2,) * 1000))
        for _ in range(1000):
            c.next()
    assert c.end == 40_000 and len(c._durations) < 5000
