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

As a command, the peak memory and imports of the real command line (issue 12, item 4):

```
python -m benchmarks.memory STREAM [STREAM ...] [--checkout DIR [DIR ...]] [--repeat 3] [--threads 2]
                            [--device NAME] [--json OUT]
python -m benchmarks.memory t.imf h.imf --checkout ../main .     # before and after, in one run
```

For every checkout (default: this one), stream and repeat, a fresh ``python -m imfcodec.cli``-equivalent
process runs ``imfcodec decode STREAM -o <tmp>.y4m`` with that checkout's ``imfcodec`` first on its path,
then ``info STREAM``, and reports its ``VmHWM`` (peak RSS of the whole process, torch and the model
included), how many modules it imported (all, and ``torch.*``), and which of ``HEAVY`` it imported (the
compiler stack: none of it is needed to code a stream). The table shows the lowest peak per (checkout,
stream, command) and the spread between repeats (up to about 25 MiB for a decode on the shared 2-core
machine: thread timing moves the high-water mark); runs are interleaved across checkouts.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import resource
import subprocess
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import click

from imfcodec.cliutil import CONTEXT_SETTINGS, Command, GreedyOption, call
from imfcodec.fsutil import write_text

from .harness import REPO, threads_option

PROG = "python -m benchmarks.memory"
HEAVY = ("triton", "torch._dynamo", "torch._inductor", "torch.utils.flop_counter", "sympy")

# the child: the checkout's command line in this interpreter, then the measurements as the last stderr line
_CHILD = """
import json, sys
from imfcodec.cli import main
try:
    main(sys.argv[1:])
    rc = 0
except SystemExit as e:
    rc = e.code or 0
peak = 0.0
with open("/proc/self/status") as f:
    for line in f:
        if line.startswith("VmHWM:"):
            peak = int(line.split()[1]) / 1024.0
heavy = sorted(m for m in %r if m in sys.modules)
print(json.dumps({"rc": rc, "peak_mb": round(peak, 1), "modules": len(sys.modules),
                  "torch_modules": sum(m == "torch" or m.startswith("torch.") for m in sys.modules),
                  "heavy": heavy}), file=sys.stderr)
""" % (HEAVY,)


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


def measure_cli(checkout: Path, args: list[str], threads: int) -> dict:
    """Peak RSS and imports of one ``imfcodec ARGS`` run, in a fresh process on ``checkout``'s code."""
    env = {**os.environ, "PYTHONPATH": str(checkout) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "OMP_NUM_THREADS": str(threads)}
    out = subprocess.run([sys.executable, "-c", _CHILD, *args], capture_output=True, text=True, env=env,
                         cwd=checkout)
    lines = out.stderr.strip().splitlines()
    try:
        row = json.loads(lines[-1])
    except (IndexError, ValueError):
        raise click.ClickException(f"{' '.join(args[:1])} on {checkout} failed: {' | '.join(lines[-3:])}") from None
    if out.returncode or row["rc"]:
        raise click.ClickException(f"{' '.join(args[:1])} on {checkout} failed: {' | '.join(lines[-3:-1])}")
    return row


@click.command("memory", cls=Command, context_settings=CONTEXT_SETTINGS,
               help="Peak RSS and imported modules of `imfcodec decode` and `info` (fresh processes).")
@click.argument("streams", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--checkout", "checkouts", cls=GreedyOption, type=click.Path(
    exists=True, file_okay=False, path_type=Path), help="source trees to compare (default: this one)")
@click.option("--repeat", type=click.IntRange(min=1), default=3)
@threads_option(help="OMP_NUM_THREADS of the children")
@click.option("--device", default=None, help="pass --device to decode (a checkout without it fails)")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), help="also write the rows here")
def command(streams, checkouts, repeat, threads, device, json_out) -> int:
    checkouts = [c.resolve() for c in (checkouts or [REPO])]
    rows = []
    with tempfile.TemporaryDirectory(prefix="imf-memory-") as tmp:
        for _ in range(repeat):  # interleaved, so a change of load touches every checkout alike
            for checkout in checkouts:
                for stream in streams:
                    out = Path(tmp) / "d.y4m"
                    runs = {"decode": ["decode", str(stream.resolve()), "-o", str(out)]
                            + (["--device", device] if device else []),
                            "info": ["info", str(stream.resolve())]}
                    for what, args in runs.items():
                        row = measure_cli(checkout, args, threads)
                        rows.append({"checkout": str(checkout), "stream": stream.name, "command": what, **row})
                    out.unlink(missing_ok=True)
    print(f"{'checkout':30s} {'stream':16s} {'command':7s} {'peak MiB':>9s} {'spread':>7s} {'modules':>8s} "
          f"{'torch.*':>8s}  heavy imports")
    for checkout in checkouts:
        for stream in streams:
            for what in ("decode", "info"):
                group = [r for r in rows if r["checkout"] == str(checkout) and r["stream"] == stream.name
                         and r["command"] == what]
                peaks = [r["peak_mb"] for r in group]
                last = group[-1]
                print(f"{str(checkout)[-30:]:30s} {stream.name[:16]:16s} {what:7s} {min(peaks):9.1f} "
                      f"{max(peaks) - min(peaks):7.1f} {last['modules']:8d} {last['torch_modules']:8d}  "
                      f"{', '.join(last['heavy']) or '-'}")
    if json_out:
        write_text(json_out, json.dumps({"repeat": repeat, "threads": threads, "python": sys.version.split()[0],
                                        "rows": rows}, indent=1) + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point for ``python -m benchmarks.memory``."""
    return call(command, sys.argv[1:] if argv is None else argv, PROG)


if __name__ == "__main__":
    sys.exit(main())
