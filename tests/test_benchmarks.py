"""End-to-end check of the rate-distortion benchmark on a few frames of one shared clip.

One run of ``benchmarks.rd`` (6 frames at 64x64, the seeded tiny model, 2 rate points per codec)
is shared by the tests below; the second run must skip every finished row. A real run gives each
(clip, codec) job a fresh spawned interpreter, for its peak-memory columns; that costs a torch import per
job, so these runs keep the jobs in this process and one test checks the spawned workers.
"""

from __future__ import annotations

import contextlib
import csv
import importlib
import itertools
import json
import math
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction
from pathlib import Path

import pytest

SHARED_TEST = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "talking-heads" / "test"
CLIP = SHARED_TEST / "liveportrait_d12.mp4"
CODECS = ("imfcodec", "hybrid", "hybrid-bicubic", "x264", "x265", "svtav1", "vp9", "repeat")
ANCHOR_CODECS = ("x264", "x265", "svtav1", "vp9")
SCALES = {"1": 64, "0.5": 32, "0.25": 16}  # the default --scales at 64x64 -> coded width

pytestmark = pytest.mark.skipif(not CLIP.is_file(), reason=f"shared clip not found: {CLIP}")


def _args(out: Path) -> list[str]:
    # --refine 0: imfcodec's token search is not the point here (test_refine_points_are_separate_rows)
    return ["--videos", str(CLIP), "--out", str(out), "--frames", "6", "--model", "random:imf-tiny",
            "--enhancer", "random:enh-tiny", "--quick", "--jobs", "2", "--refine", "0"]


@contextlib.contextmanager
def _jobs_in_this_process():
    """benchmarks.rd's jobs run one after another in this process instead of in spawned workers."""
    import benchmarks.memory
    import torch

    threads = torch.get_num_threads()  # a job pins torch's threads to its --threads
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(benchmarks.memory, "job_executor", lambda jobs: ThreadPoolExecutor(max_workers=1))
        mp.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))  # a job sets it if unset
        try:
            yield
        finally:
            torch.set_num_threads(threads)


@pytest.fixture
def jobs_in_this_process():
    with _jobs_in_this_process():
        yield


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    from benchmarks.rd import main

    out = tmp_path_factory.mktemp("rd")
    with _jobs_in_this_process():
        status = main(_args(out))
    rows = list(csv.DictReader(open(out / "rd.csv", newline="")))
    return out, status, rows


@pytest.mark.slow
def test_every_codec_has_rows_from_real_bytes(bench):
    out, status, rows = bench
    assert status == 0
    by_codec = {c: [r for r in rows if r["codec"] == c] for c in CODECS}
    for codec, rs in by_codec.items():
        want = 2 * len(SCALES) if codec in ANCHOR_CODECS else 2  # anchors: 2 quick points per scale
        assert len(rs) == want, f"{codec}: expected {want} quick rate points, got {len(rs)}"
        for r in rs:
            assert int(r["frames"]) == 6 and int(r["size"]) == 64
            assert float(r["kbps"]) > 0 and int(r["bytes"]) > 0
            assert math.isfinite(float(r["psnr"])) and math.isfinite(float(r["psnr_y"]))
            assert 0 < float(r["ssim"]) <= 1
            assert math.isfinite(float(r["enc_fps"])) and math.isfinite(float(r["dec_fps"]))  # both sides timed
            assert float(r["peak_rss_mb"]) >= float(r["base_rss_mb"]) > 0
            # the rate is the size of a file that exists: check it against the file
            stream = out / r["stream"]
            assert stream.is_file()
            duration = int(r["frames"]) / float(r["fps"])
            if codec in ("imfcodec", "repeat", "hybrid", "hybrid-bicubic"):
                assert stream.stat().st_size == int(r["bytes"])
            else:  # anchors: elementary stream <= MP4 file, container kbps = the MP4 file
                assert stream.stat().st_size == int(r["container_bytes"]) > int(r["bytes"])
            assert float(r["kbps"]) == pytest.approx(int(r["bytes"]) * 8 / duration / 1000, rel=1e-4)
            # steady state: the bytes after start-up over the frames after the first
            startup = int(r["startup_bytes"])
            assert 0 < startup <= int(r["bytes"])
            steady = (int(r["bytes"]) - startup) * 8 / ((int(r["frames"]) - 1) / float(r["fps"])) / 1000
            assert float(r["steady_kbps"]) == pytest.approx(steady, rel=1e-4, abs=1e-9)
    assert float(by_codec["imfcodec"][0]["gflops_per_frame"]) > 0
    for r in by_codec["repeat"]:  # one still image: nothing after start-up
        assert float(r["steady_kbps"]) == 0


@pytest.mark.slow
def test_anchor_rows_at_every_scale_are_coded_small(bench):
    """Scaled anchor rows name their scale and coded size, and their MP4 really is that small."""
    import av

    out, _, rows = bench
    for codec in ANCHOR_CODECS:
        for scale, width in SCALES.items():
            rs = [r for r in rows if r["codec"] == codec and float(r["scale"]) == float(scale)]
            assert len(rs) == 2, (codec, scale)
            for r in rs:
                assert r["coded_size"] == f"{width}x{width}"
                assert r["point"].endswith("" if scale == "1" else f"-x{scale}")
                with av.open(str(out / r["stream"])) as f:
                    st = f.streams.video[0]
                    assert (st.codec_context.width, st.codec_context.height) == (width, width)


@pytest.mark.slow
def test_rates_grow_along_each_ladder(bench):
    _, _, rows = bench
    for codec in ("x264", "x265", "svtav1", "vp9", "repeat"):
        rs = [r for r in rows if r["codec"] == codec]
        params = [int(r["param"]) for r in rs]
        kbps = [float(r["kbps"]) for r in rs]
        # anchors: lower CRF = more bits; repeat: higher key quality = more bits
        better = sorted(range(2), key=lambda i: params[i], reverse=(codec != "repeat"))
        assert kbps[better[0]] <= kbps[better[1]], (codec, params, kbps)


