"""The hybrid mode's enhancer (imfcodec.models.enhancer) and base-layer codecs (imfcodec.baselayer)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from imfcodec.baselayer import BaseDecoder, BaseEncoder, base_size, code_clip, get_base_codec, list_base_codecs
from imfcodec.errors import CorruptStreamError, InputError, UnsupportedStreamError, WeightsError
from imfcodec.models import Enhancer, EnhancerConfig, create_model, decode_gflops, get_config, list_models, upscale
from imfcodec.zoo import load_model, save_weights

from helpers import gradient

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def moving(frames: int, size: int = 64) -> list[np.ndarray]:
    base = gradient(size, size)
    return [np.ascontiguousarray(np.roll(base, 2 * i, axis=1)) for i in range(frames)]


def test_enhancers_are_registered_apart_from_token_models():
    assert {"enh-small", "enh-tiny"} <= set(list_models("enhancer"))
    assert not set(list_models("enhancer")) & set(list_models("imf"))
    cfg = get_config("enh-small")
    assert EnhancerConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(WeightsError, match="^unknown enhancer config keys: bogus$"):
        EnhancerConfig.from_dict({**cfg.to_dict(), "bogus": 1})


def test_untrained_enhancer_is_exactly_the_bicubic_base():
    torch.manual_seed(0)
    model = create_model("enh-tiny").eval()
    key, base = torch.rand(1, 3, 64, 64), upscale(torch.rand(2, 3, 32, 32), (64, 64))
    with torch.no_grad():
        out = model.enhance(model.prepare_key(key, base[:1]), base)
    assert torch.equal(out, base)
    assert decode_gflops(model) > 0


def test_enhancer_learns_to_move_key_detail():
    """A few steps on one pair must lower the error below the bicubic base: the path from the key
    frame's detail to the output is connected and trainable."""
    torch.manual_seed(0)
    model = create_model("enh-tiny")
    frames = torch.from_numpy(np.stack(moving(2))).permute(0, 3, 1, 2).float() / 255
    low = torch.nn.functional.avg_pool2d(frames, 4)
    up = upscale(low, (64, 64))
    key, key_base, target, base = frames[:1], up[:1], frames[1:], up[1:]
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    start = torch.nn.functional.mse_loss(base, target).item()
    for _ in range(60):
        loss = torch.nn.functional.mse_loss(model(key, key_base, base), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.8 * start


def test_enhancer_weights_round_trip(tmp_path):
    model = create_model("enh-tiny")
    digest = save_weights(model, tmp_path / "e.safetensors")
    loaded = load_model(str(tmp_path / "e.safetensors"))
    assert isinstance(loaded.model, Enhancer) and loaded.weights_hash == digest and loaded.name == "enh-tiny"


def test_enhancer_refuses_bad_shapes():
    model = create_model("enh-tiny").eval()
    with pytest.raises(InputError):
        model.prepare_key(torch.rand(1, 3, 60, 64), torch.rand(1, 3, 60, 64))
    state = model.prepare_key(torch.rand(1, 3, 64, 64), torch.rand(1, 3, 64, 64))
    with pytest.raises(InputError):
        model.enhance(state, torch.rand(1, 3, 32, 32))


@pytest.mark.parametrize("codec", ["hevc", "av1", "vp9"])
def test_base_layer_one_unit_per_frame_and_restart_at_key(codec):
    frames = moving(12)
    units, small = code_clip(frames, codec, 2, 20, key_frames={0, 6})
    assert len(units) == 12 and all(s.shape == (32, 32, 3) for s in small)
    assert len(units[6]) > 2 * np.median([len(u) for u in units[1:6]])  # a new GOP starts at the key frame
    dec = BaseDecoder(codec, 32, 32)
    dec.restart()
    assert all(np.array_equal(dec.decode(u), s) for u, s in zip(units[6:], small[6:]))
    # the upscaled base follows the source
    up = upscale(torch.from_numpy(small[-1]).permute(2, 0, 1)[None].float() / 255, (64, 64))
    err = (up[0].permute(1, 2, 0).numpy() * 255 - frames[-1]).__abs__().mean()
    assert err < 12


def test_base_layer_rejects_damage_and_bad_settings():
    units, _ = code_clip(moving(3), "hevc", 2, 20)
    dec = BaseDecoder("hevc", 32, 32)
    with pytest.raises(CorruptStreamError):
        dec.decode(b"\x00\x00\x01" + bytes(40))
    dec = BaseDecoder("hevc", 16, 16)  # the stream is 32x32
    with pytest.raises(CorruptStreamError):
        dec.decode(units[0])
    with pytest.raises(UnsupportedStreamError):
        get_base_codec("mpeg2")
    with pytest.raises(InputError):
        base_size(64, 8)  # 8 px is below the minimum
    with pytest.raises(InputError):
        BaseEncoder("hevc", 32, 32, 25, 99)
    assert list_base_codecs() == ["av1", "hevc", "vp9"]
    from imfcodec.settings import BASE_CODECS

    assert BASE_CODECS == tuple(list_base_codecs())  # the CLI's choices


def test_fast_kernels_match_the_reference():
    torch.manual_seed(1)
    model = create_model("enh-tiny").eval()
    for p in model.parameters():  # a non-zero head, so that the alignment shows in the output
        torch.nn.init.normal_(p, std=0.1)
    key, base = torch.rand(1, 3, 64, 64), torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        outs = {}
        for kernels in ("reference", "fast"):
            model.kernels = kernels
            state = model.prepare_key(key, base[:1])
            outs[kernels] = model.enhance(state, base)
    assert (outs["fast"] - outs["reference"]).abs().max().item() < 1e-4
    assert outs["fast"].is_contiguous()  # the fast kernels' NHWC convolutions hand back an NCHW tensor
