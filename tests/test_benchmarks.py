"""End-to-end check of the rate-distortion benchmark on a few frames of one shared clip.

One run of ``benchmarks.rd`` (6 frames at 64x64, the seeded tiny model, 2 rate points per codec)
is shared by the tests below; the second run must skip every finished row.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest

SHARED_TEST = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "talking-heads" / "test"
CLIP = SHARED_TEST / "liveportrait_d12.mp4"
CODECS = ("imfcodec", "x264", "x265", "svtav1", "vp9", "repeat")

pytestmark = pytest.mark.skipif(not CLIP.is_file(), reason=f"shared clip not found: {CLIP}")


def _args(out: Path) -> list[str]:
    return ["--videos", str(CLIP), "--out", str(out), "--frames", "6", "--model", "random:imf-tiny",
            "--quick", "--jobs", "2"]


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    from benchmarks.rd import main

    out = tmp_path_factory.mktemp("rd")
    status = main(_args(out))
    rows = list(csv.DictReader(open(out / "rd.csv", newline="")))
    return out, status, rows


def test_every_codec_has_rows_from_real_bytes(bench):
    out, status, rows = bench
    assert status == 0
    by_codec = {c: [r for r in rows if r["codec"] == c] for c in CODECS}
    for codec, rs in by_codec.items():
        assert len(rs) == 2, f"{codec}: expected 2 quick rate points, got {len(rs)}"
        for r in rs:
            assert int(r["frames"]) == 6 and int(r["size"]) == 64
            assert float(r["kbps"]) > 0 and int(r["bytes"]) > 0
            assert math.isfinite(float(r["psnr"])) and math.isfinite(float(r["psnr_y"]))
            assert 0 < float(r["ssim"]) <= 1
            assert float(r["enc_fps"]) > 0 and float(r["dec_fps"]) > 0
            assert float(r["peak_rss_mb"]) >= float(r["base_rss_mb"]) > 0
            # the rate is the size of a file that exists: check it against the file
            stream = out / r["stream"]
            assert stream.is_file()
            duration = int(r["frames"]) / float(r["fps"])
            if codec in ("imfcodec", "repeat"):
                assert stream.stat().st_size == int(r["bytes"])
            else:  # anchors: elementary stream <= MP4 file, container kbps = the MP4 file
                assert stream.stat().st_size == int(r["container_bytes"]) > int(r["bytes"])
            assert float(r["kbps"]) == pytest.approx(int(r["bytes"]) * 8 / duration / 1000, rel=1e-4)
    assert float(by_codec["imfcodec"][0]["gflops_per_frame"]) > 0


def test_rates_grow_along_each_ladder(bench):
    _, _, rows = bench
    for codec in ("x264", "x265", "svtav1", "vp9", "repeat"):
        rs = [r for r in rows if r["codec"] == codec]
        params = [int(r["param"]) for r in rs]
        kbps = [float(r["kbps"]) for r in rs]
        # anchors: lower CRF = more bits; repeat: higher key quality = more bits
        better = sorted(range(2), key=lambda i: params[i], reverse=(codec != "repeat"))
        assert kbps[better[0]] <= kbps[better[1]], (codec, params, kbps)


def test_summary_and_plots(bench):
    out, _, _ = bench
    text = (out / "summary.md").read_text()
    assert "BD-rate" in text and "n/a" in text  # 2 points per curve: BD-rate must be refused, visibly
    assert "VMAF" in text and "LPIPS: skipped" in text
    for codec in CODECS:
        assert f"| {codec} |" in text
    for metric in ("psnr", "psnr_y", "ssim", "ms_ssim"):
        png = out / f"rd_{metric}.png"
        assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert list((out / "cache").glob("*.npy")), "the lossless reference must be cached"


def test_second_run_skips_finished_rows(bench, capsys):
    from benchmarks.rd import main

    out, _, rows = bench
    capsys.readouterr()
    assert main(_args(out)) == 0
    printed = capsys.readouterr().out
    assert "0 point(s) to run" in printed and f"{len(rows)} already in" in printed
    again = list(csv.DictReader(open(out / "rd.csv", newline="")))
    assert len(again) == len(rows)


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


def test_gain_table_against_repeat_and_x265(bench, capsys):
    """benchmarks.gain pairs each imfcodec point with the repeat row of the same key frame."""
    from benchmarks.gain import main

    out, _, rows = bench
    imf = [r for r in rows if r["codec"] == "imfcodec"]
    paired = [r for r in imf if any(x["codec"] == "repeat" and x["key_quality"] == r["key_quality"] for x in rows)]
    assert paired, "quick ladders must share a key-frame quality"
    r = paired[0]
    rep = next(x for x in rows if x["codec"] == "repeat" and x["key_quality"] == r["key_quality"])
    assert main([str(out / "rd.csv"), "--point", r["point"], "--out", str(out / "gain.md")]) == 0
    text = capsys.readouterr().out
    want = float(r["psnr"]) - float(rep["psnr"])
    assert f"mean gain over repeat-key: {want:+.2f} dB" in text
    assert "liveportrait_d12" in (out / "gain.md").read_text()
    assert main([str(out / "rd.csv"), "--point", "no-such-point"]) == 1
    assert capsys.readouterr().err.startswith("error: ")


def test_refine_points_are_separate_rows(tmp_path):
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
    assert main(args + ["--refine", "-1"]) == 2
