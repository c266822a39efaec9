"""Per-config network speed on this machine: what the codec's per-frame work costs for each registered
model config (seeded random weights: speed does not depend on training).

    python -m benchmarks.model_speed [--threads 2] [--frames 40] [--configs imf-small,imf-tiny] [--out FILE.md]

Encoder per frame = E_T (+ entropy coding, negligible), and ``codec.Encoder`` at its defaults (E_T plus
token search, ``imfcodec.token_search``: DEFAULT_SEARCH_ITERS gradient steps through the decoder); decoder per frame =
IMF_D(t), IMF_A, D_F, measured both frame by frame (``--chunk 1`` latency) and in chunks of 5 (the default packet). Per key frame both sides
also run E_T and ``prepare_reference`` once; that is reported separately. The key-frame codec itself is
timed by ``benchmarks.rd`` with everything else.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see imfcodec/cli.py

import click  # noqa: E402
import torch  # noqa: E402

from imfcodec.cliutil import CONTEXT_SETTINGS, Command, call  # noqa: E402

PROG = "python -m benchmarks.model_speed"


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
    """Encoder fps at the default settings (E_T + token search), through the real ``Encoder``."""
    from fractions import Fraction

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


@click.command("model_speed", cls=Command, context_settings=CONTEXT_SETTINGS, help=__doc__.splitlines()[0])
@click.option("--threads", type=int, default=2)
@click.option("--frames", type=int, default=40, help="timed calls per measurement (roughly)")
@click.option("--configs", default=_all_configs)
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="also write the table to this markdown file")
def command(**params) -> int:
    args = SimpleNamespace(**params)
    torch.set_num_threads(args.threads)
    rows = [measure(n, args.frames if n != "imf-paper" else 5) for n in args.configs.split(",")]
    lines = [f"Network speed, {args.threads} threads, torch {torch.__version__}, median of repeated calls, "
             f"batch 1 unless noted ({time.strftime('%Y-%m-%d')}).", "",
             "| model | res | params | GFLOPs/decoded frame | encode fps (E_T) | encode fps (E_T + token search) | "
             "decode fps, chunk 1 | decode fps, chunk 5 | per key frame (ms) |", "|---|---|---|---|---|---|---|---|---|"]
    for d in rows:
        lines.append(f"| {d['model']} | {d['resolution']} | {d['params']:,} | {d['decode_gflops']:.2f} | "
                     f"{d['encode_fps']:.1f} | {d['encode_search_fps']:.2f} ({d['search_iters']} steps) | "
                     f"{d['decode_fps_chunk1']:.1f} | {d['decode_fps_chunk5']:.1f} | "
                     f"{d['key_frame_ms']:.0f} |")
    text = "\n".join(lines) + "\n"
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
