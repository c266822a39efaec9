"""Encoder-side token search (imfcodec.token_search, `imfcodec encode --refine N`): it may only choose
better tokens for the same decoder, the stream stays a normal stream, and bad settings are refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from imfcodec.api import encode_video, iter_decoded
from imfcodec.cli import main
from imfcodec.codec import DEFAULT_QUALITY, EncoderSettings, to_tensor
from imfcodec.entropy import dequantize, prior_delta_std, quantization_steps, quantize, scale_indexes
from imfcodec.entropy.rate import gaussian_delta_bits
from imfcodec.errors import InputError
from imfcodec.io import read_frames
from imfcodec.metrics import psnr
from imfcodec.token_search import Adam, SearchSettings, grad_state, search_tokens, table_scales


def _objective(model, state, x, q, prev, steps, scales, lam):
    """J of search_tokens, recomputed independently for integer tokens [B, C]."""
    with torch.no_grad():
        y = model.decode_frame(state, dequantize(q, steps))
        mse = (y - x).pow(2).mean(dim=(1, 2, 3)).clamp_min(1e-10)
        d = torch.from_numpy(np.diff(np.concatenate([prev[None], q]), axis=0).astype(np.float32))
        return (10 * torch.log10(mse) + lam * gaussian_delta_bits(d, scales).sum(1)).numpy()


@pytest.fixture(scope="module")
def setup(tiny, sample_clip):
    model = tiny.model.eval()
    frames = list(read_frames(sample_clip, 64))
    steps = quantization_steps(model.token_scale, DEFAULT_QUALITY)
    scales = table_scales(scale_indexes(prior_delta_std(model), steps))
    with torch.inference_mode():
        qk = quantize(model.encode_token(to_tensor(frames[0])), steps)[0]
        state = model.prepare_reference(to_tensor(frames[0]), dequantize(qk[None], steps))
    return model, frames, steps, scales, qk, grad_state(state)


def test_refined_tokens_never_worse_and_usually_better(setup):
    model, frames, steps, scales, qk, state = setup
    s = SearchSettings(iters=6)
    before = [p.detach().clone() for p in model.parameters()]
    flags = [p.requires_grad for p in model.parameters()]
    prev, gains = qk, []
    for rgb in frames[1:6]:
        x = to_tensor(rgb)
        with torch.inference_mode():
            q0 = quantize(model.encode_token(x), steps)
        q = search_tokens(model, state, x, q0, prev, steps, scales, s)
        assert q.dtype == np.int32 and q.shape == q0.shape
        j0 = _objective(model, state, x, q0, prev, steps, scales, s.lam)[0]
        j1 = _objective(model, state, x, q, prev, steps, scales, s.lam)[0]
        assert j1 <= j0 + 1e-4
        gains.append(j0 - j1)
        prev = q[0]
    assert max(gains) > 0.05  # it found a better token for at least one frame
    assert [p.requires_grad for p in model.parameters()] == flags  # flags restored
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))  # weights untouched


def test_zero_iterations_is_identity(setup):
    model, frames, steps, scales, qk, state = setup
    q0 = np.arange(32, dtype=np.int32)[None] - 16
    out = search_tokens(model, state, to_tensor(frames[1]), q0, qk, steps, scales, SearchSettings(0))
    np.testing.assert_array_equal(out, q0)


def test_refined_stream_decodes_with_plain_decoder_and_is_better(sample_clip, tiny, tmp_path):
    src = list(read_frames(sample_clip, 64))
    results = {}
    for refine in (0, 4):
        path = tmp_path / f"r{refine}.imf"
        encode_video(sample_clip, path, model=tiny, settings=EncoderSettings(search_iters=refine))
        frames, tokens = [], []
        for dec, out in iter_decoded(path, model=tiny):
            frames.extend(out)
            if out:
                tokens.append(dec.last_tokens)
        assert len(frames) == len(src)
        results[refine] = (np.mean([psnr(a, b) for a, b in zip(frames[1:], src[1:])]),
                           np.concatenate(tokens), path.stat().st_size)
    (p0, t0, _), (p4, t4, _) = results[0], results[4]
    assert not np.array_equal(t0, t4)  # the encoder really chose other tokens
    assert p4 > p0  # and the decoder's output from the file is closer to the source


def _search_before(model, state, frames, q_init, prev_q, steps, scales, settings):
    """The token search as it was before evaluations were cached (every iteration a forward and backward
    pass through the decoder, the last one too): the reference the cached search must equal."""
    s = settings
    q0 = np.asarray(q_init)
    with torch.inference_mode(False), torch.enable_grad():
        flags = [p.requires_grad for p in model.parameters()]
        for p in model.parameters():
            p.requires_grad_(False)
        step = torch.tensor(np.asarray(steps, dtype=np.float32))
        prev = torch.tensor(np.asarray(prev_q, dtype=np.float32))[None]
        x = frames.detach().clone()
        u = torch.from_numpy(q0.astype(np.float32)).requires_grad_(True)
        opt = torch.optim.Adam([u], lr=s.lr)
        best_j = torch.full((len(q0),), float("inf"))
        best_q = torch.from_numpy(q0.astype(np.float32))
        for i in range(s.iters + 1):
            uq = u + (torch.round(u) - u).detach()
            y = model.decode_frame(state, uq * step)
            mse = (y - x).pow(2).mean(dim=(1, 2, 3)).clamp_min(1e-10)
            j = 10.0 * torch.log10(mse)
            j = j + s.lam * gaussian_delta_bits(torch.diff(torch.cat([prev, uq]), dim=0), scales).sum(1)
            better = j.detach() < best_j
            best_j = torch.where(better, j.detach(), best_j)
            best_q[better] = torch.round(u.detach())[better]
            if i == s.iters:
                break
            opt.zero_grad(set_to_none=True)
            j.sum().backward()
            opt.step()
        for p, f in zip(model.parameters(), flags):
            p.requires_grad_(f)
    return best_q.numpy().astype(np.int32)


def test_written_out_adam_updates_exactly_as_torch_optim_adam():
    """token_search.Adam replaces torch.optim.Adam (whose constructor imports torch._dynamo): the same
    floats, step for step, gradients of every sign and size."""
    gen = torch.Generator().manual_seed(0)
    start = torch.randn(3, 32, generator=gen) * 5
    ours, theirs = start.clone(), start.clone().requires_grad_(True)
    opt_ours, opt_theirs = Adam(ours, lr=0.3), torch.optim.Adam([theirs], lr=0.3)
    for i in range(25):
        g = torch.randn(3, 32, generator=gen) * 10.0 ** (i % 5 - 2)
        ours.grad, theirs.grad = g.clone(), g.clone()
        opt_ours.step()
        opt_theirs.step()
        assert torch.equal(ours, theirs.detach()), i


@pytest.fixture(scope="module")
def awake(tiny):
    """The tiny model with its zero-initialised D_F head made random, so that tokens matter."""
    import copy

    model = copy.deepcopy(tiny.model).eval()
    torch.manual_seed(5)
    with torch.no_grad():
        for p in model.frame_decoder.head.parameters():
            p.normal_(0, 0.05)
    return model


@pytest.mark.parametrize("iters", [2, 3, 4, 7])
@pytest.mark.parametrize("batch", [1, 2])
def test_cached_search_returns_the_same_tokens_as_before(setup, awake, iters, batch):
    _, frames, steps, scales, _, _ = setup
    model = awake
    with torch.inference_mode():
        qk = quantize(model.encode_token(to_tensor(frames[0])), steps)[0]
        state = grad_state(model.prepare_reference(to_tensor(frames[0]), dequantize(qk[None], steps)))
    s = SearchSettings(iters=iters)
    prev, moved = qk, 0
    for i in range(1, 9, batch):
        x = torch.cat([to_tensor(f) for f in frames[i:i + batch]])
        with torch.inference_mode():
            q0 = quantize(model.encode_token(x), steps)
        q = search_tokens(model, state, x, q0, prev, steps, scales, s)
        np.testing.assert_array_equal(q, _search_before(model, state, x, q0, prev, steps, scales, s))
        moved += int((q != q0).any())
        prev = q[-1]
    assert moved or iters < 4  # with 4 steps or more the search changes tokens: the comparison means something


def test_search_evaluates_each_token_once_and_one_step_is_two(setup, awake, monkeypatch):
    _, frames, steps, scales, qk, state = setup
    model = awake
    x = to_tensor(frames[3])
    with torch.inference_mode():
        q0 = quantize(model.encode_token(x), steps)
    seen, grads = [], []
    decode = model.decode_frame

    def counting(ref, t):
        seen.append(t.detach().numpy().tobytes())
        grads.append(torch.is_grad_enabled())
        return decode(ref, t)

    monkeypatch.setattr(model, "decode_frame", counting)
    q4 = search_tokens(model, state, x, q0, qk, steps, scales, SearchSettings(iters=4))
    assert len(seen) == len(set(seen)) <= 4  # 5 iterations, the second always a repeat of the first
    assert grads[:-1] == [True] * (len(grads) - 1) and grads[-1] is False  # no graph for the last one
    seen.clear()
    grads.clear()
    q1 = search_tokens(model, state, x, q0, qk, steps, scales, SearchSettings(iters=1))
    assert len(seen) == 2  # E_T's token and one move
    np.testing.assert_array_equal(q1, search_tokens(model, state, x, q0, qk, steps, scales, SearchSettings(2)))
    assert q4.shape == q1.shape == q0.shape


@pytest.mark.parametrize("bad", [-1, 101, True])
def test_bad_refine_settings_refused(bad):
    with pytest.raises(InputError, match="search_iters="):
        EncoderSettings(search_iters=bad).validated()


def test_cli_refuses_bad_refine_in_one_line(sample_clip, tmp_path):
    out = tmp_path / "x.imf"
    r = CliRunner().invoke(main, ["encode", str(sample_clip), "-o", str(out), "--model", "random:imf-tiny",
                                  "--refine", "-3"])
    assert r.exit_code != 0
    assert "--refine must be an integer in 0..100" in r.output and "Traceback" not in r.output
    assert len(r.output.strip().splitlines()) == 1
    assert not out.exists()


def test_presets_map_to_search_effort_and_refine_overrides():
    from imfcodec.settings import DEFAULT_PRESET, DEFAULT_SEARCH_ITERS, PRESETS

    assert EncoderSettings().search_iters == DEFAULT_SEARCH_ITERS == PRESETS[DEFAULT_PRESET].search_iters
    assert EncoderSettings.from_preset("ultrafast").search_iters == 0
    iters = [EncoderSettings.from_preset(p).search_iters for p in PRESETS]
    assert iters == sorted(iters) and len(set(iters)) == len(iters)  # fastest first, each a different effort
    s = EncoderSettings.from_preset("veryslow", search_iters=3, quality=6)
    assert (s.search_iters, s.quality) == (3, 6)
    with pytest.raises(InputError, match="preset="):
        EncoderSettings.from_preset("placebo")


def test_cli_preset_and_refine(sample_clip, tmp_path):
    streams = {}
    for name, args in {"ultrafast": ["--preset", "ultrafast"], "refine0": ["--preset", "veryslow", "--refine", "0"],
                       "fast": ["--preset", "fast"]}.items():
        out = tmp_path / f"{name}.imf"
        r = CliRunner().invoke(main, ["encode", str(sample_clip), "-o", str(out), "--model", "random:imf-tiny",
                                      "--frames", "4", *args])
        assert r.exit_code == 0, r.output
        streams[name] = out.read_bytes()
    assert streams["ultrafast"] == streams["refine0"]  # --refine overrides the preset
    r = CliRunner().invoke(main, ["encode", str(sample_clip), "--preset", "placebo"])
    assert r.exit_code != 0 and "placebo" in r.output
    help_text = CliRunner().invoke(main, ["encode", "--help"]).output
    assert all(p in help_text for p in ("ultrafast", "veryslow", "cpu-used"))
