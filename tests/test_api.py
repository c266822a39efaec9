"""The API: EncoderSettings() is the CLI's default encode; the token mode is reachable; a network is loaded once."""

from __future__ import annotations

import pytest

from helpers import cli
from imfcodec import EncoderSettings
from imfcodec.api import default_settings, encode_video, stream_info
from imfcodec.errors import InputError
from imfcodec.zoo import shipped_weights_path


@pytest.mark.skipif(shipped_weights_path("enh-wide") is None, reason="the default enhancer's weights are not shipped")
def test_encoder_settings_default_is_the_cli_default_encode(tmp_path, sample_clip):
    a, b = tmp_path / "cli.imf", tmp_path / "api.imf"
    r = cli("encode", sample_clip, "-o", a, "--frames", 6)
    assert r.exit_code == 0, r.output
    encode_video(sample_clip, b, settings=EncoderSettings(), max_frames=6)
    assert a.read_bytes() == b.read_bytes()
    assert stream_info(b)["mode"] == "hybrid"
    encode_video(sample_clip, tmp_path / "none.imf", max_frames=6)  # settings=None: the same
    assert (tmp_path / "none.imf").read_bytes() == b.read_bytes()


def test_the_token_mode_is_reachable_from_the_api(tmp_path, sample_clip, tiny):
    for name, kw in (("q", dict(model="random:imf-tiny", settings=EncoderSettings(quality=6, search_iters=0))),
                     ("m", dict(model=tiny, settings=EncoderSettings(mode="token", search_iters=0))),
                     ("n", dict(model=tiny, settings=EncoderSettings(key_codec="png")))):
        out = tmp_path / f"{name}.imf"
        encode_video(sample_clip, out, max_frames=3, **kw)
        assert stream_info(out)["mode"] == "tokens", name
    assert stream_info(tmp_path / "q.imf")["quality"] == 6


def test_default_settings_follow_the_network():
    assert default_settings() == EncoderSettings().in_mode("hybrid")
    assert default_settings("random:imf-tiny").mode == "token"
    assert default_settings("random:enh-tiny").mode == "hybrid"


def test_the_wrong_network_for_the_mode_is_refused(tmp_path, sample_clip, enh_tiny):
    with pytest.raises(InputError, match="is an enhancer"):
        encode_video(sample_clip, tmp_path / "x.imf", model=enh_tiny, settings=EncoderSettings(quality=6))
    with pytest.raises(InputError, match="token model"):
        encode_video(sample_clip, tmp_path / "x.imf", model="random:imf-tiny", settings=EncoderSettings(mode="hybrid"))
    assert not (tmp_path / "x.imf").exists()


def test_an_encode_loads_its_network_once(tmp_path, sample_clip, monkeypatch):
    import imfcodec.zoo as zoo

    calls = []
    real = zoo.load_model
    monkeypatch.setattr(zoo, "load_model", lambda spec=None: calls.append(spec) or real(spec))
    encode_video(sample_clip, tmp_path / "h.imf", model="random:enh-tiny", max_frames=2)
    encode_video(sample_clip, tmp_path / "t.imf", model="random:imf-tiny", max_frames=2,
                 settings=EncoderSettings(search_iters=0))
    assert calls == ["random:enh-tiny", "random:imf-tiny"]
