"""BD-rate, hull comparisons, summary.md and RD plots from the rows of rd.csv.

Rows become *curves* (one per clip): imfcodec, repeat, each anchor at each frame-size scale
("x265" = full size, "x265 1/2", ...), each anchor's hull over its scales ("x265-hull") and the hull
of all anchors at all scales ("conventional-hull"); see ``benchmarks.hull``. Hulls depend on the
metric and on the rate (whole file or steady state), so curves are built per metric and rate.

BD-rate follows the JVET practice: the ``bjontegaard`` package with ``method="pchip"``, computed per
clip and metric against an anchor curve (x265 at full size, x265-hull, conventional-hull), then
averaged over the clips where it exists. A codec's curve for one clip is the *upper envelope* of its points (points that are not
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

from fractions import Fraction

import numpy as np

from .anchors import ANCHORS, scale_label
from .hull import CONVENTIONAL_HULL, hull_at, hull_name, hull_rows
from .quality import HIGHER_IS_BETTER, LABELS
from .speed import geometric_mean, ratio

MIN_POINTS = 4
ORDER = ("imfcodec", "hybrid", "hybrid-bicubic", "x265", "x264", "svtav1", "vp9", "repeat")
IMFCODEC_ENVELOPE = "imfcodec-envelope"  # every imfcodec mode together (token and hybrid points)
COLORS = {"imfcodec": "tab:red", "hybrid": "tab:purple", "hybrid-bicubic": "tab:pink", "x265": "tab:blue",
          "x264": "tab:cyan", "svtav1": "tab:green", "vp9": "tab:orange", "repeat": "tab:gray",
          CONVENTIONAL_HULL: "black", IMFCODEC_ENVELOPE: "darkred"}
RATES = {"kbps": "whole file", "steady_kbps": "steady state"}


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


def scale_of(value) -> Fraction:
    """The scale stored in a row (rows of runs before scales existed have none: full size)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return Fraction(1)
    return Fraction(1) if not math.isfinite(v) or v <= 0 else Fraction(v).limit_denominator(64)


def series_name(codec: str, scale) -> str:
    """``x265`` at full size, ``x265 1/2`` at half size; imfcodec and repeat have no scale."""
    s = scale_of(scale)
    return codec if codec not in ANCHORS or s == 1 else f"{codec} {scale_label(s)}"


def with_series(df):
    """``df`` with a ``series`` column (codec and scale) and a float ``scale`` column."""
    df = df.copy()
    if "scale" not in df:
        df["scale"] = 1.0
    df["scale"] = [float(scale_of(v)) for v in df["scale"]]
    df["series"] = [series_name(c, s) for c, s in zip(df["codec"], df["scale"])]
    return df


def build_curves(df, metric: str, rate: str = "kbps") -> dict[str, object]:
    """Curve name -> rows, in table order: imfcodec, conventional-hull, then per anchor its hull,
    full size and smaller scales, then repeat. Hulls only where a curve has more than one scale
    (or, for the conventional hull, at least one anchor). ``rate="steady_kbps"`` leaves out repeat,
    whose steady-state rate is zero."""
    df = with_series(df)
    df = df[np.isfinite(df[rate].astype(float))] if rate in df else df.iloc[0:0]
    hib = HIGHER_IS_BETTER[metric]
    out: dict[str, object] = {}
    codecs = codec_order(df)
    anchors = [c for c in codecs if c in ANCHORS]
    if "imfcodec" in codecs:
        out["imfcodec"] = df[df["codec"] == "imfcodec"]
    modes = [c for c in ("imfcodec", "hybrid") if c in codecs]
    if "hybrid" in modes:  # the envelope a user of imfcodec gets by picking the best mode at each rate
        out[IMFCODEC_ENVELOPE] = hull_rows(df, modes, metric, IMFCODEC_ENVELOPE, rate, hib)
    if anchors:
        out[CONVENTIONAL_HULL] = hull_rows(df, anchors, metric, CONVENTIONAL_HULL, rate, hib)
    for codec in anchors:
        sub = df[df["codec"] == codec]
        scales = sorted(set(sub["scale"]), reverse=True)
        if len(scales) > 1:
            out[hull_name(codec)] = hull_rows(df, [codec], metric, hull_name(codec), rate, hib)
        for s in scales:
            out[series_name(codec, s)] = sub[sub["scale"] == s]
    for codec in codecs:
        if codec not in ANCHORS and codec != "imfcodec" and not (codec == "repeat" and rate != "kbps"):
            out[codec] = df[df["codec"] == codec]
    return out


