"""Speed bookkeeping: frames per second and imfcodec's decoder cost in GFLOPs.

Timings are wall-clock (``time.perf_counter``) on the machine running the benchmark, measured in
the same run for every codec so that ratios against x265 are meaningful even when absolute numbers
drift with machine load. What a timing covers, for every codec alike:

* encode: RGB frames in memory -> compressed bytes (includes the RGB -> YUV 4:2:0 conversion of
  the anchors and the key-frame codec plus token extraction and entropy coding of imfcodec);
* decode: compressed bytes -> RGB frames in memory (includes YUV -> RGB for the anchors, and key
  frame decoding plus frame synthesis for imfcodec).

Model loading, file writing and metric computation are not timed. Thread counts are fixed per run
(``--threads``, default 1) for every codec: libx264/libx265/SVT-AV1/libvpx thread options, FFmpeg
decoder threads and ``torch.set_num_threads``. With ``--jobs`` > 1, jobs share the CPU and the
summary says so: use ``--jobs 1`` for speed numbers you will quote.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable


class Stopwatch:
    """Accumulating wall-clock timer: ``with sw: ...`` adds the block's duration to ``sw.seconds``."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._t0 = 0.0

    def __enter__(self) -> "Stopwatch":
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds += time.perf_counter() - self._t0


def fps(frames: int, seconds: float) -> float:
    """Frames per second, NaN when nothing was timed."""
    return frames / seconds if seconds > 0 else math.nan


def set_threads(threads: int) -> None:
    """Pin torch's intra-op threads (only if torch is already imported: importing it costs memory)."""
    import sys

    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(max(1, threads))


def decode_gflops(model) -> float:
    """GFLOPs to synthesise one frame (``imfcodec.models.decode_gflops``); NaN if unavailable."""
    try:
        from imfcodec.models import decode_gflops as _gflops
    except ImportError:
        return math.nan
    try:
        return float(_gflops(model))
    except Exception:  # a model under construction must not sink the whole benchmark
        return math.nan


def ratio(value: float, reference: float) -> float:
    """value / reference, NaN when either is missing."""
    if not (math.isfinite(value) and math.isfinite(reference)) or reference <= 0:
        return math.nan
    return value / reference


def geometric_mean(values: Iterable[float]) -> float:
    """Geometric mean of the finite positive values (speeds average multiplicatively)."""
    vals = [v for v in values if math.isfinite(v) and v > 0]
    if not vals:
        return math.nan
    return math.exp(sum(math.log(v) for v in vals) / len(vals))
