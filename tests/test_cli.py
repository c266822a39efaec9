"""The CLI as a user drives it: the README's demo, one-line errors, default output names."""

from __future__ import annotations

import json
import shutil
import sys

import pytest
from click.testing import CliRunner

from helpers import run_no_hang
from imfcodec.cli import main

TINY = "random:imf-tiny"


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def _one_line_error(result):
    assert result.exit_code != 0
    err = result.stderr.strip()
    assert err.startswith("error:") and "\n" not in err, err
    assert "Traceback" not in result.output


def test_readme_demo_flow(tmp_path):
    s = tmp_path / "s.mp4"
    r = run("sample", s, "--frames", 8, "--size", 96)
    assert r.exit_code == 0, r.output
    r = run("encode", s, "-o", tmp_path / "s.imf", "--model", TINY)
    assert r.exit_code == 0, r.output
    assert "kbit/s" in r.output
    r = run("decode", tmp_path / "s.imf", "-o", tmp_path / "d.mp4")
    assert r.exit_code == 0, r.output
    from imfcodec.io import probe_video

    assert probe_video(tmp_path / "d.mp4").frames == 8
    r = run("info", tmp_path / "s.imf", "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    for key in ("frames", "width", "height", "fps", "kbps", "key_bytes", "token_bytes", "model"):
        assert key in d
    assert d["frames"] == 8 and d["width"] == 64 and d["model"] == "imf-tiny"
    assert d["kbps"] == pytest.approx((tmp_path / "s.imf").stat().st_size * 8 / (8 / 25) / 1000)
    assert (d["duration_s"], d["timing"], d["time_base"], d["timing_bytes"]) == (0.32, "constant", None, 0)
    r = run("info", tmp_path / "s.imf")
    assert r.exit_code == 0 and "kbit/s" in r.output
    assert "64x64, 8 frames, 0.32 s, constant rate 25/1 fps" in r.output


def test_default_outputs_and_any_extension(tiny_stream, sample_clip, tmp_path):
    clip = tmp_path / "clip.mp4"
    shutil.copy(sample_clip, clip)
    assert run("encode", clip, "--model", TINY, "--frames", 3, "--refine", 0).exit_code == 0
    assert (tmp_path / "clip.imf").exists()
    weird = tmp_path / "stream.bin"
    shutil.copy(tiny_stream, weird)
    r = run("decode", weird)
    assert r.exit_code == 0, r.output
    assert (tmp_path / "stream.decoded.mp4").exists()
    r = run("decode", weird, "-o", tmp_path / "pngs/")
    assert r.exit_code == 0, r.output
    assert len(list((tmp_path / "pngs").glob("*.png"))) == 14


def test_flipped_byte_is_refused_with_one_line(tiny_stream, tmp_path):
    data = bytearray(tiny_stream.read_bytes())
    for pos in (len(data) // 2, 40, len(data) - 3):
        bad = tmp_path / f"bad{pos}.imf"
        d = bytearray(data)
        d[pos] ^= 0x10
        bad.write_bytes(bytes(d))
        r = run("decode", bad, "-o", tmp_path / f"bad{pos}.mp4")
        _one_line_error(r)
        assert not (tmp_path / f"bad{pos}.mp4").exists()
        assert not list(tmp_path.glob(f".bad{pos}.mp4*"))  # no partial output left behind


@pytest.mark.parametrize("content", [b"", b"hello world, not a stream", b"\x00" * 100])
def test_garbage_streams_are_refused(tmp_path, content):
    p = tmp_path / "x.imf"
    p.write_bytes(content)
    _one_line_error(run("decode", p))
    _one_line_error(run("info", p))


def test_user_errors_are_one_line(tmp_path):
    _one_line_error(run("encode", tmp_path / "missing.mp4", "--model", TINY))
    txt = tmp_path / "notes.mp4"
    txt.write_text("not a video")
    _one_line_error(run("encode", txt, "--model", TINY))
    _one_line_error(run("decode", tmp_path / "missing.imf"))
    _one_line_error(run("encode", txt, "--model", tmp_path / "nope.safetensors"))


@pytest.mark.slow
def test_scenecut_switch(tmp_path):
    """Scene cuts get a key frame by default; --no-scenecut and --scenecut 0 turn it off; both at once is a
    usage error."""
    from helpers import fast_video, two_scene_frames

    clip = fast_video(tmp_path / "cut.mp4", two_scene_frames(6, 6), "libx264", "yuv444p")
    common = ("--model", TINY, "--refine", 0)
    r = run("encode", clip, "-o", tmp_path / "on.imf", *common)
    assert r.exit_code == 0 and "2 key frame(s) (1 at scene cuts)" in r.output, r.output
    for off in (("--no-scenecut",), ("--scenecut", 0)):
        r = run("encode", clip, "-o", tmp_path / "off.imf", *common, *off, "-y")
        assert r.exit_code == 0 and "1 key frame(s)," in r.output, r.output
    r = run("encode", clip, "-o", tmp_path / "x.imf", *common, "--no-scenecut", "--scenecut", 10)
    assert r.exit_code == 2 and "--no-scenecut and --scenecut N contradict" in r.stderr
    _one_line_error(r)
    _one_line_error(run("encode", clip, "-o", tmp_path / "x.imf", *common, "--scenecut", -5))
    assert "--scenecut" in run("encode", "--help").output


def test_models_lists_configs():
    r = run("models", "--json")
    assert r.exit_code == 0
    names = {m["name"] for m in json.loads(r.stdout)["models"]}
    assert {"imf-tiny", "imf-small", "imf-paper"} <= names


def test_console_script_is_installed():
    out = run_no_hang([sys.executable, "-m", "imfcodec.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "encode" in out.stdout


def test_train_runs_the_trainers_command_line():
    """`imfcodec train ARGS` is `python -m imfcodec.train ARGS`: same options, same one-line usage errors."""
    r = run("train", "--config", "tiny", "--print-config", "--data", "a", "b", "--set", "steps=3", "--amp")
    assert r.exit_code == 0, r.output
    cfg = json.loads(r.stdout)
    assert cfg["data"] == ["a", "b"] and cfg["steps"] == 3 and cfg["amp"] is True
    r = run("train", "--data")
    assert r.exit_code == 2
    _one_line_error(r)
    r = run("train", "--help")
    assert r.exit_code == 0 and "python -m imfcodec.train" in r.stdout and "--set KEY=JSON" in r.stdout


def test_benchmarks_are_not_part_of_the_package():
    """The benchmarks run from a source checkout (python -m benchmarks.rd), not as `imfcodec bench`."""
    assert "bench" not in main.commands
