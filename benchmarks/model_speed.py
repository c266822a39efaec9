"""Network and codec speed on this machine: per model config, and for the shipped model against x265.

    python -m benchmarks.model_speed [--threads 2] [--frames 40] [--configs imf-small,imf-tiny] [--out FILE.md]
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
   Then per-stage times of ``decode_frame`` (IMF_D, IMF_A per scale, transformer stacks, D_F) and the
   largest difference between the two kernels' frames.
3. Encoder speed per preset (``imfcodec.settings.PRESETS``) on the same frames, in turns.
"""

from __future__ import annotations

import io
import os
import tempfile
import statistics
import sys
import time
from collections import defaultdict
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see imfcodec/cli.py

import click  # noqa: E402
import torch  # noqa: E402

from imfcodec.cliutil import CONTEXT_SETTINGS, Command, call  # noqa: E402

PROG = "python -m benchmarks.model_speed"
SHIPPED = "imf-small-v2"
STAGES = ("IMF_D", "IMF_A R/32", "IMF_A R/16", "IMF_A R/8", "IMF_A R/4", "transformers", "D_F", "rest")


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


@contextmanager
def stage_timer(model, acc: dict[str, float]):
    """Adds the seconds spent in each stage of ``model.decode_frame`` to ``acc`` while active (forward
    hooks on IMF_D, the transformer stacks and D_F; the alignments' ``attend`` wrapped per instance)."""
    from imfcodec.models.imf import NUM_SCALES

    starts: dict[str, float] = {}
    handles = []

    def hook(stage: str):
        def pre(*_):
            starts[stage] = time.perf_counter()

        def post(*_):
            acc[stage] += time.perf_counter() - starts[stage]
        return pre, post

    for stage, module in [("IMF_D", model.token_decoder), ("D_F", model.frame_decoder),
                          *(("transformers", m) for m in model.refine)]:
        pre, post = hook(stage)
        handles += [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]
    names = [f"IMF_A R/{32 >> i}" for i in range(NUM_SCALES)]
    for stage, al in zip(names, model.align):
        def timed(*args, _attend=al.attend, _stage=stage, **kwargs):
            t0 = time.perf_counter()
            out = _attend(*args, **kwargs)
            acc[_stage] += time.perf_counter() - t0
            return out
        al.attend = timed
    try:
        yield
    finally:
        for h in handles:
            h.remove()
        for al in model.align:
            del al.attend


def _encode_packets(loaded, frames, chunk: int) -> tuple:
    from imfcodec.codec import Encoder, EncoderSettings, encode_frames

    enc = Encoder(loaded.model, model_name=loaded.name, weights_hash=loaded.weights_hash, fps=Fraction(25),
                  settings=EncoderSettings(chunk=chunk, search_iters=0))
    return enc.header, list(encode_frames(frames, enc))


def _decode_all(model, header, packets) -> int:
    from imfcodec.codec import Decoder

    dec = Decoder(model, header)
    return sum(len(dec.decode(p)) for p in packets)


