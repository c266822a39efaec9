"""Would a refreshed key pay? A simulation on held-out TRAINING clips (never the test set).

    python -m benchmarks.key_refresh [--enhancer SPEC] [--val-clips 8] [--intervals 10,25]
        [--refresh-codec hevc] [--refresh-qualities 17,23] [--base-qualities 0,6,12,18] [--out DIR]

Why (issue 23): the enhancer's gain comes from its key image, and ``benchmarks.key_value``'s freshness study
says a key a few frames old is worth several dB more than the first frame on moving clips, while the
enhancer's own earlier output is worth less than the key. So the detail a memory needs is new, and new
detail costs bytes. This measures whether it pays *at the same rate*: beside the base layer (VP9 at 1/2, as
the default stream), a second conventional stream at the full size codes every N-th frame (``--intervals``)
with inter prediction from its previous picture (``imfcodec.baselayer.code_clip`` of those frames at 25/N
frames/s, ``--refresh-codec`` at ``--refresh-qualities``), and each frame is enhanced with the latest refresh
picture as its key, over the base picture of that frame.

Each point's rate is everything the decoder needs but the framing, over the whole clip at 25 frames/s: the base
layer's access units plus every refresh picture (the first one stands where today's key is), against the base
plus today's key. Today's curve is the same base at ``--base-qualities`` with the first frame's key (hevc key
codec, quality 16). The report gives, per clip and refresh setting, the mean PSNR
change against today's curve interpolated (in log rate) at the refresh point's rate, over the points
inside today's range. Every ``--step``-th frame is measured. The enhancer is the shipped one, unchanged:
it takes one key, so the refresh replaces the first frame's key.
"""

from __future__ import annotations

import sys
from fractions import Fraction
from pathlib import Path

import click
import numpy as np

from imfcodec.cliutil import CONTEXT_SETTINGS, Command, call

from .harness import (FPS, data_option, frames_option, held_out_clips, held_out_options, out_option,
                      threads_option, write_result)

BASE = ("vp9", 2)  # the default stream's base codec and scale
KEY_QUALITY = 16  # today's key (hevc key codec), as the hybrid mode's default


