"""Network and codec speed on this machine: per model config, and for the shipped model against x265.

    python -m benchmarks.model_speed [--threads 2] [--frames 40] [--configs imf-small,imf-tiny] [--out DIR]
    python -m benchmarks.model_speed --configs '' --rounds 7          # only the shipped-model sections

1. Per registered config (seeded random weights: speed does not depend on training), with the decoder's
   default (fast) kernels: E_T fps; the encoder at its default preset (``codec.Encoder``, E_T plus the
   token search of that preset); the decoder frame by frame (``--chunk 1`` latency) and in chunks of 5
   (the default packet); per key frame both sides also run E_T and ``prepare_reference`` once.
2. The shipped model (imf-small-v2, 256x256) on the demo clip (``imfcodec.io.sample_frames``): whole-stream
   decoding (bytes -> RGB frames in memory through ``codec.Decoder``, key frame and entropy decoding
   included) at ``--chunk 1`` and ``--chunk 5``, with the reference and the fast decoder kernels
   (``IMF.kernels``), beside x265 decoding the same frames (CRF 51, the anchors' low-delay settings,
   FFmpeg's hevc decoder, MP4 bytes -> RGB in memory) with the same number of threads. All of them are
   timed in turns, round after round, and the medians are reported, so ratios hold on a busy machine.
   Then the stages of the same whole-stream decodes (see below), in turns, and the largest difference
   between the two kernels' frames.
3. The hybrid mode (shipped enhancer): whole-stream decoding beside x265, then its encoder's and decoder's stages.
4. Encoder speed per preset (``imfcodec.settings.PRESETS``) on the same frames, in turns with x265 encoding and
   decoding them, and the encoder's stages per preset.

Stages are the codec's own ``imfcodec.stages`` regions in the real ``codec.Encoder``/``Decoder`` and
``hybrid.HybridEncoder``/``HybridDecoder`` (plus, for ``decode_frame``, forward hooks on IMF_D, the transformer
stacks and D_F and the alignments' ``attend``), timed as self time: they add up to the run's total less
'unaccounted' (the benchmark's own loop). FLOPs per stage come from the same regions with torch's FLOP counter
as the clock; GFLOP/s is read against the fp32 matmul peak measured at the start of the run, so a stage's
share of the peak says how far it is from what this CPU does on dense GEMMs.
"""

from __future__ import annotations

import io
import os
import tempfile
import statistics
import sys
import time
from contextlib import contextmanager, nullcontext
from dataclasses import replace
from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see imfcodec/cli.py

import click  # noqa: E402
import torch  # noqa: E402

from imfcodec.cliutil import CONTEXT_SETTINGS, Command, call  # noqa: E402

from .harness import out_option, threads_option, write_result  # noqa: E402

PROG = "python -m benchmarks.model_speed"
SHIPPED = "imf-small-v2"


def _time(fn, repeats: int) -> float:
    """Median seconds per call after two warm-up calls."""
    fn()
    fn()
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def in_turns(fns: dict, rounds: int) -> dict[str, float]:
    """Median seconds of each callable, timed in turns (one call of each per round) after one warm-up
    round, so that load on a shared machine hits all of them alike."""
    for fn in fns.values():
        fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - t0)
    return {name: statistics.median(s) for name, s in samples.items()}


# ------------------------------------------------------------------------------------------- per config


def measure(name: str, frames: int) -> dict:
    from imfcodec.models import count_parameters, decode_gflops
    from imfcodec.zoo import random_model

    model = random_model(name)
    gflops = decode_gflops(model)
    with torch.inference_mode():
        timings = _timings(model, frames)
    return timings | _search_timing(model, frames) | {"model": name, "params": count_parameters(model),
                                                      "decode_gflops": gflops}


