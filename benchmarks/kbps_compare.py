"""What ``--kbps-compare`` buys: the table's choice against the kinds of base compared by the decoded frames.

    python -m benchmarks.kbps_compare CLIP... [--kbps 5,8,12,20] [--enhancer SPEC] [--frames N] [--out DIR]

For every clip and target, one fresh ``FileMeter`` (the input decoded once, as ``imfcodec encode --kbps`` does):
``ratecontrol.compare_families`` lands the target with the table's family (``closed_loop``, what ``--kbps-table``
keeps) and with each kind of base (half- and full-rate, 1/2 and 1/4 size), and decodes every landing within the
tolerance. The table's choice is decoded too when it missed the tolerance. Rates are the final streams' (real
bytes), PSNR is the mean over all frames the decoder shows against the input at the model's resolution
(``FileMeter.quality``). The time columns split the closed loop's passes from what the comparison adds. Tune on
training clips only; the test clips are for evaluation.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from imfcodec.cliutil import CONTEXT_SETTINGS, call

from .harness import out_option, write_result
from .rate_control import _kbps_list, _name


@click.command("kbps_compare", context_settings=CONTEXT_SETTINGS)
@click.argument("clips", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--kbps", "targets", default="5,8,12,20", callback=_kbps_list, show_default=True)
@click.option("--enhancer", default=None, help="Enhancer whose table is used [default: the shipped one].")
@click.option("--frames", type=int, default=None, help="At most N frames of each clip.")
@out_option("kbps-compare.md")
def command(clips, targets, enhancer, frames, out) -> None:
    from imfcodec.keyframe import get_keyframe_codec
    from imfcodec.modes.hybrid import enhancer_name, load_enhancer
    from imfcodec.ratecontrol import FileMeter, closed_loop, compare_families, input_duration, load_table, within
    from imfcodec.settings import EncoderSettings

    settings = EncoderSettings(enhancer=enhancer).validated()
    points = load_table(enhancer_name(enhancer))
    loaded = load_enhancer(enhancer)
    key_range = get_keyframe_codec(settings.key_codec).quality_range
    lines = ["| clip | target | table's choice | kbit/s | PSNR | compared: kept | kbit/s | PSNR | change dB "
             "| landings | loop s | compare s |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    print("\n".join(lines), flush=True)
    gains, rates = [], []
    for clip in clips:
        duration = input_duration(clip, frames)
        for target in targets:
            meter = FileMeter(clip, settings, loaded, max_frames=frames)
            known: dict = {}

            def rate(f, q: int) -> float:  # (the table's passes are not measured again by the comparison)
                if (f, q) not in known:
                    known[(f, q)] = meter(f, q)
                return known[(f, q)]

            t0 = time.perf_counter()
            table, _ = closed_loop(points, target, duration, rate, key_range=key_range)
            loop_s = time.perf_counter() - t0
            best, _, compared = compare_families(points, target, duration, rate, meter.quality, key_range=key_range)
            compare_s = time.perf_counter() - t0 - loop_s
            db = {c.measured: c.psnr for c in compared}
            table_db = db[table] if table in db else meter.quality(table.family, table.base_quality)
            best_db = db.get(best, table_db)
            gains.append(best_db - table_db)
            rates.append(best.kbps / table.kbps - 1)
            row = (f"| {Path(clip).name} | {target:g} | {_name(table.family, table.base_quality)}"
                   f"{'' if within(table.kbps, target) else ' (missed)'} | {table.kbps:.2f} | {table_db:.2f} "
                   f"| {_name(best.family, best.base_quality)} | {best.kbps:.2f} | {best_db:.2f} "
                   f"| {best_db - table_db:+.2f} | {len(compared)} | {loop_s:.1f} | {compare_s:.1f} |")
            lines.append(row)
            print(row, flush=True)
    n = len(gains)
    summary = (f"\n{n} points: mean change {sum(gains) / n:+.3f} dB, mean rate change {sum(rates) / n:+.2%}; "
               f"better by > 0.1 dB at {sum(g > 0.1 for g in gains)}, worse by > 0.1 dB at "
               f"{sum(g < -0.1 for g in gains)}")
    lines.append(summary)
    print(summary, flush=True)
    write_result(out, "kbps-compare.md", "\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    return call(command, argv, "python -m benchmarks.kbps_compare")


if __name__ == "__main__":
    sys.exit(main())
