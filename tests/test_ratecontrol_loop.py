"""--kbps on a file: the closed loop (the search over a base quality, the family fallback, the measuring passes'
byte count) and its end-to-end promise: the written file's rate within +-5 % of the target when it is reachable."""

from __future__ import annotations

import json
import math
from fractions import Fraction

import pytest
from click.testing import CliRunner
from helpers import cli, timed_clip

from imfcodec.ratecontrol import (
    MAX_PASSES,
    TOLERANCE,
    Family,
    Measured,
    OperatingPoint,
    closed_loop,
    closest,
    first_guess,
    save_table,
    search_quality,
    table_step,
    within,
)

ENH = "random:enh-tiny"


def _rate(base: float, step: float = 0.055, startup: float = 0.0):
    """A monotone synthetic rate: ``base`` at quality 0, ``step`` more (in ln) per quality, plus a constant."""
    calls: list[int] = []

    def rate(q: int) -> float:
        calls.append(q)
        return base * math.exp(step * q) + startup

    rate.calls = calls  # type: ignore[attr-defined]
    return rate


def _brute_closest(rate, target, lo, hi) -> int:
    return min(range(lo, hi + 1), key=lambda q: (abs(rate(q) - target), rate(q) > target))


@pytest.mark.parametrize("target", [4.0, 5.3, 8.0, 12.0, 20.0, 47.0, 90.0])
@pytest.mark.parametrize("first", [0, 8, 30, 63])
@pytest.mark.parametrize("table_step_", [0.02, 0.055, 0.12])  # the table's slope right, too small, too large
def test_the_search_hits_within_the_tolerance_in_few_passes(target, first, table_step_):
    rate = _rate(3.0)
    passes, reach = search_quality(rate, target, (0, 63), first, table_step_)
    q, r = min(passes, key=lambda p: (abs(p[1] - target), p[1] > target))
    assert reach == "ok" and within(r, target)
    assert len(passes) == len(set(q for q, _ in passes)) <= 7  # never the same quality twice
    assert q == _brute_closest(rate, target, 0, 63)  # 5.5 % steps: the closest quality of the whole range


def test_a_good_first_guess_needs_two_or_three_passes():
    rate = _rate(3.0, 0.06)
    for target in (5.0, 8.0, 12.0, 20.0):
        true_q = math.log(target / 3.0) / 0.06
        passes, _ = search_quality(rate, target, (0, 63), round(true_q) + 3, 0.055)
        assert len(passes) <= 3, passes


def test_a_flat_start_then_a_steep_rise_still_converges():
    """Start-up bytes dominate at low qualities (the slope there is far below the table's), the base layer at high
    ones: the search neither jumps to the range's end nor stalls on one side of the bracket."""
    rate = _rate(0.05, 0.13, startup=5.0)
    for target in (6.0, 8.0, 15.0, 40.0):
        passes, reach = search_quality(rate, target, (0, 51), 0, 0.055)
        q, r = min(passes, key=lambda p: abs(p[1] - target))
        assert reach == "ok" and q == _brute_closest(rate, target, 0, 51) and len(passes) <= 9, passes


def test_the_range_ends_clamp_and_say_so():
    rate = _rate(3.0)
    passes, reach = search_quality(rate, 2.0, (0, 63), 10, 0.055)
    assert reach == "over" and passes[-1][0] == 0 and len(passes) <= 3
    passes, reach = search_quality(rate, 1e4, (0, 63), 10, 0.055)
    assert reach == "under" and passes[-1][0] == 63 and len(passes) <= 3
    with pytest.raises(Exception, match="--kbps must be > 0"):
        search_quality(rate, 0.0, (0, 63), 10)


def test_a_rate_that_is_not_monotonic_ends_too():
    rates = {q: 10.0 + (3.0 if q % 2 else -3.0) for q in range(64)}  # noise, no trend
    passes, _ = search_quality(rates.__getitem__, 10.0, (0, 63), 20, 0.055, max_passes=10)
    assert 1 <= len(passes) <= 10


def test_the_closest_pass_wins_and_a_tie_goes_under():
    f = Family("vp9", 2, 16)
    a, b, c = Measured(f, 8, 9.5), Measured(f, 9, 10.5), Measured(f, 10, 11.2)
    assert closest([c, b, a], 10.0) == a  # equally close: under the target
    assert closest([a, b, c], 10.4) == b
    assert within(10.5, 10.0) and not within(10.51, 10.0) and TOLERANCE == 0.05