def _search_timing(model: torch.nn.Module, frames: int) -> dict:
    """Encoder fps at the default preset (E_T + its token search), through the real ``Encoder``."""
    from imfcodec.codec import Encoder, EncoderSettings
    from imfcodec.zoo import weights_hash

    r = model.config.resolution
    gen = torch.Generator().manual_seed(1)
    key, cur = (torch.randint(0, 256, (r, r, 3), generator=gen, dtype=torch.uint8).numpy() for _ in range(2))
    enc = Encoder(model, model_name=model.config.name, weights_hash=weights_hash(model), fps=Fraction(25),
                  settings=EncoderSettings(key_codec="png"))
    enc.encode(key)  # the key frame: reference cache and its autograd copy, built once
    return {"search_iters": enc.settings.search_iters,
            "encode_search_fps": 1 / _time(lambda: enc.encode(cur), max(3, frames // 10))}


def _timings(model: torch.nn.Module, frames: int) -> dict:
    r = model.config.resolution
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, r, r, generator=gen)
    t = model.encode_token(x)
    ref = model.prepare_reference(x, t)
    chunk = t.repeat(5, 1)
    repeats = max(3, frames // 5)
    enc = _time(lambda: model.encode_token(x), repeats)
    key = _time(lambda: model.prepare_reference(x, model.encode_token(x)), max(3, repeats // 4))
    dec1 = _time(lambda: model.decode_frame(ref, t), repeats)
    dec5 = _time(lambda: model.decode_frame(ref, chunk), max(3, repeats // 5)) / 5
    return {"resolution": r, "encode_fps": 1 / enc, "decode_fps_chunk1": 1 / dec1, "decode_fps_chunk5": 1 / dec5,
            "key_frame_ms": key * 1000}


def _all_configs() -> str:
    from imfcodec.models import list_models

    return ",".join(list_models("imf"))


def config_table(names: list[str], frames: int) -> list[str]:
    rows = [measure(n, frames if n != "imf-paper" else 5) for n in names]
    lines = ["| model | res | params | GFLOPs/decoded frame | encode fps (E_T) | encode fps (default preset) | "
             "decode fps, chunk 1 | decode fps, chunk 5 | per key frame (ms) |", "|---|---|---|---|---|---|---|---|---|"]
    for d in rows:
        lines.append(f"| {d['model']} | {d['resolution']} | {d['params']:,} | {d['decode_gflops']:.2f} | "
                     f"{d['encode_fps']:.1f} | {d['encode_search_fps']:.2f} ({d['search_iters']} steps) | "
                     f"{d['decode_fps_chunk1']:.1f} | {d['decode_fps_chunk5']:.1f} | "
                     f"{d['key_frame_ms']:.0f} |")
    return lines


# ------------------------------------------------------------------------------------------- shipped model


# ------------------------------------------------------------------------------------------- stages

IO = "I/O"  # stream parsing (decode) or packet writing (encode), bytes in memory
SETUP = "decoder setup"  # Decoder construction: entropy tables, key-frame codec
DECODE_FRAME = "decode_frame"  # the codec's region around IMF.decode_frame; the hooks below split it
UNACCOUNTED = "unaccounted"
TOKEN_ENCODE_STAGES = ("scene cut", "key-frame encode", "key token (E_T)", "reference features", "E_T",
                       "token search", "entropy coding", IO)
# the guard (the default) decodes what the encoder sends: the decoder's stages run inside the encode too
HYBRID_ENCODE_STAGES = ("scene cut", "key-frame encode", "base-layer encode", "guard", "key-frame decode",
                        "base-layer decode", "upscale", "enhancer key preparation", "enhancer", IO)
HYBRID_DECODE_STAGES = (IO, SETUP, "key-frame decode", "base-layer decode", "upscale", "enhancer key preparation",
                        "enhancer", "output conversion")


def decode_stages(model) -> tuple[str, ...]:
    """The stages of a token-mode decode, in pipeline order (the attention's per scale, named by mode)."""
    from imfcodec.models.imf import NUM_SCALES

    attention = tuple(f"IMF_A R/{32 >> i} {model.config.align_modes[i]}" for i in range(NUM_SCALES))
    return (IO, SETUP, "key-frame decode", "reference features", "token entropy decoding", "IMF_D (token -> motion)",
            *attention, "transformers", "D_F (synthesis)", DECODE_FRAME, "output conversion")


@contextmanager
def model_stages(model):
    """Splits the codec's ``decode_frame`` region into the model's stages while a ``StageClock`` is active:
    forward hooks on IMF_D, the transformer stacks and D_F, the alignments' ``attend`` wrapped per instance.
    A hook opens its stage only directly inside ``decode_frame`` (IMF_D also runs in ``prepare_reference``,
    which stays "reference features"); nothing is registered outside this block."""
    from imfcodec import stages

    names = decode_stages(model)
    attention = names[6:6 + len(model.align)]
    opened: list[bool] = []

    def enter(name: str) -> None:
        clock = stages.active()
        ok = clock is not None and clock.current == DECODE_FRAME
        opened.append(ok)
        if ok:
            clock.push(name)

    def leave() -> None:
        if opened.pop():
            stages.active().pop()

    handles = []
    for name, module in [("IMF_D (token -> motion)", model.token_decoder), ("D_F (synthesis)", model.frame_decoder),
                         *(("transformers", m) for m in model.refine)]:
        handles += [module.register_forward_pre_hook(lambda *_, _n=name: enter(_n)),
                    module.register_forward_hook(lambda *_: leave())]
    for name, al in zip(attention, model.align):
        def timed(*args, _attend=al.attend, _name=name, **kwargs):
            enter(_name)
            try:
                return _attend(*args, **kwargs)
            finally:
                leave()
        al.attend = timed
    try:
        yield
    finally:
        for h in handles:
            h.remove()
        for al in model.align:
            del al.attend


def staged_decode(model, data: bytes, now=time.perf_counter) -> tuple[dict[str, float], float, int]:
    """Decodes a whole stream (bytes in memory -> RGB frames, ``codec.Decoder`` or ``hybrid.HybridDecoder``)
    under a ``StageClock``; returns each stage's total, the whole run's and the frame count (``now`` is the
    clock: wall seconds, or a FLOP counter's total)."""
    from imfcodec.bitstream import StreamReader
    from imfcodec.codec import Decoder
    from imfcodec.modes.hybrid import HybridDecoder, is_enhancer
    from imfcodec.stages import StageClock, stage

    clock = StageClock(now)
    frames = 0
    hooks = nullcontext() if is_enhancer(model) else model_stages(model)
    t0 = now()
    with clock, hooks:
        with stage(IO):
            reader = StreamReader(io.BytesIO(data))
            packets = iter(reader)
        with stage(SETUP):
            dec = (HybridDecoder if is_enhancer(model) else Decoder)(model, reader.header)
        while True:
            with stage(IO):
                packet = next(packets, None)
            if packet is None:
                break
            frames += len(dec.decode(packet))
    return dict(clock.totals), now() - t0, frames


def staged_encode(enc, frames, now=time.perf_counter) -> tuple[dict[str, float], float, float, bytes]:
    """Encodes ``frames`` with ``enc`` (``codec.Encoder`` or ``hybrid.HybridEncoder``) into a stream in memory
    under a ``StageClock``; returns each stage's total, the whole run's, the run's after the first (key)
    frame, and the stream."""
    from imfcodec.bitstream import StreamWriter
    from imfcodec.stages import StageClock, stage

    clock = StageClock(now)
    t0 = now()
    with clock:
        with stage(IO):
            buf = io.BytesIO()
            writer = StreamWriter(buf, enc.header)
        for i, f in enumerate(frames):
            if i == 1:
                t1 = now()
            packets = enc.encode(f)
            with stage(IO):
                for p in packets:
                    writer.write(p)
        packets = enc.flush()
        with stage(IO):
            for p in packets[:-1]:
                writer.write(p)
            writer.close(packets[-1])
    end = now()
    return dict(clock.totals), end - t0, end - t1, buf.getvalue()


def count_flops(model: torch.nn.Module, run) -> dict[str, float]:
    """FLOPs per stage of ``run(now)`` (one of the staged functions), from torch's FLOP counter read as the
    stage clock; "total" is the whole run's. The weights are frozen meanwhile (the codec never takes their
    gradients): the counter's module tracker fails on a weight that needs one inside inference mode."""
    from torch.utils.flop_counter import FlopCounterMode

    from imfcodec.token_search import frozen

    counter = FlopCounterMode(display=False)
    with frozen(model), counter:
        totals, total, *_ = run(counter.get_total_flops)
    return {**totals, "total": total}


def matmul_peak(threads: int, n: int = 2048, repeats: int = 7) -> dict[str, float]:
    """GFLOP/s of the best of ``repeats`` fp32 ``n x n`` matrix products at ``threads`` threads, through
    ``torch.mm`` (MKL's sgemm) and through a 1x1 convolution on channels-last tensors (oneDNN's GEMM, which
    runs the model's convolutions): the practical peak against which each stage's GFLOP/s is read is the
    better of the two (on the AMD build machine oneDNN's is more than twice MKL's)."""
    torch.set_num_threads(threads)
    gen = torch.Generator().manual_seed(0)
    a, b = torch.rand(n, n, generator=gen), torch.rand(n, n, generator=gen)
    conv = torch.nn.Conv2d(n, n, 1, bias=False).eval().to(memory_format=torch.channels_last)
    x = torch.rand(1, n, n // 64, 64, generator=gen).contiguous(memory_format=torch.channels_last)
    out = {}
    with torch.inference_mode():
        for name, fn in (("torch.mm", lambda: torch.mm(a, b)), ("1x1 conv", lambda: conv(x))):
            fn()
            out[name] = 2 * n**3 / min(_timed(fn) for _ in range(repeats)) / 1e9
    out["peak"] = max(out.values())
    return out


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def cpu_model() -> str:
    """The CPU's model name and the vector extensions that set its matmul peak (``/proc/cpuinfo``), or the
    platform's word for it."""
    import platform

    name, isa = platform.processor() or platform.machine(), []
    try:
        info = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return name
    for line in info:
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            name = value.strip()
        elif key.strip() == "flags":
            isa = [f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_tile") if f in value.split()]
            break
    return f"{name} ({', '.join(isa)})" if isa else name


def median_stages(runs: list[tuple], names) -> dict[str, float]:
    """Per stage the median over runs of its seconds; 'unaccounted' = the median total less their sum."""
    med = {s: statistics.median(r[0].get(s, 0.0) for r in runs) for s in names}
    med["total"] = statistics.median(r[1] for r in runs)
    med[UNACCOUNTED] = med["total"] - sum(med[s] for s in names)
    return med


def stage_table(names, columns: dict[str, dict[str, float]], frames: dict[str, int],
                flops: dict[str, float] | None = None, flop_frames: int = 1, rate_cols: tuple[str, ...] = (),
                peak: float | None = None) -> list[str]:
    """Markdown rows: ms per frame of each stage per column; with ``flops`` (counted over ``flop_frames``
    frames) GFLOP per frame, and for each of ``rate_cols`` GFLOP/s and the fraction of ``peak``."""
    head = ["stage", *(f"{c} (ms/frame)" for c in columns)]
    if flops:
        head.append("GFLOP/frame")
        for c in rate_cols:
            head += [f"GFLOP/s, {c}", f"% of peak, {c}"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in (*names, UNACCOUNTED, "total"):
        row = [s, *(f"{columns[c][s] * 1000 / frames[c]:.2f}" for c in columns)]
        if flops:
            f = flops.get(s, 0.0) if s != UNACCOUNTED else flops["total"] - sum(flops.get(n, 0.0) for n in names)
            row.append(f"{f / flop_frames / 1e9:.3f}" if f else "")
            for c in rate_cols:
                sec = columns[c][s] / frames[c]
                rate = f / flop_frames / sec / 1e9 if f and sec > 0 else None
                row += ["", ""] if rate is None else [f"{rate:.1f}", f"{100 * rate / peak:.0f}" if peak else ""]
        lines.append("| " + " | ".join(row) + " |")
    return lines


def _encode_packets(loaded, frames, chunk: int) -> tuple:
    from imfcodec.codec import Encoder, EncoderSettings, encode_frames

    enc = Encoder(loaded.model, model_name=loaded.name, weights_hash=loaded.weights_hash, fps=Fraction(25),
                  settings=EncoderSettings(chunk=chunk, search_iters=0))
    return enc.header, list(encode_frames(frames, enc))


def _decode_all(model, header, packets) -> int:
    from imfcodec.codec import Decoder

    dec = Decoder(model, header)
    return sum(len(dec.decode(p)) for p in packets)


def default_hybrid(chunk: int):
    """`imfcodec encode`'s default settings (the hybrid mode at its default point) at this chunk, resolved."""
    from imfcodec.settings import hybrid_defaults

    return hybrid_defaults(chunk=chunk).validated()


def hybrid_table(threads: int, n_frames: int, rounds: int, peak: float, others: tuple[str, ...] = ()) -> list[str]:
    """Whole-stream decoding of the hybrid mode with the shipped enhancer at the default point (``default_hybrid``)
    at chunk 1 and 5, with and without the enhancer, beside x265 decoding the same frames at full size, timed
    in turns; ``others`` (``--enhancer``): more enhancers decoding the same streams (``decode --enhancer``), in
    the same turns."""
    import numpy as np

    from benchmarks.anchors import ANCHORS, decode_file, encode_decode
    from imfcodec.codec import encode_frames
    from imfcodec.modes.hybrid import HybridDecoder, HybridEncoder, load_enhancer
    from imfcodec.io.sample import sample_frames

    loaded = load_enhancer(None)
    model = loaded.model.eval()
    size = model.config.resolution
    frames = list(sample_frames(n_frames, size))
    streams = {}
    for chunk in (1, 5):
        enc = HybridEncoder(model, model_name=loaded.name, weights_hash=loaded.weights_hash, fps=Fraction(25),
                            settings=default_hybrid(chunk))
        streams[chunk] = (enc.header, list(encode_frames(frames, enc)))
        # the same point with every frame coded (--full-rate; the default codes every other one, version 6)
        enc = HybridEncoder(model, model_name=loaded.name, weights_hash=loaded.weights_hash, fps=Fraction(25),
                            settings=replace(default_hybrid(chunk), half_rate=False))
        streams[("full", chunk)] = (enc.header, list(encode_frames(frames, enc)))
    with tempfile.TemporaryDirectory() as tmp:
        mp4 = Path(tmp) / "x265.mp4"
        encode_decode(ANCHORS["x265"], 51, np.stack(frames), Fraction(25), threads=threads, mp4_path=mp4)
        mp4_bytes = mp4.read_bytes()

    extra = {spec: load_enhancer(spec) for spec in others}

    def run(chunk, enhance: bool, kernels: str = "fast", net=model):
        def go():  # as api.iter_decoded shows a stream: a half-rate one's frames with the means between them
            from imfcodec.halfrate import shown

            header, packets = streams[chunk]
            net.kernels = kernels
            try:
                dec = HybridDecoder(net, header, enhance=enhance)
                items = ((dec, dec.decode(p)) for p in packets)  # (the last packet is the END record)
                assert sum(len(f) for _, f in shown(items, header, lambda: packets[-1].frames)) == n_frames
            finally:
                net.kernels = "fast"
        return go

    fns = {("x265", 0): lambda: decode_file(io.BytesIO(mp4_bytes), n_frames, size, size, threads=threads)}
    for chunk in (1, 5):
        fns[("full", chunk)] = run(("full", chunk), True)
        for enhance in (True, False):
            fns[(enhance, chunk)] = run(chunk, enhance)
        fns[("reference", chunk)] = run(chunk, True, "reference")
        for spec, other in extra.items():
            fns[(spec, chunk)] = run(chunk, True, net=other.model.eval())
    fps = {k: n_frames / s for k, s in in_turns(fns, rounds).items()}
    x265_fps = fps[("x265", 0)]
    st = default_hybrid(5)
    lines = [f"Hybrid mode (the default), whole-stream decoding of the demo clip ({n_frames} frames, {size}x{size}, "
             f"`imfcodec encode`'s defaults: one key frame at {st.key_codec} quality {st.key_quality}, {st.base_codec} "
             f"base layer at 1/{st.base_factor} quality {st.base_quality}), {threads} threads, median of {rounds} "
             f"rounds in turns, enhancer {loaded.name}@{loaded.weights_hash.hex()[:16]}:", "",
             "| decoder | chunk 1 fps | chunk 5 fps | chunk 1 / x265 | chunk 5 / x265 |", "|---|---|---|---|---|"]
    for enhance, label in ((True, "imfcodec (hybrid), fast kernels"),
                           ("reference", "imfcodec (hybrid), reference kernels (`IMFCODEC_KERNELS=reference`)"),
                           *((spec, f"imfcodec (hybrid), decode --enhancer {spec} ({other.name}), fast kernels")
                             for spec, other in extra.items()),
                           (False, "imfcodec (hybrid), decode --no-enhance"),
                           ("full", "imfcodec (hybrid), the same point with `--full-rate` (every frame coded)")):
        f1, f5 = fps[(enhance, 1)], fps[(enhance, 5)]
        lines.append(f"| {label} | {f1:.1f} | {f5:.1f} | {f1 / x265_fps:.3f} | {f5 / x265_fps:.3f} |")
    lines.append(f"| x265 (libx265 CRF 51 at 256x256, hevc decoder) | {x265_fps:.0f} | | | |")

    # stages: encoding (in turns with the decodes) and decoding at chunk 1 and 5 with the enhancer
    # (per frame of work: the full-rate streams, every frame decoded and enhanced)
    data = {c: _stream_bytes(*streams[("full", c)]) for c in (1, 5)}
    runs: dict = {"encode": [], 1: [], 5: []}

    def encode():
        enc = HybridEncoder(model, model_name=loaded.name, weights_hash=loaded.weights_hash, fps=Fraction(25),
                            settings=replace(default_hybrid(5), half_rate=False))
        totals, total, *_ = staged_encode(enc, frames)
        runs["encode"].append((totals, total))

    def decode(chunk: int):
        return lambda: runs[chunk].append(staged_decode(model, data[chunk]))

    in_turns({"encode": encode, 1: decode(1), 5: decode(5)}, rounds)
    flops = count_flops(model, lambda now: staged_decode(model, data[5], now))
    names = tuple(dict.fromkeys((*HYBRID_ENCODE_STAGES[:-1], *HYBRID_DECODE_STAGES)))
    cols = {label: median_stages(runs[k][1:], names)
            for label, k in (("encode", "encode"), ("decode, chunk 1", 1), ("decode, chunk 5", 5))}
    lines += ["", f"Stages of the hybrid mode at `--full-rate` (every frame coded), the same {n_frames} frames "
              f"(`HybridEncoder` at chunk 5 into a stream in memory, `HybridDecoder` from it), ms per frame, median of "
              f"{rounds} rounds in turns; GFLOP/s and "
              f"% of the matmul peak ({peak:.0f} GFLOP/s) at chunk 5:", "",
              *stage_table(names, cols, {c: n_frames for c in cols}, flops, n_frames, ("decode, chunk 5",), peak)]
    enc_fps = n_frames / statistics.median(total for _, total in runs["encode"][1:] or runs["encode"])
    lines += ["", f"Encoding at the defaults (`HybridEncoder`, key frame, base layer and stream writing): "
              f"**{enc_fps:.0f} frames/s**; decoding at chunk 1 / 5: **{fps[(True, 1)]:.1f} / {fps[(True, 5)]:.1f} "
              f"frames/s** (table above); fast / reference kernels {fps[(True, 1)] / fps[('reference', 1)]:.2f}x at "
              f"chunk 1, {fps[(True, 5)] / fps[('reference', 5)]:.2f}x at chunk 5."]
    return lines


def shipped_tables(threads: int, n_frames: int, rounds: int, peak: float) -> list[str]:
    import numpy as np

    from benchmarks.anchors import ANCHORS, decode_file, encode_decode
    from imfcodec.codec import to_tensor
    from imfcodec.io.sample import sample_frames
    from imfcodec.zoo import load_model

    loaded = load_model(SHIPPED)
    model = loaded.model.eval()
    size = model.config.resolution
    frames = list(sample_frames(n_frames, size))
    streams = {c: _encode_packets(loaded, frames, c) for c in (1, 5)}
    with tempfile.TemporaryDirectory() as tmp:
        mp4 = Path(tmp) / "x265.mp4"
        x265 = encode_decode(ANCHORS["x265"], 51, np.stack(frames), Fraction(25), threads=threads, mp4_path=mp4)
        mp4_bytes = mp4.read_bytes()

    def imf(kernels: str, chunk: int):
        def run():
            model.kernels = kernels
            header, packets = streams[chunk]
            assert _decode_all(model, header, packets) == n_frames
        return run

    fns = {("x265", 0): lambda: decode_file(io.BytesIO(mp4_bytes), n_frames, size, size, threads=threads)}
    for chunk in (1, 5):
        for kernels in ("reference", "fast"):
            fns[(kernels, chunk)] = imf(kernels, chunk)
    sec = in_turns(fns, rounds)
    fps = {k: n_frames / s for k, s in sec.items()}
    x265_fps = fps[("x265", 0)]
    lines = [f"Whole-stream decoding of the demo clip ({n_frames} frames, {size}x{size}, one key frame, hevc key "
             f"frame, `--refine 0` tokens), {threads} threads, median of {rounds} rounds in turns; x265: CRF 51, "
             f"{x265.es_bytes * 8 / 1000 / (n_frames / 25):.1f} kbit/s, FFmpeg hevc decoder to RGB.", "",
             "| decoder | kernels | chunk 1 fps | chunk 5 fps | chunk 1 / x265 | chunk 5 / x265 |",
             "|---|---|---|---|---|---|"]
    for kernels in ("reference", "fast"):
        f1, f5 = fps[(kernels, 1)], fps[(kernels, 5)]
        lines.append(f"| imfcodec {SHIPPED} | {kernels} | {f1:.1f} | {f5:.1f} | {f1 / x265_fps:.3f} | "
                     f"{f5 / x265_fps:.3f} |")
    lines.append(f"| x265 (libx265 CRF 51, hevc decoder) | | {x265_fps:.0f} | | | |")
    lines += ["", f"fast / reference kernels: {fps[('fast', 1)] / fps[('reference', 1)]:.2f}x at chunk 1, "
              f"{fps[('fast', 5)] / fps[('reference', 5)]:.2f}x at chunk 5.", ""]

    # per-stage times of whole-stream decoding, in turns, and the FLOPs of each stage (counted once per kernels)
    data = {c: _stream_bytes(*streams[c]) for c in (1, 5)}
    variants = [(k, c) for c in (1, 5) for k in ("reference", "fast")]
    runs: dict = {v: [] for v in variants}

    def staged(kernels: str, chunk: int):
        def run():
            model.kernels = kernels
            runs[(kernels, chunk)].append(staged_decode(model, data[chunk]))
        return run

    in_turns({v: staged(*v) for v in variants}, rounds)
    flops = {}
    for kernels in ("reference", "fast"):
        model.kernels = kernels
        flops[kernels] = count_flops(model, lambda now: staged_decode(model, data[5], now))
    with torch.inference_mode():
        t_all = model.encode_token(torch.cat([to_tensor(f) for f in frames]))
        ref = model.prepare_reference(to_tensor(frames[0]), t_all[:1])
        model.kernels = "reference"
        y_ref = model.decode_frame(ref, t_all[1:])
        model.kernels = "fast"
        y_fast = model.decode_frame(ref, t_all[1:])
    diff = float((y_ref - y_fast).abs().max()) * 255
    u8 = int(((y_ref * 255).round() != (y_fast * 255).round()).sum())
    names = decode_stages(model)
    cols = {f"{k}, chunk {c}": median_stages(runs[(k, c)][1:], names) for k, c in variants}  # less the warm-up
    lines += [f"Stages of whole-stream decoding (`codec.Decoder`, the same streams, {n_frames} frames: key-frame stages "
              f"are spread over them), ms per frame, median of {rounds} rounds in turns; GFLOP/frame counted with the "
              f"fast kernels (the reference kernels: {flops['reference']['total'] / n_frames / 1e9:.3f} in all); "
              f"GFLOP/s and % of the matmul peak ({peak:.0f} GFLOP/s) with the fast kernels. 'unaccounted' = the "
              "median total less the stages' medians:", "",
              *stage_table(names, cols, {c: n_frames for c in cols}, flops["fast"], n_frames,
                           ("fast, chunk 1", "fast, chunk 5"), peak),
              "", f"Fast vs reference kernels on these {len(t_all) - 1} frames: largest difference "
              f"{diff:.4f} levels of 255 before rounding; {u8} of {y_ref.numel():,} 8-bit values differ (by 1)."]
    return lines


def _stream_bytes(header, packets) -> bytes:
    """The stream as a file in memory (the decoders' stage runs parse it, as a decode from a file does)."""
    from imfcodec.bitstream import StreamWriter

    buf = io.BytesIO()
    writer = StreamWriter(buf, header)
    for p in packets[:-1]:
        writer.write(p)
    writer.close(packets[-1])
    return buf.getvalue()


def preset_table(threads: int, n_frames: int, rounds: int, peak: float) -> list[str]:
    """Encoder speed and stages per preset on the demo clip, with x265 encoding and decoding the same frames
    in the same turns."""
    import numpy as np

    from benchmarks.anchors import ANCHORS, decode_file, encode_decode
    from imfcodec.codec import Encoder, EncoderSettings
    from imfcodec.io.sample import sample_frames
    from imfcodec.settings import DEFAULT_PRESET, PRESETS
    from imfcodec.zoo import load_model

    loaded = load_model(SHIPPED)
    model = loaded.model
    size = model.config.resolution
    frames = list(sample_frames(n_frames + 1, size))

    def encoder(preset: str) -> Encoder:
        return Encoder(model, model_name=loaded.name, weights_hash=loaded.weights_hash, fps=Fraction(25),
                       settings=EncoderSettings.from_preset(preset, key_codec="png"))

    def run(preset: str, kernels: str):
        def go():
            model.kernels = kernels
            runs[(preset, kernels)].append(staged_encode(encoder(preset), frames))
        return go

    def x265():
        r = encode_decode(ANCHORS["x265"], 51, np.stack(frames), Fraction(25), threads=threads, mp4_path=mp4)
        t0 = time.perf_counter()
        decode_file(io.BytesIO(mp4.read_bytes()), len(frames), size, size, threads=threads)
        runs["x265"].append((r.enc_seconds, time.perf_counter() - t0))

    variants = [(p, "fast") for p in PRESETS] + [(DEFAULT_PRESET, "reference")]
    runs: dict = {v: [] for v in [*variants, "x265"]}
    with tempfile.TemporaryDirectory() as tmp:
        mp4 = Path(tmp) / "x265.mp4"
        in_turns({**{v: run(*v) for v in variants}, "x265": x265}, rounds)
    model.kernels = "fast"
    flops = {p: count_flops(model, lambda now, _p=p: staged_encode(encoder(_p), frames, now)) for p in PRESETS}
    n_all = len(frames)
    x265_enc = n_all / statistics.median(r[0] for r in runs["x265"][1:])
    x265_dec = n_all / statistics.median(r[1] for r in runs["x265"][1:])
    lines = [f"Encoder per preset, shipped model, demo clip: {n_frames} frames after a png key frame, {threads} "
             f"threads, median of {rounds} rounds in turns with x265 (CRF 51, the anchors' low-delay settings, RGB in "
             f"memory -> MP4 -> RGB, all {n_all} frames); fps excludes the key frame, the stage table below "
             "includes it:", "",
             "| preset | token search | decoder kernels | encode fps | / x265 encoder |", "|---|---|---|---|---|"]
    for (p, kernels) in variants:
        mark = " (default)" if p == DEFAULT_PRESET else ""
        fps = n_frames / statistics.median(r[2] for r in runs[(p, kernels)][1:])
        lines.append(f"| {p}{mark} | {PRESETS[p].what} | {kernels} | {fps:.2f} | {fps / x265_enc:.4f} |")
    lines += [f"| x265 encoder (libx265 CRF 51, preset medium) | | | {x265_enc:.0f} | 1 |",
              f"| x265 decoder (FFmpeg hevc), the same frames | | | {x265_dec:.0f} | |", ""]
    cols = {p: median_stages(runs[(p, "fast")][1:], TOKEN_ENCODE_STAGES) for p in PRESETS}
    lines += [f"Encoder stages per preset (fast kernels), ms per frame over all {n_all} frames (key frame "
              f"included), median of {rounds} rounds; GFLOP/frame per preset and GFLOP/s against the matmul "
              f"peak ({peak:.0f} GFLOP/s):", "",
              *stage_table(TOKEN_ENCODE_STAGES, cols, {p: n_all for p in cols}), "",
              "| preset | " + " | ".join(f"{s} GFLOP/frame, GFLOP/s (% of peak)" for s in ("E_T", "token search"))
              + " | all stages GFLOP/frame, GFLOP/s (% of peak) |", "|---|---|---|---|"]
    for p in PRESETS:
        cells = []
        for s in ("E_T", "token search", "total"):
            f, sec = flops[p].get(s, 0.0), cols[p][s]
            cells.append(f"{f / n_all / 1e9:.3f}, {f / sec / 1e9:.1f} ({100 * f / sec / 1e9 / peak:.0f} %)"
                         if f and sec > 0 else "")
        lines.append(f"| {p} | " + " | ".join(cells) + " |")
    return lines


@click.command("model_speed", cls=Command, context_settings=CONTEXT_SETTINGS, help=__doc__.splitlines()[0])
@threads_option()
@click.option("--frames", type=int, default=40, help="timed calls per measurement (roughly), per-config table")
@click.option("--configs", default=_all_configs, help="configs of the per-config table ('' for none)")
@click.option("--shipped/--no-shipped", default=True, help="the shipped-model decoding sections (needs its weights)")
@click.option("--presets/--no-presets", default=True, help="the encoder-per-preset section")
@click.option("--hybrid/--no-hybrid", default=True, help="the hybrid mode's decoding section (needs the shipped enhancer)")
@click.option("--enhancer", "enhancers", multiple=True,
              help="hybrid section: also decode its streams with this enhancer (repeatable; name, .safetensors or "
                   "random:NAME), in the same turns")
@click.option("--clip-frames", type=int, default=50, help="frames of the demo clip decoded per round")
@click.option("--encode-frames", type=int, default=10, help="frames encoded per preset and round")
@click.option("--rounds", type=int, default=5, help="rounds of the in-turns timings")
@out_option("model_speed.md")
def command(**params) -> int:
    import imfcodec.models.imf  # noqa: F401 - flush-to-zero before the first tensor operation starts the threads

    args = SimpleNamespace(**params)
    torch.set_num_threads(args.threads)
    mm = matmul_peak(args.threads)
    peak = mm["peak"]
    lines = [f"Speed, {args.threads} threads, {cpu_model()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
             f"{time.strftime('%Y-%m-%d')}; load average {os.getloadavg()[0]:.1f} at the start. fp32 matmul peak "
             f"of this run (best of 2048x2048 products): {peak:.1f} GFLOP/s ({mm['torch.mm']:.1f} through `torch.mm`, "
             f"{mm['1x1 conv']:.1f} through a channels-last 1x1 convolution).", ""]
    names = [n for n in args.configs.split(",") if n]
    if names:
        lines += ["Per config (seeded random weights, fast kernels), median of repeated calls, batch 1 unless noted:",
                  "", *config_table(names, args.frames), ""]
    if args.shipped:
        lines += [*shipped_tables(args.threads, args.clip_frames, args.rounds, peak), ""]
    if args.hybrid:
        lines += [*hybrid_table(args.threads, args.clip_frames, args.rounds, peak, tuple(args.enhancers)), ""]
    if args.presets:
        lines += [*preset_table(args.threads, args.encode_frames, max(2, args.rounds // 2), peak), ""]
    end = matmul_peak(args.threads)
    lines.append(f"At the end: load average {os.getloadavg()[0]:.1f}, matmul peak {end['peak']:.1f} GFLOP/s "
                 f"({end['torch.mm']:.1f} through `torch.mm`, {end['1x1 conv']:.1f} through the 1x1 convolution).")
    text = "\n".join(lines)
    print(text)
    write_result(args.out, "model_speed.md", text)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point for ``python -m benchmarks.model_speed``; returns the exit status."""
    return call(command, argv, PROG)


if __name__ == "__main__":
    sys.exit(main())
