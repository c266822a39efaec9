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
from imfcodec.token_search import SearchSettings, grad_state, search_tokens, table_scales


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


@pytest.mark.parametrize("bad", [-1, 101, True])
def test_bad_refine_settings_refused(bad):
    with pytest.raises(InputError, match="--refine"):
        EncoderSettings(search_iters=bad).validated()


def test_cli_refuses_bad_refine_in_one_line(sample_clip, tmp_path):
    out = tmp_path / "x.imf"
    r = CliRunner().invoke(main, ["encode", str(sample_clip), "-o", str(out), "--model", "random:imf-tiny",
                                  "--refine", "-3"])
    assert r.exit_code != 0
    assert "--refine must be an integer in 0..100" in r.output and "Traceback" not in r.output
    assert len(r.output.strip().splitlines()) == 1
    assert not out.exists()