def _p(codec, factor, bq, kq, steady, startup, psnr):
    return OperatingPoint(factor, bq, kq, steady, startup, psnr, psnr - 2, codec)


# a table like the shipped one: two sizes, two key qualities, three base qualities each
TABLE = [_p("vp9", f, q, kq, steady * 1.06 ** q, startup, psnr + 0.1 * q + 0.02 * kq)
         for f, steady, startup, psnr in ((2, 6.0, 1400.0, 27.5), (4, 4.3, 1100.0, 25.8))
         for kq in (6, 16) for q in (0, 8, 16)]


def test_the_tables_slope_and_first_guess():
    f = Family("vp9", 2, 16)
    step = table_step(TABLE, f, 10.0)
    assert 0.03 < step < math.log(1.06)  # start-up bytes make the whole file's rate flatter than the steady one
    assert table_step(TABLE, Family("hevc", 2, 16), 10.0) == pytest.approx(0.055)  # not in the table
    assert table_step(TABLE, Family("vp9", 2, 11), 10.0) > 0  # the nearest key quality's slope
    q = first_guess(TABLE, f, 12.0, 10.0, (0, 63), 8)
    mine = {p.base_quality: p.kbps(10.0) for p in TABLE if (p.base_factor, p.key_quality) == (2, 16)}
    assert mine[8] < 12.0 < mine[16] and 8 < q < 16
    assert first_guess(TABLE, Family("vp9", 1, 16), 12.0, 10.0, (0, 63), 8) == 8  # no point: the codec's default
    assert first_guess(TABLE, f, 1e6, 10.0, (0, 63), 8) == 63  # clamped


def _family_rates(scale: dict[int, float]):
    """rate(family, q) of a synthetic clip: the table's point rates times ``scale[base_factor]``, extended to every
    quality (a clip that is more or less expensive than the training clips)."""
    log: list[tuple[Family, int]] = []

    def rate(f: Family, q: int) -> float:
        log.append((f, q))
        steady = (6.0 if f.base_factor == 2 else 4.3) * 1.06 ** q
        startup = (1400.0 if f.base_factor == 2 else 1100.0) + (900.0 if f.key_quality == 16 else 0.0)
        return scale[f.base_factor] * (steady + startup * 8 / 10.0 / 1000)

    rate.log = log  # type: ignore[attr-defined]
    return rate


def _loop(target, rate, **kw):
    return closed_loop(TABLE, target, 10.0, rate, lambda c: (0, 63), lambda c: 8, **kw)


def test_the_loop_keeps_the_tables_family_and_finds_the_quality():
    rate = _family_rates({2: 1.3, 4: 1.3})  # a clip 30 % dearer than the table says
    best, searches = _loop(12.0, rate)
    assert within(best.kbps, 12.0) and len(searches) == 1 and len(searches[0].passes) <= 4
    # the table's choice for 12 kbit/s: its best-quality point within the rate
    assert best.family == Family("vp9", 2, 16)


def test_the_loop_tries_the_neighbouring_family_when_the_range_cannot_reach():
    rate = _family_rates({2: 2.0, 4: 1.0})  # the table picks 1/2 for 8 kbit/s, where this clip is twice as dear
    best, searches = _loop(8.0, rate)
    assert searches[0].passes[0].family.base_factor == 2 and searches[0].reach == "over" and len(searches) >= 2
    assert within(best.kbps, 8.0) and best.family.base_factor == 4
    # the user's size wins: no other size is tried, and the closest pass is reported honestly
    best, searches = _loop(8.0, _family_rates({2: 2.0, 4: 1.0}), base_factor=2)
    assert all(s.passes[0].family.base_factor == 2 for s in searches)
    assert not within(best.kbps, 8.0) and best.base_quality == 0
    assert best == closest([m for s in searches for m in s.passes], 8.0)


def test_nothing_reaches_gives_the_closest_of_all():
    best, searches = _loop(0.5, _family_rates({2: 1.0, 4: 1.0}))
    assert {s.reach for s in searches} == {"over"} and best.base_quality == 0 and best.family.base_factor == 4
    best, searches = _loop(1e4, _family_rates({2: 1.0, 4: 1.0}))
    assert {s.reach for s in searches} == {"under"} and best.base_quality == 63