def hybrid_table(threads: int, n_frames: int, rounds: int) -> list[str]:
    """Whole-stream decoding of the hybrid mode with the shipped enhancer (base layer at 1/2, x265 base
    quality 9, hevc key quality 16) at chunk 1 and 5, with and without the enhancer, beside x265 decoding
    the same frames at full size, timed in turns."""
    import numpy as np

    from benchmarks.anchors import ANCHORS, decode_file, encode_decode
    from imfcodec.codec import EncoderSettings, encode_frames
    from imfcodec.hybrid import HybridDecoder, HybridEncoder, load_enhancer
    from imfcodec.io.sample import sample_frames

    loaded = load_enhancer(None)
    model = loaded.model.eval()
    size = model.config.resolution
    frames = list(sample_frames(n_frames, size))
    streams = {}
    for chunk in (1, 5):
        enc = HybridEncoder(model, model_name=loaded.name, weights_hash=loaded.weights_hash, fps=Fraction(25),
                            settings=EncoderSettings(base_codec="hevc", base_factor=2, base_quality=9,
                                                     key_quality=16, chunk=chunk))
        streams[chunk] = (enc.header, list(encode_frames(frames, enc)))
    with tempfile.TemporaryDirectory() as tmp:
        mp4 = Path(tmp) / "x265.mp4"
        encode_decode(ANCHORS["x265"], 51, np.stack(frames), Fraction(25), threads=threads, mp4_path=mp4)
        mp4_bytes = mp4.read_bytes()

    def run(chunk: int, enhance: bool):
        def go():
            header, packets = streams[chunk]
            dec = HybridDecoder(model, header, enhance=enhance)
            assert sum(len(dec.decode(p)) for p in packets) == n_frames
        return go

    fns = {("x265", 0): lambda: decode_file(io.BytesIO(mp4_bytes), n_frames, size, size, threads=threads)}
    for chunk in (1, 5):
        for enhance in (True, False):
            fns[(enhance, chunk)] = run(chunk, enhance)
    fps = {k: n_frames / s for k, s in in_turns(fns, rounds).items()}
    x265_fps = fps[("x265", 0)]
    lines = [f"Hybrid mode, whole-stream decoding of the demo clip ({n_frames} frames, {size}x{size}, one key frame "
             f"at hevc quality 16, x265 base layer at 128x128 quality 9), {threads} threads, median of {rounds} "
             f"rounds in turns, enhancer {loaded.name}@{loaded.weights_hash.hex()[:16]} (fast kernels):", "",
             "| decoder | chunk 1 fps | chunk 5 fps | chunk 1 / x265 | chunk 5 / x265 |", "|---|---|---|---|---|"]
    for enhance, label in ((True, "imfcodec --hybrid"), (False, "imfcodec --hybrid, decode --no-enhance")):
        f1, f5 = fps[(enhance, 1)], fps[(enhance, 5)]
        lines.append(f"| {label} | {f1:.1f} | {f5:.1f} | {f1 / x265_fps:.3f} | {f5 / x265_fps:.3f} |")
    lines.append(f"| x265 (libx265 CRF 51 at 256x256, hevc decoder) | {x265_fps:.0f} | | | |")
    return lines


def shipped_tables(threads: int, n_frames: int, rounds: int) -> list[str]:
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

    # per-stage times of decode_frame, in turns: per round, the seconds of each stage over 10 frames
    with torch.inference_mode():
        t_all = model.encode_token(torch.cat([to_tensor(f) for f in frames]))
        ref = model.prepare_reference(to_tensor(frames[0]), t_all[:1])
        keys = [(k, c) for c in (1, 5) for k in ("reference", "fast")]
        rounds_of: dict = {key: [] for key in keys}

        def staged(kernels: str, chunk: int):
            def run():
                model.kernels = kernels
                acc: dict[str, float] = defaultdict(float)
                t0 = time.perf_counter()
                with stage_timer(model, acc):
                    for i in range(1, 11, chunk):
                        model.decode_frame(ref, t_all[i:i + chunk])
                acc["total"] = time.perf_counter() - t0
                rounds_of[(kernels, chunk)].append(acc)
            return run

        in_turns({key: staged(*key) for key in keys}, rounds)
        model.kernels = "reference"
        y_ref = model.decode_frame(ref, t_all[1:])
        model.kernels = "fast"
        y_fast = model.decode_frame(ref, t_all[1:])
    diff = float((y_ref - y_fast).abs().max()) * 255
    u8 = int(((y_ref * 255).round() != (y_fast * 255).round()).sum())
    per = {}
    for key, accs in rounds_of.items():
        accs = accs[1:]  # the warm-up round
        med = {s: statistics.median(a[s] for a in accs) * 100 for s in (*STAGES[:-1], "total")}  # ms/frame
        med["rest"] = med["total"] - sum(med[s] for s in STAGES[:-1])
        per[key] = med
    order = [("reference", 1), ("fast", 1), ("reference", 5), ("fast", 5)]
    lines += [f"Stages of `decode_frame`, ms per frame (median of {rounds} rounds of 10 frames, in turns; "
              "'rest' = the median total less the stages' medians):", "",
              "| stage | reference, chunk 1 | fast, chunk 1 | reference, chunk 5 | fast, chunk 5 |",
              "|---|---|---|---|---|"]
    for s in (*STAGES, "total"):
        lines.append(f"| {s} | " + " | ".join(f"{per[k][s]:.1f}" for k in order) + " |")
    lines += ["", f"Fast vs reference kernels on these {len(t_all) - 1} frames: largest difference "
              f"{diff:.4f} levels of 255 before rounding; {u8} of {y_ref.numel():,} 8-bit values differ (by 1)."]
    return lines


