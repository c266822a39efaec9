"""Picture strips: people judge codecs by looking.

Per clip, one PNG: rows = the source, imfcodec at one operating point, and the conventional hull's
point nearest to it in rate (log scale); columns = an early, a middle and a late frame. Every image is
decoded again from the stream file the benchmark kept (``OUT/streams``), so the strip shows what the
measured bytes decode to; labels carry the row's rate and whole-clip PSNR and each frame's PSNR.

    python -m benchmarks.strips OUT [--point q9-hevc21-r4]      (also written by benchmarks.rd)
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from pathlib import Path

import click
import numpy as np

from imfcodec.cliutil import CONTEXT_SETTINGS, Command, call

from . import require_bench_extra
from .anchors import DEFAULT_UPSCALE, decode_file
from .hull import CONVENTIONAL_HULL

PROG = "python -m benchmarks.strips"


def strip_indexes(frames: int) -> list[int]:
    """An early (10 %), a middle and the last frame: frame 0 is the key frame, flattering for everyone."""
    picks = [round(0.1 * (frames - 1)), (frames - 1) // 2, frames - 1]
    return list(dict.fromkeys(max(0, i) for i in picks))


def default_point() -> str:
    """The rd point name of the encoder's defaults (as ``benchmarks.rd`` names it)."""
    from imfcodec.keyframe import get_keyframe_codec
    from imfcodec.settings import EncoderSettings

    s = EncoderSettings()
    kq = s.key_quality if s.key_quality is not None else get_keyframe_codec(s.key_codec).default_quality
    return f"q{s.quality}-{s.key_codec}{kq}" + (f"-r{s.search_iters}" if s.search_iters else "")


def _decode_imf(path: Path, count: int) -> np.ndarray:
    from imfcodec.api import iter_decoded

    frames = []
    for _dec, chunk in iter_decoded(path):
        frames.extend(chunk)
        if len(frames) >= count:
            break
    return np.stack(frames[:count])


def decode_row(out: Path, row, count: int, size: int) -> np.ndarray:
    """Decode a benchmark row's kept stream back to ``count`` RGB frames at the working size."""
    path = Path(out) / row["stream"]
    if row["codec"] == "imfcodec":
        return _decode_imf(path, count)
    upscale = row.get("upscale") if isinstance(row.get("upscale"), str) and row.get("upscale") else DEFAULT_UPSCALE
    frames, _ = decode_file(str(path), count, size, size, upscale=upscale)
    return frames


def nearest_hull_row(hull, clip: str, kbps: float):
    """The hull point of ``clip`` nearest to ``kbps`` in log rate, or None."""
    h = hull[hull["clip"] == clip]
    if h.empty or not (kbps > 0):
        return None
    return h.iloc[int(np.argmin(np.abs(np.log(h["kbps"].astype(float).to_numpy()) - math.log(kbps))))]


def make_strip(path: Path, source: np.ndarray, rows: Sequence[tuple[str, np.ndarray]], indexes: Sequence[int],
               title: str) -> Path:
    """One PNG: the source and each labelled decoded clip at ``indexes``, every frame at its own pixels
    (no resampling, no palette), with per-frame PSNR under each; composed with Pillow."""
    from PIL import Image, ImageDraw, ImageFont

    from imfcodec.metrics import psnr

    grid = [("source", source)] + list(rows)
    h, w = source.shape[1:3]
    font = ImageFont.load_default(size=13)
    gap, band, foot, margin = 6, 32, 18, 6
    width = margin * 2 + len(indexes) * w + (len(indexes) - 1) * gap
    height = 22 + len(grid) * (band + h + foot)
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((margin, 4), title, fill="black", font=font)
    y = 22
    for r, (label, frames) in enumerate(grid):
        draw.text((margin, y + 14), label, fill="black", font=font)
        y += band
        for c, i in enumerate(indexes):
            x = margin + c * (w + gap)
            canvas.paste(Image.fromarray(np.ascontiguousarray(frames[i])), (x, y))
            caption = f"frame {i}" if r == 0 else f"frame {i}: {psnr(source[i], frames[i]):.2f} dB"
            draw.text((x, y + h + 2), caption, fill="black", font=font)
        y += h + foot
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path, optimize=True)
    return path


def write_strips(df, out: Path, point: str | None = None) -> list[Path]:
    """One strip per clip that has the imfcodec ``point`` (default: the encoder's defaults if run) and
    conventional anchors; returns the PNG paths (``OUT/strips/CLIP.png``)."""
    from .report import build_curves, with_series

    out = Path(out)
    df = with_series(df)
    if point is None:  # the encoder's defaults, else the cheapest imfcodec point of the run
        imf = df[df["codec"] == "imfcodec"].sort_values("kbps")
        point = default_point() if (imf["point"] == default_point()).any() or imf.empty else imf["point"].iloc[0]
    hull = build_curves(df, "psnr").get(CONVENTIONAL_HULL)
    written = []
    for clip in sorted(df["clip"].unique()):
        imf = df[(df["clip"] == clip) & (df["codec"] == "imfcodec") & (df["point"] == point)]
        if imf.empty or hull is None:
            continue
        a = imf.iloc[0]
        h = nearest_hull_row(hull, clip, float(a["kbps"]))
        if h is None:
            continue
        n, size = int(a["frames"]), int(a["size"])
        ref_path = next(iter(sorted((out / "cache").glob(f"{clip}-{size}px-*.npy"))), None)
        if ref_path is None:
            continue
        source = np.load(ref_path)[:n]
        idx = strip_indexes(n)
        rows = [(f"imfcodec {point}: {a['kbps']:.2f} kbit/s, clip PSNR {a['psnr']:.2f} dB", decode_row(out, a, n, size)),
                (f"{h['member']} {h['point']} (coded at {h['coded_size']}, upscaled): {h['kbps']:.2f} kbit/s, "
                 f"clip PSNR {h['psnr']:.2f} dB", decode_row(out, h, n, size))]
        title = f"{clip}: imfcodec and the conventional hull's point nearest in rate"
        written.append(make_strip(out / "strips" / f"{clip}.png", source, rows, idx, title))
    return written


@click.command("strips", cls=Command, context_settings=CONTEXT_SETTINGS,
               help=f"{__doc__.splitlines()[0]}\n\nOUT: a benchmarks.rd output folder (rd.csv, streams/, cache/)")
@click.argument("out")
@click.option("--point", default=None, help="imfcodec point (default: the encoder's defaults)")
def command(out: str, point: str | None) -> int:
    require_bench_extra()
    import pandas as pd

    try:
        df = pd.read_csv(Path(out) / "rd.csv")
        paths = write_strips(df, Path(out), point)
    except (OSError, ValueError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print("\n".join(str(p) for p in paths) or "no clip has both the imfcodec point and anchors")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point for ``python -m benchmarks.strips``; returns the exit status (1: failed, 2: a usage
    error; one line on stderr)."""
    return call(command, argv, PROG)


if __name__ == "__main__":
    sys.exit(main())
