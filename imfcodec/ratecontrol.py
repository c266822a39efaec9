"""Rate control of the hybrid mode: ``imfcodec encode --kbps R`` picks the operating point (base-layer codec,
size and quality, key-frame quality) that gave the best quality within R on training clips.

Why a table: the base layer's rate at a given quality depends on the clip, but the *order* of the operating
points by quality per bit does much less, and a table measured once on held-out training clips
(``benchmarks/hybrid_table.py``; never the test clips) gives one number -> one point with no extra encoding
passes, which is what a live encoder (a pipe) needs. The table ships beside the enhancer's weights
(``imfcodec/weights/NAME-points.json``) because the quality an operating point gives depends on the enhancer.
Why a loop as well: the table's rates miss a given file by -50 % to +80 % (frame rate, length, content), so on
a file the table chooses only the point's family and measuring passes find the base quality (``closed_loop``,
below; benchmarks/results/2026-12-04-rate-control/NOTES.md).

A point's rate for a clip of ``d`` seconds is its steady rate plus its start-up bytes (header, key image, the
base layer's first intra picture) spread over ``d``: short clips pay the key frame over few seconds.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from .errors import InputError

DEFAULT_DURATION_S = 10.0  # what --kbps assumes when the input's duration is unknown (a pipe)


@dataclass(frozen=True)
class OperatingPoint:
    """One measured hybrid operating point (means over the table's clips)."""

    base_factor: int
    base_quality: int
    key_quality: int
    steady_kbps: float  # base layer and framing after the first frame, per second at the clips' frame rate
    startup_bytes: float  # signature, header, the key packet and the first base access unit
    psnr: float  # enhanced, dB
    psnr_bicubic: float  # the same streams without the enhancer, dB
    base_codec: str = "hevc"  # tables measured before VP9 bases existed name none: x265
    intra_base: bool = False  # the key pictures coded by the base layer (format version 5; key_quality unused)
    half_rate: bool = False  # the base layer codes every other frame (format version 6)

    def kbps(self, duration_s: float) -> float:
        """Expected whole-file rate for a clip of ``duration_s`` seconds with one key frame."""
        return self.steady_kbps + self.startup_bytes * 8 / max(duration_s, 1e-3) / 1000


def table_path(enhancer_name: str) -> Path:
    from .zoo import WEIGHTS_DIR

    return WEIGHTS_DIR / f"{enhancer_name}-points.json"


def load_table(enhancer_name: str) -> list[OperatingPoint]:
    """The shipped table of ``enhancer_name``; InputError if there is none."""
    path = table_path(enhancer_name)
    if not path.is_file():
        raise InputError(f"--kbps needs the operating-point table of the enhancer '{enhancer_name}' "
                         f"({path.name}), which this install does not have; give --base-scale, "
                         f"--base-quality and --key-quality instead")
    data = json.loads(path.read_text())
    return [OperatingPoint(**p) for p in data["points"]]


def save_table(points: list[OperatingPoint], path: Path, info: dict) -> None:
    from .fsutil import AtomicOutput

    with AtomicOutput(path) as tmp:
        Path(tmp).write_text(json.dumps({**info, "points": [asdict(p) for p in points]}, indent=1) + "\n")


def choose(points: list[OperatingPoint], kbps: float, duration_s: float | None = None,
           base_codec: str | None = None) -> tuple[OperatingPoint, float, bool]:
    """(point, its expected rate, whether it fits): the best-quality point whose expected rate is within
    ``kbps`` (among ``base_codec``'s points when given); when none fits, the lowest-rate point (``fits``
    False, for the caller to say so)."""
    if base_codec is not None:
        points = [p for p in points if p.base_codec == base_codec]
        if not points:
            raise InputError(f"the operating-point table has no {base_codec} base-layer points: drop --base-codec, "
                             f"or give --base-scale and --base-quality yourself")
    if not points:
        raise InputError("the operating-point table is empty")
    if not kbps > 0:
        raise InputError(f"--kbps must be > 0, got {kbps}")
    d = DEFAULT_DURATION_S if duration_s is None or duration_s <= 0 else duration_s
    fitting = [p for p in points if p.kbps(d) <= kbps]
    if fitting:
        best = max(fitting, key=lambda p: (p.psnr, -p.kbps(d)))
        return best, best.kbps(d), True
    low = min(points, key=lambda p: p.kbps(d))
    return low, low.kbps(d), False


# ---------------------------------------------------------------------------------------------------------------
# The closed loop (inputs of known length: files). The table's rate is a mean over training clips at their frame
# rate and length; a clip's own rate at a point differs by tens of per cent (frame rate, length, content). So the
# table chooses the *family* of the point (base codec, base size, key quality: the best quality per bit), and
# measuring passes of the real encoder (no guard: no network; the stream's bytes are the same but for one header
# byte) find the base quality that gives the target: rate is monotonic in it, about 5-6 % per step.

TOLERANCE = 0.05  # what --kbps promises on a file: the whole file's rate within +-5 % of the target
STOP_WITHIN = 0.02  # a pass this close ends the search (and one within half the local step: no neighbour is closer)
MAX_PASSES = 10  # per family; the search usually needs 2-5
MAX_FAMILIES = 4  # the table's family, then up to three others when its quality range cannot reach the target
DEFAULT_STEP = 0.055  # ln(rate) per quality step when the table cannot say (a VP9 base: 5-6 %)


@dataclass(frozen=True)
class Family:
    """What the table chooses and the search keeps: the base codec, the base size and the key quality."""

    base_codec: str
    base_factor: int
    key_quality: int
    intra_base: bool = False  # the key pictures in the base layer (then key_quality means nothing)
    half_rate: bool = False  # every other frame coded (format version 6)

    def describe(self, base_quality: int) -> str:
        scale = "1" if self.base_factor == 1 else f"1/{self.base_factor}"
        key = "key in the base layer" if self.intra_base else f"key q{self.key_quality}"
        return f"base {self.base_codec} {scale} q{base_quality}{' half-rate' if self.half_rate else ''}, {key}"

    def settings(self, settings, base_quality: int):
        """``settings`` (an ``EncoderSettings``) at this family and ``base_quality``."""
        return replace(settings, base_codec=self.base_codec, base_factor=self.base_factor, base_quality=base_quality,
                       key_quality=None if self.intra_base else self.key_quality, intra_base=self.intra_base,
                       half_rate=self.half_rate)


def family_of(p: OperatingPoint, base_factor: int | None = None, key_quality: int | None = None) -> Family:
    """The family of table point ``p``, with the user's base size and key quality where given: a point of the
    intra-base route stays one only at its own size and without a key quality of the user's."""
    intra = p.intra_base and base_factor in (None, p.base_factor) and key_quality is None
    return Family(p.base_codec, p.base_factor if base_factor is None else base_factor,
                  p.key_quality if key_quality is None else key_quality, intra, p.half_rate)


@dataclass(frozen=True)
class Measured:
    """One measuring pass: a family at a base quality, and the whole-file rate it gave."""

    family: Family
    base_quality: int
    kbps: float


@dataclass
class Search:
    """The search over one family's base quality: every pass, and why it ended (``reach``: "ok" when the
    target lies within the quality range, "over" when even the lowest quality is above it, "under" when even
    the highest is below it)."""

    passes: list[Measured]
    reach: str

    def best(self, target: float) -> Measured:
        return closest(self.passes, target)


def closest(passes: list[Measured], target: float) -> Measured:
    """The pass whose rate is closest to ``target``; of two equally close, the one under it."""
    return min(passes, key=lambda m: (abs(m.kbps - target), m.kbps > target))


def within(kbps: float, target: float, tolerance: float = TOLERANCE) -> bool:
    return abs(kbps / target - 1) <= tolerance + 1e-12


def table_step(points: list[OperatingPoint], family: Family, duration_s: float) -> float:
    """ln(whole-file rate) per base-quality step of ``family`` in the table at ``duration_s`` (a least-squares
    slope over its points; the same codec and size at the nearest key quality when the table lacks the family);
    ``DEFAULT_STEP`` when the table has fewer than two qualities of it."""
    same = [p for p in points if p.base_codec == family.base_codec and p.base_factor == family.base_factor
            and p.intra_base == family.intra_base and p.half_rate == family.half_rate]
    if same:
        kq = min({p.key_quality for p in same}, key=lambda k: abs(k - family.key_quality))
        same = [p for p in same if p.key_quality == kq]
    xs = [p.base_quality for p in same]
    if len(set(xs)) < 2:
        return DEFAULT_STEP
    ys = [math.log(p.kbps(duration_s)) for p in same]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    return slope if slope > 1e-3 else DEFAULT_STEP


def first_guess(points: list[OperatingPoint], family: Family, target: float, duration_s: float,
                quality_range: tuple[int, int], default: int) -> int:
    """The base quality the table expects to give ``target``: from the family's table point nearest the target
    (in log rate), moved by the table's slope; ``default`` when the table has no point of the family."""
    lo, hi = quality_range
    mine = [p for p in points if family_of(p) == family]
    if not mine:
        return min(max(default, lo), hi)
    near = min(mine, key=lambda p: abs(math.log(p.kbps(duration_s) / target)))
    q = near.base_quality + math.log(target / near.kbps(duration_s)) / table_step(points, family, duration_s)
    return min(max(round(q), lo), hi)


def search_quality(rate: Callable[[int], float], target: float, quality_range: tuple[int, int], first: int,
                   step: float = DEFAULT_STEP, *, stop_within: float = STOP_WITHIN,
                   max_passes: int = MAX_PASSES) -> tuple[list[tuple[int, float]], str]:
    """Search the integer quality in ``quality_range`` whose ``rate(quality)`` (increasing in it) is closest to
    ``target``: (the passes as (quality, rate) in order, reach). A secant step in log rate from the last pass
    (``step``, ln(rate) per quality step, until two passes give a slope), kept strictly inside the bracket of
    qualities known to be under and over the target, so each pass is new and the bracket shrinks (there, an
    interpolation between its ends). Ends when a pass is within the tolerance and within ``stop_within`` or half
    the local step (in ln rate) of the target, when the bracket's ends are neighbours, when the range's end
    is reached on the wrong side (reach "over": the lowest quality is above the target; "under": the highest
    is below), or after ``max_passes``."""
    lo, hi = quality_range
    if not target > 0:
        raise InputError(f"--kbps must be > 0, got {target}")
    passes: list[tuple[int, float]] = []
    under: int | None = None  # the highest quality measured at or under the target
    over: int | None = None  # the lowest quality measured over it
    q = min(max(int(first), lo), hi)
    while True:
        r = float(rate(q))
        passes.append((q, r))
        if r <= target:
            under = q if under is None else max(under, q)
        else:
            over = q if over is None else min(over, q)
        if r > target and q == lo and over == lo:
            return passes, "over"
        if r <= target and q == hi and under == hi:
            return passes, "under"
        # done when no other quality can be closer: a neighbour is a step away (the local slope, in ln), so one
        # within half a step of the target is the closest (and within ``stop_within`` is close enough anyway)
        miss = abs(math.log(r / target)) if r > 0 else math.inf
        local = _secant(passes, target) or step
        if (miss <= max(math.log1p(stop_within), local / 2) and abs(r / target - 1) <= TOLERANCE) \
                or len(passes) >= max_passes or (under is not None and over is not None and over - under <= 1):
            return passes, "ok"
        low = lo if under is None else under + 1
        high = hi if over is None else over - 1
        if low > high:  # (only if the rate is not monotonic after all)
            return passes, "ok"
        if under is not None and over is not None:
            # interpolate ln(rate) between the bracket's ends (regula falsi); the start-up bytes make ln(rate)
            # convex in quality, so one end tends to stay put: each pass on the same side as the one before
            # halves the weight of the end that stays (the Illinois rule), so the bracket keeps shrinking
            rates = dict(passes)
            fu = math.log(max(rates[under], 1e-9) / target)  # <= 0
            fo = math.log(rates[over] / target)  # > 0
            side = [p[1] > target for p in passes]
            same = next((i for i in range(1, len(side)) if side[-1 - i] != side[-1]), len(side)) - 1
            if side[-1]:
                fu /= 2 ** same
            else:
                fo /= 2 ** same
            nq = round(under + (over - under) * -fu / (fo - fu))
        else:  # one side known: extrapolate by the measured slope (the table's until there are two passes)
            measured = _secant(passes, target)
            if measured is not None and measured < step / 2:
                # flat here (start-up bytes outweigh the base layer): extrapolating would jump to the range's
                # end, creeping would take many passes; gallop instead, twice the last move each pass
                move = max(2 * abs(q - passes[-2][0]), 1)
                nq = q + (move if r < target else -move)
            else:
                nq = round(q + math.log(target / r) / (measured or step)) if r > 0 else q + 1
        q = min(max(nq, low), high)


def _secant(passes: list[tuple[int, float]], target: float) -> float | None:
    """ln(rate) per quality step between the two passes nearest the target (in log rate) with different
    qualities and a rate that rises with quality; None if there are none."""
    ranked = sorted(passes, key=lambda p: abs(math.log(max(p[1], 1e-9) / target)))
    (q0, r0), rest = ranked[0], ranked[1:]
    for q1, r1 in rest:
        if q1 != q0 and r0 > 0 and r1 > 0:
            s = (math.log(r1) - math.log(r0)) / (q1 - q0)
            if s > 1e-3:
                return s
    return None


def input_duration(path: str, max_frames: int | None = None) -> float | None:
    """Seconds of the first ``max_frames`` frames of the video file ``path`` from its header, or None when it
    does not say (then ``DEFAULT_DURATION_S`` is assumed)."""
    from .io import probe_video

    info = probe_video(path)
    n = min(info.frames, max_frames) if (info.frames and max_frames) else (max_frames or info.frames)
    return n / float(info.fps) if n else None


def _codec_range(codec: str) -> tuple[int, int]:
    from .baselayer import get_base_codec

    return get_base_codec(codec).quality_range


def _codec_default(codec: str) -> int:
    from .baselayer import get_base_codec

    return get_base_codec(codec).default_quality


def closed_loop(points: list[OperatingPoint], target: float, duration_s: float | None,
                rate: Callable[[Family, int], float],
                quality_range: Callable[[str], tuple[int, int]] = _codec_range,
                default_quality: Callable[[str], int] = _codec_default, *, base_codec: str | None = None,
                base_factor: int | None = None, key_quality: int | None = None,
                max_families: int = MAX_FAMILIES,
                key_range: tuple[int, int] | None = None,
                half_rate: bool | None = None) -> tuple[Measured, list[Search]]:
    """(the chosen pass, every family's search): the table's choice of family for ``target`` at ``duration_s``
    (``choose``; ``base_codec``, ``base_factor`` and ``key_quality`` given by the user win), then the base
    quality that gives ``target`` by measuring passes (``rate(family, quality)``: the whole file's real rate).
    When the family's quality range cannot reach the target (its lowest quality is still over it, or its
    highest under it), the next family the table chooses among those with lower (or higher) rates is tried (after a
    half-rate family over the target, a smaller half-rate family once, then the table's full-rate choice), and
    when no quality of it lands within the tolerance, the table's next choice, up to ``max_families``; the chosen
    pass is then the first within the tolerance, else the one closest to the target over all of them.
    ``duration_s`` None: ``DEFAULT_DURATION_S``; the codecs' quality ranges and defaults: the base layer's.
    At the floor (every family tried is over the target at its lowest base quality) and with ``key_range`` (the
    key codec's quality range) and no key quality of the user's, the cheapest separate-key pass found is tried
    with cheaper keys than the table's (``key_floor``). ``half_rate`` True or False keeps the families to
    half-rate or full-rate bases (the user's ``--half-rate``); None lets the table choose."""
    if duration_s is None or duration_s <= 0:
        duration_s = DEFAULT_DURATION_S
    allowed = [p for p in points if (base_codec is None or p.base_codec == base_codec)
               and (base_factor is None or p.base_factor == base_factor)
               and (key_quality is None or (p.key_quality == key_quality and not p.intra_base))
               and (half_rate is None or p.half_rate == half_rate)]
    if not allowed:  # a size or key quality the table lacks: its choice of codec, the user's size and key
        allowed = [p for p in points if (base_codec is None or p.base_codec == base_codec)
                   and (half_rate is None or p.half_rate == half_rate)] \
            or [p for p in points if base_codec is None or p.base_codec == base_codec]
    point = choose(allowed, target, duration_s, base_codec)[0]

    def chosen(p: OperatingPoint) -> Family:
        f = family_of(p, base_factor, key_quality)
        return f if half_rate is None else replace(f, half_rate=half_rate)

    family = chosen(point)
    searches: list[Search] = []
    tried: set[Family] = set()
    while True:
        tried.add(family)
        codec = family.base_codec
        qr = quality_range(codec)
        step = table_step(points, family, duration_s)
        first = first_guess(points, family, target, duration_s, qr, default_quality(codec))
        passes, reach = search_quality(lambda q: rate(family, q), target, qr, first, step)
        searches.append(Search([Measured(family, q, r) for q, r in passes], reach))
        if within(searches[-1].best(target).kbps, target) or len(searches) >= max_families:
            break
        # the rates the table expects of each family at its codec's lowest and highest quality (extrapolated from
        # its points by its slope: a 1/4 family measured from quality 9 up may still go lower than a 1/2 one)
        def span(f: Family) -> tuple[float, float]:
            mine = [p for p in allowed if chosen(p) == f]
            if not mine:
                return math.inf, -math.inf
            flo, fhi = quality_range(f.base_codec)
            k = table_step(points, f, duration_s)
            low = min(mine, key=lambda p: p.base_quality)
            high = max(mine, key=lambda p: p.base_quality)
            return (low.kbps(duration_s) * math.exp(-k * (low.base_quality - flo)),
                    high.kbps(duration_s) * math.exp(k * (fhi - high.base_quality)))

        now = span(family)
        floor_over = [s.passes[0].family for s in searches if s.reach == "over"]
        untried = [p for p in allowed if chosen(p) not in tried and not _cannot_land(chosen(p), floor_over)]
        if reach == "over" and family.half_rate and half_rate is None and all(f.half_rate for f in tried):
            # a half-rate base over the target at its floor: first a smaller half-rate base, once (a half-rate
            # 1/4 base that fits is up to 3 dB better than a full-rate one at its floor: sadtalker at 5 kbit/s,
            # benchmarks/results/2026-12-05-kbps-fallback/); then, as on fast motion a half-rate base costs more
            # than the table's clips said (frames 2 apart predict worse), the table's choice among the full-rate
            # points
            smaller = [p for p in untried if p.half_rate and p.base_factor > max(f.base_factor for f in tried)
                       and span(chosen(p))[0] < now[0]]
            others = smaller or [p for p in untried if not p.half_rate]
        elif reach == "over":
            others = [p for p in untried if span(chosen(p))[0] < now[0]]
        elif reach == "under":
            others = [p for p in untried if span(chosen(p))[1] > now[1]]
        else:  # in range, but no quality lands within the tolerance (coarse steps here): the table's next family
            others = untried
        if not others:
            break
        family = chosen(choose(others, target, duration_s)[0])
    if key_range is not None and key_quality is None:
        more = key_floor(searches, target, rate, key_range, quality_range)
        if more is not None:
            searches.append(more)
    for s in searches:  # the first family (in the table's order) within the tolerance wins; else the closest
        if within(s.best(target).kbps, target):
            return s.best(target), searches
    return closest([m for s in searches for m in s.passes], target), searches


def _cannot_land(f: Family, floor_over: list[Family]) -> bool:
    """Whether family ``f`` is one of ``floor_over`` (families measured over the target at their lowest base
    quality) with a key no cheaper: the same base layer (codec, size, rate) makes the same bytes whatever the
    key, so a dearer key cannot bring it under. Why: the table may rank such a family next (its clips said it was
    cheaper), and measuring it spends one of the loop's few families on a pass that cannot land (foreman at
    8 kbit/s: half-rate VP9 1/2 with key 11 after the same base with key 6 was over;
    benchmarks/results/2026-12-05-kbps-fallback/)."""
    return not f.intra_base and any(
        not o.intra_base and (o.base_codec, o.base_factor, o.half_rate) == (f.base_codec, f.base_factor, f.half_rate)
        and o.key_quality <= f.key_quality for o in floor_over)


def key_floor(searches: list[Search], target: float, rate: Callable[[Family, int], float],
              key_range: tuple[int, int], quality_range: Callable[[str], tuple[int, int]] = _codec_range
              ) -> Search | None:
    """Below the table: when no pass of ``searches`` is within the tolerance and the cheapest pass is still over
    the target at its codec's lowest base quality, the search over the *key* quality (below the family's) of the
    cheapest such pass with a separate key, its base quality kept; None when there is none to try. Why: the key
    is 20-40 % of a short clip's bytes at the lowest points, so a cheaper key is what is left to give when the
    base layer is at its floor (benchmarks/results/2026-12-04-v5-lean-intra-enh-wide-2879624b/NOTES.md: such
    points sit under the conventional hull, which is why the table does not hold them; a user who asks for the
    rate gets it)."""
    everything = [m for s in searches for m in s.passes]
    if not everything or any(within(s.best(target).kbps, target) for s in searches) \
            or min(m.kbps for m in everything) <= target:
        return None
    floor = [m for m in everything if not m.family.intra_base
             and m.base_quality == quality_range(m.family.base_codec)[0] and m.family.key_quality > key_range[0]]
    if not floor:
        return None
    low = min(floor, key=lambda m: m.kbps)
    f = low.family
    first = round(f.key_quality + math.log(target / low.kbps) / DEFAULT_STEP)
    passes, reach = search_quality(lambda k: rate(replace(f, key_quality=k), low.base_quality), target,
                                   (key_range[0], f.key_quality - 1), first)
    return Search([Measured(replace(f, key_quality=k), low.base_quality, r) for k, r in passes], reach)


# ---------------------------------------------------------------------------------------------------------------
# Comparing families by what the decoder shows (issue 23, item 4). The table ranks families by their mean quality
# over its clips; on one clip another family can be better by tenths of a dB, and by dB where the table's first
# choice misses and the loop falls back (benchmarks/results/2026-12-04-kbps-compare/NOTES.md). The encoder has the
# decoder's networks and the source, so it can land the target with each kind of base (half- and full-rate, 1/2 and
# 1/4 size) and keep the one whose decoded frames are best.

#: the kinds of base compared: (half-rate, base factor); the user's --half-rate/--full-rate and --base-scale narrow it
COMPARED = ((True, 2), (False, 2), (True, 4), (False, 4))
DEFAULT_SLOPE = 3.0  # dB per ln(rate) when the table cannot say


@dataclass(frozen=True)
class Compared:
    """A landing compared: its pass, the mean PSNR of the frames the decoder shows, and its score (that PSNR moved
    to the target along the table's slope, so a landing 4 % over the target does not win by its extra bytes)."""

    measured: Measured
    psnr: float
    score: float


def rd_slope(points: list[OperatingPoint], target: float, duration_s: float) -> float:
    """dB per ln(rate) of the table's frontier (its points that beat every cheaper one) around ``target`` at
    ``duration_s``, within [1, 10]; ``DEFAULT_SLOPE`` when the frontier has fewer than two points."""
    front: list[OperatingPoint] = []
    for p in sorted(points, key=lambda p: (p.kbps(duration_s), -p.psnr)):
        if not front or p.psnr > front[-1].psnr:
            front.append(p)
    if len(front) < 2:
        return DEFAULT_SLOPE
    i = next((i for i, p in enumerate(front) if p.kbps(duration_s) > target), len(front))
    a, b = front[min(max(i - 1, 0), len(front) - 2)], front[min(max(i, 1), len(front) - 1)]
    slope = (b.psnr - a.psnr) / math.log(b.kbps(duration_s) / a.kbps(duration_s))
    return min(max(slope, 1.0), 10.0)


def compare_families(points: list[OperatingPoint], target: float, duration_s: float | None,
                     rate: Callable[[Family, int], float], quality: Callable[[Family, int], float],
                     quality_range: Callable[[str], tuple[int, int]] = _codec_range,
                     default_quality: Callable[[str], int] = _codec_default, *, base_codec: str | None = None,
                     base_factor: int | None = None, key_quality: int | None = None,
                     key_range: tuple[int, int] | None = None, half_rate: bool | None = None
                     ) -> tuple[Measured, list[Search], list[Compared]]:
    """``closed_loop`` (the table's choice), then the closed loop kept to each kind of base of ``COMPARED`` that the
    user left open (``half_rate``, ``base_factor``): every distinct pass within the tolerance is decoded
    (``quality(family, base_quality)``: the mean PSNR of the frames shown) and the best score wins (``Compared``;
    the table's choice on a tie). Returns (the chosen pass, every search, the landings compared: empty when fewer
    than two landed; then the one that landed is chosen, else the table's choice stands). ``rate`` is called once
    per (family, quality)."""
    known: dict[tuple[Family, int], float] = {}

    def measured(f: Family, q: int) -> float:
        if (f, q) not in known:
            known[(f, q)] = rate(f, q)
        return known[(f, q)]

    args = dict(quality_range=quality_range, default_quality=default_quality, base_codec=base_codec,
                key_quality=key_quality, key_range=key_range)
    best, searches = closed_loop(points, target, duration_s, measured, base_factor=base_factor, half_rate=half_rate,
                                 **args)
    landed = {(best.family, best.base_quality): best} if within(best.kbps, target) else {}
    for half, factor in COMPARED:
        if (half_rate is not None and half != half_rate) or (base_factor is not None and factor != base_factor):
            continue
        m, more = closed_loop(points, target, duration_s, measured, base_factor=factor, half_rate=half, **args)
        searches += more
        if within(m.kbps, target):
            landed.setdefault((m.family, m.base_quality), m)
    if len(landed) < 2:  # nothing to compare; a kind of base that landed where the table's choice did not wins
        return next(iter(landed.values()), best), searches, []
    slope = rd_slope(points, target, DEFAULT_DURATION_S if duration_s is None or duration_s <= 0 else duration_s)
    compared = []
    for m in landed.values():
        db = float(quality(m.family, m.base_quality))
        compared.append(Compared(m, db, db - slope * math.log(m.kbps / target)))
    return max(compared, key=lambda c: c.score).measured, searches, compared


KEEP_FRAMES = 1500  # frames a file's measuring passes keep in memory (about 300 MB at 256x256); longer: re-read


class FileMeter:
    """``rate(family, quality)`` for ``closed_loop``: the whole-file rate in kbit/s of ``settings`` at that point
    on the input file ``path`` (its first ``max_frames``), from the bytes the real encoder makes
    (``api.stream_size``) over the duration the final stream's rate is computed from. Each pass runs the
    hybrid encoder without the guard on the input's frames: decoded once and kept when there are at most
    ``keep`` of them, else decoded again each pass."""

    def __init__(self, path: str, settings, loaded, max_frames: int | None = None, keep: int = KEEP_FRAMES,
                 max_input_pixels: int | None = None) -> None:
        self.path, self.loaded, self.max_frames, self.keep = path, loaded, max_frames, keep
        self.settings = replace(settings, guard=False)
        self.guard = bool(settings.guard)
        self.max_input_pixels = max_input_pixels
        self.frames: list | None = None  # the kept frames, with their fps and timing
        self.fps = None
        self.timing = None
        self.duration_s = 0.0  # of the last pass
        self.seconds = 0.0  # spent measuring
        self.decoded = 0.0  # of which spent decoding (``quality``)

    def _source(self):
        """(frames, fps, timing recorder) of one pass."""
        from .api import MAX_INPUT_PIXELS
        from .io import open_video

        if self.frames is not None:
            return iter(self.frames), self.fps, self.timing
        source = open_video(self.path, self.max_input_pixels or MAX_INPUT_PIXELS)
        frames = source.frames(int(self.loaded.model.config.resolution), max_frames=self.max_frames)
        return self._keeping(frames, source), source.info.fps, source.timing

    def _keeping(self, frames, source):
        kept: list | None = []
        for f in frames:
            if kept is not None:
                kept.append(f)
                if len(kept) > self.keep:
                    kept = None
            yield f
        if kept is not None:
            self.frames, self.fps, self.timing = kept, source.info.fps, source.timing

    def __call__(self, family: Family, quality: int) -> float:
        import time

        from .api import stream_size

        t0 = time.perf_counter()
        settings = family.settings(self.settings, quality)
        frames, fps, timing = self._source()
        size, _, seconds = stream_size(frames, fps=fps, model=self.loaded, settings=settings, timing=timing,
                                       enhancer_switch=self.guard)
        self.duration_s = seconds
        self.seconds += time.perf_counter() - t0
        return size * 8 / seconds / 1000.0

    def quality(self, family: Family, quality: int) -> float:
        """The mean PSNR (dB) of the frames the decoder shows from the stream this point makes (written to a
        temporary file, with the guard as the final encode has it) against the input's frames at the model's
        resolution: what ``compare_families`` ranks by. The input is read again when its frames are not kept."""
        import tempfile
        import time
        from pathlib import Path

        import numpy as np

        from .api import encode_frames_to_file, iter_decoded
        from .metrics import psnr

        t0 = time.perf_counter()
        settings = replace(family.settings(self.settings, quality), guard=self.guard).validated()
        with tempfile.TemporaryDirectory(prefix="imfcodec-kbps-") as tmp:
            path = Path(tmp) / "compare.imf"
            frames, fps, timing = self._source()
            encode_frames_to_file(frames, path, fps=fps, model=self.loaded, settings=settings, timing=timing)
            t1 = time.perf_counter()
            source = self._source()[0]
            values = [psnr(a[None], b[None]) for a, b in zip(source, (f for _, out in iter_decoded(path, model=self.loaded)
                                                                      for f in out))]
        self.decoded += time.perf_counter() - t1
        self.seconds += time.perf_counter() - t0
        return float(np.mean(values))
