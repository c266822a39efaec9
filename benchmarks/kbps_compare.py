"""What ``--kbps-compare`` buys: the table's choice against the kinds of base compared by the decoded frames.

    python -m benchmarks.kbps_compare CLIP... [--kbps 5,8,12,20] [--enhancer SPEC] [--frames N] [--out DIR]
    python -m benchmarks.kbps_compare --rows DIR/kbps-compare.md --hull RD_CSV [--out DIR]

For every clip and target, one fresh ``FileMeter`` (the input decoded once, as ``imfcodec encode --kbps`` does):
``ratecontrol.compare_families`` lands the target with the table's family (``closed_loop``, what ``--kbps-table``
keeps) and with each kind of base (half- and full-rate, 1/2 and 1/4 size), and decodes every landing within the
tolerance. The table's choice is decoded too when it missed the tolerance (its PSNR change is then left out of
the summary, the two being at different rates; the summary counts whether the comparison landed instead). Rates
are the final streams' (real bytes), PSNR is the mean over all frames the decoder shows against the input at the
model's resolution (``FileMeter.quality``). The time columns split the closed loop's passes from what the
comparison adds. Tune on training clips only; the test clips are for evaluation.

``--hull RD_CSV`` (a ``benchmarks.rd`` run on the same clips, with the anchors) puts both choices against the
conventional hull at their own rates (``hull.hull_at``: log-rate interpolation per clip), writing
``vs-hull.md``; with ``--rows`` it reads an earlier run's table instead of measuring.
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
@click.argument("clips", nargs=-1, type=click.Path(exists=True, dir_okay=False))
@click.option("--kbps", "targets", default="5,8,12,20", callback=_kbps_list, show_default=True)
@click.option("--enhancer", default=None, help="Enhancer whose table is used [default: the shipped one].")
@click.option("--frames", type=int, default=None, help="At most N frames of each clip.")
@click.option("--hull", "rd_csv", type=click.Path(exists=True, dir_okay=False), default=None,
              help="rd.csv of a benchmarks.rd run with the anchors on the same clips: both choices against its "
                   "conventional hull at their own rates.")
@click.option("--rows", type=click.Path(exists=True, dir_okay=False), default=None,
              help="An earlier run's kbps-compare.md: report it against --hull instead of measuring.")
@out_option("kbps-compare.md", "vs-hull.md")
def command(clips, targets, enhancer, frames, rd_csv, rows, out) -> None:
    if rows is not None:
        if rd_csv is None or clips:
            raise click.UsageError("--rows goes with --hull and no clips")
        _emit(out, "vs-hull.md", against_hull(Path(rows).read_text(), rd_csv))
        return
    if not clips:
        raise click.UsageError("give clips to measure (or --rows with --hull)")
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
    gains, rates, fixed = [], [], 0
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
            if within(table.kbps, target):  # the same target met both ways: PSNR against PSNR
                gains.append(best_db - table_db)
                rates.append(best.kbps / table.kbps - 1)
            else:  # the table's choice missed the rate: not comparable in PSNR
                fixed += within(best.kbps, target)
            row = (f"| {Path(clip).name} | {target:g} | {_name(table.family, table.base_quality)}"
                   f"{'' if within(table.kbps, target) else ' (missed)'} | {table.kbps:.2f} | {table_db:.2f} "
                   f"| {_name(best.family, best.base_quality)} | {best.kbps:.2f} | {best_db:.2f} "
                   f"| {best_db - table_db:+.2f} | {len(compared)} | {loop_s:.1f} | {compare_s:.1f} |")
            lines.append(row)
            print(row, flush=True)
    n = max(len(gains), 1)
    summary = (f"\n{len(gains)} points where the table's choice is within the tolerance: mean change "
               f"{sum(gains) / n:+.3f} dB, mean rate change {sum(rates) / n:+.2%}; better by > 0.1 dB at "
               f"{sum(g > 0.1 for g in gains)}, worse by > 0.1 dB at {sum(g < -0.1 for g in gains)}. "
               f"Where it missed: {fixed} of {len(clips) * len(targets) - len(gains)} now within.")
    lines.append(summary)
    print(summary, flush=True)
    write_result(out, "kbps-compare.md", "\n".join(lines) + "\n")
    if rd_csv is not None:
        _emit(out, "vs-hull.md", against_hull("\n".join(lines), rd_csv))


def _emit(out: Path | None, name: str, text: str) -> None:
    """A report on stdout, and as ``out/name`` with ``--out``."""
    print(text)
    write_result(out, name, text)


def against_hull(table: str, rd_csv: str) -> str:
    """``table`` (this script's markdown rows) against the conventional hull of ``rd_csv``: per row, each choice's
    PSNR minus the hull's at that choice's rate on the same clip (the clip named by its file's stem)."""
    import numpy as np
    import pandas as pd

    from .hull import CONVENTIONAL_HULL, hull_at
    from .report import build_curves, with_series

    hull = build_curves(with_series(pd.read_csv(rd_csv)), "psnr").get(CONVENTIONAL_HULL)
    if hull is None or hull.empty:
        raise click.UsageError(f"{rd_csv} has no conventional anchors to build a hull from")
    out = ["| clip | target | table's choice - hull dB | kept - hull dB |", "|---|---|---|---|"]
    deltas = []
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 12 or cells[0] in ("clip", "") or cells[0].startswith("---"):
            continue
        clip = Path(cells[0]).stem
        t_rate, t_db, k_rate, k_db = (float(cells[i]) for i in (3, 4, 6, 7))
        at_t, at_k = hull_at(hull, clip, "psnr", t_rate), hull_at(hull, clip, "psnr", k_rate)
        if at_t is None or at_k is None:
            out.append(f"| {clip} | {cells[1]} | outside the hull's rates | |")
            continue
        deltas.append((t_db - at_t, k_db - at_k))
        out.append(f"| {clip} | {cells[1]} | {t_db - at_t:+.2f} | {k_db - at_k:+.2f} |")
    d = np.array(deltas).reshape(-1, 2)
    out.append(f"\n{len(d)} points: mean over the hull: table's choice {d[:, 0].mean():+.3f} dB, kept "
               f"{d[:, 1].mean():+.3f} dB; above the hull: {int((d[:, 0] > 0).sum())} and {int((d[:, 1] > 0).sum())}")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    return call(command, argv, "python -m benchmarks.kbps_compare")


if __name__ == "__main__":
    sys.exit(main())
