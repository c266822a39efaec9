"""imfcodec.baselayer: each base codec round-trips a tiny clip, efforts map to the shared option builders, the
options are the ones the conformance streams were coded with, and bad input is refused with the library's
errors (InputError for the caller's mistakes, CorruptStreamError / UnsupportedStreamError for a stream's)."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from imfcodec import baselayer, presets
from imfcodec.baselayer import (BaseCodec, BaseDecoder, BaseEncoder, base_size, code_clip, get_base_codec,
                                list_base_codecs, register_base_codec)
from imfcodec.errors import CorruptStreamError, InputError, UnsupportedStreamError
from imfcodec.limits import BASE_DECODER_MIN_PIXELS, MIN_BASE_SIDE
from imfcodec.metrics import psnr

CODECS = ("av1", "hevc", "vp9")


def _clip(frames: int = 6, size: int = 32) -> list[np.ndarray]:
    """A smooth moving pattern: easy to code, so a few bytes per frame reach a high PSNR."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    return [np.stack([(x * 6 + 8 * i) % 256, (y * 5 + 3 * i) % 256, np.full_like(x, 128 + 10 * i)], -1)
            .astype(np.uint8) for i in range(frames)]


def _half(rgb: np.ndarray) -> np.ndarray:
    """2x2 area mean: what the base layer's downscale approximates."""
    h, w = rgb.shape[:2]
    return np.rint(rgb.reshape(h // 2, 2, w // 2, 2, 3).mean((1, 3))).astype(np.uint8)


def test_registry_lists_the_three_codecs_and_refuses_others():
    from imfcodec.settings import BASE_CODECS

    assert list_base_codecs() == list(CODECS) == sorted(BASE_CODECS)
    with pytest.raises(UnsupportedStreamError, match="unknown base-layer codec 'h266'"):
        get_base_codec("h266")
    with pytest.raises(UnsupportedStreamError):
        get_base_codec(None)  # a header field of the wrong type is the stream's fault
    with pytest.raises(ValueError, match="already registered"):
        register_base_codec(get_base_codec("vp9"))


@pytest.mark.parametrize("name", CODECS)
def test_each_codec_round_trips_a_tiny_clip(name):
    """A 32x32 clip at 1/2: one access unit and one 16x16 RGB picture per frame, close to the downscaled
    input; forced key frames cost more than inter pictures; decoding is reproducible and can start at a key."""
    codec = get_base_codec(name)
    frames = _clip()
    hi_q = codec.quality_range[1] - 10
    units, small = code_clip(frames, name, 2, hi_q, key_frames={0, 3})
    assert len(units) == len(small) == len(frames)
    assert all(s.shape == (16, 16, 3) and s.dtype == np.uint8 for s in small)
    assert all(isinstance(u, bytes) and u for u in units)
    assert min(len(units[0]), len(units[3])) > 2 * max(len(units[i]) for i in (1, 2, 4, 5))  # forced intra
    scores = [psnr(s, _half(f)) for s, f in zip(small, frames)]
    assert min(scores) > 33, scores  # measured 35-37 dB at this quality
    low_units, low_small = code_clip(frames, name, 2, codec.default_quality, key_frames={0, 3})
    assert sum(map(len, low_units)) < sum(map(len, units))  # quality is a rate knob
    assert min(psnr(s, _half(f)) for s, f in zip(low_small, frames)) > 25

    dec = BaseDecoder(name, 16, 16)  # a second decoder gets the very same pictures
    assert all(np.array_equal(dec.decode(u), s) for u, s in zip(units, small))
    late = BaseDecoder(name, 16, 16)  # joining at the second key frame (a fresh decoder per GOP)
    assert all(np.array_equal(late.decode(u), s) for u, s in zip(units[3:], small[3:]))


@pytest.mark.parametrize("name", CODECS)
def test_access_units_are_stored_without_the_codecs_fixed_prefix(name):
    codec = get_base_codec(name)
    enc = BaseEncoder(name, 16, 16, Fraction(25), codec.default_quality)
    unit = enc.encode(_clip(1)[0], intra=True)
    enc.close()
    assert codec.prefix == {"hevc": b"\x00\x00\x00\x01", "av1": b"\x12\x00", "vp9": b""}[name]
    if codec.prefix:
        assert not unit.startswith(codec.prefix)  # the decoder puts it back
    assert BaseDecoder(name, 16, 16).decode(unit).shape == (16, 16, 3)


# ------------------------------------------------------------------------------------------ efforts -> options

#: what every conformance stream's base layer was coded with (medium, 1 thread): a change here changes bytes
MEDIUM = {
    "hevc": [("crf", "38"), ("preset", "medium"), ("tune", "zerolatency"), ("forced-idr", "1"),
             ("x265-params", "keyint=-1:scenecut=0:open-gop=0:repeat-headers=1:info=0:log-level=error:pools=1")],
    "av1": [("crf", "50"), ("preset", "8"), ("svtav1-params", "pred-struct=1:scd=0:keyint=-1:lp=1")],
    "vp9": [("crf", "55"), ("b", "0"), ("deadline", "good"), ("cpu-used", "2"), ("lag-in-frames", "0"),
            ("auto-alt-ref", "0"), ("row-mt", "1"), ("threads", "1"), ("g", "1000000")],
}


@pytest.mark.parametrize("name", CODECS)
def test_default_options_are_the_conformance_streams(name):
    codec = get_base_codec(name)
    assert list(codec.options(codec.default_quality, 1, "medium").items()) == MEDIUM[name]
    assert list(codec.options(codec.default_quality, 1).items()) == MEDIUM[name]  # medium is the default


def test_effort_names_map_to_each_encoders_setting():
    """Each effort is the base encoders' own speed setting of the table in imfcodec.presets; nothing else in
    the options changes with the effort."""
    assert baselayer.EFFORTS == presets.EFFORTS == ("ultrafast", "fast", "medium", "slow", "veryslow")
    assert baselayer.DEFAULT_EFFORT == presets.DEFAULT_PRESET == "medium"
    expect = {"ultrafast": ("realtime", "8", "12"), "fast": ("good", "4", "10"), "medium": ("good", "2", "8"),
              "slow": ("good", "1", "6"), "veryslow": ("good", "0", "4")}
    hevc, av1, vp9 = (get_base_codec(n) for n in ("hevc", "av1", "vp9"))
    for effort, (deadline, cpu_used, svt) in expect.items():
        assert hevc.options(13, 2, effort)["preset"] == effort
        o = vp9.options(8, 2, effort)
        assert (o["deadline"], o["cpu-used"]) == (deadline, cpu_used)
        assert av1.options(13, 2, effort)["preset"] == svt
        for codec in (hevc, av1, vp9):
            a, b = codec.options(13, 2, effort), codec.options(13, 2, "medium")
            changed = {k for k in a if a[k] != b[k]}
            assert changed <= {"preset", "deadline", "cpu-used"}, (codec.name, effort, changed)
            assert list(a) == list(b)  # same keys, same order


@pytest.mark.parametrize("name", CODECS)
def test_quality_maps_to_crf_at_the_top_of_the_range(name):
    codec = get_base_codec(name)
    lo, hi = codec.quality_range
    assert [codec.options(q, 1)["crf"] for q in (lo, hi)] == [str(hi), "0"]


# ------------------------------------------------------------------------------------------ refusals

@pytest.mark.parametrize("name", CODECS)
def test_bad_encoder_arguments_are_input_errors(name):
    codec = get_base_codec(name)
    lo, hi = codec.quality_range
    for q in (lo - 1, hi + 1, 8.0, True, "8"):
        with pytest.raises(InputError, match="base-layer quality"):
            BaseEncoder(name, 16, 16, Fraction(25), q)
    for w, h in ((MIN_BASE_SIDE - 2, 16), (16, 18 + 1), (0, 0)):
        with pytest.raises(InputError, match="sides must be even"):
            BaseEncoder(name, w, h, Fraction(25), codec.default_quality)
    with pytest.raises(InputError, match="effort must be one of"):
        BaseEncoder(name, 16, 16, Fraction(25), codec.default_quality, effort="placebo")
    with pytest.raises(InputError, match="effort must be one of"):
        codec.options(codec.default_quality, 1, "placebo")


def test_base_size_refuses_a_base_below_the_minimum():
    assert base_size(256, 2) == 128 and base_size(66, 2) == 32 and base_size(34, 2) == 16
    with pytest.raises(InputError, match="minimum is 16"):
        base_size(30, 2)
    with pytest.raises(InputError):
        base_size(256, 0)  # not a ZeroDivisionError
    with pytest.raises(InputError):
        base_size(256, 1.5)


@pytest.mark.parametrize("name", CODECS)
def test_hostile_access_units_are_corrupt_stream_errors_and_reset_the_decoder(name):
    codec = get_base_codec(name)
    dec = BaseDecoder(name, 16, 16)
    with pytest.raises(CorruptStreamError, match="empty access unit"):
        dec.decode(b"")
    with pytest.raises(CorruptStreamError, match=f"{name} base layer"):
        dec.decode(bytes(range(256)) * 4)
    assert dec._ctx is None  # never fed again after damage: the next key packet restarts it
    enc = BaseEncoder(name, 32, 32, Fraction(25), codec.default_quality)  # a picture of another size
    unit = enc.encode(np.zeros((32, 32, 3), np.uint8), intra=True)
    with pytest.raises(CorruptStreamError, match="decodes to 32x32, expected 16x16"):
        dec.decode(unit)
    good = BaseEncoder(name, 16, 16, Fraction(25), codec.default_quality).encode(_clip(1)[0], intra=True)
    assert dec.decode(good).shape == (16, 16, 3)  # recovers at the next key picture


@pytest.mark.parametrize("name", CODECS)
def test_a_forged_picture_size_is_capped_before_allocation(name):
    """max_pixels (imfcodec.limits): 4x the expected picture with a floor of 64 kpx for the base layer, so a
    160x160 picture where 16x16 is expected still reaches the size check, and a 272x272 one (74 kpx) is refused
    by the decoder itself."""
    assert 160 * 160 < BASE_DECODER_MIN_PIXELS < 272 * 272
    codec = get_base_codec(name)
    rng = np.random.default_rng(0)
    for side, match in ((160, "decodes to 160x160"), (272, "undecodable")):
        unit = BaseEncoder(name, side, side, Fraction(25), codec.default_quality).encode(
            rng.integers(0, 256, (side, side, 3), dtype=np.uint8), intra=True)
        with pytest.raises(CorruptStreamError, match=match):
            BaseDecoder(name, 16, 16).decode(unit)


def test_base_codec_quality_check_is_the_encoders():
    codec = BaseCodec("x", "e", "d", (0, 9), 4, lambda q, t, e: {}, "test", b"")
    assert codec.check_quality(np.int64(9)) == 9
    with pytest.raises(InputError, match=r"x base-layer quality must be an integer in \[0, 9\]"):
        codec.check_quality(10)
