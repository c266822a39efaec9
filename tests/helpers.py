"""Shared test helpers (imported as ``helpers``: pytest puts tests/ on sys.path)."""

from __future__ import annotations

import itertools
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
