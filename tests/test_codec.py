"""Codec core end to end with a tiny seeded model: round trips, closed loop, GOP control,
determinism across processes, and refusal of streams made with other weights."""

from __future__ import annotations

import sys
import textwrap

import numpy as np
import pytest

from helpers import run_no_hang, two_scene_frames
from imfcodec.api import decode_stream, encode_video, iter_decoded, stream_info
from imfcodec.codec import DEFAULT_QUALITY, Encoder, EncoderSettings, to_tensor, to_uint8
from imfcodec.entropy import dequantize, quantization_steps, quantize
from imfcodec.errors import InputError, ModelMismatchError
from imfcodec.io import read_frames
from imfcodec.zoo import load_model


def _decode_all(path, model):
    frames, tokens = [], []
    for dec, out in iter_decoded(path, model=model):
        frames.extend(out)
        if out:
            tokens.append(dec.last_tokens)
    return frames, np.concatenate(tokens)


def test_round_trip_frame_count_and_sizes(tiny_stream, tiny, tmp_path):
    info = stream_info(tiny_stream)
    assert info["frames"] == 14
    assert info["key_frames"] == [0, 6, 12]
    assert info["bytes"] == tiny_stream.stat().st_size
    assert info["key_bytes"] > 0 and info["token_bytes"] > 0 and info["overhead_bytes"] > 0
    out = tmp_path / "d.y4m"
    s = decode_stream(tiny_stream, out, model=tiny)
    assert s.frames == 14 and out.exists()
    frames = list(read_frames(out, 64))
    assert len(frames) == 14


def test_closed_loop_decoder_matches_encoder(sample_clip, tiny, tmp_path):
    """Without refinement, the tokens the decoder reads are the encoder's quantized E_T outputs, and
    the key frame the decoder shows is the key codec's decode (not the original). (Refined tokens:
    tests/test_token_search.py.)"""
    path = tmp_path / "c1.imf"
    encode_video(sample_clip, path, model=tiny, settings=EncoderSettings(chunk=1, search_iters=0))
    frames, tokens = _decode_all(path, tiny)
    src = list(read_frames(sample_clip, 64))
    steps = quantization_steps(tiny.model.token_scale, DEFAULT_QUALITY)
    import torch

    with torch.inference_mode():
        expect = quantize(tiny.model.encode_token(torch.cat([to_tensor(f) for f in src[1:]])), steps)
    np.testing.assert_array_equal(tokens[1:], expect)
    assert not np.array_equal(frames[0], src[0])  # lossy key frame: the decoded one is used


def test_frames_in_memory_encode_to_the_same_stream_as_the_file(sample_clip, tiny, tmp_path):
    """api.encode_frames_to_file is what encode_video runs: frames from a list or an iterator give the
    same bytes, and its result counts what stream_info reads back."""
    from fractions import Fraction

    from imfcodec.api import encode_frames_to_file

    settings = EncoderSettings(key_codec="png", keyint=5, chunk=3, search_iters=0)
    encode_video(sample_clip, tmp_path / "v.imf", model=tiny, settings=settings)
    src = list(read_frames(sample_clip, 64))
    for name, frames in (("list.imf", src), ("iter.imf", iter(src))):
        r = encode_frames_to_file(frames, tmp_path / name, model=tiny, fps=Fraction(25), settings=settings)
        assert (tmp_path / name).read_bytes() == (tmp_path / "v.imf").read_bytes()
    info = stream_info(tmp_path / "list.imf")
    assert (r.frames, r.bytes, r.key_frames) == (14, info["bytes"], info["key_frames"]) == (14, r.bytes, [0, 5, 10])
    assert r.key_image_bytes + r.key_token_bytes == info["key_bytes"] and r.token_bytes == info["token_bytes"]
    assert r.key_token_bytes == 3 * 2 * 32
    with pytest.raises(InputError, match="no frames"):
        encode_frames_to_file([], tmp_path / "empty.imf", model=tiny, fps=25, settings=settings)
    assert not (tmp_path / "empty.imf").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["iter.imf", "list.imf", "v.imf"]