def preset_table(threads: int, n_frames: int, rounds: int) -> list[str]:
    from imfcodec.codec import Encoder, EncoderSettings
    from imfcodec.io.sample import sample_frames
    from imfcodec.settings import DEFAULT_PRESET, PRESETS
    from imfcodec.zoo import load_model

    loaded = load_model(SHIPPED)
    model = loaded.model
    frames = list(sample_frames(n_frames + 1, model.config.resolution))

    def run(preset: str, kernels: str):
        def go():
            model.kernels = kernels
            enc = Encoder(model, model_name=loaded.name, weights_hash=loaded.weights_hash,
                          fps=Fraction(25), settings=EncoderSettings.from_preset(preset, key_codec="png"))
            enc.encode(frames[0])  # the key frame is not timed: only the per-frame work
            t0 = time.perf_counter()
            for f in frames[1:]:
                enc.encode(f)
            enc.flush()
            samples[(preset, kernels)].append(time.perf_counter() - t0)
        return go

    variants = [(p, "fast") for p in PRESETS] + [(DEFAULT_PRESET, "reference")]
    samples: dict = {v: [] for v in variants}
    for _ in range(rounds):
        for v in variants:
            run(*v)()
    model.kernels = "fast"
    lines = [f"Encoder per preset, shipped model, demo clip, {n_frames} frames after the key frame (not timed), "
             f"{threads} threads, median of {rounds} rounds in turns:", "",
             "| preset | token search | decoder kernels | encode fps |", "|---|---|---|---|"]
    for (p, kernels) in variants:
        mark = " (default)" if p == DEFAULT_PRESET else ""
        lines.append(f"| {p}{mark} | {PRESETS[p].what} | {kernels} | "
                     f"{n_frames / statistics.median(samples[(p, kernels)]):.2f} |")
    return lines


@click.command("model_speed", cls=Command, context_settings=CONTEXT_SETTINGS, help=__doc__.splitlines()[0])
@click.option("--threads", type=int, default=2)
@click.option("--frames", type=int, default=40, help="timed calls per measurement (roughly), per-config table")
@click.option("--configs", default=_all_configs, help="configs of the per-config table ('' for none)")
@click.option("--shipped/--no-shipped", default=True, help="the shipped-model decoding sections (needs its weights)")
@click.option("--presets/--no-presets", default=True, help="the encoder-per-preset section")
@click.option("--hybrid/--no-hybrid", default=True, help="the hybrid mode's decoding section (needs enh-small)")
@click.option("--clip-frames", type=int, default=50, help="frames of the demo clip decoded per round")
@click.option("--encode-frames", type=int, default=10, help="frames encoded per preset and round")
@click.option("--rounds", type=int, default=5, help="rounds of the in-turns timings")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="also write the tables to this markdown file")
def command(**params) -> int:
    args = SimpleNamespace(**params)
    torch.set_num_threads(args.threads)
    lines = [f"Speed, {args.threads} threads, torch {torch.__version__}, {time.strftime('%Y-%m-%d')}.", ""]
    names = [n for n in args.configs.split(",") if n]
    if names:
        lines += ["Per config (seeded random weights, fast kernels), median of repeated calls, batch 1 unless noted:",
                  "", *config_table(names, args.frames), ""]
    if args.shipped:
        lines += [*shipped_tables(args.threads, args.clip_frames, args.rounds), ""]
    if args.hybrid:
        lines += [*hybrid_table(args.threads, args.clip_frames, args.rounds), ""]
    if args.presets:
        lines += [*preset_table(args.threads, args.encode_frames, max(1, args.rounds // 2)), ""]
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point for ``python -m benchmarks.model_speed``; returns the exit status."""
    return call(command, argv, PROG)


if __name__ == "__main__":
    sys.exit(main())