def headline(names) -> list[str]:
    """The curves shown per clip: everything but the scaled anchors (they are inside their hulls)."""
    return [n for n in names if " " not in n]


def bd_tables(curves: dict[str, dict[str, object]], metrics: Sequence[str], anchor: str, rate: str = "kbps"):
    """Per-clip BD-rates {metric: {curve: {clip: BD}}} and clip means {metric: {curve: BD}} of every
    curve against the ``anchor`` curve; ``curves`` is {metric: build_curves(df, metric, rate)}."""
    per: dict[str, dict[str, dict[str, BD]]] = {}
    mean: dict[str, dict[str, BD]] = {}
    for m in metrics:
        hib = HIGHER_IS_BETTER[m]
        cm = curves[m]
        clips = sorted(set().union(*[set(d["clip"]) for d in cm.values()])) if cm else []
        per[m], mean[m] = {}, {}
        a_all = cm.get(anchor)
        for name, t_all in cm.items():
            if name == anchor:
                continue
            per[m][name] = {}
            for clip in clips:
                a = a_all[a_all["clip"] == clip] if a_all is not None else None
                t = t_all[t_all["clip"] == clip]
                if a is None or a.empty:
                    per[m][name][clip] = BD(None, f"n/a: no {anchor} rows")
                elif t.empty:
                    per[m][name][clip] = BD(None, "n/a: no rows")
                else:
                    per[m][name][clip] = bd_rate(a[rate], a[m], t[rate], t[m], hib)
            vals = [b.value for b in per[m][name].values() if b.value is not None]
            if vals:
                note = "" if len(vals) == len(clips) else f"{len(vals)}/{len(clips)} clips"
                mean[m][name] = BD(float(np.mean(vals)), note)
            else:
                notes = [b.note for b in per[m][name].values()]
                mean[m][name] = BD(None, max(set(notes), key=notes.count) if notes else "n/a")
    return per, mean


def versus_hull(df, curves: dict[str, object], metric: str = "psnr", rate: str = "kbps",
                hulls: Sequence[str] = (CONVENTIONAL_HULL, "x265-hull")):
    """One row per (clip, imfcodec point): its rate and quality, and each hull's quality at the same
    rate (interpolated in log rate) with the difference; outside a hull's rate range the row says
    so instead of extrapolating."""
    import pandas as pd

    imf = with_series(df)
    imf = imf[imf["codec"].isin(["imfcodec", "hybrid"]) & np.isfinite(imf[rate].astype(float))]
    rows = []
    for _, r in imf.sort_values(["clip", rate]).iterrows():
        row = {"clip": r["clip"], "point": r["point"], "rate": float(r[rate]), "quality": float(r[metric])}
        for h in hulls:
            hull = curves.get(h)
            if hull is None or hull.empty:
                continue
            hc = hull[hull["clip"] == r["clip"]]
            q = hull_at(hull, r["clip"], metric, float(r[rate]), rate)
            if q is None and not hc.empty:
                lo, hi = float(hc[rate].min()), float(hc[rate].max())
                where = f"below its range ({lo:.2f}-{hi:.2f})" if r[rate] < lo else f"above its range ({lo:.2f}-{hi:.2f})"
            else:
                where = ""
            row[h] = q
            row[f"{h} note"] = where
            row[f"{h} delta"] = (row["quality"] - q) if q is not None else None
        rows.append(row)
    return pd.DataFrame(rows)


