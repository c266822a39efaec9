"""The modes seam: the chooser, the shared pieces, and the hybrid mode without the token codec."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from imfcodec import modes
from imfcodec.bitstream import StreamHeader
from imfcodec.errors import InputError
from imfcodec.modes.common import KeyPolicy, check_frame, to_tensor, to_uint8
from imfcodec.settings import EncoderSettings


def test_the_chooser_maps_settings_networks_and_headers_to_a_mode(tiny, enh_tiny):
    assert modes.choose(EncoderSettings()) is modes.HYBRID
    assert modes.choose(EncoderSettings(), tiny) is modes.TOKEN  # the network decides undecided settings
    assert modes.choose(EncoderSettings(), "random:imf-tiny") is modes.TOKEN  # told without loading it
    assert modes.choose(EncoderSettings(), enh_tiny) is modes.HYBRID
    assert modes.choose(EncoderSettings(quality=6), enh_tiny) is modes.TOKEN  # the settings' word wins
    assert modes.choose(EncoderSettings(mode="hybrid"), "random:imf-tiny") is modes.HYBRID
    assert modes.choose(EncoderSettings(), "no-such-model") is modes.HYBRID  # loading it will say why
    h = dict(model="m", weights_hash=b"\0" * 16, width=64, height=64, fps_num=25, fps_den=1, frames=0,
             key_codec="png", key_quality=0, quality=6, chunk=1, token_dim=32, scale_indexes=(0,) * 32)
    assert modes.for_header(StreamHeader(**h)) is modes.TOKEN
    assert modes.for_kind("enhancer") is modes.HYBRID and modes.for_kind("imf") is modes.TOKEN
    assert modes.for_kind("gan") is None
    assert {m.stream_name for m in modes.MODES.values()} == {"hybrid", "tokens"}
    with pytest.raises(InputError, match="mode="):
        modes.get_mode("tokens")


def test_each_mode_refuses_the_other_modes_network(tiny, enh_tiny):
    with pytest.raises(InputError, match="is an enhancer"):
        modes.TOKEN.load_network(enh_tiny, EncoderSettings(mode="token"))
    with pytest.raises(InputError, match="token model"):
        modes.HYBRID.load_network("random:imf-tiny", EncoderSettings())
    assert modes.HYBRID.load_network(None, EncoderSettings(enhancer="random:enh-tiny")).name == "enh-tiny"


def test_key_policy_first_keyint_and_scene_cuts():
    flat = np.zeros((32, 32, 3), np.uint8)
    cut = np.full((32, 32, 3), 255, np.uint8)
    p = KeyPolicy(keyint=3, scenecut=10.0)
    keys = []
    for i, frame in enumerate([flat, flat, flat, flat, cut, cut, cut]):
        if p(i, frame):
            p.keyed(i)
            keys.append(i)
    assert keys == p.key_frames == [0, 3, 4] and p.scene_cuts == [4]
    off = KeyPolicy(keyint=0, scenecut=0)
    assert [i for i, f in enumerate([flat, cut, flat]) if off(i, f) and (off.keyed(i) or True)] == [0]


def test_tensor_conversion_round_trips_and_rounds():
    rgb = np.random.default_rng(0).integers(0, 256, (8, 6, 3), dtype=np.uint8)
    t = to_tensor(rgb)
    assert t.shape == (1, 3, 8, 6) and t.dtype == torch.float32 and float(t.max()) <= 1.0
    assert np.array_equal(to_uint8(t)[0], rgb)
    assert to_uint8(torch.tensor([[[[0.5 / 255, 1.49 / 255, 2.0]]]]).expand(1, 3, 1, 3))[0][0, :, 0].tolist() == [0, 1, 255]
    with pytest.raises(InputError, match="uint8 8x8x3"):
        check_frame(rgb, 8)


def test_the_hybrid_mode_does_not_import_the_token_codec():
    code = ("import sys, imfcodec.modes.hybrid; "
            "print(' '.join(m for m in sys.modules if m.startswith(('imfcodec.entropy', 'imfcodec.token_search', "
            "'imfcodec.modes.token', 'imfcodec.codec', 'imfcodec.models.imf', 'imfcodec.models.discriminator', "
            "'compressai'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""


def test_the_old_module_names_still_import():
    from imfcodec.codec import Decoder, Encoder, encode_frames  # noqa: F401
    from imfcodec.hybrid import HybridDecoder, HybridEncoder, load_enhancer  # noqa: F401
    from imfcodec.modes.token import Encoder as E

    assert Encoder is E