def test_at_the_floor_a_cheaper_key_than_the_tables_buys_the_rest():
    """Every family over the target at its lowest base quality: with the key codec's range the loop lowers the key
    quality of the cheapest separate-key pass (base quality kept) until the rate is within the tolerance; without
    the range, or with the user's key quality, it does not and says the closest."""
    def rate(f: Family, q: int) -> float:  # a short clip: the key is a third of the bytes at the floor
        return (6.0 if f.base_factor == 2 else 4.3) * 1.06 ** q + 0.6 * 1.1 ** f.key_quality

    floor = min(rate(Family("vp9", 4, kq), 0) for kq in (6, 16))
    target = floor * 0.93
    best, searches = _loop(target, rate, key_range=(0, 51))
    assert within(best.kbps, target) and best.base_quality == 0 and best.family.key_quality < 6
    assert best.family.base_factor == 4 and searches[-1].passes[0].family.key_quality < 6
    assert all(m.base_quality == 0 for m in searches[-1].passes)
    plain, _ = _loop(target, rate)
    assert not within(plain.kbps, target) and plain.family.key_quality == 6
    mine, searches = _loop(target, rate, key_range=(0, 51), key_quality=6)
    assert mine.family.key_quality == 6 and all(m.family.key_quality == 6 for s in searches for m in s.passes)
    # within reach of the base layer, the key stays the table's
    best, searches = _loop(floor * 1.5, rate, key_range=(0, 51))
    assert within(best.kbps, floor * 1.5) and best.family.key_quality in (6, 16)


# ------------------------------------------------------------------------------------------ real passes


def test_a_measuring_pass_counts_the_bytes_of_the_file(tmp_path, enh_tiny):
    """``api.stream_size`` without the guard counts exactly the file the guarded encoder writes: the guard changes
    only the value of the header's flags byte (a version 5 stream has one either way), with timing records too."""
    from imfcodec.api import encode_video, stream_size
    from imfcodec.io import open_video
    from imfcodec.settings import EncoderSettings

    clip = tmp_path / "s.mp4"
    assert cli("sample", clip, "--frames", 30, "--size", 64).exit_code == 0
    vfr = timed_clip(tmp_path / "vfr.mkv", [0, 40, 60, 200, 210, 400, 440], Fraction(1, 1000), 60)
    for src in (clip, vfr):
        sizes = {}
        for guard in (True, False):
            s = encode_video(src, tmp_path / f"{guard}.imf", model=enh_tiny, overwrite=True,
                             settings=EncoderSettings(base_quality=20, guard=guard))
            sizes[guard] = (s.bytes, s.duration_s, s.kbps)
        assert sizes[True][0] == sizes[False][0]  # version 5 either way: the flags byte differs in value only
        with open_video(src) as source:
            measured = stream_size(source.frames(64), fps=source.info.fps, model=enh_tiny,
                                   settings=EncoderSettings(base_quality=20, guard=False), timing=source.timing,
                                   enhancer_switch=True)
        assert measured[0] == sizes[True][0] and measured[2] == pytest.approx(sizes[True][1])


def _table_file(tmp_path, monkeypatch):
    import imfcodec.ratecontrol as rc

    path = tmp_path / "enh-tiny-points.json"
    save_table(TABLE, path, {"enhancer": "enh-tiny@test"})
    monkeypatch.setattr(rc, "table_path", lambda name: path)
    return path


@pytest.mark.parametrize("fps", [24, 25, 60])
def test_kbps_hits_its_target_on_short_clips(tmp_path, monkeypatch, fps):
    _table_file(tmp_path, monkeypatch)
    clip = tmp_path / "s.mp4"
    assert cli("sample", clip, "--frames", 2 * fps, "--size", 64, "--fps", fps).exit_code == 0
    out = tmp_path / "k.imf"
    for target in (12, 30):
        r = cli("encode", clip, "-o", out, "--enhancer", ENH, "--kbps", target, "-y")
        assert r.exit_code == 0, r.output
        info = json.loads(cli("info", out, "--json").stdout)
        assert abs(info["kbps"] / target - 1) <= TOLERANCE, (target, info["kbps"], r.stderr)
        lines = [x for x in r.stderr.splitlines() if x.startswith("rate control: ")]
        passes = [x for x in lines if x.startswith("rate control: pass ")]
        # the table's family, then the loop on each of the four kinds of base (--kbps-compare), none measured twice
        assert lines[0].startswith("rate control: pass 1: base vp9 ") and 2 <= len(passes) <= 4 * MAX_PASSES, r.stderr
        assert len({x.split(": ", 2)[2].split(" -> ")[0] for x in passes}) == len(passes)
        assert f"rate control: target {target} kbit/s -> " in lines[-1] and "within +-5%" in lines[-1]
        assert f"{info['kbps']:.2f} kbit/s" in lines[-1]  # the measured rate is the file's
        assert f"(target {target} kbit/s, " in r.stderr and "warning" not in r.stderr


