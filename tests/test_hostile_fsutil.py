"""Hostile conditions, atomic output (issue #5, theme 5): an interrupted (SIGINT, SIGTERM) or failed
run leaves no output and no temporary behind, and never touches an existing output."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import HANG_SECONDS, TINY, Hang, cheap_clip, cli, communicate_no_hang, long_stream, one_line_error

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _interrupt(args: list[str], folder: Path, sig: int) -> subprocess.CompletedProcess:
    """Run the CLI, send ``sig`` once its temporary output exists, return the finished process."""
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "imfcodec.cli", *args], cwd=folder, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + HANG_SECONDS
    while not any(p.name.endswith(".partial") for p in folder.iterdir()):
        assert proc.poll() is None, proc.communicate()
        if time.monotonic() > deadline:
            proc.kill()
            proc.communicate()
            raise Hang(f"hang: no temporary output after {HANG_SECONDS} s")
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(sig)
    out, err = communicate_no_hang(proc)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.mark.slow
@pytest.mark.parametrize("command, sig", [("encode", signal.SIGINT), ("decode", signal.SIGINT),
                                          ("decode", signal.SIGTERM)])
def test_interrupted_run_leaves_nothing(command, sig, tmp_path, tiny):
    work = tmp_path / "work"
    work.mkdir()
    # Each run would last 20-40 s on a free core, so that a parent slowed by a loaded machine still signals
    # it mid-run (runs of 2-3 s were missed under load); it is signalled as soon as its temporary exists,
    # so the length costs nothing.
    if command == "encode":
        # no token search: its first optimizer step imports torch._dynamo and sympy (2 s), which the
        # CLI handles (see test_interrupt_inside_a_library_error) but which is not this test's point.
        # --refresh-below 99: the untrained model never reaches 99 dB, so every frame is a key frame the
        # encoder decodes back (about 80 frames/s instead of 900: 3,000 frames of a clip cheap to make)
        src = cheap_clip(tmp_path / "long.mp4", 3000)
        args = ["encode", str(src), "-o", "out.imf", "--model", TINY, "--key-codec", "png", "--refine", "0",
                "--refresh-below", "99"]
    else:
        src = long_stream(tiny, tmp_path / "long.imf", 15000)
        args = ["decode", str(src), "-o", "out.mp4"]
    done = _interrupt(args, work, sig)
    assert done.returncode == -sig, done.stderr  # ended by the signal, as a shell expects (status 128 + sig)
    assert done.stderr.strip().splitlines()[-1] == "interrupted: no output was written", done.stderr
    assert "Traceback" not in done.stderr
    assert list(work.iterdir()) == []


def test_failed_runs_leave_nothing(tmp_path, tiny, hevc_stream):
    bad = tmp_path / "bad.imf"
    bad.write_bytes(hevc_stream.read_bytes()[:-20])  # decodes most frames, then fails
    for out in ("o.mp4", "o.y4m", "pngs/"):
        one_line_error(cli("decode", bad, "-o", tmp_path / out), "truncat")
    existing = tmp_path / "keep.imf"
    existing.write_bytes(b"old")
    txt = tmp_path / "t.mp4"
    txt.write_text("no video")
    one_line_error(cli("encode", txt, "-o", existing, "--model", TINY))
    assert existing.read_bytes() == b"old"  # a failed run never touches an existing output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.imf", "keep.imf", "t.mp4"]


def test_interrupt_inside_a_library_error(tmp_path, monkeypatch):
    """A Ctrl-C that lands inside a library (an import, a C extension) may come back as another exception;
    the CLI still reports an interrupt, not an internal error."""
    import imfcodec.api
    import imfcodec.cli

    def interrupted(*args, **kwargs):
        imfcodec.cli._stopped_by = signal.SIGINT  # what the CLI's handler records before raising
        raise RuntimeError("KeyboardInterrupt while importing a module")

    monkeypatch.setattr(imfcodec.cli, "_stopped_by", None)
    monkeypatch.setattr(imfcodec.api, "encode_video", interrupted)
    src = cheap_clip(tmp_path / "c.mp4", 3)
    result = cli("encode", src, "-o", tmp_path / "o.imf", "--model", TINY)
    assert result.exit_code == 130, result.output
    assert result.stderr.strip() == "interrupted: no output was written"
