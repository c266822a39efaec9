"""BD-rate, summary.md and RD plots from the rows of rd.csv.

BD-rate follows the JVET practice: the ``bjontegaard`` package with ``method="pchip"``, computed per
clip and metric against the anchor codec (x265 by default), then averaged over the clips where it
exists. A codec's curve for one clip is the *upper envelope* of its points (points that are not
beaten in quality by a cheaper point of the same codec), sorted by quality; this matters for
imfcodec, whose operating points combine two knobs (token quality x key-frame quality). A BD-rate is
reported only with >= 4 points on both envelopes and an overlapping quality range; otherwise the
table says why ("n/a: no overlap", "n/a: < 4 points").
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .quality import HIGHER_IS_BETTER, LABELS
from .speed import geometric_mean, ratio

MIN_POINTS = 4
ORDER = ("imfcodec", "x265", "x264", "svtav1", "vp9", "repeat")
COLORS = {"imfcodec": "tab:red", "x265": "tab:blue", "x264": "tab:cyan", "svtav1": "tab:green",
          "vp9": "tab:orange", "repeat": "tab:gray"}


def codec_order(df) -> list[str]:
    """Codecs present, in a fixed order (imfcodec first, the baseline last)."""
    present = list(dict.fromkeys(df["codec"]))
    return [c for c in ORDER if c in present] + [c for c in present if c not in ORDER]


@dataclass(frozen=True)
class BD:
    """One BD-rate: ``value`` in percent (negative = fewer bits than the anchor), or a reason."""

    value: float | None
    note: str = ""

    def text(self) -> str:
        if self.value is None:
            return self.note
        s = f"{self.value:+.1f}%"
        return f"{s} ({self.note})" if self.note else s


def envelope(rates: Sequence[float], quality: Sequence[float], higher_is_better: bool = True
             ) -> tuple[np.ndarray, np.ndarray]:
    """Points of the RD upper envelope, sorted by quality (strictly monotone in quality and rate)."""
    pts = [(float(r), float(q)) for r, q in zip(rates, quality)
           if math.isfinite(float(r)) and float(r) > 0 and math.isfinite(float(q))]
    pts.sort(key=lambda p: (p[0], -p[1] if higher_is_better else p[1]))
    keep: list[tuple[float, float]] = []
    for r, q in pts:
        if not keep or (q > keep[-1][1] if higher_is_better else q < keep[-1][1]):
            keep.append((r, q))
    keep.sort(key=lambda p: p[1])
    return np.array([p[0] for p in keep]), np.array([p[1] for p in keep])


def bd_rate(anchor_rates, anchor_quality, test_rates, test_quality, higher_is_better: bool = True) -> BD:
    """BD-rate of test vs anchor on one clip and metric (pchip), or the reason there is none."""
    import bjontegaard

    ra, qa = envelope(anchor_rates, anchor_quality, higher_is_better)
    rt, qt = envelope(test_rates, test_quality, higher_is_better)
    if len(ra) < MIN_POINTS or len(rt) < MIN_POINTS:
        return BD(None, f"n/a: < {MIN_POINTS} points (test {len(rt)}, anchor {len(ra)})")
    lo, hi = max(qa.min(), qt.min()), min(qa.max(), qt.max())
    if hi <= lo:
        return BD(None, "n/a: no overlap")
    overlap = (hi - lo) / (max(qa.max(), qt.max()) - min(qa.min(), qt.min()))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = float(bjontegaard.bd_rate(ra, qa, rt, qt, method="pchip", require_matching_points=False,
                                          min_overlap=0))
    if not math.isfinite(value):
        return BD(None, "n/a: no overlap")
    return BD(value, f"overlap {overlap:.0%}" if overlap < 0.5 else "")


def bd_tables(df, metrics: Sequence[str], anchor: str = "x265"):
    """Per-clip BD-rates {metric: {codec: {clip: BD}}} and clip means {metric: {codec: BD}}."""
    per: dict[str, dict[str, dict[str, BD]]] = {}
    mean: dict[str, dict[str, BD]] = {}
    codecs = [c for c in codec_order(df) if c != anchor]
    clips = sorted(df["clip"].unique())
    for m in metrics:
        hib = HIGHER_IS_BETTER[m]
        per[m], mean[m] = {}, {}
        for codec in codecs:
            per[m][codec] = {}
            for clip in clips:
                a = df[(df["clip"] == clip) & (df.codec == anchor)]
                t = df[(df["clip"] == clip) & (df.codec == codec)]
                if a.empty:
                    per[m][codec][clip] = BD(None, f"n/a: no {anchor} rows")
                elif t.empty:
                    per[m][codec][clip] = BD(None, "n/a: no rows")
                else:
                    per[m][codec][clip] = bd_rate(a.kbps, a[m], t.kbps, t[m], hib)
            vals = [b.value for b in per[m][codec].values() if b.value is not None]
            if vals:
                note = "" if len(vals) == len(clips) else f"{len(vals)}/{len(clips)} clips"
                mean[m][codec] = BD(float(np.mean(vals)), note)
            else:
                notes = [b.note for b in per[m][codec].values()]
                mean[m][codec] = BD(None, max(set(notes), key=notes.count) if notes else "n/a")
    return per, mean


def _fmt(v, digits: int = 2) -> str:
    try:
        v = float(v)
    except (TypeError, ValueError):
        return str(v)
    return "-" if not math.isfinite(v) else f"{v:.{digits}f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return out


def available_metrics(df, candidates: Sequence[str]) -> list[str]:
    """Metrics with at least one finite value in the rows."""
    out = []
    for m in candidates:
        if m in df and np.isfinite(df[m].astype(float)).any():
            out.append(m)
    return out


def point_means(df):
    """Mean over clips per (codec, point); rows ordered by codec then rate."""
    num = ["kbps", "container_kbps", "key_kbps", "token_kbps", "psnr", "psnr_y", "ssim", "ms_ssim", "vmaf",
           "lpips", "dists", "enc_fps", "dec_fps"]
    num = [c for c in num if c in df]
    g = df.groupby(["codec", "point"], sort=False)
    means = g[num].mean()
    means["clips"] = g["clip"].nunique()
    means["param"] = g["param"].first()
    means = means.reset_index()
    rank = {c: i for i, c in enumerate(codec_order(df))}
    means["_rank"] = means["codec"].map(rank)
    return means.sort_values(["_rank", "kbps"]).drop(columns="_rank")


def speed_table(df, anchor: str = "x265"):
    """Per codec: geometric-mean fps over clips and points, ratios vs the anchor, memory, GFLOPs."""
    rows = {}
    for codec in codec_order(df):
        if codec == "repeat":  # one still image: its "fps" would only mislead
            continue
        g = df[df["codec"] == codec]
        rows[codec] = {
            "enc_fps": geometric_mean(g.enc_fps.astype(float)),
            "dec_fps": geometric_mean(g.dec_fps.astype(float)),
            "peak_rss_mb": float(g.peak_rss_mb.astype(float).max()),
            "base_rss_mb": float(g.base_rss_mb.astype(float).max()),
            "gflops": float(g.gflops_per_frame.astype(float).mean()) if "gflops_per_frame" in g else math.nan,
        }
    ref = rows.get(anchor, {})
    for r in rows.values():
        r["enc_ratio"] = ratio(r["enc_fps"], ref.get("enc_fps", math.nan))
        r["dec_ratio"] = ratio(r["dec_fps"], ref.get("dec_fps", math.nan))
    return rows


def _log_rate_axis(ax) -> None:
    """Log-scale rate axis labelled in plain kbit/s (2, 5, 10, 20, ...)."""
    from matplotlib.ticker import FuncFormatter, LogLocator

    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_minor_locator(LogLocator(base=10, subs=(3.0, 4.0, 6.0, 7.0, 8.0, 9.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))


def plot_rd(df, metric: str, path: Path, title: str) -> Path:
    """Quality against kbps (log x), mean over clips per point, one curve per codec."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    means = point_means(df)
    fig, ax = plt.subplots(figsize=(7, 4.8), dpi=110)
    for codec in codec_order(means):
        g = means[means["codec"] == codec]
        g = g[np.isfinite(g[metric].astype(float)) & (g.kbps > 0)].sort_values("kbps")
        if g.empty:
            continue
        ax.plot(g.kbps, g[metric], "--" if codec == "repeat" else "-", color=COLORS.get(codec),
                marker="*" if codec == "imfcodec" else "o", label=codec, ms=8 if codec == "imfcodec" else 4)
    _log_rate_axis(ax)
    ax.set_xlabel("rate (kbit/s, log scale)")
    ax.set_ylabel(LABELS.get(metric, metric))
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_per_clip(df, metric: str, path: Path) -> Path:
    """One small RD panel per clip for ``metric``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    clips = sorted(df["clip"].unique())
    cols = min(4, len(clips))
    rows = math.ceil(len(clips) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.9 * rows), dpi=100, squeeze=False)
    for ax, clip in zip(axes.flat, clips):
        d = df[df["clip"] == clip]
        for codec in codec_order(d):
            g = d[d["codec"] == codec]
            g = g[np.isfinite(g[metric].astype(float)) & (g.kbps > 0)].sort_values("kbps")
            if not g.empty:
                ax.plot(g.kbps, g[metric], "--" if codec == "repeat" else "-", color=COLORS.get(codec),
                        marker="*" if codec == "imfcodec" else "o", ms=3, label=codec)
        _log_rate_axis(ax)
        ax.set_title(clip, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(True, which="both", alpha=0.3)
    for ax in list(axes.flat)[len(clips):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=6)
    fig.supxlabel("kbit/s (log)", fontsize=9)
    fig.supylabel(LABELS.get(metric, metric), fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def write_report(df, out: Path, *, run_info: dict[str, str], notices: Sequence[str], errors: Sequence[str],
                 metrics: Sequence[str], anchor: str = "x265") -> tuple[Path, list[str]]:
    """Write summary.md and the plots; returns (summary path, the lines worth printing to stdout)."""
    out = Path(out)
    metrics = available_metrics(df, metrics)
    lines = ["# Rate-distortion benchmark", ""]
    lines += [f"- {k}: {v}" for k, v in run_info.items()]
    lines += ["", "## Metrics", ""] + [f"- {n}" for n in notices]

    stdout: list[str] = []
    lines += ["", f"## BD-rate against {anchor} (pchip; negative = fewer bits for the same quality)", ""]
    if anchor in set(df.codec):
        per, mean = bd_tables(df, metrics, anchor)
        codecs = [c for c in codec_order(df) if c != anchor]
        rows = [[c] + [mean[m][c].text() for m in metrics] for c in codecs]
        table = _table(["codec"] + [LABELS.get(m, m) for m in metrics], rows)
        lines += table
        lines += ["", "Mean over clips of per-clip BD-rates; 'k/N clips' = only k clips had a BD-rate. "
                      "n/a: no overlap = the two curves share no quality range; n/a: < 4 points = fewer "
                      f"than {MIN_POINTS} points on the test or anchor RD envelope.", ""]
        stdout += [f"BD-rate vs {anchor} (mean over clips):"] + table
        for m in metrics:
            lines += [f"### Per clip: {LABELS.get(m, m)}", ""]
            clips = sorted(df["clip"].unique())
            lines += _table(["clip"] + codecs, [[clip] + [per[m][c][clip].text() for c in codecs] for clip in clips])
            lines.append("")
    else:
        msg = f"n/a: no {anchor} rows in this run (add {anchor} to --codecs for BD-rates)"
        lines += [msg, ""]
        stdout.append(f"BD-rate: {msg}")

    lines += ["## Rate and quality per codec and point (mean over clips)", ""]
    pm = point_means(df)
    qcols = [m for m in metrics]
    rows = []
    for _, r in pm.iterrows():
        rows.append([r.codec, r.point, _fmt(r.kbps), _fmt(r.container_kbps), _fmt(r.get("key_kbps", math.nan))]
                    + [_fmt(r[m], 2 if m.startswith("psnr") or m == "vmaf" else 4) for m in qcols]
                    + [int(r.clips)])
    lines += _table(["codec", "point", "kbps", "container kbps", "key-frame kbps"]
                    + [LABELS.get(m, m) for m in qcols] + ["clips"], rows)
    lines += ["", "kbps: anchors = elementary stream (packets + out-of-band parameter sets), imfcodec = the "
                  "whole .imf file, repeat = the key-frame payload; all over the clip's duration. container "
                  "kbps: anchors muxed into MP4. key-frame kbps: the key-frame image bytes alone.", ""]

    lines += [f"## Speed and memory (same run; ratios against {anchor})", ""]
    sp = speed_table(df, anchor)
    rows = [[c, _fmt(s["enc_fps"], 1), _fmt(s["dec_fps"], 1), _fmt(s["enc_ratio"], 2), _fmt(s["dec_ratio"], 2),
             _fmt(s["peak_rss_mb"], 0), _fmt(s["base_rss_mb"], 0), _fmt(s["gflops"], 2)] for c, s in sp.items()]
    speed = _table(["codec", "encode fps", "decode fps", f"encode vs {anchor}", f"decode vs {anchor}",
                    "peak RSS MB", "base RSS MB", "GFLOPs/frame (decode)"], rows)
    lines += speed
    lines += ["", "fps: geometric mean over clips and points of frames / wall-clock seconds (RGB in memory -> "
                  "bytes, bytes -> RGB in memory). Peak RSS: high-water mark of a fresh process per (clip, "
                  "codec) after all its encodes and decodes, before metrics; base RSS: the same process "
                  "after imports and loading the reference frames (see benchmarks/memory.py). 'repeat' is left out "
                  "(it codes one still image).", ""]
    stdout += ["", "Speed and memory:"] + speed

    plots = []
    for m in metrics:
        p = plot_rd(df, m, out / f"rd_{m}.png", f"{LABELS.get(m, m)} vs rate, mean over {df['clip'].nunique()} clip(s)")
        plots.append(p)
    if metrics and df["clip"].nunique() > 1:
        plots.append(plot_per_clip(df, metrics[0], out / f"rd_{metrics[0]}_per_clip.png"))
    lines += ["## Plots", ""] + [f"![{p.stem}]({p.name})" for p in plots] + [""]
    if errors:
        lines += ["## Errors", ""] + [f"- {e}" for e in errors] + [""]
    path = out / "summary.md"
    tmp = path.with_suffix(".md.partial")
    tmp.write_text("\n".join(lines))
    tmp.replace(path)
    return path, stdout
