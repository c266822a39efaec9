"""How close ``imfcodec encode --kbps R`` lands: the table's open-loop point against the closed loop.

    python -m benchmarks.rate_control CLIP... [--kbps 5,8,12,20] [--enhancer SPEC] [--frames N] [--check]

For every clip and target: the table-only choice (``ratecontrol.choose`` at the clip's duration, what ``--kbps``
did before, and still does for a pipe) measured by one pass, and the closed loop (``ratecontrol.closed_loop``
with ``ratecontrol.FileMeter``, as ``imfcodec encode --kbps`` on a file runs it): the whole-file rate of each,
its miss, the passes and their time (a fresh meter per target, so the input is decoded again as the CLI would).
The bytes are the final stream's (``api.stream_size`` counts the guarded header); ``--check`` also writes the
closed loop's stream with the guard (the enhancer runs) and checks its real size against the measured rate.
Rate control depends on bytes only, not on the enhancer's weights: any clip that is not a test clip serves for
tuning; the test clips are for evaluation only.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import click

from imfcodec.cliutil import CONTEXT_SETTINGS, call


def _kbps_list(ctx, param, value: str) -> list[float]:
    try:
        return [float(x) for x in value.split(",") if x.strip()]
    except ValueError:
        raise click.BadParameter("a comma-separated list of kbit/s") from None


@click.command("rate_control", context_settings=CONTEXT_SETTINGS)
@click.argument("clips", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--kbps", "targets", default="5,8,12,20", callback=_kbps_list, show_default=True)
@click.option("--enhancer", default=None, help="Enhancer whose table is used [default: the shipped one].")
@click.option("--frames", type=int, default=None, help="At most N frames of each clip.")
@click.option("--check", is_flag=True, help="Also encode the closed loop's point with the guard and compare.")
def command(clips, targets, enhancer, frames, check) -> None:
    from imfcodec.api import encode_video
    from imfcodec.io import probe_video
    from imfcodec.keyframe import get_keyframe_codec
    from imfcodec.modes.hybrid import enhancer_name, load_enhancer
    from imfcodec.ratecontrol import FileMeter, choose, closed_loop, family_of, input_duration, load_table
    from imfcodec.settings import EncoderSettings

    settings = EncoderSettings(enhancer=enhancer).validated()
    points = load_table(enhancer_name(enhancer))
    loaded = load_enhancer(enhancer)
    print("| clip | fps | s | target | table point | table kbit/s | table miss | loop point | loop kbit/s "
          "| loop miss | passes | time s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for clip in clips:
        info = probe_video(clip)
        duration = input_duration(clip, frames)
        for target in targets:
            point, _, _ = choose(points, target, duration)
            fam = family_of(point)
            table = FileMeter(clip, settings, loaded, max_frames=frames)(fam, point.base_quality)
            meter = FileMeter(clip, settings, loaded, max_frames=frames)
            t0 = time.perf_counter()
            best, searches = closed_loop(points, target, duration, meter,
                                         key_range=get_keyframe_codec(settings.key_codec).quality_range)
            seconds = time.perf_counter() - t0
            passes = sum(len(s.passes) for s in searches)
            f = best.family
            print(f"| {Path(clip).name} | {float(info.fps):g} | {meter.duration_s:.1f} | {target:g} "
                  f"| {_name(fam, point.base_quality)} | {table:.2f} | {table / target - 1:+.1%} "
                  f"| {_name(f, best.base_quality)} | {best.kbps:.2f} | {best.kbps / target - 1:+.1%} | {passes} "
                  f"| {seconds:.1f} |", flush=True)
            if check:
                with tempfile.TemporaryDirectory() as tmp:
                    s = encode_video(clip, Path(tmp) / "c.imf", model=loaded, max_frames=frames,
                                     settings=f.settings(settings, best.base_quality).validated())
                print(f"check: {Path(clip).name} {target:g}: written {s.kbps:.3f} kbit/s, measured {best.kbps:.3f}",
                      file=sys.stderr, flush=True)


def _name(f, base_quality: int) -> str:
    """A family at a base quality, as the table shows it: ``vp9 1/4 q8 k11``, ``h`` first for a half-rate base,
    ``k-`` for the key pictures in the base layer."""
    return (f"{'h ' if f.half_rate else ''}{f.base_codec} 1/{f.base_factor} q{base_quality} "
            f"{'k-' if f.intra_base else f'k{f.key_quality}'}")


def main(argv: list[str] | None = None) -> int:
    return call(command, argv, "python -m benchmarks.rate_control")


if __name__ == "__main__":
    sys.exit(main())
