"""EncoderSettings: the default is the CLI's default (hybrid at its default point), the mode a field chooses,
validation once."""

from __future__ import annotations

import pytest

from imfcodec.errors import InputError
from imfcodec.settings import (DEFAULT_BASE_CODEC, DEFAULT_MODE, DEFAULT_SEARCH_ITERS, HYBRID_KEY_QUALITY,
                               EncoderSettings, hybrid_defaults)


def test_the_default_is_the_hybrid_default_point():
    s = EncoderSettings().validated()
    assert DEFAULT_MODE == "hybrid" and s.mode == "hybrid" and s.hybrid
    assert (s.base_codec, s.base_factor, s.base_quality) == (DEFAULT_BASE_CODEC, 2, 8)  # vp9's own default quality
    assert s.key_quality == HYBRID_KEY_QUALITY["hevc"]
    assert hybrid_defaults().validated() == s  # the old name of the same point
    assert hybrid_defaults(chunk=3).validated() == EncoderSettings(chunk=3).validated()


@pytest.mark.parametrize("fields, mode", [
    (dict(), "hybrid"), (dict(quality=6), "token"), (dict(search_iters=0), "token"),
    (dict(refresh_below=16.0), "token"), (dict(base_codec="hevc"), "hybrid"), (dict(base_factor=4), "hybrid"),
    (dict(enhancer="random:enh-tiny"), "hybrid"), (dict(quality=6, base_codec="av1"), "hybrid"),
    (dict(keyint=5, key_codec="png"), "hybrid"), (dict(mode="token"), "token"),
    (dict(preset="ultrafast"), "hybrid"), (dict(search_iters=DEFAULT_SEARCH_ITERS), "hybrid"),
])
def test_a_mode_only_field_chooses_its_mode(fields, mode):
    assert EncoderSettings(**fields).chosen_mode == mode
    assert EncoderSettings(**fields).validated().mode == mode


def test_presets_do_not_choose_a_mode():
    assert EncoderSettings.from_preset("ultrafast").chosen_mode == "hybrid"
    assert EncoderSettings.from_preset("veryslow", search_iters=3).chosen_mode == "token"


def test_the_token_default_keeps_its_own_key_quality():
    s = EncoderSettings(mode="token").validated()
    assert (s.key_quality, s.base_codec, s.quality) == (21, None, 9)


def test_in_mode_refuses_the_other_mode_and_fills_the_base_codec():
    assert EncoderSettings().in_mode("hybrid").base_codec == DEFAULT_BASE_CODEC
    assert EncoderSettings().in_mode("token").base_codec is None
    with pytest.raises(InputError, match="for the token mode"):
        EncoderSettings(mode="token").in_mode("hybrid")
    with pytest.raises(InputError, match="mode="):
        EncoderSettings(mode="tokens").validated()


def test_validated_once():
    s = EncoderSettings(base_codec="av1").validated()
    assert s.validated() is s and s.in_mode("hybrid") is s
    changed = EncoderSettings(base_codec="av1").validated()
    from dataclasses import replace

    with pytest.raises(InputError, match="chunk="):
        replace(changed, chunk=0).validated()  # a changed copy is checked again


@pytest.mark.parametrize("bad, needle", [
    (dict(mode="token", base_codec="vp9"), "need the hybrid mode"),
    (dict(base_codec="hevc", refresh_below=20.0), "refresh_below="),
    (dict(quality=99), "quality="), (dict(keyint=-1), "keyint="), (dict(key_quality=99), "key_quality="),
    (dict(base_codec="vp9", base_quality=64), "0..63"),
])
def test_bad_settings_name_the_option(bad, needle):
    with pytest.raises(InputError, match=needle):
        EncoderSettings(**bad).validated()
