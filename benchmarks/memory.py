"""Peak memory of each codec, measured as the peak RSS of a fresh process per (clip, codec) job.

Why a process per job: a peak-RSS counter is a high-water mark for the whole process, so it only
means something if the process did nothing else before. Each job runs in a *spawned* (not forked)
worker that is used for exactly one job, so it starts from a bare Python interpreter. The counter
is Linux's ``VmHWM`` (``/proc/self/status``), the high-water mark of the current address space:
``getrusage(RUSAGE_SELF).ru_maxrss`` is *not* usable here because Linux carries it across
``fork``/``exec``, so a worker would report the parent's peak (the parent has torch and the model
loaded). Other systems fall back to ``ru_maxrss``. tracemalloc was not used because it misses
memory allocated by C libraries (FFmpeg, x265, torch), which is most of it.

What the numbers include: ``base_rss_mb`` is the high-water mark after the interpreter, numpy and
PyAV are imported and the reference frames are loaded; ``peak_rss_mb`` is the high-water mark after
every rate point of the job has been encoded and decoded (the codec's libraries, model weights,
encoder/decoder state, and one clip of decoded frames held in memory), measured *before* any
quality metric is computed. ``peak_rss_mb - base_rss_mb`` approximates the codec's own working set.
"""

from __future__ import annotations

import multiprocessing
import resource
import sys
from concurrent.futures import ProcessPoolExecutor


def peak_rss_mb() -> float:
    """This process's peak resident set size so far, in MiB."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0  # kB
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux/BSD, bytes on macOS
    return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0


def job_executor(jobs: int) -> ProcessPoolExecutor:
    """A pool whose workers are fresh spawned interpreters, each used for a single job."""
    return ProcessPoolExecutor(max_workers=max(1, jobs), mp_context=multiprocessing.get_context("spawn"),
                               max_tasks_per_child=1)
