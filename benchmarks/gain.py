"""Per-clip table: one imfcodec operating point against "repeat the decoded key frame" (same key
frame), x265 at full size at the nearest rate, and the conventional hull (every anchor at every
frame size) at the same rate and at its nearest point, from an rd.csv written by ``benchmarks.rd``.

This is the table of the model card and of issue 3's acceptance test: the gain over the
repeat-key baseline shows how much motion the model really reproduces.

    python -m benchmarks.gain runs/rd/rd.csv [--point q9-hevc21-r4] [--model imf-small-v2@HASH] [--out DIR]
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import click

from imfcodec.cliutil import CONTEXT_SETTINGS, Command, call

from . import require_bench_extra
from .harness import out_option, write_result
from .hull import CONVENTIONAL_HULL, hull_at

if TYPE_CHECKING:
    import pandas as pd

PROG = "python -m benchmarks.gain"


def gain_table(df: pd.DataFrame, point: str, model: str | None = None) -> pd.DataFrame:
    """One row per clip with the imfcodec point, the repeat baseline with the same key-frame
    quality, the PSNR gain, and the x265 row nearest in rate."""
    import pandas as pd

    # (bracket access throughout: "clip" is also a DataFrame method)
    imf = df[(df["codec"] == "imfcodec") & (df["point"] == point)]
    if model is not None:
        imf = imf[imf["model"] == model]
    elif imf["model"].nunique() > 1:
        raise ValueError(f"rd.csv holds several models ({', '.join(sorted(imf['model'].unique()))}): pass --model")
    if imf.empty:
        raise ValueError(f"no imfcodec rows for point {point!r}")
    from .report import build_curves, with_series
    from .strips import nearest_hull_row

    df = with_series(df)
    hull = build_curves(df, "psnr").get(CONVENTIONAL_HULL)
    rows = []
    for _, a in imf.sort_values("clip").iterrows():
        clip = a["clip"]
        rep = df[(df["codec"] == "repeat") & (df["clip"] == clip) & (df["key_quality"] == a["key_quality"])]
        if rep.empty:
            continue
        b = rep.iloc[0]
        xs = df[(df["codec"] == "x265") & (df["clip"] == clip) & (df["scale"] == 1.0)]
        near = xs.iloc[(xs.kbps - a.kbps).abs().argsort()[:1]] if len(xs) else xs
        row = dict(clip=clip, frames=int(a.frames), kbps=a.kbps, key_kbps=a.key_kbps,
                   token_kbps=a.token_kbps, psnr=a.psnr, ssim=a.ssim, ms_ssim=a.ms_ssim,
                   rep_psnr=b.psnr, rep_ssim=b.ssim, rep_ms_ssim=b.ms_ssim, gain_db=a.psnr - b.psnr)
        if len(near):
            n = near.iloc[0]
            row.update(x265_param=n.param, x265_kbps=n.kbps, x265_psnr=n.psnr, x265_ssim=n.ssim)
        if hull is not None and not hull.empty:
            h = nearest_hull_row(hull, clip, float(a.kbps))
            if h is not None:
                row.update(hull_point=f"{h['member']} {h['point']}", hull_kbps=h["kbps"], hull_psnr=h["psnr"])
            at = hull_at(hull, clip, "psnr", float(a.kbps))
            row["hull_psnr_at_rate"] = at if at is not None else float("nan")
            row["hull_delta"] = a.psnr - at if at is not None else float("nan")
        rows.append(row)
    return pd.DataFrame(rows)


def to_markdown(t: pd.DataFrame) -> str:
    import pandas as pd

    head = ("| clip | frames | imfcodec kbit/s (key / tokens) | PSNR | SSIM | MS-SSIM "
            "| repeat-key PSNR / SSIM / MS-SSIM | gain dB | x265 full size CRF: kbit/s, PSNR, SSIM "
            "| conventional hull at the same rate: PSNR | nearest hull point: kbit/s, PSNR |")
    lines = [head, "|" + "---|" * 11]

    def line(r, name: str, frames: str) -> str:
        x = (f"{r.x265_param}: {r.x265_kbps:.2f}, {r.x265_psnr:.2f}, {r.x265_ssim:.3f}"
             if "x265_kbps" in r and pd.notna(r.x265_kbps) else "-")
        at = (f"{r.hull_psnr_at_rate:.2f} ({r.hull_delta:+.2f}{r.get('hull_clips', '')})"
              if "hull_psnr_at_rate" in r and pd.notna(r.hull_psnr_at_rate) else "n/a: outside its range")
        near = (f"{r.hull_point}: {r.hull_kbps:.2f}, {r.hull_psnr:.2f}"
                if "hull_kbps" in r and pd.notna(r.hull_kbps) else "-")
        return (f"| {name} | {frames} | {r.kbps:.2f} ({r.key_kbps:.2f} / {r.token_kbps:.2f}) | {r.psnr:.2f} "
                f"| {r.ssim:.3f} | {r.ms_ssim:.3f} | {r.rep_psnr:.2f} / {r.rep_ssim:.3f} / {r.rep_ms_ssim:.3f} "
                f"| {r.gain_db:+.2f} | {x} | {at} | {near} |")

    for _, r in t.iterrows():
        lines.append(line(r, r["clip"], str(r["frames"])))
    mean = t.mean(numeric_only=True).astype(object)
    mean["x265_param"] = "mean"
    if "hull_kbps" in t:
        mean["hull_point"] = "mean"
    if "hull_psnr_at_rate" in t:  # means over the clips where the hull reaches imfcodec's rate
        ok = int(t["hull_psnr_at_rate"].notna().sum())
        if ok < len(t):
            mean["hull_clips"] = f"; {ok}/{len(t)} clips"
    lines.append(line(mean, "**mean**", f"{mean.frames:.0f}"))
    return "\n".join(lines)


@click.command("gain", cls=Command, context_settings=CONTEXT_SETTINGS,
               help=f"{__doc__.splitlines()[0]}\n\nCSV: rd.csv from benchmarks.rd")
@click.argument("csv")
@click.option("--point", default="q9-hevc21-r4", help="imfcodec point (default q9-hevc21-r4: the defaults)")
@click.option("--model", default=None, help="model id as in rd.csv's model column (name@hash)")
@out_option("gain.md")
def command(csv: str, point: str, model: str | None, out: Path | None) -> int:
    require_bench_extra()
    import pandas as pd

    try:
        df = pd.read_csv(csv)
        t = gain_table(df, point, model)
    except (OSError, ValueError, AttributeError, pd.errors.ParserError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if t.empty:
        print("error: no clip has both the imfcodec point and a repeat-key row", file=sys.stderr)
        return 1
    md = to_markdown(t)
    print(md)
    print(f"\nmean gain over repeat-key: {t.gain_db.mean():+.2f} dB PSNR on {len(t)} clip(s)")
    write_result(out, "gain.md", md + "\n")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point for ``python -m benchmarks.gain``; returns the exit status (1: no table, 2: a usage
    error; one line on stderr)."""
    return call(command, argv, PROG)


if __name__ == "__main__":
    sys.exit(main())
