"""The hybrid mode's ``--preset``: what each base-encoder effort costs and saves, on held-out training clips.

```
python -m benchmarks.base_presets [--codec vp9] [--factor 2] [--qualities 0,8,16,24] [--frames 150]
                                  [--val-clips 5] [--out DIR]
```

Per effort (``imfcodec.baselayer.EFFORTS``) and held-out clip (the trainer's split: never a test clip), the
clip's first ``--frames`` frames are coded as a base layer at each quality (one GOP, as the hybrid encoder codes
them), decoded, upscaled with the decoder's bicubic and scored against the full-size frames. Reported: the
BD-rate of each effort against ``medium`` (PSNR of the upscaled base, pchip, mean of per-clip values: the
enhancer's input, whose gain does not depend on the encoder's effort to first order) and the encoder's speed
(frames/s of ``BaseEncoder.encode`` alone, all qualities and clips, one thread). The efforts change only the
encoder; the stream format and the decoder are the same.
"""

from __future__ import annotations

import time
from fractions import Fraction

import click
import numpy as np

from imfcodec.cliutil import CONTEXT_SETTINGS, Command, call

from .harness import data_option, frames_option, held_out_clips, held_out_options, out_option, write_result


def measure(frames: np.ndarray, codec: str, factor: int, quality: int, effort: str) -> tuple[float, float, float]:
    """(kbit/s at 25 fps, mean PSNR of the bicubic-upscaled base, encoder seconds) of one clip at one point."""
    import torch

    from imfcodec.baselayer import BaseDecoder, BaseEncoder, base_size
    from imfcodec.modes.common import to_tensor, to_uint8
    from imfcodec.metrics import psnr
    from imfcodec.models import upscale

    size = frames.shape[1]
    side = base_size(size, factor)
    enc, dec = BaseEncoder(codec, side, side, Fraction(25), quality, effort=effort), BaseDecoder(codec, side, side)
    units, seconds = [], 0.0
    for i, rgb in enumerate(frames):
        t0 = time.perf_counter()
        units.append(enc.encode(rgb, intra=i == 0))
        seconds += time.perf_counter() - t0
    enc.close()
    dec.restart()
    with torch.inference_mode():  # the decoder's bicubic upscale, as HybridDecoder with --no-enhance
        up = to_uint8(upscale(torch.cat([to_tensor(dec.decode(u)) for u in units]), (size, size)))
    kbps = sum(map(len, units)) * 8 / (len(frames) / 25) / 1000
    return kbps, float(psnr(np.stack(up), frames)), seconds


def report(rows: dict, clips: list[str], codec: str, factor: int, qualities: list[int]) -> str:
    from benchmarks.report import bd_rate

    from imfcodec.baselayer import DEFAULT_EFFORT

    ref = rows[DEFAULT_EFFORT]
    lines = [f"Base layer {codec} at 1/{factor}, qualities {', '.join(map(str, qualities))}, one GOP per clip; held-out "
             f"training clips: {', '.join(clips)}.", "",
             f"| effort (`--preset`) | BD-rate against {DEFAULT_EFFORT} (PSNR of the upscaled base) | per clip | "
             f"encoder frames/s | speed against {DEFAULT_EFFORT} |", "|---|---|---|---|---|"]
    ref_fps = ref["frames"] / ref["seconds"]
    for effort, r in rows.items():
        bds = [bd_rate([p[0] for p in a], [p[1] for p in a], [p[0] for p in b], [p[1] for p in b]).value
               for a, b in zip(ref["points"], r["points"])]
        fps = r["frames"] / r["seconds"]
        lines.append(f"| {effort} | {np.mean(bds):+.1f} % | {', '.join(f'{b:+.1f}' for b in bds)} | {fps:.0f} | "
                     f"{fps / ref_fps:.2f}x |")
    return "\n".join(lines) + "\n"


@click.command("base_presets", cls=Command, context_settings=CONTEXT_SETTINGS, help=__doc__.splitlines()[0])
@data_option()
@click.option("--codec", default="vp9", show_default=True)
@click.option("--factor", type=int, default=2, show_default=True)
@click.option("--qualities", default="0,8,16,24", show_default=True)
@frames_option(150, "frames per clip (at most; every effort codes each clip at every quality)")
@held_out_options
@out_option("base_presets.md")
def command(data, codec, factor, qualities, frames, val_clips, cache_dir, out):
    import torch

    from imfcodec.baselayer import EFFORTS, get_base_codec
    from imfcodec.errors import InputError

    get_base_codec(codec)
    try:
        qs = [int(q) for q in qualities.split(",")]
    except ValueError:
        raise InputError(f"--qualities: comma-separated integers, got {qualities!r}") from None
    if len(qs) < 4:
        raise InputError("--qualities: at least 4 (a BD-rate needs 4 points)")
    torch.set_num_threads(1)
    _train, clips = held_out_clips(data, val_clips, 256, frames, cache_dir)
    rows = {}
    for effort in EFFORTS:
        points, seconds, n = [], 0.0, 0
        for f in clips.frames:
            per = [measure(f, codec, factor, q, effort) for q in qs]
            points.append([(k, p) for k, p, _ in per])
            seconds += sum(s for *_, s in per)
            n += len(f) * len(qs)
        rows[effort] = {"points": points, "seconds": seconds, "frames": n}
        click.echo(f"{effort}: {n / seconds:.0f} frames/s", err=True)
    text = report(rows, clips.names, codec, factor, qs)
    click.echo(text)
    write_result(out, "base_presets.md", text)
    return 0


def main(argv=None) -> int:
    return call(command, argv, "python -m benchmarks.base_presets")


if __name__ == "__main__":
    raise SystemExit(main())