def test_keyint_and_chunk_change_packets_not_frames(sample_clip, tiny, tmp_path):
    sizes = {}
    for chunk in (1, 7):
        p = tmp_path / f"k{chunk}.imf"
        encode_video(sample_clip, p, model=tiny, settings=EncoderSettings(keyint=0, chunk=chunk, search_iters=0))
        info = stream_info(p)
        assert info["frames"] == 14 and info["key_frames"] == [0]
        sizes[chunk] = info
    assert len(sizes[1]["packets"]) == 14 and len(sizes[7]["packets"]) == 1 + 2
    # one rANS flush and one packet header per chunk: bigger chunks cost fewer bytes
    assert sizes[7]["bytes"] < sizes[1]["bytes"]


def test_refresh_below_inserts_key_frames(sample_clip, tiny, tmp_path):
    hi = tmp_path / "hi.imf"
    encode_video(sample_clip, hi, model=tiny, settings=EncoderSettings(refresh_below=99.0, search_iters=0))
    assert stream_info(hi)["key_frames"] == list(range(14))  # an untrained model never reaches 99 dB
    lo = tmp_path / "lo.imf"
    encode_video(sample_clip, lo, model=tiny, settings=EncoderSettings(refresh_below=1.0, search_iters=0))
    assert stream_info(lo)["key_frames"] == [0]


def test_scene_cut_gets_a_key_frame_and_the_new_scene(tiny, tmp_path):
    """A two-scene clip: by default the encoder puts a key frame at the cut, and the frames after it show
    the new scene; without the detector every decoded frame is drawn from the first scene's key frame."""
    from imfcodec.api import encode_frames_to_file
    from imfcodec.metrics import psnr

    src = two_scene_frames(6, 6)
    after = {}
    for name, settings in (("on", EncoderSettings(search_iters=0)),
                           ("off", EncoderSettings(search_iters=0, scenecut=0))):
        path = tmp_path / f"{name}.imf"
        r = encode_frames_to_file(src, path, model=tiny, fps=25, settings=settings)
        assert stream_info(path)["key_frames"] == r.key_frames
        frames, _ = _decode_all(path, tiny)
        after[name] = (r.key_frames, r.scene_cuts, np.mean([psnr(d, s) for d, s in zip(frames[6:], src[6:])]))
    assert after["on"][:2] == ([0, 6], [6]) and after["off"][:2] == ([0], [])
    assert after["off"][2] < 12 and after["on"][2] > after["off"][2] + 10, after  # measured: 25.1 vs 9.5 dB


def test_no_scene_cut_no_extra_key_frame(sample_clip, tiny, tmp_path):
    """A clip without cuts codes to the same bytes with the detector on (the default) and off; a cut with
    keyint still counts keyint from the cut."""
    from imfcodec.api import encode_frames_to_file

    for name, sc in (("on", EncoderSettings().scenecut), ("off", 0)):
        s = encode_video(sample_clip, tmp_path / f"{name}.imf", model=tiny,
                         settings=EncoderSettings(search_iters=0, scenecut=sc))
        assert s.key_frames == [0] and s.scene_cuts == []
    assert (tmp_path / "on.imf").read_bytes() == (tmp_path / "off.imf").read_bytes()
    r = encode_frames_to_file(two_scene_frames(5, 9), tmp_path / "k.imf", model=tiny, fps=25,
                              settings=EncoderSettings(search_iters=0, keyint=4))
    assert (r.key_frames, r.scene_cuts) == ([0, 4, 5, 9, 13], [5])


def test_scenecut_setting_is_checked():
    for bad in (-1, 101, float("nan"), True, "10"):
        with pytest.raises(InputError, match="scenecut= must be a threshold in 0..100"):
            EncoderSettings(scenecut=bad).validated()
    assert EncoderSettings(scenecut=0).validated().scenecut == 0


def test_max_frames(sample_clip, tiny, tmp_path):
    p = tmp_path / "m.imf"
    s = encode_video(sample_clip, p, model=tiny, max_frames=5, settings=EncoderSettings(search_iters=0))
    assert s.frames == 5 and stream_info(p)["frames"] == 5


@pytest.mark.parametrize("kwargs", [dict(quality=99), dict(keyint=-1), dict(chunk=0), dict(key_codec="jpeg2000"),
                                    dict(key_codec="hevc", key_quality=1000), dict(refresh_below=-3)])
