"""Token entropy coder: quantization, tables, rANS round trips, cross-process determinism and
robustness of the decoder against arbitrary bytes."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import communicate_no_hang, run_no_hang
from imfcodec.entropy import (
    MAX_CHUNK,
    NUM_SCALES,
    Q_MAX,
    QUALITY_RANGE,
    TokenCoder,
    TokenRateModel,
    dequantize,
    measure_chunk_overhead,
    pack_key_token,
    quality_step,
    quantize,
    scale_indexes,
    scale_table,
    table_bits,
    unpack_key_token,
)
from imfcodec.entropy import tables as T
from imfcodec.errors import CorruptStreamError, IMFError, InputError

REPO = Path(__file__).resolve().parents[1]


def _run_py(code: str, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    return run_no_hang([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, cwd=str(REPO))


def _walk(rng, n: int, c: int, std: float = 2.0, start=None) -> tuple[np.ndarray, np.ndarray]:
    prev = rng.integers(-200, 200, c).astype(np.int32) if start is None else start
    qs = prev + np.cumsum(np.rint(rng.standard_normal((n, c)) * std), axis=0)
    return prev, np.clip(qs, -Q_MAX, Q_MAX).astype(np.int32)


# ---------------------------------------------------------------------------- quantization


def test_quality_ladder():
    lo, hi = QUALITY_RANGE
    steps = [quality_step(q) for q in range(lo, hi + 1)]
    assert quality_step(6) == 1.0 and quality_step(0) == 8.0 and quality_step(12) == 0.125
    for a, b in zip(steps, steps[1:]):
        assert b < a and a / b == pytest.approx(math.sqrt(2), rel=1e-15)
    for bad in (lo - 1, hi + 1, 2.0, True):
        with pytest.raises(InputError):
            quality_step(bad)


def test_quantize_error_is_at_most_half_a_step():
    rng = np.random.default_rng(1)
    step = rng.uniform(0.01, 3.0, 32)
    t = torch.from_numpy(rng.standard_normal((50, 32)) * 20).float()
    q = quantize(t, step)
    assert q.dtype == np.int32 and q.shape == (50, 32)
    err = (dequantize(q, step).double() - t.double()).abs().numpy()
    assert np.all(err <= step / 2 * (1 + 1e-6) + 1e-6)
    assert dequantize(q, step).dtype == torch.float32


def test_quantize_rounds_half_away_from_zero_and_saturates():
    step = np.ones(6)
    q = quantize(np.array([0.5, -0.5, 1.5, -2.5, 1e9, -1e9]), step)
    assert q.tolist() == [1, -1, 2, -3, Q_MAX, -Q_MAX]
    with pytest.raises(InputError):
        quantize(np.array([np.nan, 0, 0, 0, 0, 0]), step)
    with pytest.raises(InputError):
        quantize(np.zeros(5), step)
    with pytest.raises(InputError):
        quantize(np.zeros(6), np.zeros(6))


def test_key_token_pack_unpack():
    q = np.array([0, 1, -1, Q_MAX, -Q_MAX, 1234], np.int32)
    data = pack_key_token(q)
    assert len(data) == 12 and data[:4] == b"\x00\x00\x01\x00"  # little-endian int16
    np.testing.assert_array_equal(unpack_key_token(data, 6), q)
    with pytest.raises(CorruptStreamError):
        unpack_key_token(data[:-1], 6)
    with pytest.raises(CorruptStreamError):
        unpack_key_token(data + b"\x00\x00", 6)
    with pytest.raises(CorruptStreamError):
        unpack_key_token(b"\x00\x80" * 6, 6)  # -32768 is never written
    with pytest.raises(InputError):
        pack_key_token(np.array([Q_MAX + 1]))


# ---------------------------------------------------------------------------- tables


def test_tables_match_recorded_digests_and_are_valid():
    assert T.all_table_digests() == list(T._DIGESTS)
    scales = scale_table()
    assert len(scales) == NUM_SCALES and scales[0] == 0.11 and scales[-1] == pytest.approx(256.0)
    for i in range(NUM_SCALES):
        t = T.gaussian_table(i)
        f = t.freqs()
        assert t.cdf[0] == 0 and t.cdf[-1] == t.cdf[-2] == 65536  # zero-frequency bypass sentinel
        assert min(f) >= 1 and max(f) < 65536 and len(f) == 2 * t.half_width + 1
        assert max(abs(a - b) for a, b in zip(f, f[::-1])) <= 1  # symmetric up to rounding
    for t in (T.nbits_table(), T.nibble_table(), T.filler_table()):
        assert min(t.freqs()) >= 1 and t.cdf[-1] == t.cdf[-2] == 65536


def test_scale_indexes_is_monotonic():
    stds = np.concatenate([[0.0, 0.05, 0.11, 0.1100001], np.geomspace(0.01, 1e4, 500)])
    stds.sort()
    idx = scale_indexes(stds)
    assert all(isinstance(i, int) for i in idx)
    assert idx == sorted(idx) and idx[0] == 0 and idx[-1] == NUM_SCALES - 1
    table = scale_table()
    for s, i in zip(stds, idx):
        assert table[i] >= s or i == NUM_SCALES - 1
        assert i == 0 or table[i - 1] < s
    with pytest.raises(InputError):
        scale_indexes([1.0, float("nan")])


def test_fit_scale_indexes_finds_the_true_scale():
    rng = np.random.default_rng(2)
    std = np.array([0.3, 1.0, 2.0, 8.0])
    d = np.rint(rng.standard_normal((4000, 4)) * std).astype(np.int64)
    fit = TokenCoder.fit_scale_indexes(d)
    guess = scale_indexes(std)
    assert all(abs(a - b) <= 2 for a, b in zip(fit, guess)), (fit, guess)
    assert table_bits(d, fit).sum() <= table_bits(d, guess).sum()


# ---------------------------------------------------------------------------- coding


@pytest.mark.parametrize("token_dim,n,std", [(32, 1, 2.0), (32, 5, 1.0), (32, 25, 3.0), (1, 1, 0.5),
                                             (3, 7, 50.0), (64, 2, 0.2), (8, MAX_CHUNK, 1.5)])
def test_round_trip(token_dim, n, std):
    rng = np.random.default_rng(token_dim * 1000 + n)
    idx = scale_indexes(np.full(token_dim, std))
    coder = TokenCoder(token_dim, idx)
    prev, qs = _walk(rng, n, token_dim, std)
    data = coder.encode_chunk(prev, qs)
    assert isinstance(data, bytes) and len(data) >= 8 and len(data) % 4 == 0
    out = coder.decode_chunk(prev, data, n)
    assert out.dtype == np.int32
    np.testing.assert_array_equal(out, qs)


def test_round_trip_extreme_values_and_escapes():
    c = 6
    for idx in ([0] * c, [63] * c, [0, 5, 20, 40, 63, 10]):
        coder = TokenCoder(c, idx)
        prev = np.array([0, Q_MAX, -Q_MAX, 5, -5, 0], np.int32)
        qs = np.array([[5000, -Q_MAX, Q_MAX, -4995, 4995, 1],
                       [-5000, Q_MAX, -Q_MAX, 5, -5, 0],
                       [0, 0, 0, 0, 0, 0],
                       [Q_MAX, -Q_MAX, 1, -1, 65, -70],
                       [Q_MAX, -Q_MAX, 1, -1, 65, -70]], np.int32)
        out = coder.decode_chunk(prev, coder.encode_chunk(prev, qs), len(qs))
        np.testing.assert_array_equal(out, qs)
    # escape remainders of every bit length 0..16, both signs (table 0 has K = 1)
    coder = TokenCoder(1, [0])
    for b in range(17):
        r = (1 << b) - 1 if b < 16 else 40000
        for sign in (1, -1):
            prev = np.array([-sign * Q_MAX], np.int32)
            qs = prev[None, :] + sign * (1 + r)
            assert r.bit_length() == b
            np.testing.assert_array_equal(coder.decode_chunk(prev, coder.encode_chunk(prev, qs), 1), qs)


def test_rate_is_close_to_the_ideal():
    """A long chunk costs the tables' ideal code length plus at most the ~8-byte flush, and the
    tables are within a few percent of the Gaussian's entropy."""
    rng = np.random.default_rng(3)
    std = 2.0
    coder = TokenCoder(32, scale_indexes(np.full(32, std)))
    prev, qs = _walk(rng, 500, 32, std)
    data = coder.encode_chunk(prev, qs)
    d = np.diff(np.concatenate([prev[None], qs]), axis=0)
    ideal = table_bits(d, coder.scale_indexes).sum() / 8
    assert ideal <= len(data) <= ideal + 12
    entropy_bits = 0.5 * math.log2(2 * math.pi * math.e * std ** 2)  # continuous approximation
    assert len(data) * 8 / d.size == pytest.approx(entropy_bits, rel=0.04)


