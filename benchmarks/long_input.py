"""Long inputs: peak memory of encoding and decoding 1,000 vs 10,000 frames (issue #5, item 7).

```
python -m benchmarks.long_input [--frames 1000 10000] [--keyint 250] [--key-codec hevc] [--refine N]
                                [--output mp4] [--model random:imf-tiny] [--json OUT.json]
```

``--model`` names a token model (the token mode) or an enhancer (``--model enh-wide``: the hybrid mode at its
default point, ``--refine`` not applicable). For each frame count N it makes a synthetic 64x64 25 fps clip
(x264 ultrafast, a moving gradient: content is irrelevant to memory), then runs **one fresh process per measurement**:

* ``encode``: ``imfcodec.api.encode_video`` of the clip (the CLI's code path) -> ``.imf``;
* ``decode``: ``imfcodec.api.decode_stream`` of that stream -> ``.mp4`` (``--output y4m`` for the
  uncompressed writer).

Each child reports Linux's ``VmHWM`` (peak RSS of its address space; ``ru_maxrss`` is not used because
Linux carries it across fork/exec) after imports and model loading (``base_mb``) and after the work
(``peak_mb``), plus wall time. One torch thread (``--threads``). Memory is *flat* when the 10,000-frame
peak is within 10% of the 1,000-frame peak; the script prints the ratios and exits 1 if not.
The tiny model takes ~1-2 minutes in all on one free core.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import click

from imfcodec.cliutil import CONTEXT_SETTINGS, Command, GreedyOption, call

from .harness import REPO, threads_option, write_json
from .memory import peak_rss_mb

PROG = "python -m benchmarks.long_input"


def make_clip(path: Path, frames: int, size: int = 64) -> Path:
    """A moving colour pattern as H.264 (imfcodec's own writer), written frame by frame."""
    import numpy as np

    from imfcodec.io import VideoWriter

    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    base = np.stack([128 + 100 * np.sin(x / 7.0), 128 + 100 * np.cos(y / 9.0), 128 + 60 * np.sin((x + y) / 11.0)], -1)
    base = np.clip(base, 0, 255).astype(np.uint8)
    with VideoWriter(path, 25, size, size, pix_fmt="yuv420p") as w:
        for i in range(frames):
            w.write(np.roll(np.roll(base, (i * 3) % size, axis=1), (i // 5) % size, axis=0))
    return path


def child(argv: list[str]) -> None:
    """``--child encode|decode SRC DST MODEL KEYINT KEYCODEC THREADS REFINE``: one measurement, JSON on
    stdout (REFINE -1: the encoder's default token search)."""
    what, src, dst, model, keyint, key_codec, threads, refine = argv
    import torch

    torch.set_num_threads(int(threads))
    from imfcodec.api import decode_stream, encode_video
    from imfcodec.settings import EncoderSettings
    from imfcodec.modes.hybrid import is_enhancer
    from imfcodec.settings import hybrid_defaults
    from imfcodec.zoo import load_model

    loaded = load_model(model)
    hybrid = is_enhancer(loaded.model)  # an enhancer: the hybrid mode at its default point
    base = peak_rss_mb()
    t0 = time.perf_counter()
    if what == "encode":
        common = dict(keyint=int(keyint), key_codec=key_codec)
        if hybrid:
            settings = hybrid_defaults(**common)
        else:
            settings = EncoderSettings(**common, **({} if int(refine) < 0 else {"search_iters": int(refine)}))
        s = encode_video(src, dst, model=loaded, settings=settings)
        frames = s.frames
    else:
        frames = decode_stream(src, dst, model=loaded).frames
    seconds = time.perf_counter() - t0
    print(json.dumps({"what": what, "frames": frames, "seconds": round(seconds, 2), "base_mb": round(base, 1),
                      "peak_mb": round(peak_rss_mb(), 1), "output_bytes": os.path.getsize(dst)}))


def measure(what: str, src: Path, dst: Path, args) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "OMP_NUM_THREADS": str(args.threads), "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
    cmd = [sys.executable, "-m", "benchmarks.long_input", "--child", what, str(src), str(dst), args.model,
           str(args.keyint), args.key_codec, str(args.threads), str(-1 if args.refine is None else args.refine)]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
    if out.returncode:
        raise SystemExit(f"{what} child failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


@click.command("long_input", cls=Command, context_settings=CONTEXT_SETTINGS, help=__doc__.splitlines()[0])
@click.option("--frames", cls=GreedyOption, type=int, default=(1000, 10000), metavar="FRAMES [FRAMES ...]")
@click.option("--keyint", type=int, default=250, help="key frame every N frames (0 = one)")
@click.option("--key-codec", default="hevc")
@click.option("--refine", type=click.IntRange(min=0), default=None,
              help="token search steps (default: the encoder's default preset; 0 for a long run of a real model)")
@click.option("--model", default="random:imf-tiny")
@click.option("--output", type=click.Choice(["mp4", "y4m"]), default="mp4", help="decoder output format")
@threads_option(1, "torch threads of each measured run")
@click.option("--tolerance", type=float, default=0.10, help="allowed growth of peak RSS (fraction)")
@click.option("--json", type=click.Path(path_type=Path), help="also write the results here")
def command(**params) -> int:
    # in declaration order (click passes them in the order it processed them): --json writes them out
    args = SimpleNamespace(**{p.name: params[p.name] for p in click.get_current_context().command.params})
    args.frames = list(args.frames)

    rows = []
    with tempfile.TemporaryDirectory(prefix="imf-long-") as tmp:
        tmp = Path(tmp)
        for n in args.frames:
            t0 = time.perf_counter()
            clip = make_clip(tmp / f"clip{n}.mp4", n)
            made = time.perf_counter() - t0
            stream = tmp / f"s{n}.imf"
            enc = measure("encode", clip, stream, args)
            dec = measure("decode", stream, tmp / f"d{n}.{args.output}", args)
            for r in (enc, dec):
                r["n"] = n
                rows.append(r)
                print(f"{r['what']:6s} {n:6d} frames: peak {r['peak_mb']:7.1f} MiB (base {r['base_mb']:6.1f}), "
                      f"{r['seconds']:6.1f} s, {r['frames'] / max(r['seconds'], 1e-9):6.0f} fps, "
                      f"output {r['output_bytes']:,} B   (clip made in {made:.1f} s)", flush=True)
            for p in (clip, stream, tmp / f"d{n}.{args.output}"):
                p.unlink(missing_ok=True)
    lo, hi = min(args.frames), max(args.frames)
    ok = True
    summary = {}
    for what in ("encode", "decode"):
        a = next(r for r in rows if r["what"] == what and r["n"] == lo)
        b = next(r for r in rows if r["what"] == what and r["n"] == hi)
        ratio = b["peak_mb"] / a["peak_mb"]
        work = (b["peak_mb"] - b["base_mb"], a["peak_mb"] - a["base_mb"])
        flat = ratio <= 1 + args.tolerance
        ok &= flat
        summary[what] = {"ratio": round(ratio, 4), "flat": flat}
        print(f"{what}: peak RSS at {hi} frames / at {lo} frames = {ratio:.3f} "
              f"(working set above base: {work[0]:.1f} vs {work[1]:.1f} MiB) -> {'flat' if flat else 'NOT flat'}")
    write_json(args.json, vars(args), rows=rows, summary=summary)
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    """Entry point for ``python -m benchmarks.long_input``; returns the exit status (1: memory grew)."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        child(argv[1:])
        return 0
    return call(command, argv, PROG)


if __name__ == "__main__":
    sys.exit(main())