def test_bad_settings_are_refused(kwargs):
    from imfcodec.errors import IMFError

    with pytest.raises(IMFError):
        EncoderSettings(**kwargs).validated()


def test_frame_of_wrong_size_is_refused(tiny):
    from fractions import Fraction

    enc = Encoder(tiny.model, model_name=tiny.name, weights_hash=tiny.weights_hash, fps=Fraction(25))
    with pytest.raises(InputError):
        enc.encode(np.zeros((10, 10, 3), np.uint8))


def test_stream_from_other_weights_is_refused(tiny_stream):
    other = load_model("random:imf-tiny:1")
    with pytest.raises(ModelMismatchError):
        list(iter_decoded(tiny_stream, model=other))


def test_model_found_by_hash_without_model_argument(tiny_stream):
    frames, _ = _decode_all(tiny_stream, None)
    assert len(frames) == 14


DECODE_IN_SUBPROCESS = textwrap.dedent("""
    import sys, numpy as np, torch
    torch.set_num_threads(int(sys.argv[3]))
    from imfcodec.api import iter_decoded
    frames, tokens = [], []
    for dec, out in iter_decoded(sys.argv[1]):
        frames.extend(out)
        if out:
            tokens.append(dec.last_tokens)
    np.savez(sys.argv[2], frames=np.stack(frames), tokens=np.concatenate(tokens))
""")


@pytest.mark.slow
def test_decode_is_deterministic_across_processes_and_thread_counts(tiny_stream, tmp_path):
    """Token integers must be bit-exact on every machine; frames may differ by float rounding only."""
    results = []
    for threads in (1, 2):
        out = tmp_path / f"dec{threads}.npz"
        run_no_hang([sys.executable, "-c", DECODE_IN_SUBPROCESS, str(tiny_stream), str(out), str(threads)],
                    check=True)
        results.append(np.load(out))
    frames_here, tokens_here = _decode_all(tiny_stream, None)
    for r in results:
        np.testing.assert_array_equal(r["tokens"], tokens_here)
        diff = np.abs(r["frames"].astype(int) - np.stack(frames_here).astype(int))
        assert diff.max() <= 2, f"frames differ by up to {diff.max()} levels"


def test_uint8_conversion_round_trips():
    rgb = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    np.testing.assert_array_equal(to_uint8(to_tensor(rgb))[0], rgb)
    q = np.array([[3, -2]], np.int32)
    assert dequantize(q, np.array([0.5, 2.0])).tolist() == [[1.5, -4.0]]


def test_shipped_default_model_round_trips(sample_clip, tmp_path):
    """The embedded default (what `imfcodec encode` uses without --model) loads from safetensors and codes."""
    from imfcodec.zoo import DEFAULT_MODEL, load_model, read_metadata, shipped_weights_path

    path = shipped_weights_path(DEFAULT_MODEL)
    assert path is not None and path.stat().st_size <= 25 * 2**20
    assert read_metadata(path)["format"] == "imfcodec-weights/1"
    loaded = load_model(None)
    assert loaded.name == DEFAULT_MODEL and loaded.model.config.resolution == 256
    out = tmp_path / "default.imf"
    encode_video(sample_clip, out, settings=EncoderSettings(chunk=2, search_iters=0), max_frames=4)
    frames, _ = _decode_all(out, None)
    assert len(frames) == 4 and frames[0].shape == (256, 256, 3)


# ------------------------------------------------------------------------------------------ timing (issue 13, item 3)


def _round_trip_times(src, tmp_path, tiny, suffixes=(".mkv", ".mp4", ".y4m")):
    """Encode ``src`` to a file, decode it to each suffix: (stream info, {suffix: (summary, times)})."""
    from helpers import video_times

    stream = tmp_path / "s.imf"
    encode_video(src, stream, model=tiny, settings=EncoderSettings(search_iters=0, key_codec="png"), overwrite=True)
    out = {}
    for suffix in suffixes:
        path = tmp_path / f"d{suffix}"
        out[suffix] = decode_stream(stream, path, model=tiny, overwrite=True), video_times(path)
    return stream_info(stream), out