def test_chunk_overhead_table():
    rows = measure_chunk_overhead((1, 2, 5, 10, 25), frames=250)
    print("\nchunk  bytes/frame  kbit/s@25fps  (ideal bytes/frame)")
    for r in rows:
        print(f"{r['chunk']:5d}  {r['bytes_per_frame']:11.2f}  {r['kbps']:12.3f}  ({r['ideal_bytes_per_frame']:.2f})")
    bpf = [r["bytes_per_frame"] for r in rows]
    assert bpf == sorted(bpf, reverse=True)
    ideal = rows[0]["ideal_bytes_per_frame"]
    assert bpf[0] - ideal < 8.5  # one flush per frame costs at most ~8 bytes
    assert bpf[-1] - ideal < 0.5


def test_input_validation():
    coder = TokenCoder(4, [5, 5, 5, 5])
    prev = np.zeros(4, np.int32)
    good = coder.encode_chunk(prev, np.ones((2, 4), np.int32))
    with pytest.raises(InputError):
        TokenCoder(4, [5, 5, 5])
    with pytest.raises(InputError):
        TokenCoder(4, [5, 5, 5, 64])
    with pytest.raises(CorruptStreamError):
        TokenCoder.from_header(4, [5, 5, 5, -1])
    with pytest.raises(InputError):
        coder.encode_chunk(prev, np.ones((0, 4), np.int32))
    with pytest.raises(InputError):
        coder.encode_chunk(prev, np.ones((2, 5), np.int32))
    with pytest.raises(InputError):
        coder.encode_chunk(prev, np.full((1, 4), Q_MAX + 1))
    with pytest.raises(InputError):
        coder.encode_chunk(np.zeros(3, np.int32), np.ones((2, 4), np.int32))
    with pytest.raises(InputError):
        coder.encode_chunk(prev, np.ones((2, 4)))  # floats
    for data, n in ((good, 0), (good, MAX_CHUNK + 1), (good, -1), (b"", 2), (good[:7], 2),
                    (good + b"\x00", 2), (good[:-1], 2), (bytes(4 * 6 * 8 + 4 * 8 + 4), 1)):
        with pytest.raises(CorruptStreamError):
            coder.decode_chunk(prev, data, n)
    np.testing.assert_array_equal(coder.decode_chunk(prev, good, 2), np.ones((2, 4)))


