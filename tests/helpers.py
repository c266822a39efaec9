"""Shared test helpers (imported as ``helpers``: pytest puts tests/ on sys.path)."""

from __future__ import annotations

import contextlib
import faulthandler
import itertools
import signal
import subprocess
import threading
from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def write_video(path: Path, frames, codec: str, pix_fmt: str, *, fmt: str | None = None, rate=25,
                pts=None, options=None, fast: bool = False) -> Path:
    """Encode RGB frames with PyAV into a test clip. ``pts``: millisecond timestamps (variable
    frame rate); ``fast``: libx264 preset ultrafast unless ``options`` says otherwise. ``frames``
    may be any iterable (a generator keeps long clips out of memory)."""
    frames = iter(frames)
    first = next(frames)
    h, w = first.shape[:2]
    with av.open(str(path), "w", format=fmt) as c:
        s = c.add_stream(codec, rate=rate)
        s.width, s.height, s.pix_fmt = w, h, pix_fmt
        if pts is not None:
            s.time_base = s.codec_context.time_base = Fraction(1, 1000)
        opts = dict(options or {})
        if codec == "libx265":
            opts["x265-params"] = "log-level=error"
        if codec == "libx264" and fast:
            opts.setdefault("preset", "ultrafast")
        if opts:
            s.options = opts
        for i, rgb in enumerate(itertools.chain([first], frames)):
            f = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format=pix_fmt)
            f.pts = i if pts is None else pts[i]
            if pts is not None:
                f.time_base = Fraction(1, 1000)
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


# ------------------------------------------------------------------------------------------ hang guards
# Tests never assert how fast something is (timings live in benchmarks/). They only refuse to hang:
# an operation still running after HANG_SECONDS is a hang, whatever the machine's load.

HANG_SECONDS = 300


class Hang(AssertionError):
    """An operation was still running long after any plausible time."""


_guarding = False


@contextlib.contextmanager
def no_hang(what: str, seconds: float = HANG_SECONDS):
    """Fail the test with ``hang: WHAT ...`` if the block is still running after ``seconds``.

    SIGALRM interrupts Python code and C code that checks for signals; for C code that never returns,
    ``faulthandler`` ends the whole process a minute later with every thread's traceback, so a run
    cannot hang forever. A guard inside another guard leaves the outer one in charge. In a thread other
    than the main one (no signals there) only the faulthandler backstop applies."""
    global _guarding
    if _guarding:
        yield
        return
    main = threading.current_thread() is threading.main_thread() and hasattr(signal, "SIGALRM")

    def on_alarm(signum, frame):
        raise Hang(f"hang: {what} still running after {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, on_alarm) if main else None
    faulthandler.dump_traceback_later(seconds + 60, exit=True)
    _guarding = True
    try:
        if main:
            signal.setitimer(signal.ITIMER_REAL, seconds)
        yield
    finally:
        _guarding = False
        if main:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
        faulthandler.cancel_dump_traceback_later()


def run_no_hang(args, *, seconds: float = HANG_SECONDS, **kw) -> subprocess.CompletedProcess:
    """``subprocess.run`` that fails the test with ``hang: ...`` (the child killed) after ``seconds``."""
    try:
        return subprocess.run(args, timeout=seconds, **kw)
    except subprocess.TimeoutExpired as e:
        raise Hang(f"hang: {' '.join(map(str, args))[:200]} still running after {seconds:g} s") from e
