"""The half-rate base layer (format version 6, FORMAT.md §3.8): the stream codes every other frame, and the
decoder shows each decoded frame followed by the rounded mean of it and the next one.

Why: at the lowest rates a base codec spends a floor of bytes per frame (headers, mode and motion signalling)
whatever the picture; coding half the frames saves about a third of the rate there, and on talking heads the
mean of two neighbours 80 ms apart costs far less than those bytes buy
(benchmarks/results/2026-12-04-half-rate/NOTES.md). The mean is taken of the *shown* frames (after the enhancer),
so the enhancer runs on half the frames too. Before a key frame (a scene cut, or a restart) the frame in between
is a copy of the one before rather than a blend of two scenes. The header and END record count the frames shown,
N (as do timing records, so a variable-rate input keeps every frame's time); the packets hold ceil(N / 2), and
when N is even the last frame is followed by a copy of itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import numpy as np


def between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The frame shown between decoded frames ``a`` and ``b`` (uint8): (a + b + 1) // 2 per sample."""
    return ((a.astype(np.uint16) + b + 1) >> 1).astype(np.uint8)


class Doubler:
    """Turns a half-rate stream's decoded frames, batch by batch, into the frames shown (twice as many). Each
    frame's follower is known only when the next frame (or the end) arrives, so one frame waits here."""

    def __init__(self) -> None:
        self.tail: np.ndarray | None = None  # the last frame taken, whose follower is not shown yet
        self.frames = 0  # frames shown so far

    def push(self, frames: Iterable[np.ndarray], key_first: bool = False) -> list[np.ndarray]:
        """The frames to show for these decoded ``frames``: for each, the frame between the one before and it,
        then itself. ``key_first``: the first of them is a key frame (what comes before it is held, not blended)."""
        out: list[np.ndarray] = []
        for j, frame in enumerate(frames):
            if self.tail is not None:
                out.append(self.tail if j == 0 and key_first else between(self.tail, frame))
            out.append(frame)
            self.tail = frame
        self.frames += len(out)
        return out

    def end(self, frames: int | None = None) -> list[np.ndarray]:
        """At the end of a stream of ``frames`` frames (its END record's count; None: unknown, a truncated
        stream): the last frame's follower, a copy of it, where the count says there is one (even)."""
        if self.tail is None or (frames is not None and self.frames >= frames):
            return []
        out, self.tail = [self.tail], None
        self.frames += 1
        return out


def shown(items: Iterator, header, end: Callable[[], int | None]) -> Iterator:
    """(decoder, frames) items of a stream as shown: unchanged unless ``header.half_rate``, else doubled
    (``Doubler``), a batch's first frame taken as a key frame when the decoder's key-frame count grew with it, and
    after the last item the last frame's follower, by the END record's count (``end()``: None when unknown)."""
    if not header.half_rate:
        yield from items
        return
    d = Doubler()
    keys = 0
    dec = None
    for dec, frames in items:
        now = len(dec.report.key_frames)
        yield dec, d.push(frames, key_first=now > keys)
        keys = now
    if dec is not None:
        yield dec, d.end(end())