def test_variable_frame_rate_survives_encode_and_decode(tmp_path, tiny):
    """The issue's clip: a variable-frame-rate mkv of 40 frames over 5.0 s, which became 24 fps and 1.67 s
    (the matroska demuxer's guessed rate). Now each frame keeps its time, and the whole its 5.0 s."""
    from fractions import Fraction

    from helpers import timed_clip, video_times

    gaps = [40, 80, 125, 200, 40, 40, 125, 80]
    pts = [sum(gaps[j % 8] for j in range(i)) for i in range(40)]
    src = timed_clip(tmp_path / "vfr.mkv", pts, Fraction(1, 1000), 5000 - pts[-1])
    src_times, src_end, _ = video_times(src)
    assert src_end == 5
    info, out = _round_trip_times(src, tmp_path, tiny)
    assert (info["version"], info["timing"], info["frames"], info["fps_rational"]) == (3, "per-frame", 40, "8/1")
    assert info["duration_s"] == 5.0 and info["time_base"] == "1/1000"
    for suffix in (".mkv", ".mp4"):
        summary, (times, end, duration) = out[suffix]
        assert summary.timing == "per-frame" and summary.duration_s == 5.0
        assert times == src_times and end == src_end and abs(duration - 5.0) < 0.002, suffix
    summary, (times, end, duration) = out[".y4m"]  # one rate only: the average, so it lasts as long
    assert summary.timing == "averaged" and times == [Fraction(i, 8) for i in range(40)] and end == 5


@pytest.mark.slow
def test_constant_rates_keep_their_duration_and_bytes(tmp_path, tiny):
    """30000/1001 fps (4.27 s at 128 frames) stays a version 1 stream at exactly that rate, and decodes to
    the same times; so does a constant rate in a millisecond time base (mkv)."""
    from fractions import Fraction

    from helpers import timed_clip

    for name, pts, tb, last in (("ntsc.mp4", [1001 * i for i in range(128)], Fraction(1, 30000), 1001),
                                ("ntsc.mkv", [round(i * 1001 / 30) for i in range(128)], Fraction(1, 1000), 33)):
        folder = tmp_path / name
        folder.mkdir()
        src = timed_clip(folder / name, pts, tb, last, rate=Fraction(30000, 1001))
        info, out = _round_trip_times(src, folder, tiny, (".mp4",))
        assert (info["version"], info["timing"], info["fps_rational"]) == (1, "constant", "30000/1001")
        summary, (times, end, duration) = out[".mp4"]
        assert summary.timing == "constant" and summary.duration_s == pytest.approx(128 * 1001 / 30000)
        assert [round(float(t), 3) for t in times] == [round(i * 1001 / 30000, 3) for i in range(128)]
        assert abs(end - Fraction(128 * 1001, 30000)) < Fraction(1001, 30000), name  # within a frame


@pytest.mark.slow
def test_a_container_duration_that_is_not_frames_over_fps_is_kept(tmp_path, tiny):
    """100 frames at 25 fps whose last is shown for a second (4.96 s, not 100 / 25 = 4.0 s); and a 30 fps
    clip with dropped frames (fewer frames than its duration holds)."""
    from fractions import Fraction

    from helpers import timed_clip

    src = timed_clip(tmp_path / "held.mp4", [512 * i for i in range(100)], Fraction(1, 12800), 12800)
    info, out = _round_trip_times(src, tmp_path, tiny, (".mp4",))
    assert info["version"] == 3 and info["duration_s"] == pytest.approx(4.96)
    _summary, (times, end, duration) = out[".mp4"]
    assert end == Fraction(496, 100) and times[-1] == Fraction(396, 100)
    kept = [i for i in range(135) if i % 10 not in (3, 7)]  # 108 of 135 frames at 30 fps: 4.50 s
    src = timed_clip(tmp_path / "dropped.mp4", [512 * i for i in kept], Fraction(1, 15360), 512, rate=30)
    info, out = _round_trip_times(src, tmp_path, tiny, (".mp4",))
    _summary, (times, end, duration) = out[".mp4"]
    assert info["frames"] == 108 and times == [Fraction(i, 30) for i in kept] and end == Fraction(135, 30)
