"""Tests for imfcodec.models: configs, shapes, API contracts, gradients, identity at init."""

from __future__ import annotations

import functools
import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from imfcodec.errors import IMFError, InputError
from imfcodec.models import (
    IMF,
    Discriminator,
    IMFConfig,
    count_parameters,
    create_model,
    decode_gflops,
    get_config,
    list_models,
)
from imfcodec.models.imf import Alignment


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def tiny() -> IMF:
    torch.manual_seed(0)
    return create_model("imf-tiny").eval()


@functools.lru_cache(maxsize=None)
def shared_model(name: str) -> IMF:
    """One untrained instance per config for read-only tests (the paper model takes ~1 s)."""
    torch.manual_seed(0)
    return create_model(name).eval()


def smooth_image(b: int, size: int, seed: int = 0) -> torch.Tensor:
    """Smooth random image in [0, 1]: low-resolution noise upsampled bicubically."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(b, 3, size // 8, size // 8, generator=g)
    return F.interpolate(low, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = F.mse_loss(a, b).item()
    return 10 * math.log10(1.0 / max(mse, 1e-12))


def test_registry_lists_expected_models() -> None:
    names = list_models()
    for required in ("imf-paper", "imf-small", "imf-small-v2", "imf-tiny"):
        assert required in names
    with pytest.raises(IMFError):
        get_config("no-such-model")
    with pytest.raises(IMFError):
        create_model("imf-tiny", not_a_field=1)


@pytest.mark.parametrize("name", list_models("imf"))
def test_every_config_constructs(name: str) -> None:
    cfg = get_config(name)
    assert cfg.name == name
    model = shared_model(name)
    assert model.config == cfg
    assert count_parameters(model) > 0
    assert model.token_scale.shape == (cfg.token_dim,)
    assert "token_scale" in model.state_dict()
    # the smallest legal size keeps the test fast; every module must run there anyway
    assert decode_gflops(model, resolution=max(64, cfg.min_size)) > 0


def test_config_budgets() -> None:
    assert count_parameters(shared_model("imf-tiny")) < 300_000
    assert count_parameters(shared_model("imf-small")) < 8_000_000
    assert get_config("imf-small").resolution == 256
    assert get_config("imf-paper").pixel_skip is False
    assert get_config("imf-small").pixel_skip is True
    assert count_parameters(shared_model("imf-small-v2")) < 8_000_000
    assert get_config("imf-small-v2").align_offsets and get_config("imf-small-v2").coarse_pixels


@pytest.mark.parametrize("name", list_models("imf"))
def test_config_roundtrip(name: str) -> None:
    cfg = get_config(name)
    data = json.loads(json.dumps(cfg.to_dict()))
    assert IMFConfig.from_dict(data) == cfg
    assert IMFConfig.from_json(cfg.to_json()) == cfg
    with pytest.raises(IMFError):
        IMFConfig.from_dict({**data, "bogus": 1})


def test_paper_forward_at_256() -> None:
    model = shared_model("imf-paper")
    x = torch.rand(1, 3, 256, 256)
    with torch.inference_mode():
        y = model(x, x)
    assert y.shape == (1, 3, 256, 256)
    assert 0.0 <= y.min().item() and y.max().item() <= 1.0


def test_tiny_shapes_and_range(tiny: IMF) -> None:
    x_ref, x_cur = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        t = tiny.encode_token(x_cur)
        y = tiny(x_ref, x_cur)
    assert t.shape == (2, tiny.config.token_dim)
    assert y.shape == (2, 3, 64, 64)
    assert y.min().item() >= 0.0 and y.max().item() <= 1.0
    assert torch.isfinite(y).all()


def test_decode_frame_matches_forward(tiny: IMF) -> None:
    x_ref, x_cur = smooth_image(2, 64, 1), smooth_image(2, 64, 2)
    with torch.no_grad():
        y = tiny(x_ref, x_cur)
        t_ref, t_cur = tiny.encode_token(x_ref), tiny.encode_token(x_cur)
        ref = tiny.prepare_reference(x_ref, t_ref)
        y2 = tiny.decode_frame(ref, t_cur)
        y3 = tiny(x_ref, x_cur, t_ref=t_ref, t_cur=t_cur)
    torch.testing.assert_close(y, y2, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(y, y3, atol=1e-5, rtol=1e-4)


def test_inference_mode_matches_grad_mode(tiny: IMF) -> None:
    """The in-place windowed-attention fast path equals the autograd path."""
    x_ref, x_cur = smooth_image(1, 64, 3), smooth_image(1, 64, 4)
    y_grad = tiny(x_ref, x_cur).detach()
    with torch.inference_mode():
        y_inf = tiny(x_ref, x_cur)
    torch.testing.assert_close(y_grad, y_inf, atol=1e-5, rtol=1e-4)


def test_reference_broadcasts_over_token_batch(tiny: IMF) -> None:
    x_ref = smooth_image(1, 64, 5)
    frames = torch.stack([smooth_image(1, 64, s)[0] for s in (6, 7, 8)])
    with torch.no_grad():
        ref = tiny.prepare_reference(x_ref, tiny.encode_token(x_ref))
        t = tiny.encode_token(frames)
        batch = tiny.decode_frame(ref, t)
        single = torch.cat([tiny.decode_frame(ref, t[i:i + 1]) for i in range(3)])
    assert ref.batch_size == 1
    torch.testing.assert_close(batch, single, atol=1e-5, rtol=1e-4)
    with pytest.raises(InputError):
        tiny.decode_frame(tiny.prepare_reference(frames[:2], t[:2]), t)


@pytest.mark.parametrize("size", [64, 32, 96])
def test_runs_at_other_resolutions(tiny: IMF, size: int) -> None:
    x = torch.rand(1, 3, size, size)
    with torch.no_grad():
        y = tiny(x, torch.rand(1, 3, size, size))
    assert y.shape == (1, 3, size, size)


def test_bad_inputs_raise(tiny: IMF) -> None:
    with pytest.raises(InputError):
        tiny.encode_token(torch.rand(1, 3, 60, 64))
    with pytest.raises(InputError):
        tiny.encode_token(torch.rand(3, 64, 64))
    with pytest.raises(InputError):
        tiny.prepare_reference(torch.rand(1, 3, 64, 64), torch.rand(1, 7))


def test_identity_at_init() -> None:
    """Untrained pixel_skip model reproduces the reference when the token is unchanged."""
    model = create_model("imf-tiny").eval()
    x = smooth_image(2, 64, 11)
    with torch.no_grad():
        t = model.encode_token(x)
        y = model.decode_frame(model.prepare_reference(x, t), t)
    assert psnr(y, x) > 30.0


def test_gradients_reach_every_parameter() -> None:
    model = create_model("imf-tiny").train()
    # the zero-initialised residual head blocks gradients into D_F/E_F at step 0 by design;
    # give it small weights so every parameter's gradient path is exercised
    torch.nn.init.normal_(model.frame_decoder.head.weight, std=0.05)
    x_ref, x_cur = smooth_image(2, 64, 12), smooth_image(2, 64, 13)
    y = model(x_ref, x_cur)
    loss = (y - x_cur).abs().mean() + 0.1 * y.pow(2).mean()
    loss.backward()
    missing = [n for n, p in model.named_parameters()
               if p.grad is None or not torch.isfinite(p.grad).all() or p.grad.abs().sum() == 0]
    assert not missing, missing


def test_tiny_training_step_is_cheap() -> None:
    """Forward+backward of batch 2 stays well under 1 s on a 2-core CPU. Counted in FLOPs
    (deterministic; ~0.5 GFLOP, i.e. a few tens of ms) rather than wall time, which other jobs
    on a shared machine would make flaky."""
    model = create_model("imf-tiny").train()
    x_ref, x_cur = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64)
    counter = FlopCounterMode(display=False)
    with counter:
        (model(x_ref, x_cur) - x_cur).abs().mean().backward()
    assert counter.get_total_flops() < 1.0e9


def test_no_pixel_skip_variant(tiny: IMF) -> None:
    model = create_model("imf-tiny", pixel_skip=False, align_modes=("full",) * 4).eval()
    with torch.no_grad():
        y = model(torch.rand(1, 3, 64, 64), torch.rand(1, 3, 64, 64))
    assert y.shape == (1, 3, 64, 64)
    assert 0.0 < y.min().item() and y.max().item() < 1.0  # sigmoid output


def test_discriminator_two_scales() -> None:
    disc = Discriminator.from_config(get_config("imf-tiny"))
    out = disc(torch.rand(2, 3, 64, 64))
    assert len(out) == 2
    (l0, f0), (l1, f1) = out
    assert l0.shape == (2, 1, 4, 4) and l1.shape == (2, 1, 2, 2)
    assert len(f0) == 4 and len(f1) == 4
    assert f0[0].shape[1] == get_config("imf-tiny").disc_widths[0]
    (l0.mean() + l1.mean()).backward()
    assert all(p.grad is not None for n, p in disc.named_parameters() if n.endswith("_orig"))


def _offset_alignment(mode: str) -> Alignment:
    """An offsets-enabled alignment whose offset conv reads channel 0 as an x offset in cells,
    with the content term switched off (zero positional projection, zero motion features but
    channel 0), so only the offsets decide where a query looks."""
    al = Alignment(4, mode, window=5, locality=3.0, pos_freqs=2, offsets=True, native_cells=8)
    with torch.no_grad():
        al.pos.weight.zero_()
        al.pos.bias.zero_()
        al.offset.weight.zero_()
        al.offset.weight[0, 0] = 1.0
    return al


@pytest.mark.parametrize("mode", ["full", "window"])
def test_alignment_offsets_move_attention(mode: str) -> None:
    """A query whose offset says "+1 cell in x" gathers the value one cell to its right;
    equal offsets on both sides change nothing (the identity at init survives)."""
    h = w = 8
    al = _offset_alignment(mode).eval()
    values = torch.arange(w, dtype=torch.float32).view(1, 1, 1, w).expand(1, 1, h, w).contiguous()
    m_r = torch.zeros(1, 4, h, w)
    m_c = torch.zeros(1, 4, h, w)
    m_c[:, 0] = 1.0
    with torch.no_grad():
        still = al.attend(m_r, *al.prepare(m_r, values))
        moved = al.attend(m_c, *al.prepare(m_r, values))
        both = al.attend(m_c, *al.prepare(m_c, values))
    inner = (slice(None), slice(None), slice(2, 6), slice(2, 5))
    assert torch.allclose(still[inner], values[inner], atol=0.2)
    assert torch.allclose(moved[inner], values[inner] + 1.0, atol=0.2)
    assert torch.allclose(both[inner], values[inner], atol=0.2)


def test_offset_and_coarse_pixel_model_identity_at_init_and_gradients() -> None:
    """imf-small-v2's additions on the tiny model: zero-initialised, so an untrained model still
    reproduces the reference; once the head is non-zero every new parameter gets a gradient."""
    model = create_model("imf-tiny", align_offsets=True, coarse_pixels=True).eval()
    x = smooth_image(2, 64, 11)
    with torch.no_grad():
        t = model.encode_token(x)
        assert psnr(model.decode_frame(model.prepare_reference(x, t), t), x) > 30.0
    model.train()
    torch.nn.init.normal_(model.frame_decoder.head.weight, std=0.05)
    y = model(smooth_image(2, 64, 12), smooth_image(2, 64, 13))
    ((y - smooth_image(2, 64, 13)).abs().mean()).backward()
    for name, p in model.named_parameters():
        if ".offset." in name and name.endswith("weight"):
            assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_coarse_pixels_needs_pixel_skip() -> None:
    with pytest.raises(IMFError):
        create_model("imf-tiny", coarse_pixels=True, pixel_skip=False)


def test_token_encoder_fixed_input_is_resolution_independent() -> None:
    """et_input: the token of a 128x128 frame equals the token of its 64x64 version made by the
    same resize, so a model trained at one resolution sends the same tokens at another."""
    model = create_model("imf-tiny", et_input=32, et_widths=(8, 16, 24), et_pool=4).eval()
    x = smooth_image(2, 128, 5)
    small = F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False, antialias=True)
    with torch.no_grad():
        assert torch.allclose(model.encode_token(x), model.encode_token(small), atol=1e-5)
        # with a spatial layout kept (et_pool > 1), a shifted face gives another token
        shifted = torch.roll(x, shifts=24, dims=3)
        assert (model.encode_token(x) - model.encode_token(shifted)).abs().max() > 1e-3
    with pytest.raises(IMFError):
        create_model("imf-tiny", et_input=2, et_widths=(8, 16, 24))


# ------------------------------------------------------------------- fast kernels against the reference
# IMF.kernels = "fast" (the default) must compute what the reference ops compute, to float rounding: the
# decoder's frames may differ by at most 1 level of 255 from the reference (the conformance tolerance);
# these tests hold it to 1e-4 (0.03 levels) so a real divergence shows long before it reaches a pixel.

FAST_ATOL = 1e-4


@functools.lru_cache(maxsize=None)
def awake_model(name: str, **overrides) -> IMF:
    """An untrained model whose zero-initialised parts (offsets, D_F head) are random, so every path of
    the decoder matters to its output."""
    torch.manual_seed(1)
    model = create_model(name, **overrides).eval()
    with torch.no_grad():
        for p in model.frame_decoder.head.parameters():
            p.normal_(0, 0.05)
        for al in model.align:
            if al.offset is not None:
                al.offset.weight.normal_(0, 0.3)
                al.offset.bias.normal_(0, 0.3)
            if al.mode == "window":
                al.rel_bias.add_(torch.randn_like(al.rel_bias))
    return model


def _both_kernels(model: IMF, fn):
    out = {}
    for kernels in ("reference", "fast"):
        model.kernels = kernels
        out[kernels] = fn()
    model.kernels = "fast"
    return out["reference"], out["fast"]


AWAKE = [dict(), dict(align_offsets=True, coarse_pixels=True)]  # imf-tiny, and with imf-small-v2's additions


@pytest.mark.parametrize("overrides", AWAKE, ids=["tiny", "tiny-v2"])
@pytest.mark.parametrize("batch", [1, 3])
def test_fast_kernels_match_reference(overrides: dict, batch: int) -> None:
    model = awake_model("imf-tiny", **overrides)
    x_ref = smooth_image(1, 64, 21)
    with torch.inference_mode():
        ref = model.prepare_reference(x_ref, model.encode_token(x_ref))
        t = model.encode_token(smooth_image(batch, 64, 22)) + torch.randn(batch, model.config.token_dim)
        y_ref, y_fast = _both_kernels(model, lambda: model.decode_frame(ref, t))
        again = model.decode_frame(ref, t)  # the fast window kernel's cached key regions
    assert y_fast.shape == y_ref.shape and y_fast.is_contiguous()
    assert (y_ref - x_ref).abs().max() > 0.05  # the model does something other than copying the key frame
    torch.testing.assert_close(y_fast, y_ref, atol=FAST_ATOL, rtol=0)
    assert torch.equal(again, y_fast)


@pytest.mark.parametrize("size", [64, 96])
def test_fast_kernels_match_reference_with_gradients(size: int) -> None:
    """Training runs the fast kernels too: batched references, gradients to weights and tokens."""
    model = awake_model("imf-tiny", align_offsets=True, coarse_pixels=True)
    x_ref, x_cur = smooth_image(2, size, 23), smooth_image(2, size, 24)

    def run():
        model.zero_grad(set_to_none=True)
        t_ref, t_cur = model.encode_token(x_ref), model.encode_token(x_cur).detach().requires_grad_(True)
        y = model.decode_frame(model.prepare_reference(x_ref, t_ref), t_cur)
        (y - x_cur).pow(2).mean().backward()
        return y.detach(), t_cur.grad, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    (y0, g0, p0), (y1, g1, p1) = _both_kernels(model, run)
    torch.testing.assert_close(y1, y0, atol=FAST_ATOL, rtol=0)
    torch.testing.assert_close(g1, g0, atol=1e-6, rtol=1e-3)
    assert p1.keys() == p0.keys()
    for name in p0:
        torch.testing.assert_close(p1[name], p0[name], atol=1e-6, rtol=1e-3, msg=name)


@pytest.mark.parametrize("hw", [(8, 8), (6, 10), (5, 7)])
@pytest.mark.parametrize("offsets", [False, True])
def test_fast_window_attention_any_grid(hw: tuple[int, int], offsets: bool) -> None:
    """Tiles of 4, 2 or 1 cells, whatever divides the grid; padding, offsets and a token batch."""
    h, w = hw
    torch.manual_seed(2)
    al = Alignment(6, "window", 5, 2.0, 2, offsets=offsets, native_cells=8).eval()
    with torch.no_grad():
        al.rel_bias.add_(torch.randn_like(al.rel_bias))
        if offsets:
            al.offset.weight.normal_(0, 0.5)
            al.offset.bias.normal_(0, 0.5)
        k, v, mask = al.prepare(torch.randn(1, 6, h, w), torch.randn(1, 5, h, w))
        m_c = torch.randn(3, 6, h, w)
        cache: dict = {}
        fast = al.attend(m_c, k, v, mask, fast=True, cache=cache)
        torch.testing.assert_close(fast, al.attend(m_c, k, v, mask), atol=1e-5, rtol=0)
        assert cache and torch.equal(al.attend(m_c, k, v, mask, fast=True, cache=cache), fast)


def test_fast_full_attention_batched_reference() -> None:
    torch.manual_seed(3)
    al = Alignment(6, "full", 5, 2.0, 2, offsets=True, native_cells=8).eval()
    with torch.no_grad():
        al.offset.weight.normal_(0, 0.5)
        for b_ref in (1, 2):
            k, v, mask = al.prepare(torch.randn(b_ref, 6, 8, 8), torch.randn(b_ref, 5, 8, 8))
            m_c = torch.randn(2, 6, 8, 8)
            torch.testing.assert_close(al.attend(m_c, k, v, mask, fast=True), al.attend(m_c, k, v, mask),
                                       atol=1e-5, rtol=0)


def test_kernels_are_selectable(monkeypatch) -> None:
    from imfcodec.models.imf import default_kernels

    monkeypatch.setenv("IMFCODEC_KERNELS", "reference")
    assert default_kernels() == "reference" and create_model("imf-tiny").kernels == "reference"
    monkeypatch.setenv("IMFCODEC_KERNELS", "fastest")
    with pytest.raises(InputError, match="IMFCODEC_KERNELS"):
        default_kernels()
    monkeypatch.delenv("IMFCODEC_KERNELS")
    model = create_model("imf-tiny")
    assert model.kernels == "fast"
    model.kernels = "quick"
    x = smooth_image(1, 64)
    with torch.no_grad(), pytest.raises(InputError, match="kernels"):
        model.decode_frame(model.prepare_reference(x, model.encode_token(x)), model.encode_token(x))


def test_denormals_are_flushed_in_every_thread_of_a_fresh_process() -> None:
    """Loading a model (which imports imfcodec.models.imf, whatever the entry point: CLI, API, trainer)
    sets flush-to-zero before torch starts its worker threads, which copy the flag once
    (imfcodec.models.imf.flush_denormals): a denormal times one is zero in every thread."""
    import subprocess
    import sys

    code = ("import imfcodec, torch; from imfcodec.zoo import load_model; load_model('random:imf-tiny'); "
            "torch.set_num_threads(2); x = torch.full((1 << 20,), 1e-40); print(int((x * 1.0).count_nonzero()))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "0"
    assert "subnormal" not in out.stderr  # numpy's finfo warning under flush-to-zero is avoided