def _ints(text: str, option: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values:
        raise click.BadParameter(f"{text!r}: a comma-separated list of integers", param_hint=option)
    return values


def refresh_stream(frames: np.ndarray, interval: int, codec: str, quality: int) -> tuple[list[int], list[np.ndarray]]:
    """Every ``interval``-th frame coded as one low-delay stream at the full size: (bytes per access unit,
    decoded pictures [R,R,3] uint8), frame ``k * interval`` at index k."""
    from imfcodec.baselayer import code_clip

    units, pictures = code_clip(frames[::interval], codec, 1, quality, Fraction(FPS, interval))
    return [len(u) for u in units], pictures


def _enhanced_psnr(model, targets: np.ndarray, base, key_base, keys: np.ndarray, picture) -> float:
    """Mean PSNR against ``targets`` of the enhancer's 8-bit output over ``base`` (the measured frames' upscaled
    base pictures, [N,3,R,R]), frame i keyed by ``picture(keys[i])`` over ``key_base(keys[i])`` (the upscaled
    base picture of that key's frame); the frames of one key run as one batch."""
    from imfcodec.metrics import psnr
    from imfcodec.modes.common import to_uint8
    from imfcodec.train.hybrid import _t

    out = np.empty_like(targets)
    for k in np.unique(keys):
        rows = np.flatnonzero(keys == k)
        state = model.prepare_key(_t(picture(int(k)))[None], key_base(int(k)))
        out[rows] = np.stack(to_uint8(model.enhance(state, base[rows])))
    return psnr(targets, out)


def simulate(model, name: str, frames: np.ndarray, intervals: list[int], codec: str, qualities: list[int],
             base_qualities: list[int], step: int = 3) -> list[dict]:
    """One clip: a row per base quality with today's PSNR and key rate, and each refresh setting's PSNR and rate
    (all its pictures; kbit/s)."""
    import torch

    from imfcodec.baselayer import code_clip
    from imfcodec.keyframe import get_keyframe_codec
    from imfcodec.metrics import psnr
    from imfcodec.models import upscale
    from imfcodec.modes.common import to_uint8
    from imfcodec.train.hybrid import _t

    size = frames.shape[1]
    seconds = len(frames) / FPS
    measured = np.arange(1, len(frames), step)
    targets = frames[measured]
    kc = get_keyframe_codec("hevc")
    key_bytes = kc.encode(frames[0], KEY_QUALITY)
    key = kc.decode(key_bytes, size, size)
    refresh = {(n, q): refresh_stream(frames, n, codec, q) for n in intervals for q in qualities}
    rows = []
    with torch.inference_mode():
        for bq in base_qualities:
            units, small = code_clip(frames, BASE[0], BASE[1], bq)

            def up(ts) -> torch.Tensor:
                return upscale(_t(np.stack([small[t] for t in ts])), (size, size))

            base = up(measured)  # once per base quality: every key variant enhances the same frames
            key_base = lambda k: up([k])  # noqa: E731 (the key frame's upscaled base picture)
            row = {"clip": name, "base_quality": bq, "base_kbps": sum(map(len, units)) * 8 / seconds / 1000,
                   "key_kbps": len(key_bytes) * 8 / seconds / 1000, "bicubic": psnr(targets, np.stack(to_uint8(base))),
                   "today": _enhanced_psnr(model, targets, base, key_base, np.zeros_like(measured), lambda k: key),
                   "refresh": {}}
            for (n, q), (sizes, pics) in refresh.items():
                p = _enhanced_psnr(model, targets, base, key_base, measured // n * n,
                                   lambda k, n=n, pics=pics: pics[k // n])
                row["refresh"][f"every {n}, q{q}"] = (p, sum(sizes) * 8 / seconds / 1000)
            rows.append(row)
    return rows


def same_rate(rows: list[dict]) -> dict[str, list[float]]:
    """Per refresh setting: the PSNR change against today's curve (base + key) of the same clip at the same rate
    (base + refresh pictures), one value per point inside today's rate range (log-rate interpolation)."""
    out: dict[str, list[float]] = {}
    for clip in dict.fromkeys(r["clip"] for r in rows):
        rs = sorted((r for r in rows if r["clip"] == clip), key=lambda r: r["base_kbps"])
        lr, ps = np.log([r["base_kbps"] + r["key_kbps"] for r in rs]), np.array([r["today"] for r in rs])
        for r in rs:
            for setting, (p, kbps) in r["refresh"].items():
                rate = np.log(r["base_kbps"] + kbps)
                if lr[0] <= rate <= lr[-1]:
                    out.setdefault(f"{clip}|{setting}", []).append(p - float(np.interp(rate, lr, ps)))
    return out


def markdown(rows: list[dict], info: dict) -> str:
    """The report: per clip today's curve, then the same-rate change of each refresh setting."""
    deltas = same_rate(rows)
    clips = list(dict.fromkeys(r["clip"] for r in rows))
    settings = list(rows[0]["refresh"]) if rows else []
    lines = ["# A refreshed key at the same rate (held-out training clips)", "",
             f"enhancer {info['enhancer']}; base {BASE[0]} 1/{BASE[1]}; refresh stream {info['codec']} at the full "
             f"size; one frame in {info['step']} measured; clips: {', '.join(clips)}", "",
             "## Today: the base at each quality with the first frame's key (base + key kbit/s: mean PSNR)", ""]
    for c in clips:
        rs = sorted((r for r in rows if r["clip"] == c), key=lambda r: r["base_kbps"])
        lines.append(f"- {Path(c).stem}: " + ", ".join(f"{r['base_kbps'] + r['key_kbps']:.1f}: {r['today']:.2f} "
                                                        f"(bicubic {r['bicubic']:.2f})" for r in rs))
    lines += ["", "## PSNR change against today at the same rate (dB; points inside today's range)", "",
              "| clip | " + " | ".join(settings) + " |", "|---|" + "---|" * len(settings)]
    every: dict[str, list[float]] = {}
    for c in clips:
        cells = []
        for s in settings:
            d = deltas.get(f"{c}|{s}", [])
            every.setdefault(s, []).extend(d)
            added = np.mean([r["refresh"][s][1] for r in rows if r["clip"] == c])
            cells.append(f"{np.mean(d):+.2f} ({len(d)} pts, refresh {added:.1f} kbit/s)" if d
                         else f"- (refresh {added:.1f} kbit/s)")
        lines.append(f"| {Path(c).stem} | " + " | ".join(cells) + " |")
    lines.append("| **mean** | " + " | ".join(f"**{np.mean(every[s]):+.2f}** ({len(every[s])} pts)" if every[s]
                                               else "-" for s in settings) + " |")
    return "\n".join(lines) + "\n"


@click.command("key_refresh", cls=Command, context_settings=CONTEXT_SETTINGS, help=__doc__.splitlines()[0])
@click.option("--enhancer", default=None, help="enhancer (default: the shipped enh-wide)")
@data_option()
@frames_option()
@held_out_options
@click.option("--intervals", default="10,25", show_default=True, help="refresh every N frames (comma-separated)")
@click.option("--refresh-codec", type=click.Choice(["hevc", "vp9", "av1"]), default="hevc", show_default=True)
@click.option("--refresh-qualities", default="17,23", show_default=True,
              help="the refresh stream's qualities (base-layer scale: hevc CRF = 51 - quality)")
@click.option("--base-qualities", default="0,6,12,18", show_default=True, help="today's curve: VP9 1/2 qualities")
@click.option("--step", type=click.IntRange(min=1), default=3, show_default=True, help="measure every N-th frame")
@threads_option()
@out_option("key_refresh.md")
def command(enhancer, data, frames, val_clips, cache_dir, intervals, refresh_codec, refresh_qualities,
            base_qualities, step, threads, out):
    import torch

    from imfcodec.modes.hybrid import load_enhancer

    intervals_ = _ints(intervals, "--intervals")
    if min(intervals_) < 1:
        raise click.BadParameter(f"{intervals!r}: intervals are at least 1", param_hint="--intervals")
    qualities, bases = _ints(refresh_qualities, "--refresh-qualities"), _ints(base_qualities, "--base-qualities")
    torch.set_num_threads(threads)
    loaded = load_enhancer(enhancer)
    model = loaded.model.eval()
    _, clips = held_out_clips(data, val_clips, model.config.resolution, frames, cache_dir)
    rows = []
    for name, f in zip(clips.names, clips.frames):
        rows += simulate(model, name, f, intervals_, refresh_codec, qualities, bases, step)
    text = markdown(rows, {"enhancer": f"{loaded.name}@{loaded.weights_hash.hex()[:16]}", "codec": refresh_codec,
                           "step": step})
    print(text, end="")
    write_result(out, "key_refresh.md", text)
    return 0


def main(argv=None) -> int:
    # a bad enhancer, a test folder or an unreadable clip: one line on stderr (cliutil.call)
    return call(command, argv, "python -m benchmarks.key_refresh")


if __name__ == "__main__":
    sys.exit(main())