# ---------------------------------------------------------------------------- determinism


DECODE_ELSEWHERE = textwrap.dedent("""
    import json, sys
    import numpy as np
    import torch
    torch.set_num_threads(int(sys.argv[1]))
    from imfcodec.entropy import TokenCoder
    from imfcodec.entropy import tables as T
    job = json.loads(sys.stdin.read())
    coder = TokenCoder(job["token_dim"], job["indexes"])
    prev = np.array(job["prev"], np.int32)
    qs = coder.decode_chunk(prev, bytes.fromhex(job["data"]), job["n"])
    again = coder.encode_chunk(prev, qs)
    print(json.dumps({"qs": qs.tolist(), "again": again.hex(), "digests": T.all_table_digests(),
                      "threads": torch.get_num_threads()}))
""")


@pytest.mark.slow
def test_decode_in_other_processes_is_identical():
    rng = np.random.default_rng(4)
    idx = [0, 3, 10, 17, 25, 33, 40, 63] * 4
    coder = TokenCoder(32, idx)
    prev, qs = _walk(rng, 25, 32, 2.5)
    qs[7, 3] += 5000
    qs[9, 4] -= 5000
    data = coder.encode_chunk(prev, qs)
    job = json.dumps({"token_dim": 32, "indexes": idx, "prev": prev.tolist(), "data": data.hex(), "n": 25})
    procs = {}
    for threads in (1, 2):  # run side by side: each pays a torch import
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONPATH=str(REPO))
        procs[threads] = subprocess.Popen([sys.executable, "-c", DECODE_ELSEWHERE, str(threads)],
                                          stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, text=True, env=env, cwd=str(REPO))
    for threads, proc in procs.items():
        out, err = communicate_no_hang(proc, job)
        assert proc.returncode == 0, err[-2000:]
        res = json.loads(out.strip().splitlines()[-1])
        assert res["threads"] == threads
        np.testing.assert_array_equal(np.array(res["qs"]), qs)
        assert bytes.fromhex(res["again"]) == data
        assert res["digests"] == list(T._DIGESTS)