@pytest.mark.slow
def test_summary_and_plots(bench):
    out, _, _ = bench
    text = (out / "summary.md").read_text()
    assert "BD-rate" in text and "n/a" in text  # 2 points per curve: BD-rate must be refused, visibly
    for anchor in ("x265 (full size)", "x265-hull", "conventional-hull"):
        assert f"BD-rate against {anchor}" in text
    assert "imfcodec against the hulls at the same rate" in text and "Steady-state view" in text
    assert "VMAF" in text and "LPIPS: skipped" in text
    for codec in CODECS:
        assert f"| {codec} |" in text
    for codec in ANCHOR_CODECS:
        assert f"| {codec}-hull |" in text and f"| {codec} 1/4 |" in text
    for metric in ("psnr", "psnr_y", "ssim", "ms_ssim"):
        png = out / f"rd_{metric}.png"
        assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert list((out / "cache").glob("*.npy")), "the lossless reference must be cached"
    # a picture strip decoded from the kept streams, linked from the summary
    strip = out / "strips" / "liveportrait_d12.png"
    assert strip.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and "(strips/liveportrait_d12.png)" in text


@pytest.mark.slow
def test_second_run_skips_finished_rows(bench, capsys):
    from benchmarks.rd import main

    out, _, rows = bench
    capsys.readouterr()
    assert main(_args(out)) == 0
    printed = capsys.readouterr().out
    assert "0 point(s) to run" in printed and f"{len(rows)} already in" in printed
    again = list(csv.DictReader(open(out / "rd.csv", newline="")))
    assert len(again) == len(rows)


@pytest.mark.slow
def test_jobs_run_in_fresh_spawned_workers(tmp_path):
    """A real run (the other tests keep the jobs in this process): a (clip, codec) job in a spawned
    interpreter of its own, so its memory baseline is a bare interpreter's, not this process's. imfcodec's
    job: the one that loads torch and a model in the worker."""
    from benchmarks.memory import peak_rss_mb
    from benchmarks.rd import main

    out = tmp_path / "w"
    assert main(["--videos", str(CLIP), "--out", str(out), "--frames", "2", "--model", "random:imf-tiny",
                 "--codecs", "imfcodec", "--quick", "--refine", "0", "--no-vmaf"]) == 0
    rows = list(csv.DictReader(open(out / "rd.csv", newline="")))
    assert [r["codec"] for r in rows] == ["imfcodec"] * 2
    here = peak_rss_mb()  # this process has torch and the test session's models loaded
    for r in rows:
        assert (out / r["stream"]).stat().st_size == int(r["bytes"]) > 0
        assert here > float(r["base_rss_mb"]) > 0 and float(r["peak_rss_mb"]) >= float(r["base_rss_mb"])
        assert float(r["gflops_per_frame"]) > 0 and math.isfinite(float(r["psnr"]))


def test_bd_rate_envelope_and_overlap():
    from benchmarks.report import bd_rate, envelope

    rates = [10, 20, 40, 80]
    anchor = [30, 33, 36, 39]
    same = bd_rate(rates, anchor, rates, anchor)
    assert same.value == pytest.approx(0, abs=1e-9)
    half = bd_rate(rates, anchor, [r / 2 for r in rates], anchor)
    assert half.value == pytest.approx(-50, abs=1e-6)
    assert bd_rate(rates, anchor, rates, [10, 11, 12, 13]).text() == "n/a: no overlap"
    assert bd_rate(rates, anchor, rates[:3], anchor[:3]).text().startswith("n/a: < 4 points")
    # a point beaten by a cheaper one is not on the envelope
    r, q = envelope([10, 15, 20], [30, 29, 31])
    assert list(r) == [10, 20] and list(q) == [30, 31]