def versus_hull_markdown(t, metric: str, rate: str, hulls: Sequence[str]) -> list[str]:
    """The per-clip table of ``versus_hull`` with a mean row over the points that have a value."""
    if t.empty:
        return ["(no imfcodec rows)"]
    unit = "dB" if metric.startswith("psnr") else ""
    header = ["clip", "imfcodec point", f"{RATES[rate]} kbit/s", LABELS.get(metric, metric)]
    hulls = [h for h in hulls if h in t]
    for h in hulls:
        header += [f"{h} at that rate", "difference"]
    rows = []
    for _, r in t.iterrows():
        line = [r["clip"], r["point"], _fmt(r["rate"]), _fmt(r["quality"], 2 if unit else 4)]
        for h in hulls:
            if r[h] is None or not np.isfinite(float(r[h])):
                line += [f"n/a: {r[f'{h} note']}" if r[f"{h} note"] else "n/a: no rows", "-"]
            else:
                line += [_fmt(r[h], 2 if unit else 4), f"{float(r[f'{h} delta']):+.2f}"]
        rows.append(line)
    for point in sorted(set(t["point"])):
        g = t[t["point"] == point]
        line = [f"**mean {point}**", "", _fmt(g["rate"].mean()), _fmt(g["quality"].mean(), 2 if unit else 4)]
        for h in hulls:
            d = g[f"{h} delta"].astype(float)
            ok = d[np.isfinite(d)]
            line += [f"{len(ok)}/{len(g)} clips in range", f"{ok.mean():+.2f}" if len(ok) else "-"]
        rows.append(line)
    return _table(header, rows)


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
    num = [c for c in num + ["steady_kbps"] if c in df]
    g = df.groupby(["codec", "point"], sort=False)
    means = g[num].mean()
    means["clips"] = g["clip"].nunique()
    means["param"] = g["param"].first()
    means = means.reset_index()
    rank = {c: i for i, c in enumerate(codec_order(df))}
    means["_rank"] = means["codec"].map(rank)
    return means.sort_values(["_rank", "kbps"]).drop(columns="_rank")


def speed_table(df, anchor: str = "x265"):
    """Per codec: geometric-mean fps over clips and points, ratios vs the anchor, memory, GFLOPs.

    Anchors count at full size only: their smaller-scale points are faster and would flatter them."""
    df = with_series(df)
    df = df[df["scale"] == 1.0]
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


