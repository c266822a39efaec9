"""The hybrid mode end to end (issue 15): format version 2 round trips, the encoder and decoder
(imfcodec.hybrid), --no-enhance, concealment, settings, API and CLI. Hostile streams: test_hostile_bitstream.py."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch

from helpers import N_FRAMES, cli, damaged, decode_all, one_line_error, split
from imfcodec.api import encode_frames_to_file, iter_decoded, stream_info
from imfcodec.baselayer import BaseDecoder
from imfcodec.bitstream import (
    BasePacket,
    EndPacket,
    KeyPacket,
    StreamHeader,
    StreamWriter,
    TokenPacket,
    VERSIONS,
    packet_overhead,
    read_stream,
)
from imfcodec.codec import EncoderSettings, to_tensor, to_uint8
from imfcodec.errors import InputError, ModelMismatchError
from imfcodec.keyframe import get_keyframe_codec
from imfcodec.models import upscale
from imfcodec.settings import DEFAULT_ENHANCER
from imfcodec.zoo import shipped_weights_path

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ENH = "random:enh-tiny"


def hybrid_header(**kw) -> StreamHeader:
    base = dict(model="enh-tiny", weights_hash=bytes(16), width=64, height=64, fps_num=25, fps_den=1, frames=0,
                key_codec="png", key_quality=0, quality=0, chunk=1, token_dim=0, scale_indexes=(),
                base_codec="hevc", base_width=32, base_height=32, base_quality=13)
    base.update(kw)
    return StreamHeader(**base)


def frames_of(data, model, **kw) -> list[np.ndarray]:
    return [f for _dec, out in iter_decoded(data, model=model, **kw) for f in out]


# ------------------------------------------------------------------------------------------ format

def test_version_2_round_trip_and_writer_rules():
    h = hybrid_header(chunk=2)
    packets = [KeyPacket(0, b"", b"IMG"), BasePacket(0, (b"AU0", b"AU1")), KeyPacket(2, b"", b"IMG2"),
               BasePacket(2, (b"AU2",)), BasePacket(3, (b"AU3", b"A4"))]
    buf = io.BytesIO()
    w = StreamWriter(buf, h)
    for p in packets:
        w.write(p)
    w.close(EndPacket(5))
    data = buf.getvalue()
    assert data[8] == 2 and VERSIONS == (1, 2, 3, 4, 5, 6)
    header, got = read_stream(data)
    assert header == h and header.hybrid and got == packets + [EndPacket(5)]
    # type, length, frame, count, CRC, and one size byte per unit
    assert packet_overhead(BasePacket(5, (b"x" * 10,))) == 9
    assert packet_overhead(BasePacket(5, (b"x" * 10,) * 5)) == 13

    def refused(seq, needle, end=None):
        w = StreamWriter(io.BytesIO(), h)
        with pytest.raises(InputError, match=needle):
            for p in seq:
                w.write(p)
            w.close(end)

    refused([BasePacket(0, (b"A",))], "first packet must be a key packet")
    refused([KeyPacket(0, b"", b"I"), BasePacket(0, (b"A", b"B", b"C"))], "holds 3 units, not 1..2")
    refused([KeyPacket(0, b"", b"I"), KeyPacket(0, b"", b"I")], "followed by its base packet")
    refused([KeyPacket(0, b"", b"I"), BasePacket(0, (b"A",)), TokenPacket(1, 1, b"d")],
            "token packets are not allowed")
    refused([KeyPacket(0, b"", b"I")], "has no base packet", EndPacket(0))
    refused([KeyPacket(0, b"", b"I"), BasePacket(0, (b"A", b""))], "empty")
    refused([KeyPacket(0, b"xx", b"I")], "key token is 2 bytes, expected 0")
    for bad, needle in ((dict(token_dim=2, scale_indexes=(1, 1)), "token_dim must be 0"), (dict(quality=3), "quality"),
                        (dict(base_width=0), "base_width 0"), (dict(base_height=5000), "base_height 5000"),
                        (dict(base_codec="\x01"), "base_codec")):
        with pytest.raises(InputError, match=needle):
            StreamWriter(io.BytesIO(), hybrid_header(**bad))
    with pytest.raises(InputError, match="token_dim 0 is allowed only"):
        StreamWriter(io.BytesIO(), hybrid_header(base_codec="", base_width=0, base_height=0, base_quality=0))
    token = hybrid_header(base_codec="", base_width=0, base_height=0, base_quality=0, token_dim=1,
                          scale_indexes=(3,), quality=6)
    w = StreamWriter(io.BytesIO(), token)  # a token stream: version 1, no base packets
    w.write(KeyPacket(0, b"\x00\x00", b"I"))
    with pytest.raises(InputError, match="need a header with a base layer"):
        w.write(BasePacket(1, (b"A",)))


# ------------------------------------------------------------------------------------------ CLI round trip

def test_cli_round_trip_encode_decode_info(tmp_path):
    clip = tmp_path / "s.mp4"
    assert cli("sample", clip, "--frames", 10, "--size", 64).exit_code == 0
    out = tmp_path / "s.imf"
    r = cli("encode", clip, "-o", out, "--hybrid", "--enhancer", ENH, "--keyint", 5, "--base-quality", 20,
            "--full-rate")  # every frame coded: the packets below hold 5 frames each
    assert r.exit_code == 0, r.output
    assert "base " in r.stderr and "enhancer enh-tiny" in r.stderr
    r = cli("info", out, "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert (d["mode"], d["version"], d["model"], d["frames"]) == ("hybrid", 5, "enh-tiny", 10)  # lean records: version 5
    assert (d["base_codec"], d["base_width"], d["base_height"], d["base_quality"]) == ("vp9", 32, 32, 20)  # the default base codec
    assert d["key_frames"] == [0, 5] and d["token_bytes"] == 0 and d["base_bytes"] > 0
    assert d["key_bytes"] + d["base_bytes"] + d["token_bytes"] + d["overhead_bytes"] == d["bytes"] == out.stat().st_size
    assert d["kbps"] == pytest.approx(d["key_kbps"] + d["base_kbps"] + d["token_kbps"] + d["overhead_kbps"])
    assert [p["type"] for p in d["packets"]] == ["key", "base", "key", "base"]  # chunk 5: one base packet per GOP
    assert [p["count"] for p in d["packets"] if p["type"] == "base"] == [5, 5]
    r = cli("info", out)
    assert r.exit_code == 0 and "hybrid mode" in r.stdout and "vp9 32x32 q20" in r.stdout and "framing" in r.stdout
    for extra in ((), ("--no-enhance",)):
        dec = tmp_path / f"d{len(extra)}.y4m"
        r = cli("decode", out, "-o", dec, *extra)
        assert r.exit_code == 0, r.output
        from imfcodec.io import probe_video

        assert probe_video(dec).frames == 10
    # token streams show the same split (no base bytes), and refuse --no-enhance
    tok = tmp_path / "t.imf"
    assert cli("encode", clip, "-o", tok, "--model", "random:imf-tiny", "--refine", 0, "--frames", 3).exit_code == 0
    d = json.loads(cli("info", tok, "--json").stdout)
    assert (d["mode"], d["version"], d["base_bytes"], d["base_codec"]) == ("tokens", 1, 0, None)
    one_line_error(cli("decode", tok, "-o", tmp_path / "x.y4m", "--no-enhance"), "hybrid streams only")


def _usage_error(result, needle):
    """A usage error (issue 25): one line, status 2."""
    err = result.stderr.strip()
    assert result.exit_code == 2 and err.startswith("error:") and "\n" not in err and needle in err, result.output


def test_cli_option_errors(tmp_path, sample_clip):
    out = tmp_path / "o.imf"
    _usage_error(cli("encode", sample_clip, "-o", out, "--mode", "token", "--base-codec", "av1"),
                 "--base-codec is a hybrid-mode option")
    _usage_error(cli("encode", sample_clip, "-o", out, "--model", "random:imf-tiny", "--enhancer", ENH),
                 "--enhancer is a hybrid-mode option")
    _usage_error(cli("encode", sample_clip, "-o", out, "--mode", "token", "--kbps", 20), "--kbps is the hybrid")
    _usage_error(cli("encode", sample_clip, "-o", out, "--mode", "token", "--hybrid"), "--hybrid is the hybrid")
    _usage_error(cli("encode", sample_clip, "-o", out, "--mode", "hybrid", "--model", "random:imf-tiny"),
                 "--enhancer")
    # the default mode is hybrid: the token mode's options are refused, not ignored
    for option in (("--quality", 5), ("--refine", 0)):
        _usage_error(cli("encode", sample_clip, "-o", out, "--enhancer", ENH, *option), "add --mode token")
    _usage_error(cli("encode", sample_clip, "-o", out, "--hybrid", "--model", "random:imf-tiny"), "--enhancer")
    one_line_error(cli("encode", sample_clip, "-o", out, "--hybrid", "--enhancer", "random:imf-tiny"), "token model")
    one_line_error(cli("encode", sample_clip, "-o", out, "--model", ENH), "--enhancer")
    _usage_error(cli("encode", sample_clip, "-o", out, "--hybrid", "--enhancer", ENH, "--base-quality", 99),
                 "--base-quality for vp9 must be in 0..63")
    _usage_error(cli("encode", sample_clip, "-o", out, "--hybrid", "--enhancer", ENH, "--refresh-below", 20),
                 "--refresh-below")
    if shipped_weights_path(DEFAULT_ENHANCER) is None:  # the default enhancer: its weights are not shipped yet
        one_line_error(cli("encode", sample_clip, "-o", out, "--hybrid"), f"--enhancer random:{DEFAULT_ENHANCER}")
    assert not out.exists()


def test_settings_validation():
    s = EncoderSettings(base_codec="av1").validated()
    assert (s.base_quality, s.base_factor, s.hybrid) == (13, 2, True)
    assert EncoderSettings().validated().hybrid and not EncoderSettings(mode="token").validated().hybrid  # issue 21
    for bad, needle in ((dict(base_codec="mpeg2"), "base_codec="),
                        (dict(base_codec="hevc", base_factor=3), "base_factor="),
                        (dict(base_codec="hevc", base_quality=52), "0..51"),
                        (dict(base_codec="hevc", refresh_below=20.0), "refresh_below="),
                        (dict(mode="token", base_quality=20), "need the hybrid mode"),
                        (dict(mode="token", enhancer="enh-tiny"), "need the hybrid mode"),
                        (dict(base_codec="hevc", enhancer=""), "enhancer=")):
        with pytest.raises(InputError, match=needle):
            EncoderSettings(**bad).validated()


# ------------------------------------------------------------------------------------------ decoder

def _independent_base(data: bytes) -> tuple[list[np.ndarray], dict[int, np.ndarray]]:
    """Upscaled base frames and key images of a stream, decoded with BaseDecoder + upscale directly."""
    h, packets = read_stream(data)
    dec = BaseDecoder(h.base_codec, h.base_width, h.base_height)
    key = get_keyframe_codec(h.key_codec)
    ups, keys = [], {}
    for p in packets:
        if isinstance(p, KeyPacket):
            keys[p.frame] = key.decode(p.image, h.width, h.height)
            dec.restart()
        elif isinstance(p, BasePacket):
            for unit in p.units:
                small = torch.from_numpy(dec.decode(unit)).permute(2, 0, 1)[None].float() / 255
                ups.append(to_uint8(upscale(small, (h.height, h.width)))[0])
    return ups, keys


def test_no_enhance_is_the_bicubic_upscale_of_the_base(hybrid_stream, enh_tiny):
    data = hybrid_stream.read_bytes()
    plain = frames_of(data, enh_tiny, enhance=False)
    ups, keys = _independent_base(data)
    assert len(plain) == len(ups) == N_FRAMES and sorted(keys) == [0, 4]
    for i, f in enumerate(plain):
        assert np.array_equal(f, keys[i] if i in keys else ups[i]), i  # key frames stay the key image
    # and the upscaled base follows the source: the base layer carries the motion
    assert np.abs(ups[3].astype(int) - plain[0].astype(int)).mean() > 0


def test_untrained_enhancer_gives_exactly_the_no_enhance_output(hybrid_stream, enh_tiny):
    data = hybrid_stream.read_bytes()
    enhanced, plain = frames_of(data, enh_tiny), frames_of(data, enh_tiny, enhance=False)
    assert len(enhanced) == N_FRAMES and all(np.array_equal(a, b) for a, b in zip(enhanced, plain))
    # a trained (non-zero) head changes the non-key frames, never the key frames
    from dataclasses import replace

    model = enh_tiny.model
    saved = [t.clone() for t in (model.head.weight, model.head.bias)]
    try:
        with torch.no_grad():
            model.head.bias.fill_(0.1)
        lifted = frames_of(data, replace(enh_tiny, model=model))
    finally:
        with torch.no_grad():
            model.head.weight.copy_(saved[0])
            model.head.bias.copy_(saved[1])
    assert np.array_equal(lifted[0], plain[0]) and np.array_equal(lifted[4], plain[4])
    assert not np.array_equal(lifted[1], plain[1])


def test_hybrid_stream_needs_an_enhancer(hybrid_stream, tiny, enh_tiny, hevc_stream, tmp_path):
    with pytest.raises(ModelMismatchError):
        frames_of(hybrid_stream.read_bytes(), "random:imf-tiny")
    with pytest.raises(ModelMismatchError):
        frames_of(hevc_stream.read_bytes(), ENH)
    from imfcodec.hybrid import HybridDecoder

    header, _ = read_stream(hybrid_stream.read_bytes())
    with pytest.raises(ModelMismatchError):
        HybridDecoder(tiny.model, header)
    one_line_error(cli("decode", hybrid_stream, "-o", tmp_path / "o.y4m", "--model", "random:imf-tiny"), "enh-tiny")


def test_concealment_of_a_damaged_base_packet(hybrid_stream, enh_tiny, tmp_path):
    data = hybrid_stream.read_bytes()
    clean = frames_of(data, enh_tiny)
    recs = split(data)  # H, K0, B0, B1, B2, B3, K4, B4, B5, B6, B7, E
    assert [chr(t) for t, _ in recs] == list("HKBBBBKBBBBE")
    bad = damaged(data, 3)  # B1: its CRC fails
    assert decode_all(bad, enh_tiny)[0] == "refused"
    outcome, n, report = decode_all(bad, enh_tiny, conceal=True)
    assert (outcome, n, report.concealed) == ("ok", N_FRAMES, [1, 2, 3])  # until the next key packet
    got = frames_of(bad, enh_tiny, conceal=True)
    assert all(np.array_equal(got[i], clean[0]) for i in (1, 2, 3))  # the last good frame, repeated
    assert all(np.array_equal(got[i], clean[i]) for i in range(4, N_FRAMES))  # base decoding restarted at K4
    # a damaged key packet: its frame and the rest of its GOP are concealed
    outcome, n, report = decode_all(damaged(data, 6), enh_tiny, conceal=True)
    assert (outcome, n, report.concealed) == ("ok", N_FRAMES, [4, 5, 6, 7])
    # undecodable bytes behind a valid CRC: the base decoder's error, concealed the same way
    recs[4][1] = recs[4][1][:3] + bytes(len(recs[4][1]) - 3)  # B2's access unit zeroed (frame, count, size kept)
    from helpers import join

    outcome, n, report = decode_all(join(recs, version=2), enh_tiny, conceal=True)
    assert (outcome, n, report.concealed) == ("ok", N_FRAMES, [2, 3]) and "base layer" in report.damage[0]
    p = tmp_path / "bad.imf"
    p.write_bytes(bad)
    r = cli("decode", p, "-o", tmp_path / "o.y4m", "--conceal")
    assert r.exit_code == 0 and "3 frame(s) concealed: 1-3" in r.stderr, r.output


def test_cli_round_trip_with_a_vp9_base(tmp_path):
    clip = tmp_path / "s.mp4"
    assert cli("sample", clip, "--frames", 6, "--size", 64).exit_code == 0
    out = tmp_path / "s.imf"
    r = cli("encode", clip, "-o", out, "--hybrid", "--base-codec", "vp9", "--enhancer", ENH, "--keyint", 4,
            "--full-rate")
    assert r.exit_code == 0, r.output
    d = stream_info(out)
    assert (d["base_codec"], d["base_width"], d["key_frames"]) == ("vp9", 32, [0, 4])
    dec = tmp_path / "d.y4m"
    assert cli("decode", out, "-o", dec).exit_code == 0
    from imfcodec.io import probe_video

    assert probe_video(dec).frames == 6


def test_api_encode_frames_to_file(tmp_path, enh_tiny):
    from helpers import gradient

    frames = [np.roll(gradient(64, 64), 3 * i, axis=1) for i in range(5)]
    s = encode_frames_to_file(iter(frames), tmp_path / "a.imf", fps=25, model=enh_tiny,
                              settings=EncoderSettings(base_codec="av1", base_factor=4, keyint=3, key_codec="webp",
                                                       half_rate=False))
    d = stream_info(tmp_path / "a.imf")
    assert (s.frames, s.key_frames, s.token_bytes, s.key_token_bytes) == (5, [0, 3], 0, 0)
    assert s.base_bytes == d["base_bytes"] and s.key_image_bytes == d["key_bytes"] and s.bytes == d["bytes"]
    assert (d["base_codec"], d["base_width"], d["base_height"]) == ("av1", 16, 16)
    out = frames_of(tmp_path / "a.imf", enh_tiny)
    assert len(out) == 5 and all(f.shape == (64, 64, 3) for f in out)
    # the settings' enhancer is used when no model is passed
    s = encode_frames_to_file(frames[:2], tmp_path / "b.imf", fps=25,
                              settings=EncoderSettings(base_codec="hevc", enhancer=ENH, half_rate=False))
    assert stream_info(tmp_path / "b.imf")["model"] == "enh-tiny"
    assert to_tensor(frames[0]).shape == (1, 3, 64, 64)


def test_scene_cut_starts_a_key_frame_and_a_base_gop(tmp_path, enh_tiny):
    """A cut gets a key packet and a new base-layer GOP (the base packet restarts there), as a keyint
    key frame does; with the detector off the stream has one key frame."""
    from helpers import two_scene_frames
    from imfcodec.metrics import psnr

    src = two_scene_frames(6, 6)
    kw = dict(base_codec="hevc", base_factor=2, key_codec="hevc", chunk=5, half_rate=False)
    r = encode_frames_to_file(src, tmp_path / "on.imf", fps=25, model=enh_tiny, settings=EncoderSettings(**kw))
    d = stream_info(tmp_path / "on.imf")
    assert (r.key_frames, r.scene_cuts, d["key_frames"]) == ([0, 6], [6], [0, 6])
    assert [(p["type"], p["frame"]) for p in d["packets"]] == [("key", 0), ("base", 0), ("base", 5),
                                                               ("key", 6), ("base", 6), ("base", 11)]
    off = encode_frames_to_file(src, tmp_path / "off.imf", fps=25, model=enh_tiny,
                                settings=EncoderSettings(scenecut=0, **kw))
    assert (off.key_frames, off.scene_cuts) == ([0], [])
    on_frames, off_frames = frames_of(tmp_path / "on.imf", enh_tiny), frames_of(tmp_path / "off.imf", enh_tiny)
    assert psnr(on_frames[6], src[6]) > psnr(off_frames[6], src[6]) + 3  # the key image against a P picture


# ------------------------------------------------------------------------------------------ rate control

def _table(tmp_path):
    from imfcodec.ratecontrol import OperatingPoint, save_table

    points = [OperatingPoint(4, 13, 11, 3.0, 2000.0, 24.0, 23.5), OperatingPoint(2, 9, 16, 4.0, 3000.0, 26.0, 25.0),
              OperatingPoint(2, 17, 21, 8.0, 5000.0, 29.0, 28.0), OperatingPoint(2, 4, 16, 4.5, 3000.0, 27.0, 26.0, "vp9")]
    path = tmp_path / "enh-tiny-points.json"
    save_table(points, path, {"enhancer": "enh-tiny@test"})
    return points, path


def test_rate_control_picks_the_best_point_within_the_rate(tmp_path):
    from imfcodec.ratecontrol import choose, load_table

    points, path = _table(tmp_path)
    import imfcodec.ratecontrol as rc

    assert [p.kbps(10) for p in points[:3]] == [pytest.approx(4.6), pytest.approx(6.4), pytest.approx(12.0)]
    assert choose(points, 7.0, 10.0)[0] == points[3]  # the vp9 point: better quality within the rate
    assert choose(points, 7.0, 10.0, "hevc")[0] == points[1]
    with pytest.raises(InputError, match="no av1 base-layer points"):
        choose(points, 7.0, 10.0, "av1")
    assert choose(points, 20.0, 10.0)[0] == points[2]
    assert choose(points, 7.0, 2.0)[0] == points[0]  # a short clip pays its key frame over 2 s
    point, expected, fits = choose(points, 1.0, 10.0)
    assert point == points[0] and not fits and expected == pytest.approx(4.6)
    with pytest.raises(InputError):
        choose(points, 0, 10.0)
    with pytest.raises(InputError, match="operating-point table"):
        load_table("enh-nothing")
    assert rc.OperatingPoint(**vars(points[0])) == points[0]


def test_cli_kbps_uses_the_table_and_explicit_options_win(tmp_path, monkeypatch):
    """The table chooses the point's family (base codec, size, key quality) and measuring passes the base quality
    (tests/test_ratecontrol_loop.py tests the search); options given explicitly win."""
    import imfcodec.ratecontrol as rc

    _points, path = _table(tmp_path)
    monkeypatch.setattr(rc, "table_path", lambda name: path if name == "enh-tiny" else tmp_path / "none.json")
    clip = tmp_path / "s.mp4"
    assert cli("sample", clip, "--frames", 8, "--size", 64).exit_code == 0
    out = tmp_path / "k.imf"
    # 8 frames = 0.32 s: start-up bytes dominate (53, 79 and 133 kbit/s expected); this tiny clip stays under 200
    # kbit/s even at the richest family's highest quality, which the encoder says
    r = cli("encode", clip, "-o", out, "--enhancer", ENH, "--kbps", 200)
    assert r.exit_code == 0, r.output
    assert "pass 1: base hevc 1/2 q" in r.stderr and "key q21 -> " in r.stderr
    assert "NOT within +-5%" in r.stderr and "warning: --kbps 200 cannot be met: the stream is" in r.stderr
    h = json.loads(cli("info", out, "--json").stdout)
    # the richest family's range ends under 200 kbit/s, so the table's next richer one is tried too: the closest
    # pass is at the top of some family's range
    assert (h["mode"], h["base_width"]) == ("hybrid", 32)
    assert h["base_quality"] == {"hevc": 51, "vp9": 63}[h["base_codec"]]
    r = cli("encode", clip, "-o", out, "--enhancer", ENH, "--kbps", 100, "--base-quality", 3, "-y")
    assert r.exit_code == 0 and "base vp9 1/2 q3, key q16" in r.stderr  # the 79 kbit/s point, base quality overridden
    assert "pass 1" not in r.stderr and "(target 100 kbit/s" in r.stderr
    assert json.loads(cli("info", out, "--json").stdout)["base_quality"] == 3
    r = cli("encode", clip, "-o", out, "--enhancer", ENH, "--kbps", 20, "-y")
    assert r.exit_code == 0 and "base hevc 1/4 q0, key q11" in r.stderr  # the lowest point, at its lowest quality
    r = cli("encode", clip, "-o", out, "--enhancer", ENH, "--kbps", 100, "--base-codec", "hevc", "-y")
    assert r.exit_code == 0 and "base hevc 1/2 q" in r.stderr and "key q16 -> " in r.stderr  # only the hevc points
    assert json.loads(cli("info", out, "--json").stdout)["base_codec"] == "hevc"
    one_line_error(cli("encode", clip, "-o", out, "--enhancer", ENH, "--kbps", 20, "--base-codec", "av1", "-y"),
                   "no av1 base-layer points")
    one_line_error(cli("encode", clip, "-o", out, "--enhancer", ENH, "--kbps", 20, "--key-codec", "webp", "-y"), "--kbps")
    one_line_error(cli("encode", clip, "-o", out, "--enhancer", "random:enh-small", "--kbps", 20, "-y"),
                   "operating-point table")


def test_variable_frame_rate_in_the_hybrid_mode(tmp_path, enh_tiny):
    """Timing is the same for both modes: a version 3 stream with a base layer, each frame at its time."""
    from fractions import Fraction

    from helpers import timed_clip, video_times
    from imfcodec.api import decode_stream, encode_video

    src = timed_clip(tmp_path / "vfr.mkv", [0, 40, 60, 200, 210, 400, 440], Fraction(1, 1000), 60)
    stream = tmp_path / "h.imf"
    encode_video(src, stream, model=enh_tiny, settings=EncoderSettings(base_codec="hevc", key_codec="png", chunk=3,
                                                                       half_rate=False))
    h, packets = read_stream(stream.read_bytes())
    assert stream.read_bytes()[8] == 5 and h.hybrid and h.timed and h.enhancer_switch  # timed, guarded, lean
    assert "".join(type(p).__name__[0] for p in packets) == "TKBBBE"  # the timing record first
    info = stream_info(stream)
    assert info["duration_s"] == 0.5 and info["mode"] == "hybrid" and info["timing"] == "per-frame"
    out = tmp_path / "d.mkv"
    assert decode_stream(stream, out, model=enh_tiny).timing == "per-frame"
    assert video_times(out)[:2] == video_times(src)[:2]


def test_the_default_mode_is_hybrid_in_the_cli_and_the_api(tmp_path, sample_clip):
    """`imfcodec encode` and ``encode_video`` without a mode make hybrid streams; naming a token model makes
    a token stream, naming an enhancer a hybrid one (api.default_settings)."""
    from imfcodec.api import default_settings, encode_video
    from imfcodec.settings import DEFAULT_BASE_CODEC, DEFAULT_MODE, HYBRID_KEY_QUALITY

    assert DEFAULT_MODE == "hybrid"
    assert default_settings().base_codec == DEFAULT_BASE_CODEC and default_settings("random:imf-tiny").base_codec is None
    assert default_settings(ENH).hybrid
    hybrid = default_settings().validated()
    assert hybrid.key_quality == HYBRID_KEY_QUALITY["hevc"] and hybrid.base_quality == 8  # vp9's default
    assert default_settings("random:imf-tiny").validated().key_quality == 21  # the token mode keeps hevc's own
    out = tmp_path / "h.imf"
    assert cli("encode", sample_clip, "-o", out, "--enhancer", ENH, "--frames", 3).exit_code == 0
    info = json.loads(cli("info", out, "--json").stdout)
    assert (info["mode"], info["base_codec"], info["key_quality"]) == ("hybrid", DEFAULT_BASE_CODEC, 16)
    encode_video(sample_clip, tmp_path / "a.imf", model=ENH, max_frames=3)
    encode_video(sample_clip, tmp_path / "t.imf", model="random:imf-tiny", max_frames=3)
    assert stream_info(tmp_path / "a.imf")["mode"] == "hybrid" and stream_info(tmp_path / "t.imf")["mode"] == "tokens"


def test_presets_set_the_base_encoders_effort(tmp_path, sample_clip):
    """In the hybrid mode --preset is the base encoder's speed setting (baselayer.EFFORTS): each codec gets its
    own setting per name, the streams differ in bytes only and decode; a bad effort is refused."""
    from imfcodec.baselayer import EFFORTS, _REGISTRY

    for codec in _REGISTRY.values():
        settings = [codec.options(13, 1, effort) for effort in EFFORTS]
        assert len({tuple(sorted(o.items())) for o in settings}) == len(EFFORTS), codec.name
        with pytest.raises(InputError, match="effort"):
            codec.options(13, 1, "placebo")
    sizes = {}
    for preset in ("ultrafast", "medium", "veryslow"):
        out = tmp_path / f"{preset}.imf"
        r = cli("encode", sample_clip, "-o", out, "--enhancer", ENH, "--preset", preset, "--frames", 8)
        assert r.exit_code == 0, r.output
        info = json.loads(cli("info", out, "--json").stdout)
        assert info["mode"] == "hybrid" and info["frames"] == 8
        assert len(frames_of(out.read_bytes(), ENH)) == 8
        sizes[preset] = info["base_bytes"]
    assert sizes["ultrafast"] != sizes["medium"]  # VP9 realtime cpu-used 8 codes other bytes
