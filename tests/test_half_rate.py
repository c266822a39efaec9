"""Format version 6 (FORMAT.md §3.8): a half-rate base layer. The stream codes the even frames; the decoder
shows each decoded frame, then the rounded mean of it and the next (a copy before a key frame, and after the
last frame when the count is even), so N frames in give N frames out."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from helpers import cli, timed_clip, write_packets

from imfcodec.api import encode_frames_to_file, encode_video, iter_decoded, stream_info
from imfcodec.bitstream import BasePacket, EndPacket, KeyPacket, StreamHeader, read_stream
from imfcodec.bitstream.format import FLAG_HALF_RATE, coded_frames, header_problem
from imfcodec.errors import ArgumentError, CorruptStreamError, InputError
from imfcodec.halfrate import Doubler, between
from imfcodec.limits import Limits
from imfcodec.settings import EncoderSettings

SETTINGS = dict(base_codec="vp9", base_factor=2, chunk=3, scenecut=0, guard=False)


def frames_of(n: int, size: int = 64) -> list[np.ndarray]:
    from imfcodec.io.sample import sample_frames

    return list(sample_frames(n, size))


def decoded(path, model, **kw) -> list[np.ndarray]:
    return [f for _, frames in iter_decoded(path, model=model, **kw) for f in frames]


def test_the_frame_between_is_the_rounded_mean():
    a = np.array([[[0, 1, 254]]], dtype=np.uint8)
    b = np.array([[[1, 2, 255]]], dtype=np.uint8)
    assert between(a, b).tolist() == [[[1, 2, 255]]] and between(a, b).dtype == np.uint8
    assert between(b, b).tolist() == b.tolist()


def test_the_doubler_blends_holds_at_a_key_and_ends_by_the_count():
    f = [np.full((1, 1, 3), 10 * i, dtype=np.uint8) for i in range(5)]
    d = Doubler()
    out = d.push(f[:2]) + d.push(f[2:3], key_first=True) + d.push(f[3:])
    assert [int(x[0, 0, 0]) for x in out] == [0, 5, 10, 10, 20, 25, 30, 35, 40]  # before the key at 20: a copy
    assert [int(x[0, 0, 0]) for x in d.end(10)] == [40] and d.frames == 10  # an even count: a copy at the end
    d = Doubler()
    d.push(f[:3])
    assert d.end(5) == [] and d.frames == 5  # an odd count ends on a decoded frame
    assert Doubler().end(4) == []


@pytest.mark.parametrize("n", [9, 10])
def test_round_trip_shows_every_frame_and_interpolates_the_odd_ones(n, tmp_path, enh_tiny):
    src = frames_of(n)
    path = tmp_path / "h.imf"
    s = encode_frames_to_file(src, path, model=enh_tiny, fps=25, settings=EncoderSettings(half_rate=True, **SETTINGS))
    assert s.frames == n
    data = path.read_bytes()
    assert data[8] == 6
    h, packets = read_stream(data)
    assert h.half_rate and h.frames == n and Fraction(h.fps_num, h.fps_den) == Fraction(25, 2)
    assert packets[-1] == EndPacket(n) and sum(p.count for p in packets if isinstance(p, BasePacket)) == (n + 1) // 2
    full = path.with_suffix(".full.imf")
    encode_frames_to_file(src, full, model=enh_tiny, fps=25, settings=EncoderSettings(half_rate=False, **SETTINGS))
    assert len(data) < full.stat().st_size
    out = decoded(path, enh_tiny)
    assert len(out) == n
    for i in range(1, n, 2):
        want = out[i - 1] if i == n - 1 else between(out[i - 1], out[i + 1])
        assert np.array_equal(out[i], want)
    # the even frames are what the stream codes: the same pictures a decoder of the coded frames alone shows
    plain = [f for f in out[0::2]]
    assert np.mean([np.abs(a.astype(int) - b.astype(int)).mean() for a, b in zip(plain, src[0::2])]) < 40
    info = stream_info(path)
    assert (info["frames"], info["coded_frames"], info["shown_fps"]) == (n, (n + 1) // 2, 25.0)
    assert info["duration_s"] == pytest.approx(n / 25)
    assert len(decoded(path, enh_tiny, conceal=True)) == n


def test_before_a_key_frame_the_frame_between_is_a_copy(tmp_path, enh_tiny):
    src = frames_of(12)
    path = tmp_path / "k.imf"
    s = encode_frames_to_file(src, path, model=enh_tiny, fps=25,
                              settings=EncoderSettings(half_rate=True, keyint=4, **SETTINGS))
    assert s.key_frames == [0, 4, 8]  # keyint counts the frames shown: a key every 2 coded frames
    out = decoded(path, enh_tiny)
    assert len(out) == 12
    for k in (4, 8):
        assert np.array_equal(out[k - 1], out[k - 2])
    assert np.array_equal(out[1], between(out[0], out[2]))


def test_the_cli_round_trip_and_info(tmp_path):
    clip = tmp_path / "s.mp4"
    assert cli("sample", clip, "--frames", 11, "--size", 64).exit_code == 0
    out = tmp_path / "h.imf"
    r = cli("encode", clip, "-o", out, "--half-rate", "--enhancer", "random:enh-tiny", "--base-codec", "vp9")
    assert r.exit_code == 0, r.output
    assert "11 frames" in r.output
    r = cli("info", out)
    assert "6 of the 11 frames coded" in r.output and "version 6" in r.output
    r = cli("decode", out, "-o", tmp_path / "h.y4m", "--enhancer", "random:enh-tiny")
    assert r.exit_code == 0 and "11 frames" in r.output, r.output
    r = cli("encode", clip, "-o", tmp_path / "t.imf", "--half-rate", "--mode", "token")
    assert r.exit_code != 0 and "--half-rate is a hybrid-mode option" in r.output
    r = cli("encode", clip, "-o", tmp_path / "l.imf", "--half-rate", "--live", "--link-kbps", "16")
    assert r.exit_code != 0 and "--half-rate cannot be used with --live" in r.output


def test_an_input_whose_frames_have_their_own_times_keeps_them(tmp_path, enh_tiny):
    """Timing records time the frames shown (all N), so a half-rate stream of a variable-rate input plays each
    frame, interpolated ones included, at its own time."""
    from helpers import video_times

    pts = [0, 40, 60, 200, 210, 400, 440]
    vfr = timed_clip(tmp_path / "vfr.mkv", pts, Fraction(1, 1000), 60)
    out = tmp_path / "v.imf"
    s = encode_video(vfr, out, model=enh_tiny, settings=EncoderSettings(half_rate=True, **SETTINGS))
    assert s.frames == 7 and s.timing == "per-frame"
    h, packets = read_stream(out.read_bytes())
    assert h.half_rate and h.timed and out.read_bytes()[8] == 6
    assert sum(p.count for p in packets if isinstance(p, BasePacket)) == 4 and packets[-1] == EndPacket(7)
    from imfcodec.bitstream import TimingPacket

    assert [d for p in packets if isinstance(p, TimingPacket) for d in p.durations] == [40, 20, 140, 10, 190, 40, 60]
    assert len(decoded(out, enh_tiny)) == 7
    from imfcodec.api import decode_stream

    d = decode_stream(out, tmp_path / "v.mkv", model=enh_tiny)
    assert d.frames == 7 and d.timing == "per-frame" and d.duration_s == pytest.approx(0.5)
    times, _, _ = video_times(tmp_path / "v.mkv")
    assert [round(float(t) * 1000) for t in times] == pts
    assert stream_info(out)["duration_s"] == pytest.approx(0.5)


def test_the_default_is_half_rate_where_the_stream_can_be():
    """By default the hybrid mode codes every other frame, but with the classic framing (versions 2-4 cannot say
    so) or the key pictures in the base layer (that route was not measured half-rate); the token mode has none."""
    assert EncoderSettings().validated().half_rate is True
    assert EncoderSettings(lean=False).validated().half_rate is False
    assert EncoderSettings(base_codec="av1").validated().half_rate is False  # the AV1 base carries the key
    assert EncoderSettings(base_codec="av1", intra_base=False).validated().half_rate is True
    assert EncoderSettings(half_rate=False).validated().half_rate is False
    assert EncoderSettings(mode="token").validated().half_rate is None
    assert EncoderSettings(half_rate=False).implied_mode == "hybrid"


def test_settings_and_headers_that_cannot_be_half_rate_are_refused():
    with pytest.raises(ArgumentError, match="half_rate=True needs lean=True"):
        EncoderSettings(half_rate=True, lean=False).validated()
    with pytest.raises(ArgumentError, match="need the hybrid mode"):
        EncoderSettings(half_rate=True, mode="token").validated()
    h = StreamHeader("enh-tiny", bytes(16), 64, 64, 25, 2, 0, "hevc", 16, 0, 3, 0, (), "vp9", 32, 32, 8,
                     lean=True, half_rate=True)
    assert header_problem(h, Limits()) is None and coded_frames(h, 7) == 4 and coded_frames(h, 8) == 4
    from dataclasses import replace

    assert header_problem(replace(h, time_num=1, time_den=1000), Limits()) is None  # timing counts frames shown
    assert "lean base records" in header_problem(replace(h, lean=False), Limits())


def test_the_reader_holds_a_half_rate_stream_to_its_rules():
    h = StreamHeader("enh-tiny", bytes(16), 64, 64, 25, 2, 0, "hevc", 16, 0, 2, 0, (), "vp9", 32, 32, 8,
                     lean=True, half_rate=True)
    packets = [KeyPacket(0, b"", b"KEY"), BasePacket(0, (b"a", b"b")), BasePacket(2, (b"c",))]

    def write(end: int) -> bytes:
        return write_packets(h, packets, end)

    for n in (5, 6):  # 3 coded frames: 5 or 6 shown
        got, read = read_stream(write(n))
        assert got.half_rate and read[-1] == EndPacket(n)
    with pytest.raises(InputError, match="END says 7 frames"):
        write(7)
    data = bytearray(write(6))
    with pytest.raises(CorruptStreamError, match="END says|says 3 frames"):
        read_stream(bytes(data[:-len(_end(6))]) + _end(3))
    # the flag in a version 5 stream is unknown there
    v5 = bytearray(data)
    v5[8] = 5
    with pytest.raises(CorruptStreamError):
        read_stream(bytes(v5))
    assert FLAG_HALF_RATE == 0x08


def _end(frames: int) -> bytes:
    import zlib

    from imfcodec.bitstream import encode_varint

    body = b"E" + encode_varint(len(encode_varint(frames))) + encode_varint(frames)
    return body + zlib.crc32(body).to_bytes(4, "little")
