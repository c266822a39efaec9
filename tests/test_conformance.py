"""Decode the committed conformance streams: tokens exact, key frames exact, other frames within
the stated tolerance. If this fails after a format change, bump the version and regenerate."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "bitstreams"
EXPECTED = json.loads((ROOT / "conformance" / "expected.json").read_text())


def _maker():
    spec = importlib.util.spec_from_file_location("make_conformance", ROOT / "make_conformance.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_conformance_stream_decodes_as_recorded(name):
    import hashlib

    import numpy as np

    path = ROOT / "conformance" / f"{name}.imf"
    exp = EXPECTED[name]
    assert hashlib.sha256(path.read_bytes()).hexdigest() == exp["file_sha256"], "stream file changed"
    got = _maker().describe(path, exp.get("model"))
    assert got["frames"] == exp["frames"]
    hybrid = "base_codec" in exp["settings"]
    st = exp["settings"]
    version = (3 if "durations" in exp else 6 if st.get("half_rate") else 5 if st.get("lean")
               else 2 if st.get("guard") is False else 4) if hybrid else 3 if "durations" in exp else 1
    assert path.read_bytes()[8] == version  # token streams stay version 1, unguarded constant-rate ones 1 or 2,
    # lean ones (the key pictures in the base layer or not) 5, half-rate ones 6
    assert (got.get("time_base"), got.get("durations")) == (exp.get("time_base"), exp.get("durations"))
    if "base_codec" in exp["settings"]:  # hybrid (version 2): base pictures instead of tokens
        assert got["base_frames_sha256"] == exp["base_frames_sha256"], "decoded base-layer pictures drifted"
    else:
        assert got["tokens_sha256"] == exp["tokens_sha256"], "decoded token integers drifted"
    assert got["key_frames_sha256"] == exp["key_frames_sha256"], "decoded key frames drifted"
    diff = np.abs(np.array(got["thumbnails"]) - np.array(exp["thumbnails"])).max()
    assert diff <= exp["frame_tolerance"], f"frames drifted by {diff:.3f} levels"


def test_reference_encoder_still_writes_the_same_bytes(tmp_path):
    """Encoding the same clip with the same settings reproduces the committed streams byte for byte."""
    from imfcodec.api import encode_video
    from imfcodec.codec import EncoderSettings
    from imfcodec.io import make_sample

    clip = tmp_path / "sample.mp4"
    make_sample(clip, frames=12, size=64, fps=25)
    name = "tiny-hevc-single-key-chunk1"
    out = tmp_path / "s.imf"
    encode_video(clip, out, model="random:imf-tiny", settings=EncoderSettings(**EXPECTED[name]["settings"]))
    assert out.read_bytes() == (ROOT / "conformance" / f"{name}.imf").read_bytes()
    for name in ("tiny-hybrid-hevc-half-keyint6", "tiny-hybrid-vp9-half-keyint6",  # the hybrid encoder (version 2)
                 "tiny-hybrid-vp9-lean-keyint4", "tiny-hybrid-av1-intra-keyint6",  # lean records (version 5)
                 "tiny-hybrid-vp9-halfrate-keyint6"):  # a half-rate base (version 6)
        encode_video(clip, out, model=EXPECTED[name]["model"],
                     settings=EncoderSettings(**EXPECTED[name]["settings"]), overwrite=True)
        assert out.read_bytes() == (ROOT / "conformance" / f"{name}.imf").read_bytes(), name
    name = "enh-wide-vp9-guard-bars"  # the enhancer switch (version 4): the encoder's guard decides the same
    guarded = _maker().guard_clip(tmp_path / "guard.mp4")
    encode_video(guarded, out, model=EXPECTED[name]["model"], settings=EncoderSettings(**EXPECTED[name]["settings"]),
                 overwrite=True)
    assert out.read_bytes() == (ROOT / "conformance" / f"{name}.imf").read_bytes(), name
    name = "enh-wide-av1-intra-guard-bars"  # the switch in a version 5 stream, the key pictures in the base
    encode_video(guarded, out, model=EXPECTED[name]["model"], settings=EncoderSettings(**EXPECTED[name]["settings"]),
                 overwrite=True)
    assert out.read_bytes() == (ROOT / "conformance" / f"{name}.imf").read_bytes(), name
    name = "tiny-png-vfr-chunk3"  # and per-frame timing (format version 3), from the clip at irregular times
    timed = _maker().timed_clip(tmp_path / "timed.mkv")
    encode_video(timed, out, model="random:imf-tiny", settings=EncoderSettings(**EXPECTED[name]["settings"]),
                 overwrite=True)
    assert out.read_bytes() == (ROOT / "conformance" / f"{name}.imf").read_bytes()


def test_timed_stream_decodes_to_its_times(tmp_path):
    """The decoder puts each frame of the version 3 stream at the clip's time, the last one held to 1.5 s."""
    from fractions import Fraction

    from helpers import video_times
    from imfcodec.api import decode_stream

    pts, last = _maker().TIMES
    out = tmp_path / "d.mkv"
    s = decode_stream(ROOT / "conformance" / "tiny-png-vfr-chunk3.imf", out, model="random:imf-tiny")
    assert s.timing == "per-frame" and s.duration_s == 1.5
    times, end, duration = video_times(out)
    assert times == [Fraction(p, 1000) for p in pts] and end == Fraction(pts[-1] + last, 1000) and duration == 1.5


def test_guarded_stream_shows_the_marked_packet_without_the_enhancer():
    """The 'b' record's frames are the upscaled base pictures (the same as --no-enhance), the 'B' record's are
    enhanced (they differ from --no-enhance): a decoder obeys the switch frame by frame."""
    import numpy as np

    from imfcodec.api import iter_decoded
    from imfcodec.bitstream import BasePacket, read_stream

    path = ROOT / "conformance" / "enh-wide-vp9-guard-bars.imf"
    marks = [p.enhance for p in read_stream(path)[1] if isinstance(p, BasePacket)]
    assert marks == [True, False]
    on = [f for _, out in iter_decoded(path, model="enh-wide") for f in out]
    off = [f for _, out in iter_decoded(path, model="enh-wide", enhance=False) for f in out]
    assert all(np.array_equal(a, b) for a, b in zip(on[5:], off[5:]))  # the bars: enhancer off
    assert all(np.abs(a.astype(int) - b).mean() > 0.5 for a, b in zip(on[1:5], off[1:5]))  # the face: on
