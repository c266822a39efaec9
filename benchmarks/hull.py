"""Convex hulls over frame sizes: the best a user gets by picking the frame size for each rate.

A codec's points at several frame sizes (scales) form one cloud per clip. Its hull is the upper
boundary of that cloud in (log rate, quality): first the Pareto front (no point beaten by a cheaper
one), then the upper concave hull over it, so a point that lies under the straight line (in log rate)
between two neighbours is dropped too. That is the envelope per-title encoding ladders use, and it is
the strongest reading of an anchor: every point kept is a real measured encode, and quality between
two hull points is interpolated linearly in log rate, never extrapolated past the hull's ends.

``conventional-hull`` is the hull of every conventional anchor at every scale together.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

CONVENTIONAL_HULL = "conventional-hull"


def hull_name(codec: str) -> str:
    return f"{codec}-hull"


def upper_hull(rates: Sequence[float], quality: Sequence[float], higher_is_better: bool = True) -> list[int]:
    """Indexes of the hull points (see the module docstring), sorted by rate.

    Points with a non-finite or non-positive rate or a non-finite quality are ignored.
    """
    sign = 1.0 if higher_is_better else -1.0
    pts = [(math.log(float(r)), sign * float(q), i) for i, (r, q) in enumerate(zip(rates, quality))
           if math.isfinite(float(r)) and float(r) > 0 and math.isfinite(float(q))]
    # Pareto front: by rate, keep a point only if it beats every cheaper point.
    pts.sort(key=lambda p: (p[0], -p[1]))
    front: list[tuple[float, float, int]] = []
    for p in pts:
        if not front or p[1] > front[-1][1]:
            if front and p[0] == front[-1][0]:
                front[-1] = p
            else:
                front.append(p)
    # Upper concave hull of the front (monotone chain): drop a middle point on or under the chord.
    hull: list[tuple[float, float, int]] = []
    for p in front:
        while len(hull) >= 2:
            (x1, y1, _), (x2, y2, _) = hull[-2], hull[-1]
            if (x2 - x1) * (p[1] - y1) - (y2 - y1) * (p[0] - x1) >= 0:  # hull[-1] not above the chord
                hull.pop()
            else:
                break
        hull.append(p)
    return [i for _, _, i in hull]


def interpolate_log_rate(rates: Sequence[float], quality: Sequence[float], rate: float) -> float | None:
    """Quality of a curve (points sorted by rate) at ``rate``, linear in log rate between its points;
    None outside the curve's rate range (no extrapolation)."""
    r = np.asarray(rates, dtype=float)
    q = np.asarray(quality, dtype=float)
    if len(r) == 0 or not math.isfinite(rate) or rate <= 0 or rate < r[0] or rate > r[-1]:
        return None
    if len(r) == 1:
        return float(q[0])
    return float(np.interp(math.log(rate), np.log(r), q))


def hull_rows(df, members: Sequence[str], metric: str, name: str, rate: str = "kbps",
              higher_is_better: bool = True):
    """Rows of ``df`` (codec in ``members``, any scale) that are hull points per clip for ``metric``
    and ``rate``, relabelled ``codec=name``; the original codec is kept in ``member``."""
    import pandas as pd

    parts = []
    for _clip, g in df[df["codec"].isin(list(members))].groupby("clip", sort=True):
        idx = upper_hull(g[rate].astype(float).to_numpy(), g[metric].astype(float).to_numpy(), higher_is_better)
        if idx:
            h = g.iloc[idx].copy()
            h["member"] = h["codec"]
            h["codec"] = name
            parts.append(h)
    if not parts:
        return df.iloc[0:0].assign(member=pd.Series(dtype=str))
    return pd.concat(parts, ignore_index=True)


def hull_at(hull, clip: str, metric: str, rate_value: float, rate: str = "kbps") -> float | None:
    """The hull's quality on ``clip`` at ``rate_value`` (log-rate interpolation), None outside its range."""
    h = hull[hull["clip"] == clip].sort_values(rate)
    return interpolate_log_rate(h[rate].astype(float).to_numpy(), h[metric].astype(float).to_numpy(), rate_value)