# ---------------------------------------------------------------------------- robustness


RANDOM_BYTES = textwrap.dedent("""
    import sys
    import numpy as np
    from imfcodec.entropy import MAX_CHUNK, TokenCoder
    from imfcodec.errors import CorruptStreamError
    rng = np.random.default_rng(int(sys.argv[1]))
    coders = [TokenCoder(32, [5] * 32), TokenCoder(32, list(range(0, 64, 2))), TokenCoder(1, [0]),
              TokenCoder(3, [63, 0, 30]), TokenCoder(32, [0] * 32)]
    ok = bad = 0
    for i in range(2000):
        coder = coders[i % len(coders)]
        length = int(rng.integers(0, 65)) if i % 2 else 4 * int(rng.integers(2, 17))
        data = rng.bytes(length)
        n = int(rng.integers(1, 4))
        prev = rng.integers(-300, 300, coder.token_dim).astype(np.int32)
        try:
            out = coder.decode_chunk(prev, data, n)
            assert out.shape == (n, coder.token_dim) and out.dtype == np.int32
            ok += 1
        except CorruptStreamError:
            bad += 1
    for _ in range(3):  # the largest chunk with garbage: bounded time and memory
        coder = coders[1]
        try:
            coder.decode_chunk(np.zeros(32, np.int32), rng.bytes(4096), MAX_CHUNK)
        except CorruptStreamError:
            pass
    assert "torch" not in sys.modules and "compressai" not in sys.modules  # light import
    print(ok, bad)
""")


def test_random_bytes_never_crash_the_decoder():
    r = _run_py(RANDOM_BYTES, "5")
    assert r.returncode == 0, f"decoder died (rc {r.returncode}): {r.stderr[-2000:]}"
    ok, bad = r.stdout.split()
    assert int(ok) + int(bad) == 2000 and int(ok) > 200


def test_truncated_and_flipped_packets_do_not_crash():
    rng = np.random.default_rng(6)
    coder = TokenCoder(32, [12] * 32)
    prev, qs = _walk(rng, 10, 32, 2.0)
    data = coder.encode_chunk(prev, qs)
    for cut in range(0, len(data), 4):
        try:
            coder.decode_chunk(prev, data[:cut], 10)
        except CorruptStreamError:
            pass
    for pos in range(0, len(data), 3):
        flipped = bytearray(data)
        flipped[pos] ^= 0x5A
        try:
            out = coder.decode_chunk(prev, bytes(flipped), 10)
            assert out.shape == (10, 32)
        except CorruptStreamError:
            pass


# ---------------------------------------------------------------------------- rate model


