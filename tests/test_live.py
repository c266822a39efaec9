"""The live mode (imfcodec.live) and the link simulator (benchmarks.livelink, benchmarks.live's metrics): the
bucket's arithmetic, the stream's order, skips, refresh keys, loss and recovery, all on a simulated clock."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from helpers import cli, gradient
from imfcodec.errors import ArgumentError
from imfcodec.live import (DATAGRAM_HEADER, SKIP_UNIT, LeakyBucket, LiveEncoder, LiveLink, datagram, fit_key,
                           parse_datagram, seq_gap, smoothed)

# ---------------------------------------------------------------------------------------------- bucket


def test_bucket_drains_at_the_link_rate():
    b = LeakyBucket(1000.0)  # 8 kbit/s
    assert b.level(0.0) == 0
    assert b.send(0.0, 500) == pytest.approx(0.5)
    assert b.level(0.2) == pytest.approx(300)
    assert b.finish(0.2, 100) == pytest.approx(0.6)  # behind the 300 still queued
    assert b.send(1.0, 100) == pytest.approx(1.1)  # an empty link starts at once
    assert b.room(1.0, 1.5) == pytest.approx(400)  # bytes that still leave by 1.5 s
    assert b.room(2.0, 1.5) < 0  # past the deadline


def test_bucket_refuses_no_rate():
    with pytest.raises(ArgumentError):
        LeakyBucket(0)


@pytest.mark.parametrize("kw", [dict(kbps=0), dict(kbps=math.nan), dict(kbps=True), dict(kbps=8, max_delay_ms=10),
                                dict(kbps=8, max_delay_ms=600, reserve_ms=600)])
def test_link_validation_is_one_line(kw):
    with pytest.raises(ArgumentError) as e:
        LiveLink(**kw).validated()
    assert "\n" not in str(e.value)


def test_link_window():
    link = LiveLink(16, 600, 40)
    assert link.bytes_per_s == 2000
    assert link.send_window_s == pytest.approx(0.56)


# ---------------------------------------------------------------------------------------------- key fitting


def _sizes(q: int) -> bytes:
    return bytes(int(250 * 2 ** (q / 6)))  # a key's size doubles every 6 quality steps


@pytest.mark.parametrize("budget", [260, 500, 900, 3000])
def test_fit_key_finds_a_quality_that_fits(budget):
    calls = []

    def encode(q):
        calls.append(q)
        return _sizes(q)

    q, data = fit_key(encode, 0, 51, budget, start=8, tries=3)
    assert len(data) <= budget and len(calls) <= 3
    assert len(_sizes(q + 2)) > budget  # within two steps of the best


def test_fit_key_none_when_nothing_fits():
    assert fit_key(_sizes, 0, 51, 100, start=10) is None
    assert fit_key(_sizes, 0, 51, 0, start=10) is None and fit_key(_sizes, 0, 51, -40, start=10) is None  # no room


def test_smoothed_is_cheaper_picture_of_the_same_size():
    x = gradient(64, 64)
    y = smoothed(x, 4)
    assert y.shape == x.shape and y.dtype == np.uint8
    assert np.abs(np.diff(y.astype(int), axis=1)).sum() < np.abs(np.diff(x.astype(int), axis=1)).sum()


# ---------------------------------------------------------------------------------------------- wire


def test_datagram_round_trip_and_gaps():
    assert parse_datagram(datagram(70000, b"KB")) == (70000 % 65536, b"KB")
    assert len(datagram(1, b"")) == DATAGRAM_HEADER
    with pytest.raises(ArgumentError):
        parse_datagram(b"x")
    assert seq_gap(None, 5) == 0
    assert seq_gap(4, 5) == 0 and seq_gap(4, 7) == 2
    assert seq_gap(65535, 1) == 1  # wraps


# ---------------------------------------------------------------------------------------------- encoder


def _frames(n: int, size: int = 64) -> list[np.ndarray]:
    base = gradient(size, size)
    return [np.roll(base, 2 * i, axis=1) for i in range(n)]


def _encoder(enh_tiny, kbps=8.0, **kw) -> LiveEncoder:
    return LiveEncoder(enh_tiny.model, model_name=enh_tiny.name, weights_hash=enh_tiny.weights_hash,
                       fps=Fraction(25), link=LiveLink(kbps), **kw)


def _decode(enh_tiny, header, packets):
    from imfcodec.modes.hybrid import HybridDecoder

    dec = HybridDecoder(enh_tiny.model, header)
    out = []
    for p in packets:
        out += dec.decode(p)
    return out


def test_live_stream_is_a_valid_chunk_1_stream_within_the_bound(enh_tiny, tmp_path):
    from imfcodec.bitstream import BasePacket, EndPacket, KeyPacket, StreamWriter, read_stream

    enc = _encoder(enh_tiny)
    frames = _frames(20)
    per_frame = [enc.encode(f) for f in frames]
    end = enc.flush()
    assert isinstance(per_frame[0][0], KeyPacket) and per_frame[0][0].frame == 0
    for i, packets in enumerate(per_frame):  # ([K,] B) per frame, in order, one unit each
        assert isinstance(packets[-1], BasePacket) and packets[-1].frame == i and packets[-1].count == 1
    assert enc.header.chunk == 1 and end == [EndPacket(frames=20)]
    path = tmp_path / "live.imf"
    with open(path, "wb") as f:  # a strict reader and decoder take it
        w = StreamWriter(f, enc.header)
        for packets in per_frame:
            for p in packets:
                w.write(p)
        w.close(end[0])
    header, packets = read_stream(path)
    assert len(_decode(enh_tiny, header, packets)) == 20
    window = enc.link.send_window_s
    assert all(d - c <= window + 1e-9 for c, d in zip(enc.stats.captures, enc.stats.departures))


def test_a_full_bucket_skips_frames_and_the_decoder_repeats_the_picture(enh_tiny):
    enc = _encoder(enh_tiny)
    frames = _frames(6)
    packets = enc.encode(frames[0]) + enc.encode(frames[1])
    enc.bucket.send(2 / 25, 5000)  # something else filled the link: seconds of bytes ahead
    skipped = enc.encode(frames[2])
    assert skipped[-1].units == (SKIP_UNIT,) and enc.stats.skipped[-1] == 2
    out = _decode(enh_tiny, enc.header, packets + skipped)
    assert np.array_equal(out[2], out[1])  # shown again: the same base picture, the same key


def test_a_refresh_request_gets_a_key_frame_once_it_fits(enh_tiny):
    from imfcodec.bitstream import KeyPacket

    enc = _encoder(enh_tiny)
    frames = _frames(60)
    for i in range(10):
        enc.encode(frames[i])
    enc.bucket.send(10 / 25, 1500)  # 1.5 s of queue: no key fits for a while
    first = enc.encode(frames[10], refresh=True)
    assert not any(isinstance(p, KeyPacket) for p in first) and enc.stats.postponed == 1
    keyed = None
    for i in range(11, 60):
        if any(isinstance(p, KeyPacket) for p in enc.encode(frames[i])):
            keyed = i
            break
    assert keyed is not None and keyed in enc.stats.key_frames
    d = enc.stats.sender_delays_ms()[keyed]
    assert d <= enc.link.send_window_s * 1000 + 1e-6  # the key itself is on time


# ---------------------------------------------------------------------------------------------- link simulator


def test_link_capacity_delay_and_order():
    from benchmarks.livelink import Link, LinkSpec

    link = Link(LinkSpec(kbps=8, delay_ms=150))
    arrivals = [link.admit(0.0, 100) for _ in range(5)]  # 100 B = 0.1 s each at 8 kbit/s
    assert arrivals == pytest.approx([0.25, 0.35, 0.45, 0.55, 0.65])
    assert link.admit(10.0, 50) == pytest.approx(10.2)  # an idle link: size / rate + propagation


def test_link_jitter_never_reorders():
    from benchmarks.livelink import Link, LinkSpec

    link = Link(LinkSpec(kbps=100, delay_ms=20, jitter_ms=80, seed=3))
    arrivals = [link.admit(i * 0.01, 40) for i in range(200)]
    assert all(b >= a for a, b in zip(arrivals, arrivals[1:]))


def test_random_and_burst_loss():
    from benchmarks.livelink import Link, LinkSpec

    random_link = Link(LinkSpec(kbps=1000, loss=0.05, seed=1))
    lost = [random_link.admit(i, 10) is None for i in range(20000)]
    assert 0.04 < np.mean(lost) < 0.06
    burst = Link(LinkSpec(kbps=1000, burst=0.01, burst_len=4, seed=1))
    lost = np.array([burst.admit(i, 10) is None for i in range(20000)])
    runs = np.diff(np.flatnonzero(np.diff(np.concatenate([[0], lost.astype(int), [0]]))))[::2]
    assert 3 < runs.mean() < 6  # losses come in bursts
    again = Link(LinkSpec(kbps=1000, burst=0.01, burst_len=4, seed=1))
    assert [again.admit(i, 10) is None for i in range(20000)] == lost.tolist()  # deterministic


@pytest.mark.parametrize("kw", [dict(kbps=0), dict(kbps=8, loss=2), dict(kbps=8, delay_ms=-1),
                                dict(kbps=8, burst_len=0.5)])
def test_link_spec_refuses_nonsense(kw):
    from benchmarks.livelink import LinkSpec

    with pytest.raises(ValueError):
        LinkSpec(**kw)


def test_display_metrics_frozen_and_late():
    from benchmarks.live import display_metrics, longest_run

    ready = np.array([0.10, 0.14, 0.50, 0.52, 0.56])  # frame 2 is late: 1 and 0 stay on screen
    m = display_metrics(ready, 0.0, 25.0, 5, 0.2)
    assert m["shown"].tolist() == [0, 1, 1, 1, 1]
    assert m["late"].tolist() == [False, False, True, True, True]
    assert m["frozen"].tolist() == [False, False, True, True, True]
    short = display_metrics(ready[:2], 0.0, 25.0, 4, 0.2)  # frames that never came are frozen and late
    assert short["frozen"].tolist() == [False, False, True, True] and np.isinf(short["latency_ms"][3])
    assert longest_run(np.array([1, 0, 1, 1, 1, 0, 1], bool)) == 3


def test_loss_is_concealed_and_a_key_frame_recovers(enh_tiny):
    """A lost datagram: the decoder repeats the last picture until the refresh key frame, then decodes again."""
    from benchmarks.livecall import decode_offline, packets_of
    from imfcodec.bitstream import KeyPacket, encode_packet, stream_start

    enc = _encoder(enh_tiny, kbps=16)
    frames = _frames(40)
    dgrams = []
    for i, f in enumerate(frames):
        packets = enc.encode(f, refresh=(i == 12))  # the receiver's request arrives at frame 12
        dgrams.append((i + 1, b"".join(encode_packet(p, enc.header) for p in packets)))
    setup = stream_start(enc.header)
    keys = [i for i, (_, body) in enumerate(dgrams)
            if any(isinstance(p, KeyPacket) for p in packets_of(setup, body, i))]
    assert keys[0] == 0 and len(keys) == 2 and keys[1] >= 12
    received = [d for d in dgrams if d[0] != 9]  # frame 8's datagram is lost
    out, concealed = decode_offline(setup, received, enh_tiny)
    assert len(out) == 40
    assert concealed == list(range(8, keys[1]))  # frozen from the loss to the key frame, no further
    assert np.array_equal(out[8], out[7])


def test_a_sender_behind_its_capture_clock_skips_to_catch_up(enh_tiny):
    """Real time: a frame handed over more than a frame after its capture (the sender's CPU lagged) is skipped,
    which costs no encode; on time, the same frames on a roomy link are coded."""
    frames = _frames(8)
    for late_s, skipped in ((0.0, []), (0.1, list(range(1, 8)))):
        enc = _encoder(enh_tiny, kbps=200, clock=lambda: 0.0)
        for i, f in enumerate(frames):
            enc.encode(f, t_capture=i * 0.04, t_now=i * 0.04 + (late_s if i else 0.0))
        assert enc.stats.skipped == skipped


def test_key_search_stops_when_its_planned_time_is_spent(enh_tiny):
    """Real time: the key frame's coding time is measured before the call (``KEY_ENCODES`` encodes of a test
    picture) and the key search stops when it is spent, so the plan holds; a search that ran over plans more."""
    from imfcodec.live import KEY_ENCODES

    now = [0.0]

    def clock():  # every encode below takes 10 ms of this clock
        return now[0]

    enc = _encoder(enh_tiny, kbps=1, clock=clock)  # no key fits this link: an unbounded search tries on
    calls = []
    real = enc.key_codec.encode

    def slow(rgb, q):
        calls.append(q)
        now[0] += 0.010
        return real(rgb, q)

    enc.key_codec.encode = slow
    assert enc.key_cost_s == 0.0  # the warm-up encode ran before the slow clock: no time passed
    enc.key_cost_s = KEY_ENCODES * 0.010
    enc.encode(_frames(1)[0], t_capture=0.0, t_now=0.0)
    assert 1 <= len(calls) <= KEY_ENCODES  # never more encodes than planned for
    assert enc.key_cost_s >= 0.010 * len(calls)


def test_live_records_are_lean_and_placed_by_the_sequence_number(enh_tiny):
    """Version 5 lean records (4-5 bytes of framing a frame, against 10-12 in version 2); a datagram's records
    state no frame, so the receiver places them by the datagram's sequence number, also after losses and past
    the 16-bit wrap; a damaged datagram is refused whole."""
    from imfcodec.bitstream import BasePacket, encode_packet, packet_overhead, read_records, stream_start
    from imfcodec.errors import CorruptStreamError
    from imfcodec.live import WireFrames, record_overhead

    enc = _encoder(enh_tiny)
    per_frame = [enc.encode(f) for f in _frames(12)]
    assert enc.header.lean and enc.header.chunk == 1
    setup = stream_start(enc.header)
    for i, packets in enumerate(per_frame[1:], 1):
        (b,) = packets
        assert packet_overhead(b, enc.header) <= record_overhead() <= 5
        body = encode_packet(b, enc.header)
        assert body[:1] == b"B"  # a lean record: no frame index
        (got,) = read_records(setup, body, i)
        assert isinstance(got, BasePacket) and got.frame == i and got.units == b.units
        with pytest.raises(CorruptStreamError):
            read_records(setup, body[:-1] + bytes([body[-1] ^ 1]), i)
    wire = WireFrames()
    assert wire.place(1) == (0, 0)
    assert wire.place(2) == (1, 0)
    assert wire.place(5) == (4, 2)  # datagrams 3 and 4 lost
    wire.last_seq, wire.frame = 65535, 65534
    assert wire.place(1) == (65536, 1)  # seq 0 (frame 65535) lost, the counter wrapped


# ---------------------------------------------------------------------------------------------- command line


@pytest.mark.parametrize("args, needle", [
    (["--link-kbps", "8"], "--link-kbps needs --live"),
    (["--max-delay", "300"], "--max-delay needs --live"),
    (["--live"], "--live needs --link-kbps"),
    (["--live", "--link-kbps", "8", "--chunk", "2"], "--chunk cannot be used with --live"),
    (["--live", "--link-kbps", "8", "--kbps", "10"], "--kbps cannot be used with --live"),
    (["--live", "--link-kbps", "0.5"], "--link-kbps"),
    (["--live", "--link-kbps", "8", "--max-delay", "10"], "--max-delay"),
])
def test_cli_live_options_refused_in_one_line(sample_clip, tmp_path, args, needle):
    r = cli("encode", sample_clip, "-o", tmp_path / "x.imf", *args)
    assert r.exit_code == 2, r.output
    err = r.stderr.strip()
    assert err.startswith("error:") and "\n" not in err and needle in err, err
    assert not (tmp_path / "x.imf").exists()