def test_an_unreachable_target_says_so(tmp_path, monkeypatch):
    _table_file(tmp_path, monkeypatch)
    clip = tmp_path / "s.mp4"
    assert cli("sample", clip, "--frames", 50, "--size", 64).exit_code == 0
    r = cli("encode", clip, "-o", tmp_path / "k.imf", "--enhancer", ENH, "--kbps", 0.5)
    assert r.exit_code == 0, r.output
    assert "NOT within +-5%" in r.stderr and "base vp9 1/4 q0" in r.stderr
    assert "warning: --kbps 0.5 cannot be met: the stream is" in r.stderr
    assert "even the lowest base quality" in r.stderr


def test_a_pipe_keeps_the_tables_estimate_and_says_so(tmp_path, monkeypatch):
    from imfcodec.cli import main

    _table_file(tmp_path, monkeypatch)
    clip = tmp_path / "s.y4m"
    assert cli("sample", clip, "--frames", 10, "--size", 64).exit_code == 0
    out = tmp_path / "k.imf"
    r = CliRunner().invoke(main, ["encode", "-", "-o", str(out), "--enhancer", ENH, "--kbps", "12"],
                           input=clip.read_bytes(), catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert "the table's estimate, not a guarantee" in r.stderr and "pass 1" not in r.stderr


def test_half_rate_points_are_a_family_of_their_own():
    """A half-rate table point gives a half-rate family (its settings say so); ``half_rate`` keeps the loop to
    one kind or the other; the RD ladder's ``h:`` entries are half-rate points."""
    from dataclasses import replace

    from imfcodec.settings import EncoderSettings

    half = [replace(p, half_rate=True, steady_kbps=p.steady_kbps * 0.6) for p in TABLE if p.base_factor == 4]
    table = TABLE + half
    seen: list[Family] = []

    def rate(f: Family, q: int) -> float:
        seen.append(f)
        return (3.0 if f.half_rate else 4.3) * 1.06 ** q + 1.0

    best, _ = closed_loop(table, 5.0, 10.0, rate, lambda c: (0, 63), lambda c: 8, half_rate=True)
    assert best.family.half_rate and all(f.half_rate for f in seen)
    assert best.family.settings(EncoderSettings(), best.base_quality).validated().half_rate
    seen.clear()
    best, _ = closed_loop(table, 5.0, 10.0, rate, lambda c: (0, 63), lambda c: 8, half_rate=False)
    assert not any(f.half_rate for f in seen)
    assert "half-rate" in Family("vp9", 4, 6, half_rate=True).describe(0)
    from benchmarks.rd import plan_points

    (p,) = plan_points("hybrid", quick=False, ladder=["h:vp9:4:0:6"], key_codec="hevc")
    assert p.half_rate and p.base_codec == "vp9" and p.name == "h-vp9-x4-b0-hevc6"


def test_kbps_takes_half_rate_points_where_the_table_says_they_pay(tmp_path, monkeypatch):
    """A table whose points are better half-rate: a file, a file whose frames have their own times (kept: timing
    records count the frames shown) and a pipe all get a half-rate stream, within the tolerance for the file."""
    from dataclasses import replace

    from imfcodec.cli import main
    import imfcodec.ratecontrol as rc

    path = tmp_path / "enh-tiny-points.json"
    half = [replace(p, half_rate=True, steady_kbps=p.steady_kbps * 0.6, psnr=p.psnr + 1) for p in TABLE]
    save_table(TABLE + half, path, {"enhancer": "enh-tiny@test"})
    monkeypatch.setattr(rc, "table_path", lambda name: path)
    clip = tmp_path / "s.mp4"
    assert cli("sample", clip, "--frames", 50, "--size", 64).exit_code == 0
    vfr = timed_clip(tmp_path / "vfr.mkv", [0, 40, 60, 200, 210, 400, 440, 480, 500], Fraction(1, 1000), 60)
    for src in (clip, vfr):
        out = tmp_path / f"{src.stem}.imf"
        r = cli("encode", src, "-o", out, "--enhancer", ENH, "--kbps", 8)
        assert r.exit_code == 0, r.output
        info = json.loads(cli("info", out, "--json").stdout)
        assert info["half_rate"] and " half-rate, " in r.stderr, r.stderr
        assert info["timing"] == ("per-frame" if src == vfr else "constant")
    assert abs(json.loads(cli("info", tmp_path / "s.imf", "--json").stdout)["kbps"] / 8 - 1) <= TOLERANCE
    out = tmp_path / "pipe.imf"
    r = CliRunner().invoke(main, ["encode", "-", "-o", str(out), "--enhancer", ENH, "--kbps", "8"],
                           input=clip.read_bytes(), catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert json.loads(cli("info", out, "--json").stdout)["half_rate"] is True


def test_after_a_half_rate_family_over_its_floor_the_full_rate_choice_comes_next():
    """Fast motion can make a half-rate base dearer than the table's clips said: over the target at its lowest
    quality, the loop tries one smaller half-rate family, then the table's full-rate family, not only cheaper
    half-rate ones."""
    from dataclasses import replace

    half = [replace(p, half_rate=True, steady_kbps=p.steady_kbps * 0.5) for p in TABLE]

    def rate(f: Family, q: int) -> float:  # this clip: half-rate costs more than full-rate
        return (9.0 if f.half_rate else 4.0) * 1.06 ** q + (0.5 if f.key_quality == 16 else 0.0)

    best, searches = closed_loop(TABLE + half, 5.0, 10.0, rate, lambda c: (0, 63), lambda c: 8)
    assert searches[0].passes[0].family.half_rate and searches[0].reach == "over"
    assert not best.family.half_rate and within(best.kbps, 5.0)
    first, second, third = (s.passes[0].family for s in searches[:3])
    assert second.half_rate and second.base_factor > first.base_factor and searches[1].reach == "over"
    assert not third.half_rate  # then the table's full-rate choice


def test_after_a_half_rate_family_over_its_floor_a_smaller_one_that_fits_is_kept():
    """The half-rate 1/2 base over the target at its floor, a half-rate 1/4 base that lands is kept, not the
    full-rate fallback (on two sadtalker clips at 5 kbit/s the full-rate one was 3 dB worse)."""
    from dataclasses import replace

    half = [replace(p, half_rate=True, steady_kbps=p.steady_kbps * 0.5) for p in TABLE]

    def rate(f: Family, q: int) -> float:  # this clip: half-rate 1/2 is over at its floor, 1/4 is not
        return (3.0 if f.base_factor == 4 else 9.0) * 1.06 ** q

    best, searches = closed_loop(TABLE + half, 5.0, 10.0, rate, lambda c: (0, 63), lambda c: 8)
    assert searches[0].passes[0].family.half_rate and searches[0].passes[0].family.base_factor == 2
    assert searches[0].reach == "over"
    assert best.family.half_rate and best.family.base_factor == 4 and within(best.kbps, 5.0)
    assert len(searches) == 2


def test_a_base_over_its_floor_is_not_measured_again_with_a_dearer_key():
    """A family whose base layer was over the target at its lowest quality cannot land with a dearer key (the
    base makes the same bytes), so the loop spends its families elsewhere: here the half-rate base at 1/2 with key
    6 is over, and its key-16 twin, which the table ranks next, is never measured."""
    from dataclasses import replace

    from imfcodec.ratecontrol import _cannot_land

    over = [Family("vp9", 2, 6, half_rate=True)]
    assert _cannot_land(Family("vp9", 2, 16, half_rate=True), over)
    assert _cannot_land(Family("vp9", 2, 6, half_rate=True), over)
    assert not _cannot_land(Family("vp9", 2, 3, half_rate=True), over)  # a cheaper key may still land
    assert not _cannot_land(Family("vp9", 2, 16), over)  # another base layer (full-rate)
    assert not _cannot_land(Family("vp9", 4, 16, half_rate=True), over)
    assert not _cannot_land(Family("vp9", 2, 16, intra_base=True, half_rate=True), over)  # no separate key

    # the table: the half-rate key-6 family is dearest at its floor, its key-16 twin the table's next choice
    half = [replace(p, half_rate=True, steady_kbps=p.steady_kbps * 0.5, psnr=p.psnr + (1 if p.key_quality == 6
            else 0.5)) for p in TABLE if p.base_factor == 2]

    def rate(f: Family, q: int) -> float:  # this clip: every half-rate base is far over; full-rate 1/4 fits
        if f.half_rate:
            return 30.0 * 1.06 ** q + (1.0 if f.key_quality == 16 else 0.0)
        return (12.0 if f.base_factor == 2 else 3.0) * 1.06 ** q

    best, searches = closed_loop(TABLE + half, 8.0, 10.0, rate, lambda c: (0, 63), lambda c: 8)
    families = [s.passes[0].family for s in searches]
    assert families[0] == Family("vp9", 2, 6, half_rate=True) and searches[0].reach == "over", families
    assert Family("vp9", 2, 16, half_rate=True) not in families, families
    assert within(best.kbps, 8.0) and best.family.base_factor == 4 and not best.family.half_rate, families


def test_coarse_steps_in_range_move_on_to_the_tables_next_family():
    """A family whose neighbouring qualities straddle the target, neither within the tolerance: the table's next
    family is measured, and the first pass within the tolerance is the answer."""
    def rate(f: Family, q: int) -> float:
        if f.base_factor == 2:  # 40 % per step: nothing lands within 5 %
            return 4.0 * 1.4 ** q
        return 4.3 * 1.06 ** q

    best, searches = closed_loop(TABLE, 12.0, 10.0, rate, lambda c: (0, 63), lambda c: 8)
    assert searches[0].passes[0].family.base_factor == 2 and len(searches) >= 2
    assert within(best.kbps, 12.0) and best.family.base_factor == 4


def _kinds_table():
    """TABLE with half-rate twins (60 % of the steady rate, a little better): four kinds of base to compare."""
    from dataclasses import replace

    return TABLE + [replace(p, half_rate=True, steady_kbps=p.steady_kbps * 0.6, psnr=p.psnr + 0.3) for p in TABLE]


def _kind_rate(f: Family, q: int) -> float:
    return (0.6 if f.half_rate else 1.0) * (6.0 if f.base_factor == 2 else 4.3) * 1.06 ** q + 1.0


def test_compare_families_keeps_the_landing_the_decoder_shows_best():
    """Each kind of base the user left open is landed within the tolerance; the best decoded PSNR wins, moved to the
    target along the table's slope (extra bytes do not win by themselves); the table's choice wins ties; the user's
    --half-rate / --base-scale narrow what is compared; every (family, quality) is measured once."""
    from imfcodec.ratecontrol import compare_families, rd_slope

    table = _kinds_table()
    calls: list[tuple[Family, int]] = []

    def rate(f, q):
        calls.append((f, q))
        return _kind_rate(f, q)

    def run(quality, **kw):
        calls.clear()
        return compare_families(table, 8.0, 10.0, rate, quality, lambda c: (0, 63), lambda c: 8, **kw)

    table_choice, _ = closed_loop(table, 8.0, 10.0, _kind_rate, lambda c: (0, 63), lambda c: 8)
    best, searches, compared = run(lambda f, q: 30.0 if (not f.half_rate and f.base_factor == 4) else 28.0)
    assert len(calls) == len(set(calls))  # nothing measured twice
    kinds = {(c.measured.family.half_rate, c.measured.family.base_factor) for c in compared}
    assert kinds == {(True, 2), (False, 2), (True, 4), (False, 4)}
    assert all(within(c.measured.kbps, 8.0) for c in compared)
    assert (best.family.half_rate, best.family.base_factor) == (False, 4) and within(best.kbps, 8.0)
    assert compared[0].measured == table_choice  # the table's choice first: it wins ties
    best, _, _ = run(lambda f, q: 28.0)
    assert best == table_choice
    # a landing over the target by 4 % with 0.05 dB more does not win: the slope is worth more than that
    slope = rd_slope(table, 8.0, 10.0)
    assert 1.0 <= slope <= 10.0

    def favours_rate(f, q):
        return 28.0 + slope * math.log(_kind_rate(f, q) / 8.0) - 0.01

    best, _, compared = run(favours_rate)
    assert best == max(compared, key=lambda c: c.score).measured
    assert all(c.score == pytest.approx(28.0 - 0.01) for c in compared) and best == table_choice
    best, _, compared = run(lambda f, q: 28.0, half_rate=True, base_factor=2)
    assert compared == [] and best.family.half_rate and best.family.base_factor == 2  # nothing left to compare
    _, _, compared = run(lambda f, q: 28.0, half_rate=False)
    assert {c.measured.family.half_rate for c in compared} == {False} and len(compared) == 2


    def coarse(f, q):  # only full-rate 1/4 with the cheap key has fine steps: the table's loop lands nowhere
        return _kind_rate(f, q) if (f.half_rate, f.base_factor, f.key_quality) == (False, 4, 6) else 3.0 * 1.5 ** q

    table_choice, _ = closed_loop(table, 12.0, 10.0, coarse, lambda c: (0, 63), lambda c: 8)
    best, _, compared = compare_families(table, 12.0, 10.0, coarse, lambda f, q: 28.0, lambda c: (0, 63),
                                         lambda c: 8)
    assert not within(table_choice.kbps, 12.0) and compared == []
    assert within(best.kbps, 12.0) and (best.family.half_rate, best.family.base_factor) == (False, 4)


def test_kbps_compares_the_decoded_kinds_of_base_and_says_so(tmp_path, monkeypatch):
    """--kbps on a file compares the landed kinds of base by the frames the decoder shows (the PSNR it says is that
    of the file it writes); --kbps-table takes the table's choice alone; either without --kbps is refused."""
    import numpy as np

    from imfcodec.api import iter_decoded
    from imfcodec.io import open_video
    from imfcodec.metrics import psnr
    import imfcodec.ratecontrol as rc

    path = tmp_path / "enh-tiny-points.json"
    save_table(_kinds_table(), path, {"enhancer": "enh-tiny@test"})
    monkeypatch.setattr(rc, "table_path", lambda name: path)
    clip = tmp_path / "s.mp4"
    assert cli("sample", clip, "--frames", 50, "--size", 64).exit_code == 0
    out = tmp_path / "k.imf"
    r = cli("encode", clip, "-o", out, "--enhancer", ENH, "--kbps", 12)
    assert r.exit_code == 0, r.output
    compared = [x for x in r.stderr.splitlines() if x.startswith("rate control: compared: ")]
    assert len(compared) >= 2 and sum(x.endswith(" <- kept") for x in compared) == 1, r.stderr
    kept = next(x for x in compared if x.endswith(" <- kept"))
    info = json.loads(cli("info", out, "--json").stdout)
    assert f"{info['kbps']:.2f} kbit/s" in kept and abs(info["kbps"] / 12 - 1) <= TOLERANCE
    with open_video(clip) as source:
        src = np.stack(list(source.frames(64)))
    shown = np.stack([f for _, o in iter_decoded(out) for f in o])
    db = float(np.mean([psnr(a[None], b[None]) for a, b in zip(src, shown)]))
    assert f"{db:.2f} dB decoded" in kept
    r = cli("encode", clip, "-o", out, "--enhancer", ENH, "--kbps", 12, "--kbps-table", "-y")
    assert r.exit_code == 0 and "compared: " not in r.stderr and "within +-5%" in r.stderr, r.stderr
    r = cli("encode", clip, "-o", out, "--enhancer", ENH, "--kbps-table", "-y")
    assert r.exit_code == 2 and "go with --kbps" in r.output


def test_kbps_compare_benchmark_reports_both_choices(tmp_path, monkeypatch, capsys):
    """benchmarks.kbps_compare: per clip and target the table's choice and the kept landing, each with its real rate
    and decoded PSNR, the change between them, and how many landings were compared."""
    from benchmarks.kbps_compare import main
    import imfcodec.ratecontrol as rc

    path = tmp_path / "enh-tiny-points.json"
    save_table(_kinds_table(), path, {"enhancer": "enh-tiny@test"})
    monkeypatch.setattr(rc, "table_path", lambda name: path)
    clip = tmp_path / "s.mp4"
    assert cli("sample", clip, "--frames", 40, "--size", 64).exit_code == 0
    assert main([str(clip), "--kbps", "10,16", "--enhancer", ENH, "--out", str(tmp_path / "o")]) == 0
    text = (tmp_path / "o" / "kbps-compare.md").read_text()
    rows = [x.split(" | ") for x in text.splitlines() if x.startswith("| s.mp4 ")]
    assert len(rows) == 2 and "points where the table's choice is within the tolerance: mean change " in text
    for r in rows:
        table_db, kept_db, change = float(r[4]), float(r[7]), float(r[8])
        assert change == pytest.approx(kept_db - table_db, abs=0.011) and int(r[9]) >= 2
        assert within(float(r[6]), float(r[1]))