def test_rate_model_matches_tables_and_exports_indexes():
    torch.manual_seed(0)
    rng = np.random.default_rng(7)
    model = TokenRateModel(8, init_sigma=0.5).eval()
    q = 4
    qstep = quality_step(q)
    scale_steps = model.scale_steps(qstep).detach()
    d = np.rint(rng.standard_normal((2000, 8)) * scale_steps.numpy()).astype(np.int64)
    bits_model = model(torch.from_numpy(d).double(), qstep).sum().item()
    idx = model.export_scale_indexes(q)
    assert idx == scale_indexes(scale_steps.numpy())
    assert idx == scale_indexes(model.log_sigma.exp(), qstep)
    bits_tables = table_bits(d, idx).sum()
    assert bits_tables == pytest.approx(bits_model, rel=0.03)

    model.train()
    delta = torch.randn(16, 8, requires_grad=True)
    bits = model(delta * 3, qstep)
    assert bits.shape == (16,) and torch.isfinite(bits).all()
    bits.mean().backward()
    assert model.log_sigma.grad is not None and torch.isfinite(model.log_sigma.grad).all()
    assert delta.grad is not None and delta.grad.abs().sum() > 0


def test_tables_are_platform_checked():
    """A table that differs from the recorded digest is refused, not silently used."""
    saved = T._DIGESTS
    try:
        T._DIGESTS = ("0" * 16,) * NUM_SCALES
        T.gaussian_table.cache_clear()
        with pytest.raises(IMFError):
            T.gaussian_table(7)
    finally:
        T._DIGESTS = saved
        T.gaussian_table.cache_clear()


def test_prior_lives_in_a_non_persistent_buffer_filled_from_metadata(tmp_path):
    """entropy.params owns the delta prior: the shipped weights' measured delta_std picks the tables,
    the model holds it outside its state dict (so the weights hash ignores it), and it round-trips."""
    from imfcodec.entropy import params
    from imfcodec.zoo import load_weights, read_metadata, save_weights, shipped_weights_path, weights_hash

    path = shipped_weights_path("imf-small-v2")
    model = load_weights(path)
    stored = json.loads(read_metadata(path)["delta_std"])
    assert "delta_std" not in model.state_dict()
    assert torch.equal(model.delta_std, torch.tensor(stored, dtype=torch.float32))
    steps = params.quantization_steps(model.token_scale, 9)
    assert params.scale_indexes(params.prior_delta_std(model), steps) == params.scale_indexes(
        np.asarray(stored, dtype=np.float32).astype(np.float64), steps)
    before = weights_hash(model)
    model.delta_std.mul_(2)
    assert weights_hash(model) == before
    copy = tmp_path / "m.safetensors"
    save_weights(model, copy, metadata=params.prior_metadata(model))
    assert torch.allclose(load_weights(copy).delta_std, model.delta_std)


def test_unmeasured_prior_follows_the_token_scale_and_bad_priors_are_refused():
    from imfcodec.entropy import params
    from imfcodec.zoo import random_model

    model = random_model("imf-tiny")
    model.token_scale.mul_(3)
    assert params.prior_metadata(model) == {}
    np.testing.assert_array_equal(params.prior_delta_std(model), np.full(32, 3 * params.UNMEASURED_DELTA_RATIO))
    for bad in (torch.ones(31), torch.zeros(32), torch.full((32,), -1.0)):
        with pytest.raises(ValueError, match="token_dim 32"):
            params.set_prior(model, bad)
    with pytest.raises(ValueError, match="bad delta_std"):
        params.load_prior(model, {"delta_std": "[1, 2"})
    params.load_prior(model, {})  # no key: nothing measured, nothing changes
    assert not bool((model.delta_std > 0).any())


def test_measure_prior_keeps_deltas_within_clips():
    from imfcodec.entropy.params import DELTA_STD_MIN, UNMEASURED_DELTA_RATIO, measure_prior

    a = torch.tensor([[0.0, 1.0], [1.0, 1.0], [2.0, 1.0]])
    b = torch.tensor([[100.0, 5.0], [101.0, 5.0]])  # the jump from a's last token to b's first is no delta
    scale, delta = measure_prior([a, b])
    assert torch.allclose(delta, torch.tensor([1.0, DELTA_STD_MIN]))
    assert torch.allclose(scale, torch.cat([a, b]).double().std(0, unbiased=False).float())
    scale, delta = measure_prior([a[:1], b[:1]])  # single frames: no deltas measured
    assert torch.equal(delta, scale * UNMEASURED_DELTA_RATIO)