def mean_hull_curve(hull, metric: str, rate: str = "kbps", n: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """Mean over clips of each clip's hull, interpolated in log rate on a grid spanning the rates
    that every clip's hull covers (empty when they share none)."""
    from .hull import interpolate_log_rate

    per = [g.sort_values(rate) for _, g in hull.groupby("clip")]
    if not per:
        return np.array([]), np.array([])
    lo = max(float(g[rate].min()) for g in per)
    hi = min(float(g[rate].max()) for g in per)
    if not (lo > 0 and hi > lo):
        return np.array([]), np.array([])
    grid = np.geomspace(lo, hi, n)
    q = [np.mean([interpolate_log_rate(g[rate].to_numpy(float), g[metric].to_numpy(float), x) for g in per])
         for x in grid]
    return grid, np.array(q)


def _style(name: str) -> dict:
    codec = name.split(" ")[0].removesuffix("-hull")
    if name == CONVENTIONAL_HULL:
        return dict(color="black", lw=2.2, ls="-", marker="")
    if name == IMFCODEC_ENVELOPE:
        return dict(color=COLORS[name], lw=2.2, ls="-", marker="")
    if name.endswith("-hull"):
        return dict(color=COLORS.get(codec), lw=1.6, ls="-.", marker="")
    if " " in name:  # an anchor at a smaller scale
        return dict(color=COLORS.get(codec), lw=0.8, ls=":", marker=".", ms=3, alpha=0.8)
    return dict(color=COLORS.get(codec), lw=1.2, ls="--" if name == "repeat" else "-",
                marker="*" if name == "imfcodec" else "o", ms=8 if name == "imfcodec" else 4)


def _plot_groups(name: str, rows) -> list[tuple[str, object]]:
    """imfcodec's points in one line per token-search setting (``-rN`` point names), so that a plot
    does not zig-zag between modes; every other curve as it is."""
    if name in ("hybrid", "hybrid-bicubic"):  # one line per base-layer size
        return [(f"{name} {scale_label(scale_of(s))}", rows[rows["scale"] == s])
                for s in sorted(set(rows["scale"]), reverse=True)]
    if name != "imfcodec":
        return [(name, rows)]
    iters = rows["point"].str.extract(r"-r(\d+)$")[0].fillna("0")
    return [(f"imfcodec --refine {k}", rows[iters == k]) for k in sorted(set(iters), key=int, reverse=True)]


def plot_rd(df, metric: str, path: Path, title: str, rate: str = "kbps") -> Path:
    """Quality against rate (log x), mean over clips: per point for real curves, the mean of the
    per-clip hulls (over the rates all clips' hulls cover) for hulls; x265 shown at every scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = build_curves(df, metric, rate)
    fig, ax = plt.subplots(figsize=(7.5, 5), dpi=110)
    for name, rows in curves.items():
        if " " in name and not name.startswith("x265 "):
            continue  # other anchors' smaller scales: inside their hulls, and too many lines
        if rows.empty:
            continue
        if name.endswith("-hull") or name == IMFCODEC_ENVELOPE:
            x, y = mean_hull_curve(rows, metric, rate)
            if len(x):
                ax.plot(x, y, label=name, **_style(name))
            continue
        for label, part in _plot_groups(name, rows):
            g = part.groupby("point")[[rate, metric]].mean()
            g = g[np.isfinite(g[metric].astype(float)) & (g[rate] > 0)].sort_values(rate)
            if len(g):
                style = _style(name) | ({"ls": "--", "marker": "^"} if label.endswith("--refine 0") else {})
                ax.plot(g[rate].to_numpy(), g[metric].to_numpy(), label=label, **style)
    _log_rate_axis(ax)
    ax.set_xlabel(f"rate (kbit/s, {RATES[rate]}, log scale)")
    ax.set_ylabel(LABELS.get(metric, metric))
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_per_clip(df, metric: str, path: Path, rate: str = "kbps") -> Path:
    """One small RD panel per clip for ``metric``: imfcodec, repeat, anchors at full size and the hulls."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = build_curves(df, metric, rate)
    clips = sorted(df["clip"].unique())
    cols = min(4, len(clips))
    nrows = math.ceil(len(clips) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(3.6 * cols, 2.9 * nrows), dpi=100, squeeze=False)
    for ax, clip in zip(axes.flat, clips):
        for name in headline(curves):
            g = curves[name]
            g = g[(g["clip"] == clip) & np.isfinite(g[metric].astype(float)) & (g[rate] > 0)].sort_values(rate)
            if not g.empty:
                style = {**_style(name), "ms": 3}
                ax.plot(g[rate], g[metric], label=name, **style)
        _log_rate_axis(ax)
        ax.set_title(clip, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(True, which="both", alpha=0.3)
    for ax in list(axes.flat)[len(clips):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=5)
    fig.supxlabel(f"kbit/s ({RATES[rate]}, log)", fontsize=9)
    fig.supylabel(LABELS.get(metric, metric), fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


HULL_ANCHORS = ("x265", "x265-hull", CONVENTIONAL_HULL)


def _bd_section(df, metrics: Sequence[str], rate: str, per_clip_metrics: Sequence[str]) -> tuple[list[str], list[str]]:
    """Markdown and stdout lines: BD-rates of every curve against x265, x265-hull, conventional-hull."""
    curves = {m: build_curves(df, m, rate) for m in metrics}
    lines: list[str] = []
    stdout: list[str] = []
    for anchor in HULL_ANCHORS:
        if not metrics or anchor not in curves[metrics[0]]:
            lines += [f"### Against {anchor}: n/a (no {anchor} rows in this run)", ""]
            continue
        per, mean = bd_tables(curves, metrics, anchor, rate)
        names = list(per[metrics[0]])
        table = _table(["curve"] + [LABELS.get(m, m) for m in metrics],
                       [[n] + [mean[m][n].text() for m in metrics] for n in names])
        title = f"BD-rate against {anchor}" + ("" if anchor != "x265" else " (full size)")
        lines += [f"### {title} ({RATES[rate]} rates)", ""] + table + [""]
        if anchor != "x265":
            top = headline(names)
            stdout += [f"{title}, {RATES[rate]} rates (mean over clips):"]
            stdout += _table(["curve"] + [LABELS.get(m, m) for m in metrics],
                             [[n] + [mean[m][n].text() for m in metrics] for n in top]) + [""]
        for m in per_clip_metrics:
            if m not in metrics:
                continue
            shown = [n for n in headline(per[m])]
            clips = sorted(df["clip"].unique())
            lines += [f"Per clip, {LABELS.get(m, m)}, against {anchor}:", ""]
            lines += _table(["clip"] + shown, [[c] + [per[m][n][c].text() for n in shown] for c in clips])
            lines.append("")
    return lines, stdout


def write_report(df, out: Path, *, run_info: dict[str, str], notices: Sequence[str], errors: Sequence[str],
                 metrics: Sequence[str], anchor: str = "x265", strips: Sequence[Path] = ()) -> tuple[Path, list[str]]:
    """Write summary.md and the plots; returns (summary path, the lines worth printing to stdout).

    ``anchor`` is the reference of the speed ratios; BD-rates are against x265 at full size,
    x265-hull and conventional-hull."""
    out = Path(out)
    df = with_series(df)
    metrics = available_metrics(df, metrics)
    lines = ["# Rate-distortion benchmark", ""]
    lines += [f"- {k}: {v}" for k, v in run_info.items()]
    lines += ["", "## Metrics", ""] + [f"- {n}" for n in notices]
    stdout: list[str] = []

    lines += ["", "## BD-rate (pchip; negative = fewer bits for the same quality)", "",
              "Curves: `x265` = x265 at full size, `x265 1/2` = coded at half size and upscaled, "
              "`x265-hull` = the hull of x265 over its frame sizes (what a user who picks the best size "
              "for each rate gets), `conventional-hull` = the hull of every conventional anchor at every "
              "size together. Mean over clips of per-clip BD-rates; 'k/N clips' = only k clips had a "
              f"BD-rate. n/a: no overlap = the two curves share no quality range; n/a: < {MIN_POINTS} points "
              f"= fewer than {MIN_POINTS} points on a curve's envelope.", ""]
    sec, so = _bd_section(df, metrics, "kbps", metrics)
    lines += sec
    stdout += so

    if "imfcodec" in set(df["codec"]) and "psnr" in metrics:
        lines += ["## imfcodec against the hulls at the same rate", "",
                  "Each imfcodec point against the hull's quality at imfcodec's own rate (linear in log "
                  "rate between hull points; no extrapolation past a hull's ends).", ""]
        for rate in ("kbps", "steady_kbps"):
            if rate not in df or not np.isfinite(df[rate].astype(float)).any():
                continue
            curves = build_curves(df, "psnr", rate)
            t = versus_hull(df, curves, "psnr", rate)
            lines += [f"### {RATES[rate].capitalize()} rates, PSNR", ""]
            lines += versus_hull_markdown(t, "psnr", rate, (CONVENTIONAL_HULL, "x265-hull")) + [""]
        if strips:
            lines += ["### Pictures", "", "Source, imfcodec at the default point and the conventional hull's "
                      "point nearest in rate, early / middle / late frames:", ""]
            lines += [f"- [{p.stem}]({p.relative_to(out).as_posix()})" for p in strips] + [""]

    if "steady_kbps" in df and np.isfinite(df["steady_kbps"].astype(float)).any():
        lines += ["## Steady-state view (long calls)", "",
                  "A call lasts minutes and sends its first key frame once; the test clips last 3-10 s, so "
                  "the first key frame is most of a low-rate stream. This view leaves out, for every codec "
                  "alike, the start-up bytes (imfcodec: signature, header and first key packet; anchors: "
                  "out-of-band parameter sets and the first packet, the I-frame) and divides the rest by the "
                  "duration of the frames after the first. Quality is unchanged (all frames). repeat is left "
                  "out (its steady-state rate is zero). The whole-file view above is the headline.", ""]
        sec, so = _bd_section(df, metrics, "steady_kbps", ["psnr"] if "psnr" in metrics else [])
        lines += sec
        stdout += so

    lines += ["## Rate and quality per codec and point (mean over clips)", ""]
    pm = point_means(df)
    qcols = [m for m in metrics]
    rows = []
    for _, r in pm.iterrows():
        rows.append([r.codec, r.point, _fmt(r.kbps), _fmt(r.get("steady_kbps", math.nan)),
                     _fmt(r.container_kbps), _fmt(r.get("key_kbps", math.nan))]
                    + [_fmt(r[m], 2 if m.startswith("psnr") or m == "vmaf" else 4) for m in qcols]
                    + [int(r.clips)])
    lines += _table(["codec", "point", "kbps", "steady kbps", "container kbps", "key-frame kbps"]
                    + [LABELS.get(m, m) for m in qcols] + ["clips"], rows)
    lines += ["", "kbps: anchors = elementary stream (packets + out-of-band parameter sets), imfcodec = the "
                  "whole .imf file, repeat = the key-frame payload; all over the clip's duration. Anchor "
                  "points named `-x0.5` / `-x0.25` are coded at 1/2 / 1/4 of the frame size and upscaled. "
                  "steady kbps: see the steady-state view. container kbps: anchors muxed into MP4. "
                  "key-frame kbps: the key-frame image bytes alone.", ""]

    lines += [f"## Speed and memory (same run; ratios against {anchor})", ""]
    sp = speed_table(df, anchor)
    rows = [[c, _fmt(s["enc_fps"], 1), _fmt(s["dec_fps"], 1), _fmt(s["enc_ratio"], 2), _fmt(s["dec_ratio"], 2),
             _fmt(s["peak_rss_mb"], 0), _fmt(s["base_rss_mb"], 0), _fmt(s["gflops"], 2)] for c, s in sp.items()]
    speed = _table(["codec", "encode fps", "decode fps", f"encode vs {anchor}", f"decode vs {anchor}",
                    "peak RSS MB", "base RSS MB", "GFLOPs/frame (decode)"], rows)
    lines += speed
    lines += ["", "fps: geometric mean over clips and points of frames / wall-clock seconds (RGB in memory -> "
                  "bytes, bytes -> RGB in memory); anchors at full size only. Peak RSS: high-water mark of a "
                  "fresh process per (clip, codec) after all its encodes and decodes, before metrics; base "
                  "RSS: the same process after imports and loading the reference frames (see "
                  "benchmarks/memory.py). 'repeat' is left out (it codes one still image).", ""]
    stdout += ["", "Speed and memory:"] + speed

    plots = []
    n_clips = df["clip"].nunique()
    for m in metrics:
        plots.append(plot_rd(df, m, out / f"rd_{m}.png", f"{LABELS.get(m, m)} vs rate, mean over {n_clips} clip(s)"))
    if metrics and n_clips > 1:
        plots.append(plot_per_clip(df, metrics[0], out / f"rd_{metrics[0]}_per_clip.png"))
    if metrics and "steady_kbps" in df and np.isfinite(df["steady_kbps"].astype(float)).any():
        plots.append(plot_rd(df, metrics[0], out / f"rd_{metrics[0]}_steady.png",
                             f"{LABELS.get(metrics[0], metrics[0])} vs steady-state rate, mean over {n_clips} clip(s)",
                             rate="steady_kbps"))
    lines += ["## Plots", "", "Hull curves in the mean plots are the mean of the per-clip hulls over the rates "
              "every clip's hull covers; the per-clip panels show each clip's hull points.", ""]
    lines += [f"![{p.stem}]({p.name})" for p in plots] + [""]
    if errors:
        lines += ["## Errors", ""] + [f"- {e}" for e in errors] + [""]
    path = out / "summary.md"
    tmp = path.with_suffix(".md.partial")
    tmp.write_text("\n".join(lines))
    tmp.replace(path)
    return path, stdout