def test_bad_arguments_are_one_line_errors(tmp_path, capsys):
    from benchmarks.rd import main

    assert main(["--videos", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    assert main(["--videos", str(CLIP), "--out", str(tmp_path / "o"), "--codecs", "x266"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("error: ") for line in err)


@pytest.mark.slow
def test_gain_table_against_repeat_and_x265(bench, capsys):
    """benchmarks.gain pairs each imfcodec point with the repeat row of the same key frame."""
    from benchmarks.gain import main

    out, _, rows = bench
    imf = [r for r in rows if r["codec"] == "imfcodec"]
    paired = [r for r in imf if any(x["codec"] == "repeat" and x["key_quality"] == r["key_quality"] for x in rows)]
    assert paired, "quick ladders must share a key-frame quality"
    r = paired[0]
    rep = next(x for x in rows if x["codec"] == "repeat" and x["key_quality"] == r["key_quality"])
    assert main([str(out / "rd.csv"), "--point", r["point"], "--out", str(out)]) == 0  # writes OUT/gain.md
    text = capsys.readouterr().out
    want = float(r["psnr"]) - float(rep["psnr"])
    assert f"mean gain over repeat-key: {want:+.2f} dB" in text
    assert "liveportrait_d12" in (out / "gain.md").read_text()
    assert "conventional hull at the same rate" in text and "nearest hull point" in text
    assert main([str(out / "rd.csv"), "--point", "no-such-point"]) == 1
    assert capsys.readouterr().err.startswith("error: ")


@pytest.mark.slow
def test_refine_points_are_separate_rows(tmp_path, jobs_in_this_process):
    """--refine N runs imfcodec's points with encoder-side refinement, as rows named ...-rN."""
    from benchmarks.rd import main

    out = tmp_path / "r"
    args = ["--videos", str(CLIP), "--out", str(out), "--frames", "4", "--model", "random:imf-tiny",
            "--codecs", "imfcodec", "--ladder", "imfcodec=9:21", "--no-vmaf"]
    assert main(args + ["--refine", "0"]) == 0 and main(args + ["--refine", "2"]) == 0
    rows = {r["point"]: r for r in csv.DictReader(open(out / "rd.csv", newline=""))}
    assert set(rows) == {"q9-hevc21", "q9-hevc21-r2"}
    for r in rows.values():  # both are real streams on disk
        assert int(r["bytes"]) == (out / r["stream"]).stat().st_size
    # a report names only its own plan's points, unless --report-all brings in the rows of other runs
    assert "q9-hevc21-r2" in (out / "summary.md").read_text()
    assert main(args + ["--refine", "0"]) == 0 and "q9-hevc21-r2" not in (out / "summary.md").read_text()
    assert main(args + ["--refine", "0", "--report-all"]) == 0
    assert "q9-hevc21-r2" in (out / "summary.md").read_text()
    assert main(args + ["--refine", "-1"]) == 2


def test_hybrid_rows_with_and_without_the_enhancer(tmp_path):
    """The hybrid mode's points come from real streams; hybrid-bicubic decodes the same streams without
    the enhancer (an untrained enhancer's output is exactly the bicubic base), and the report puts
    imfcodec's envelope beside the hulls."""
    from benchmarks.rd import main

    out = tmp_path / "h"
    args = ["--videos", str(CLIP), "--out", str(out), "--frames", "6", "--enhancer", "random:enh-tiny",
            "--codecs", "hybrid,hybrid-bicubic,x265", "--ladder", "hybrid=2:20:16,vp9:4:13:16",
            "--ladder", "hybrid-bicubic=2:20:16,vp9:4:13:16", "--ladder", "x265=51,41", "--scales", "1,1/2", "--no-vmaf"]
    assert main(args) == 0
    rows = list(csv.DictReader(open(out / "rd.csv", newline="")))
    hyb = {(r["codec"], r["point"]): r for r in rows if r["codec"].startswith("hybrid")}
    assert set(hyb) == {(c, p) for c in ("hybrid", "hybrid-bicubic") for p in ("x2-b20-hevc16", "vp9-x4-b13-hevc16")}
    for (codec, point), r in hyb.items():
        assert int(r["bytes"]) == (out / r["stream"]).stat().st_size
        assert float(r["base_kbps"]) > 0 and float(r["key_kbps"]) > 0 and r["model"].startswith("enh-tiny@")
        assert r["coded_size"] == ("32x32" if point.startswith("x2") else "16x16")
        assert ("vp9 base" if point.startswith("vp9") else "hevc base") in r["encoder"]
        twin = hyb[("hybrid-bicubic" if codec == "hybrid" else "hybrid", point)]
        assert r["bytes"] == twin["bytes"] and float(r["psnr"]) == pytest.approx(float(twin["psnr"]))
    summary = (out / "summary.md").read_text()
    assert "imfcodec-envelope" in summary and "hybrid-bicubic" in summary
    assert main([*args[:-1], "--ladder", "hybrid=3:20:16"]) == 2  # factor 3 is not a base-layer size
    assert main([*args[:-1], "--ladder", "hybrid=mpeg2:2:20:16"]) == 2  # not a base-layer codec


def test_rows_append_under_the_current_columns(tmp_path):
    """A results file written before a column existed is rewritten under today's header, never misaligned."""
    from benchmarks.rd import COLUMNS, append_rows, read_rows

    path = tmp_path / "rd.csv"
    old = [c for c in COLUMNS if c != "base_kbps"]
    path.write_text(",".join(old) + "\n" + ",".join("x265" if c == "codec" else "1.5" if c == "kbps" else ""
                                                     for c in old) + "\n")
    append_rows(path, [{"codec": "hybrid", "kbps": 7.0, "base_kbps": 5.0}])
    rows = read_rows(path)
    assert list(rows[0]) == COLUMNS
    assert [(r["codec"], r["kbps"], r["base_kbps"]) for r in rows] == [("x265", "1.5", ""), ("hybrid", "7", "5")]


def test_scaled_encode_decode_returns_working_size(tmp_path):
    """scale 1/2: the encoder sees half-size frames, the caller gets full-size frames back, and the
    small stream costs fewer bytes than the full-size one at the same CRF."""
    from fractions import Fraction

    import numpy as np

    from benchmarks.anchors import ANCHORS, coded_size, encode_decode, parse_scale

    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (1, 16, 16, 3), dtype=np.uint8).repeat(4, 1).repeat(4, 2)
    frames = np.concatenate([np.roll(base, i, axis=2) for i in range(5)])  # 5 x 64 x 64, moving
    full = encode_decode(ANCHORS["x265"], 30, frames, Fraction(25))
    half = encode_decode(ANCHORS["x265"], 30, frames, Fraction(25), scale=Fraction(1, 2),
                         mp4_path=tmp_path / "half.mp4")
    assert (half.coded_width, half.coded_height) == (32, 32) and (full.coded_width, full.coded_height) == (64, 64)
    assert half.decoded.shape == frames.shape
    assert half.es_bytes < full.es_bytes
    assert 0 < half.startup_bytes < half.es_bytes
    lanczos = encode_decode(ANCHORS["x265"], 30, frames, Fraction(25), scale=Fraction(1, 2), upscale="lanczos")
    assert lanczos.es_bytes == half.es_bytes and not np.array_equal(lanczos.decoded, half.decoded)
    assert coded_size(256, 256, parse_scale("1/4")) == (64, 64)
    assert coded_size(100, 60, parse_scale("0.5")) == (50, 30)
    for bad in ("0", "2", "-1/2", "half"):
        with pytest.raises(ValueError):
            parse_scale(bad)
    with pytest.raises(ValueError):
        coded_size(64, 64, Fraction(1, 8))  # 8 px: below every anchor's minimum


def test_upper_hull_drops_points_below_the_envelope():
    from benchmarks.hull import upper_hull

    # (rate, PSNR): 15 is beaten by the cheaper 10 (Pareto); 12 lies under the log-rate chord 10 -> 40
    rates = [10, 15, 20, 40, 12]
    psnr = [30, 29, 33, 34, 30.2]
    assert upper_hull(rates, psnr) == [0, 2, 3]
    # 20 at 31 is under the chord from (10, 30) to (40, 34) in log rate (32.0 at 20): dropped
    assert upper_hull([10, 20, 40], [30, 31, 34]) == [0, 2]
    assert upper_hull([10, 20, 40], [30, 32.5, 34]) == [0, 1, 2]
    # lower is better (LPIPS): the same geometry mirrored
    assert upper_hull([10, 20, 40], [0.5, 0.45, 0.3], higher_is_better=False) == [0, 2]
    # NaN, zero and negative rates are ignored, not chosen
    assert upper_hull([0, 10, float("nan"), 20], [40, 30, 50, 31]) == [1, 3]
    assert upper_hull([], []) == []


def test_log_rate_interpolation_stays_inside_the_hull():
    from benchmarks.hull import interpolate_log_rate

    assert interpolate_log_rate([10, 40], [30, 34], 20) == pytest.approx(32.0)  # geometric midpoint
    assert interpolate_log_rate([10, 40], [30, 34], 10) == pytest.approx(30.0)
    assert interpolate_log_rate([10, 40], [30, 34], 40) == pytest.approx(34.0)
    assert interpolate_log_rate([10, 40], [30, 34], 9.99) is None
    assert interpolate_log_rate([10, 40], [30, 34], 41) is None
    assert interpolate_log_rate([], [], 10) is None


def test_hulls_and_imfcodec_against_them_on_synthetic_rows():
    """x265 at two scales and vp9 at one: the hulls pick the right points, and imfcodec is compared
    at its own rate, or told that it lies outside a hull's range."""
    import pandas as pd

    from benchmarks.report import BD, bd_tables, build_curves, versus_hull

    def row(codec, scale, kbps, psnr, point):
        return dict(clip="c", codec=codec, scale=scale, kbps=kbps, steady_kbps=kbps / 2, psnr=psnr, point=point)

    df = pd.DataFrame([
        row("x265", 1.0, 10, 30, "a"), row("x265", 1.0, 20, 33.8, "b"), row("x265", 1.0, 40, 36, "c"),
        row("x265", 0.5, 5, 28, "d"), row("x265", 0.5, 10, 31, "e"), row("x265", 0.5, 20, 32, "f"),
        row("vp9", 1.0, 8, 30.5, "g"), row("vp9", 1.0, 16, 30.6, "h"),
        row("imfcodec", 1.0, 10, 29, "q9"), row("imfcodec", 1.0, 4, 27, "q6"),
    ])
    curves = build_curves(df, "psnr")
    assert list(curves)[:3] == ["imfcodec", "conventional-hull", "x265-hull"]
    x265_hull = curves["x265-hull"].sort_values("kbps")
    assert list(x265_hull["point"]) == ["d", "e", "b", "c"]  # a (10 kbit/s, 30 dB) is beaten by e (31 dB)
    conv = curves["conventional-hull"].sort_values("kbps")
    # e (10 kbit/s, 31 dB) lies under the chord from vp9's g (8, 30.5) to b (20, 33.8): dropped
    assert list(conv["point"]) == ["d", "g", "b", "c"] and set(conv["member"]) == {"x265", "vp9"}
    assert "vp9-hull" not in curves  # one scale only: no hull of its own
    t = versus_hull(df, curves, "psnr").set_index("point")
    assert t.loc["q9", "x265-hull"] == pytest.approx(31.0) and t.loc["q9", "x265-hull delta"] == pytest.approx(-2.0)
    assert pd.isna(t.loc["q6", "x265-hull"]) and t.loc["q6", "x265-hull note"].startswith("below its range")
    # a hull is at least as good as each of its members: BD-rate of x265 full size against it >= 0
    per, _mean = bd_tables({"psnr": curves}, ["psnr"], "x265-hull")
    assert isinstance(per["psnr"]["x265"]["c"], BD)
    steady = build_curves(df, "psnr", rate="steady_kbps")
    assert "repeat" not in steady and steady["x265-hull"]["steady_kbps"].max() == 20


def test_bad_scales_are_one_line_errors(tmp_path, capsys):
    from benchmarks.rd import main

    base = ["--videos", str(CLIP), "--out", str(tmp_path / "o"), "--codecs", "x265", "--frames", "2"]
    assert main(base + ["--scales", "1,2"]) == 2
    assert main(base + ["--scales", "1/64", "--size", "64"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("error: --scales") for line in err)


def test_every_entry_point_is_listed():
    """benchmarks.ENTRY_POINTS names every module with a ``main`` (and benchmarks/README.md shows each)."""
    import benchmarks

    here = Path(benchmarks.__file__).parent
    mains = {f.stem for f in here.glob("*.py") if "\ndef main(" in f.read_text()}
    assert set(benchmarks.ENTRY_POINTS) == mains
    readme = (here / "README.md").read_text()
    assert all(f"python -m benchmarks.{name}" in readme for name in mains)


@pytest.mark.parametrize("name", sorted(__import__("benchmarks").ENTRY_POINTS))
def test_entry_points_help_and_usage_errors(name, capsys):
    """Each benchmark is a click command run by ``main(argv) -> int``: --help names the module, and a usage
    error is one line with status 2."""
    main = importlib.import_module(f"benchmarks.{name}").main
    assert main(["--help"]) == 0
    assert f"Usage: python -m benchmarks.{name} " in capsys.readouterr().out
    assert main(["--no-such-option"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err


def test_harness_finds_the_shared_data_from_anywhere(tmp_path, monkeypatch):
    """The default --data is the shared training folder wherever the script runs from; scripts that tune
    refuse a folder named test; --out is a results folder and a file name is a usage error."""
    import click

    from benchmarks import harness
    from imfcodec.errors import InputError

    monkeypatch.chdir(tmp_path)
    assert harness.TRAIN_DATA == SHARED_TEST.parent / "train" and harness.TEST_DATA == SHARED_TEST
    clips = harness.find_clips([harness.TEST_DATA])
    assert clips["liveportrait_d12"] == CLIP
    with pytest.raises(InputError, match="test set"):
        harness.find_clips([harness.TEST_DATA], tunes=True)
    with pytest.raises(InputError, match="test set"):
        harness.held_out_clips([str(harness.TEST_DATA)], 1, 64, 2, None)
    with pytest.raises(harness.BenchError, match="--data .*: no such file or folder"):
        harness.find_clips([tmp_path / "missing"], option="--data")

    @click.command()
    @harness.out_option("x.md")
    def cmd(out):
        harness.write_result(out, "x.md", "text")

    assert cmd.main(["--out", "results/a"], standalone_mode=False) is None
    assert (tmp_path / "results" / "a" / "x.md").read_text() == "text"
    with pytest.raises(click.BadParameter, match="results folder"):
        cmd.main(["--out", "table.md"], standalone_mode=False)


def test_fps_is_frames_over_seconds():
    """rd's enc_fps/dec_fps columns: frames over the seconds timed, NaN when nothing was timed."""
    from benchmarks.speed import fps

    assert fps(6, 0.5) == 12.0 and math.isnan(fps(6, 0.0))


@pytest.mark.slow
def test_memory_measures_the_command_line_in_fresh_processes(tiny_stream, tmp_path, capsys):
    """benchmarks.memory: decode and info of a stream, peak RSS and imports per run, none of the compiler
    stack (the same property tests/test_unix.py holds the codec to)."""
    from benchmarks.memory import main

    out = tmp_path / "m.json"
    assert main([str(tiny_stream), "--repeat", "1", "--threads", "1", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["command"] for r in rows] == ["decode", "info"]
    decode, info = rows
    assert decode["peak_mb"] > info["peak_mb"] > 0 and decode["torch_modules"] > 0 == info["torch_modules"]
    assert decode["heavy"] == [] == info["heavy"]
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:3] == ["checkout", "stream", "command"] and len(table) == 3


def test_without_the_bench_extra_is_a_one_line_error(tmp_path, capsys, monkeypatch):
    """pandas, matplotlib and bjontegaard come with the `bench` extra: without one of them a benchmark
    says how to install it, in one line, instead of a traceback."""
    from benchmarks import gain, rd, strips

    monkeypatch.setitem(sys.modules, "bjontegaard", None)  # as if not installed
    assert rd.main(["--videos", str(CLIP), "--out", str(tmp_path / "o")]) == 1
    assert gain.main([str(tmp_path / "rd.csv")]) == 1
    assert strips.main([str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3, err
    for line in err:
        assert line.startswith("error: ") and "bjontegaard" in line and "pip install -e '.[bench]'" in line
    assert not (tmp_path / "o").exists()  # refused before doing anything


def test_hybrid_table_measures_points_on_training_clips(tmp_path):
    """benchmarks.hybrid_table: real encodes of held-out training clips, the --kbps table written."""
    import json

    from benchmarks.hybrid_table import main
    from imfcodec.io import make_sample

    data = tmp_path / "train"
    data.mkdir()
    for i in range(2):
        make_sample(data / f"c{i}.mp4", frames=8 + i, size=64)
    out = tmp_path / "results"
    assert main(["--enhancer", "random:enh-tiny", "--data", str(data), "--frames", "8", "--quick",
                 "--val-clips", "1", "--cache-dir", "none", "--out", str(out), "--threads", "1"]) == 0
    table = json.loads((out / "enh-tiny-points.json").read_text())
    assert len(table["points"]) == 2 and len(table["clips"]) == 1
    assert {p["base_codec"] for p in table["points"]} == {"hevc", "vp9"}
    for p in table["points"]:
        assert p["steady_kbps"] > 0 and p["startup_bytes"] > 0
        assert p["psnr"] == pytest.approx(p["psnr_bicubic"])  # an untrained enhancer is the bicubic base
    (tmp_path / "test").mkdir()
    assert main(["--data", str(tmp_path / "test"), "--out", str(out)]) == 1  # the test set is refused
    assert main(["--data", str(data), "--out", str(out), "--base-codecs", "mpeg2"]) == 1


def test_keyframes_counts_false_cuts_detects_cuts_and_codes_one(tmp_path, capsys):
    """benchmarks.keyframes on two tiny clips of different scenes: no false cut inside either, both
    synthetic cuts found, the cut clip coded with a key frame at the cut only with the detector on, and
    --refresh-below counted; a folder named test is refused."""
    from benchmarks.keyframes import main
    from helpers import cheap_clip
    from imfcodec.io import make_sample

    data = tmp_path / "train"
    data.mkdir()
    make_sample(data / "a_portrait.mp4", frames=8, size=64)
    cheap_clip(data / "b_gradient.mp4", 8)
    assert main(["--data", str(data), "--frames", "8", "--encode", "a_portrait.mp4", "b_gradient.mp4",
                 "--encode-frames", "6", "--model", "random:imf-tiny", "--refresh", "1,99", "--refresh-frames", "4",
                 "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "false cuts at 10: 0 frames in 0 of 2 clips" in out, out
    assert "synthetic cuts, all: 2, detected at 10: 2 (100.0 %)" in out, out
    assert "--scenecut 10 : key frames [0, 6]," in out and "--no-scenecut : key frames [0]," in out, out
    assert "--refresh-below 1: 0 extra key frames in 8 frames" in out, out
    assert "--refresh-below 99: 6 extra key frames in 8 frames" in out, out  # an untrained model: every frame
    (tmp_path / "test").mkdir()
    assert main(["--data", str(tmp_path / "test")]) == 1
    assert "test set" in capsys.readouterr().err


def test_key_value_ablation_and_residual_keys(tmp_path):
    """benchmarks.key_value: an untrained enhancer gains exactly nothing with any key (its head is zero), and the
    residual key frame decodes back close to the source; the test folder is refused."""
    from benchmarks.key_value import main
    from imfcodec.io import make_sample

    data = tmp_path / "train"
    data.mkdir()
    for i in range(3):
        make_sample(data / f"c{i}.mp4", frames=6 + i, size=64)
    out = tmp_path / "results"
    assert main(["--enhancer", "random:enh-tiny", "--data", str(data), "--frames", "6", "--val-clips", "1",
                 "--stride", "1", "--cache-dir", "none", "--out", str(out), "--threads", "1"]) == 0
    text = (out / "key_value.md").read_text()
    gains = [line for line in text.splitlines() if line.startswith("| key q") or line.startswith("| no key detail")]
    assert len(gains) == 5 and all(line.endswith("| +0.00 |") for line in gains), gains
    rows = [line.split("|")[1:-1] for line in text.splitlines() if line.startswith("| vp9 1/2 q8 |")]
    assert len(rows) == 5
    for _base, _kq, direct_bytes, direct_psnr, res_bytes, res_psnr in rows:
        assert int(direct_bytes) > 0 and int(res_bytes) > 0 and float(res_psnr) > 20 and float(direct_psnr) > 20
    # the enhancer given either kind of key at 4 base points x 5 key qualities: an untrained one gains nothing
    enh = [line.split("|")[1:-1] for line in text.splitlines() if line.split("|")[2:3] in ([" direct "], [" residual "])]
    assert len(enh) == 4 * 2 * 5 and {r[1].strip() for r in enh} == {"direct", "residual"}
    assert all(int(r[3]) > 0 and float(r[4]) > 15 and r[5].strip() == "+0.00" for r in enh), enh
    # the freshness study (6 frames: distances 0-2): an untrained enhancer gains nothing with any key either
    fresh = [line for line in text.splitlines() if line.startswith(("| source t-", "| enhanced t-", "| first frame"))]
    assert len(fresh) == 1 + 3 + 2 + 2 and all(line.endswith("| +0.00 | +0.00 |") for line in fresh), fresh
    (tmp_path / "test").mkdir()
    assert main(["--data", str(tmp_path / "test"), "--out", str(out)]) == 1


def _two_held_out_clips(tmp_path, frames: int) -> list[str]:
    """Two tiny training clips (one held out) and the held-out benchmarks' arguments for them, untrained."""
    from imfcodec.io import make_sample

    data = tmp_path / "train"
    data.mkdir()
    for i in range(2):
        make_sample(data / f"c{i}.mp4", frames=frames, size=64)
    return ["--enhancer", "random:enh-tiny", "--data", str(data), "--frames", str(frames), "--val-clips", "1",
            "--cache-dir", "none", "--threads", "1"]


def test_key_value_sections(tmp_path, capsys):
    """--sections runs only the studies named (the report leaves the others out); a wrong name is a usage
    error."""
    from benchmarks.key_value import main

    args = _two_held_out_clips(tmp_path, 5)
    assert main(args + ["--sections", "freshness", "--out", str(tmp_path / "r")]) == 0
    text = (tmp_path / "r" / "key_value.md").read_text()
    assert "## How fresh the key is" in text and "residual" not in text and "per key variant" not in text, text
    assert main(args + ["--sections", "freshness,bogus"]) == 2
    assert "--sections" in capsys.readouterr().err


class _KeyIsOutput:
    """A stand-in enhancer whose output is its key image: the freshness study then measures the keys."""

    def prepare_key(self, key, key_base):
        return key

    def enhance(self, state, base):
        return state.expand(base.shape[0], -1, -1, -1) if state.shape[0] == 1 else state


def test_key_value_freshness_measures_the_keys():
    """With an enhancer that shows its key, the freshness study's rows are the keys' own quality: the frame
    itself beats older frames, a cheap coded key loses to a better one, and the 'enhanced' rows (today's
    key shown again) equal today's row exactly."""
    import numpy as np

    from benchmarks.key_value import FRESH_LOW, freshness
    from imfcodec.io.sample import sample_frames
    from imfcodec.keyframe import get_keyframe_codec
    from imfcodec.train.hybrid import BASE_POINTS, CodedClip

    frames = np.stack(list(sample_frames(30, 64)))
    codec = get_keyframe_codec("hevc")
    keys = {16: codec.decode(codec.encode(frames[0], 16), 64, 64)}
    bases = {p: np.ascontiguousarray(frames[:, ::p[1], ::p[1]]) for p in BASE_POINTS}
    rows = freshness(_KeyIsOutput(), [CodedClip("c.mp4", frames, keys, bases)], 64)
    g = {r["key"]: r["gain"] for r in rows}
    assert set(g) == {"first frame q16 (today)", "source t-0", "source t-1", "source t-2", "source t-5",
                      "source t-25", f"source t-2 q{FRESH_LOW}", "source t-2 q16", "enhanced t-1", "enhanced t-2"}
    assert g["source t-0"] > g["source t-2"] > g["source t-25"], g
    assert g["source t-2"] > g["source t-2 q16"] > g[f"source t-2 q{FRESH_LOW}"], g
    assert g["enhanced t-1"] == g["enhanced t-2"] == g["first frame q16 (today)"], g


def test_key_refresh_stream_and_same_rate():
    """benchmarks.key_refresh: the refresh stream codes every N-th frame with inter prediction (a still clip's
    later pictures cost a fraction of the first) and decodes them at the full size; ``same_rate`` compares a
    refresh point with today's curve at its own total rate and leaves out points beyond the curve."""
    import numpy as np

    from benchmarks.key_refresh import refresh_stream, same_rate
    from imfcodec.io.sample import sample_frames
    from imfcodec.metrics import psnr

    still = np.repeat(next(iter(sample_frames(1, 64)))[None], 9, 0)
    sizes, pics = refresh_stream(still, 4, "hevc", 30)
    assert len(sizes) == len(pics) == 3 and pics[0].shape == (64, 64, 3)
    assert max(sizes[1:]) < sizes[0] / 3, sizes
    assert psnr(pics[2], still[8]) > 30
    rows = [{"clip": "c", "base_kbps": 0.5, "key_kbps": 0.5, "today": 30.0, "refresh": {"s": (32.0, 1.5)}},
            {"clip": "c", "base_kbps": 3.5, "key_kbps": 0.5, "today": 33.0, "refresh": {"s": (34.0, 1.5)}}]
    d = same_rate(rows)  # today's curve: 1 and 4 kbit/s (base + key); the refresh points: 2 and 5 (base + refresh)
    assert list(d) == ["c|s"] and len(d["c|s"]) == 1 and abs(d["c|s"][0] - 0.5) < 1e-9, d  # log2 is half-way


def test_key_refresh_command(tmp_path, capsys):
    """benchmarks.key_refresh end to end on a tiny clip: a row per base quality, the report, its errors."""
    from benchmarks.key_refresh import main

    args = _two_held_out_clips(tmp_path, 9)
    assert main(args + ["--intervals", "4", "--refresh-qualities", "20", "--base-qualities", "0,30",
                        "--out", str(tmp_path / "r")]) == 0
    text = (tmp_path / "r" / "key_refresh.md").read_text()
    assert "| clip | every 4, q20 |" in text and text.count("bicubic") == 2, text
    assert main(args + ["--intervals", "0"]) == 2
    assert "--intervals" in capsys.readouterr().err
    assert main(args + ["--base-qualities", "a,b"]) == 2
    (tmp_path / "test").mkdir()
    assert main(["--data", str(tmp_path / "test")]) == 1


def _ticks():
    """A clock that advances one tick per reading: stage times that do not depend on the machine's load."""
    return itertools.count().__next__


def _check_stages(totals: dict, total: float, names) -> None:
    """Every stage ran (on :func:`_ticks` each one spans at least a tick), none outside the table, and self
    times never count twice: together they are at most the whole run."""
    missing = [s for s in names if totals.get(s, 0) <= 0]
    assert not missing, f"stages with no time: {missing}"
    assert set(totals) <= set(names), f"stages the table does not list: {set(totals) - set(names)}"
    assert 0 < sum(totals.values()) <= total, (totals, total)


def test_model_speed_stages_add_up_to_the_total(tiny, monkeypatch):
    """benchmarks.model_speed's stage runs on the real codec.Encoder/Decoder: every stage of the table is
    timed, and their self times stay within the whole encode or decode. FLOPs per stage come from the same
    regions. (The shared ``tiny`` model's kernels are put back afterwards.)"""
    from benchmarks.model_speed import (TOKEN_ENCODE_STAGES, count_flops, decode_stages, median_stages,
                                        stage_table, staged_decode, staged_encode)
    from imfcodec.codec import Encoder, EncoderSettings
    from imfcodec.io.sample import sample_frames

    model = tiny.model
    frames = list(sample_frames(4, 64))
    enc = Encoder(model, model_name=tiny.name, weights_hash=tiny.weights_hash, fps=Fraction(25),
                  settings=EncoderSettings(key_codec="png", chunk=2, search_iters=1))
    totals, total, after_key, data = staged_encode(enc, frames, _ticks())
    _check_stages(totals, total, TOKEN_ENCODE_STAGES)
    assert 0 < after_key < total
    names = decode_stages(model)
    assert names.count("transformers") == 1 and sum(s.startswith("IMF_A R/") for s in names) == 4
    for kernels in ("reference", "fast"):
        monkeypatch.setattr(model, "kernels", kernels)
        totals, total, n = staged_decode(model, data, _ticks())
        assert n == len(frames)
        _check_stages(totals, total, names)
    flops = count_flops(model, lambda now: staged_decode(model, data, now))
    assert flops["D_F (synthesis)"] > 0 and flops["IMF_A R/4 window"] > 0 and flops["I/O"] == 0
    assert sum(flops.get(s, 0) for s in names) == flops["total"]  # every multiply-add is inside a stage
    runs = [staged_decode(model, data) for _ in range(2)]
    table = stage_table(names, {"fast": median_stages(runs, names)}, {"fast": len(frames)}, flops, len(frames),
                        ("fast",), peak=100.0)
    assert [row.split(" | ")[0].strip("| ") for row in table[2:]] == [*names, "unaccounted", "total"]


def test_model_speed_hybrid_stages_add_up_to_the_total():
    """The same for the hybrid mode's HybridEncoder/HybridDecoder (untrained enh-tiny)."""
    from benchmarks.model_speed import HYBRID_DECODE_STAGES, HYBRID_ENCODE_STAGES, staged_decode, staged_encode
    from imfcodec.codec import EncoderSettings
    from imfcodec.hybrid import HybridEncoder, load_enhancer
    from imfcodec.io.sample import sample_frames

    loaded = load_enhancer("random:enh-tiny")
    frames = list(sample_frames(3, 64))
    enc = HybridEncoder(loaded.model, model_name=loaded.name, weights_hash=loaded.weights_hash, fps=Fraction(25),
                        settings=EncoderSettings(base_codec="hevc", key_codec="png", chunk=2, half_rate=False))
    totals, total, _, data = staged_encode(enc, frames, _ticks())
    _check_stages(totals, total, HYBRID_ENCODE_STAGES)
    totals, total, n = staged_decode(loaded.model, data, _ticks())
    assert n == len(frames)
    _check_stages(totals, total, HYBRID_DECODE_STAGES)


def test_stages_are_no_ops_when_off_and_count_self_time():
    """Outside a StageClock a stage is one shared no-op context, so the codec's regions change nothing;
    inside, a nested stage pauses the one around it."""
    from imfcodec.stages import StageClock, active, stage

    assert stage("a") is stage("b") and active() is None
    ticks = iter(range(100))
    with StageClock(lambda: next(ticks)) as clock:
        with stage("outer"):  # ticks 0-1, 2-3, 4-5: 3
            with stage("inner"):  # ticks 1-2 and 3-4: 2
                pass
            with stage("inner"):
                pass
    assert active() is None
    assert clock.totals == {"outer": 3, "inner": 2} and clock.calls == {"outer": 1, "inner": 2}


def test_enhancer_sweep_prices_a_rate_on_the_table():
    """benchmarks.enhancer_sweep.hull_gain: what extra kbit/s buy on a rate-control table, best point within
    each rate, points past the top rate left out, steady state or a clip of given length."""
    from benchmarks.enhancer_sweep import hull_gain
    from imfcodec.ratecontrol import OperatingPoint

    def pt(kbps, psnr, startup=0.0):
        return OperatingPoint(2, 8, 6, kbps, startup, psnr, psnr - 1, "vp9")

    points = [pt(1, 20), pt(2, 21), pt(2.5, 20.5), pt(3, 23)]  # 2.5 is dominated by 2
    assert hull_gain(points, 1.0, None) == pytest.approx(((21 - 20) + (23 - 21)) / 2)  # 2.5 + 1 > top
    assert hull_gain(points, 0.4, None) == pytest.approx(((20 - 20) + (21 - 21) + (21 - 21)) / 3)
    # whole file: 1,250 start-up bytes over 10 s add 1 kbit/s to the 2 kbit/s point (then at 3, dominated)
    points = [pt(1, 20), pt(2, 21, startup=1250), pt(3, 23)]
    assert hull_gain(points, 1.0, None) == pytest.approx(((21 - 20) + (23 - 21)) / 2)
    assert hull_gain(points, 1.0, 10.0) == pytest.approx(0.0)
    assert hull_gain(points, 2.0, 10.0) == pytest.approx(23 - 20)


def test_enhancer_sweep_report_and_refusals(tmp_path, capsys):
    """The sweep's report reads each variant's sweep.json: PSNR, gain split into moving and GRID clips, the
    token rate and the difference tokens make; a bad variant or a fine-tune without weights is refused."""
    import json

    from benchmarks import enhancer_sweep

    def val(psnr, gains):
        return {"psnr_enh": psnr, "psnr_base": 25.0, "gain": psnr - 25.0, **{f"clip/{k}": g for k, g in gains.items()}}

    clips = ("train/grid_a.mpg", "train/talk_b.mp4", "train/talk_c.mp4")
    for name, psnr, gains, extra in (
            ("small-ft", 27.0, (5.0, 0.5, 0.5), {}),
            ("tokens-ft", 27.3, (5.2, 0.8, 0.9), {"token_rates": {c: {"token_kbps": 1.0 + i} for i, c in enumerate(clips)}})):
        (tmp_path / name).mkdir()
        (tmp_path / name / "sweep.json").write_text(json.dumps(
            {"variant": name, "steps": 10, "init_from": "w.safetensors", "val": val(psnr, dict(zip(clips, gains))), **extra}))
    assert enhancer_sweep.main(["report", "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| small-ft | 10 | w.safetensors |" in out and "| +2.00 | +0.50 | +5.00 |" in out
    assert "| tokens-ft |" in out and "| +2.30 | +0.85 | +5.20 |" in out
    assert "2.00 kbit/s on the held-out clips" in out and "Tokens on minus off, same start and steps: +0.30 dB" in out
    assert enhancer_sweep.main(["report", "--root", str(tmp_path / "none")]) == 1
    assert enhancer_sweep.main(["run", "nonsense", "--root", str(tmp_path)]) == 2
    assert enhancer_sweep.main(["run", "tokens-ft", "--root", str(tmp_path)]) == 2
    (tmp_path / "test").mkdir()
    assert enhancer_sweep.main(["run", "small", "--root", str(tmp_path), "--data", str(tmp_path / "test")]) == 1
    err = capsys.readouterr().err
    assert "no finished sweep variant" in err and "variant must be one of" in err and "needs --init-from" in err
    assert "test" in err.splitlines()[-1] and not (tmp_path / "small" / "sweep.json").exists()


def test_base_presets_report_on_synthetic_rows():
    """benchmarks.base_presets: each effort's BD-rate against medium and its speed ratio, from per-clip points."""
    from benchmarks.base_presets import main, report
    from imfcodec.baselayer import EFFORTS

    curve = [(4.0, 24.0), (6.0, 26.0), (9.0, 28.0), (14.0, 30.0)]
    rows = {e: {"points": [[(k * (0.9 if e == "slow" else 1.0), p) for k, p in curve]] * 2,
                "seconds": 2.0 if e == "slow" else 1.0, "frames": 100} for e in EFFORTS}
    text = report(rows, ["a", "b"], "vp9", 2, [0, 8, 16, 24])
    slow = next(line for line in text.splitlines() if line.startswith("| slow |"))
    assert "| -10.0 % |" in slow and "| 50 | 0.50x |" in slow
    assert "| medium | +0.0 % |" in text
    assert main(["--qualities", "0,8"]) == 1  # a BD-rate needs 4 points: one-line refusal


def test_effort_runs_are_rows_of_their_own(tmp_path, jobs_in_this_process):
    """--effort codes the anchors and the hybrid base at that speed setting, into a config and stream files of
    its own: a medium run's rows and files are not reused or replaced."""
    from benchmarks.anchors import ANCHORS
    from benchmarks.rd import main

    assert ANCHORS["vp9"].options(55, 250, 1, "veryslow")["cpu-used"] == "0"
    assert ANCHORS["x265"].options(30, 250, 1, "slow")["preset"] == "slow"
    assert ANCHORS["svtav1"].options(55, 250, 1, "fast")["preset"] == "10"
    base = ["--videos", str(CLIP), "--out", str(tmp_path), "--frames", "6", "--enhancer", "random:enh-tiny",
            "--quick", "--codecs", "vp9,hybrid", "--scales", "1/2"]
    assert main(base) == 0 and main([*base, "--effort", "ultrafast"]) == 0
    rows = list(csv.DictReader(open(tmp_path / "rd.csv", newline="")))
    configs = {r["config"] for r in rows}
    assert configs == {"64px-6f-keyint0", "64px-6f-keyint0-ultrafast"}
    for codec in ("vp9", "hybrid"):
        fast = {r["point"]: r for r in rows if r["codec"] == codec and r["config"].endswith("ultrafast")}
        medium = {r["point"]: r for r in rows if r["codec"] == codec and not r["config"].endswith("ultrafast")}
        assert fast.keys() == medium.keys() and len(fast) == 2
        assert all((tmp_path / r["stream"]).is_file() for r in [*fast.values(), *medium.values()])
        assert {r["stream"] for r in fast.values()}.isdisjoint(r["stream"] for r in medium.values())
    assert "ultrafast: every anchor's" in (tmp_path / "summary.md").read_text()


def test_kbps_compare_against_the_hull_at_each_choices_rate(tmp_path):
    """benchmarks.kbps_compare --rows --hull: each choice's PSNR minus the conventional hull's at that choice's own
    rate (log-rate interpolation on the clip named by the row's file stem); a rate outside the hull is said."""
    import pandas as pd

    from benchmarks.kbps_compare import against_hull, main

    def row(codec, scale, kbps, psnr, point):
        return dict(clip="c", codec=codec, scale=scale, kbps=kbps, steady_kbps=kbps / 2, psnr=psnr, point=point)

    rd = tmp_path / "rd.csv"
    pd.DataFrame([row("x265", 1.0, 5, 28, "a"), row("x265", 1.0, 20, 32, "b")]).to_csv(rd, index=False)
    table = ("| clip | target | table's choice | kbit/s | PSNR | compared: kept | kbit/s | PSNR | change dB | landings "
             "| loop s | compare s |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n"
             "| c.mp4 | 10 | h vp9 1/2 q5 k6 | 10.00 | 31.00 | av1 1/2 q9 k- | 10.00 | 31.50 | +0.50 | 4 | 1.0 | 9.0 |\n"
             "| c.mp4 | 40 | vp9 1/2 q30 k6 | 40.00 | 33.00 | vp9 1/2 q30 k6 | 40.00 | 33.00 | +0.00 | 4 | 1.0 | 9.0 |\n")
    text = against_hull(table, str(rd))
    assert "| c | 10 | +1.00 | +1.50 |" in text  # hull at 10 kbit/s: halfway in log rate, 30 dB
    assert "| c | 40 | outside the hull's rates |" in text and "1 points: mean over the hull: table's choice +1.000" in text
    rows = tmp_path / "k.md"
    rows.write_text(table)
    assert main(["--rows", str(rows), "--hull", str(rd), "--out", str(tmp_path / "o")]) == 0
    assert (tmp_path / "o" / "vs-hull.md").read_text() == text
    assert main(["--rows", str(rows)]) == 2


def test_recurrent_same_streams_alone_reads_no_held_out_clips(tmp_path, capsys, monkeypatch):
    """benchmarks.recurrent with only the same-streams section: each clip encoded once, decoded three ways, and no
    held-out training clip is loaded (nor named in the report)."""
    from helpers import cli

    import benchmarks.recurrent as rec

    monkeypatch.setattr(rec, "held_out_clips", lambda *a, **k: pytest.fail("held-out clips loaded"))
    clip = tmp_path / "t.mp4"
    assert cli("sample", clip, "--frames", 8, "--size", 64).exit_code == 0
    assert rec.main(["--enhancer", "random:enh-tiny-rec", "--against", "random:enh-tiny", "--skip-validate",
                     "--horizon", "0", "--drift-frames", "0", "--streams", str(clip), "--stream-frames", "8",
                     "--out", str(tmp_path / "o")]) == 0
    text = (tmp_path / "o" / "recurrent.md").read_text()
    assert "Held-out training clips" not in text and "| t | " in text and "| **mean** |" in text
