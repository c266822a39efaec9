"""Pipes: first-frame latency and memory of ``imfcodec encode - -o - | imfcodec decode - -o -``.

```
python -m benchmarks.pipe [--frames 250] [--fps 25] [--input y4m|nut] [--mode token|hybrid] [--model NAME] [--chunk 5]
                          [--refine 0] [--warmup 120] [--json OUT.json]
python -m benchmarks.pipe --frames 3000 --fps 0          # memory: as fast as it goes, RSS sampled
```

This process plays a live source: it starts the two CLI processes (the real command line, pipes
between them), waits until both are blocked reading their input (Linux ``/proc/PID/wchan``; at most
``--warmup`` seconds): the encoder has imported torch and loaded its model by then, the decoder has
imported torch and waits for the stream's header, which names the model it loads. Then it writes a synthetic 256x256 clip (the demo clip's moving face,
``imfcodec.io.sample_frames``) into the encoder's stdin at ``--fps`` frames per second (0 = as fast
as the pipe takes them) as y4m or nut (rawvideo). A reader thread parses the decoder's y4m from its
stdout and timestamps every frame. Reported:

* start-up: seconds from starting the processes until both wait for input;
* **first-frame latency**: from the moment frame 0 was written to the moment decoded frame 0 was
  read (the decoder's model loading included), and whether it arrived before the last input frame
  was written (streaming, not batch);
* per-frame latency (median, 90th percentile) in the steady state;
* peak resident memory (VmRSS sampled every 0.2 s) of each process in each quarter of the output
  frames: flat when the last quarter's peak is within ``--tolerance`` of the second quarter's (exit 1
  otherwise): memory that grows with the number of frames keeps rising, a one-time allocation (the
  first token packet, the first key frame) does not. Use a few thousand frames and ``--fps 0``.

Timings depend on the machine and its load; the tests only check that the pipe streams
(``tests/test_unix.py``).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import click

from imfcodec.cliutil import CONTEXT_SETTINGS, call

from .harness import REPO, write_json

PROG = "python -m benchmarks.pipe"


def rss_mb(pid: int) -> float | None:
    """Current resident set size of a process, MiB (Linux), or None once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def _waiting_for_input(pid: int) -> bool | None:
    """Whether the process sleeps in a pipe read (None when /proc cannot tell)."""
    try:
        with open(f"/proc/{pid}/wchan") as f:
            return "pipe_read" in f.read()
    except OSError:
        return None


def _wait_ready(procs, limit: float) -> float:
    """Seconds until every process has waited for input for 1 s in a row (at most ``limit``)."""
    t0 = time.perf_counter()
    since = None
    while time.perf_counter() - t0 < limit:
        states = [_waiting_for_input(p.pid) for p in procs]
        if None in states:
            time.sleep(limit)
            return limit
        if all(states):
            since = since or time.perf_counter()
            if time.perf_counter() - since >= 1.0:
                return since - t0
        else:
            since = None
        if any(p.poll() is not None for p in procs):
            break
        time.sleep(0.05)
    return time.perf_counter() - t0


def _writer(args, size: int, sink, sent: list, done: threading.Event) -> None:
    """Write the clip into ``sink`` (the encoder's stdin) at ``args.fps``, timestamping each frame."""
    import av

    from imfcodec.io import sample_frames

    fmt, codec = ("yuv4mpegpipe", "rawvideo") if args.input == "y4m" else ("nut", "rawvideo")
    pix = "yuv444p" if args.input == "y4m" else "yuv420p"
    try:
        with av.open(sink, "w", format=fmt) as c:
            s = c.add_stream(codec, rate=25)
            s.width = s.height = size
            s.pix_fmt = pix
            t0 = time.perf_counter()
            for i, rgb in enumerate(sample_frames(args.frames, size, 25)):
                if args.fps:
                    delay = t0 + i / args.fps - time.perf_counter()
                    if delay > 0:
                        time.sleep(delay)
                f = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format=pix)
                f.pts = i
                for p in s.encode(f):
                    c.mux(p)
                sink.flush()
                sent.append(time.perf_counter())
            for p in s.encode():
                c.mux(p)
    finally:
        sink.close()
        done.set()


def _reader(source, received: list) -> None:
    """Parse y4m from ``source`` (the decoder's stdout), timestamping each complete frame."""
    header = b""
    while not header.endswith(b"\n"):
        b = source.read(1)
        if not b:
            return
        header += b
    fields = dict((w[0], w[1:]) for w in header.decode().split()[1:])
    w, h = int(fields["W"]), int(fields["H"])
    planes = {"444": 3, "420": 1.5, "420jpeg": 1.5, "420mpeg2": 1.5, "422": 2}[fields.get("C", "420").split("p")[0]]
    frame_bytes = int(w * h * planes)
    while True:
        line = source.readline()
        if not line:
            return
        need = frame_bytes
        while need:
            chunk = source.read(need)
            if not chunk:
                return
            need -= len(chunk)
        received.append(time.perf_counter())


def run_pipe(args) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cli = [sys.executable, "-m", "imfcodec.cli"]
    enc_cmd = cli + ["encode", "-", "-o", "-", "--mode", args.mode, "--chunk", str(args.chunk)]
    if args.mode == "token":
        enc_cmd += ["--refine", str(args.refine)]
    if args.model:
        enc_cmd += ["--model" if args.mode == "token" else "--enhancer", args.model]
    dec_cmd = cli + ["decode", "-", "-o", "-"]
    if args.model and args.model.endswith(".safetensors"):
        dec_cmd += ["--model", args.model]
    enc = subprocess.Popen(enc_cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           env=env, bufsize=0)
    dec = subprocess.Popen(dec_cmd, stdin=enc.stdout, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                           bufsize=0)
    enc.stdout.close()  # the decoder holds it now
    size = 256
    if args.model and "tiny" in args.model:
        size = 64
    sent: list[float] = []
    received: list[float] = []
    done = threading.Event()
    peaks = {"encode": [0.0] * 4, "decode": [0.0] * 4}  # peak RSS while each quarter of the frames came out

    reader = threading.Thread(target=_reader, args=(dec.stdout, received), daemon=True)
    reader.start()
    startup = _wait_ready([enc, dec], args.warmup)
    writer = threading.Thread(target=_writer, args=(args, size, enc.stdin, sent, done), daemon=True)
    writer.start()
    while reader.is_alive() or not done.is_set():
        for name, proc in (("encode", enc), ("decode", dec)):
            r = rss_mb(proc.pid) if len(received) < args.frames else None  # not the exit's clean-up
            if r is not None:
                k = min(3, 4 * len(received) // args.frames)
                peaks[name][k] = max(peaks[name][k], r)
        if dec.poll() is not None and enc.poll() is not None:
            break
        time.sleep(0.2)
    reader.join(timeout=60)
    enc_err = enc.stderr.read().decode(errors="replace")
    dec_err = dec.stderr.read().decode(errors="replace")
    enc.wait()
    dec.wait()
    if enc.returncode or dec.returncode or len(received) != args.frames:
        raise click.ClickException(f"pipeline failed: encode {enc.returncode}, decode {dec.returncode}, "
                                   f"{len(received)}/{args.frames} frames; {enc_err.strip()[-300:]} "
                                   f"{dec_err.strip()[-300:]}")
    lat = [r - s for s, r in zip(sent, received)]
    steady = lat[len(lat) // 10:] or lat
    return {
        "frames": args.frames, "startup_s": round(startup, 2), "first_frame_latency_s": round(received[0] - sent[0], 3),
        "first_out_before_last_in": received[0] < sent[-1],
        "latency_median_s": round(statistics.median(steady), 3),
        "latency_p90_s": round(sorted(steady)[int(0.9 * (len(steady) - 1))], 3),
        "input_seconds": round(sent[-1] - sent[0], 2), "output_seconds": round(received[-1] - received[0], 2),
        "rss_mb_by_quarter": {k: [round(x, 1) for x in v] for k, v in peaks.items()},
    }


@click.command("pipe", context_settings=CONTEXT_SETTINGS, help=__doc__.splitlines()[0])
@click.option("--frames", type=int, default=250, show_default=True)
@click.option("--fps", type=float, default=25.0, show_default=True, help="input rate (0 = as fast as possible)")
@click.option("--input", type=click.Choice(["y4m", "nut"]), default="y4m", show_default=True)
@click.option("--mode", type=click.Choice(["token", "hybrid"]), default="token", show_default=True,
              help="the encoder's mode (the token mode is what the README's pipe numbers measured)")
@click.option("--model", default=None, help="encoder --model, or --enhancer in the hybrid mode (default: the shipped one)")
@click.option("--chunk", type=int, default=5, show_default=True)
@click.option("--refine", type=int, default=0, show_default=True)
@click.option("--warmup", type=float, default=120.0, show_default=True,
              help="most seconds to wait for both processes to be ready for input")
@click.option("--tolerance", type=float, default=0.10, show_default=True, help="allowed growth of peak RSS")
@click.option("--json", "json_out", type=click.Path(path_type=Path), help="also write the results here")
def command(**params) -> int:
    args = SimpleNamespace(**params)
    if args.frames < 10:
        raise click.BadParameter("at least 10 frames", param_hint="--frames")
    r = run_pipe(args)
    print(f"start-up: {r['startup_s']:.1f} s until both processes waited for input")
    print(f"first frame: {r['first_frame_latency_s'] * 1000:.0f} ms after it was written "
          f"({'before' if r['first_out_before_last_in'] else 'AFTER'} the last input frame); steady state: "
          f"median {r['latency_median_s'] * 1000:.0f} ms, p90 {r['latency_p90_s'] * 1000:.0f} ms; "
          f"{r['frames']} frames in {r['input_seconds']} s, out over {r['output_seconds']} s")
    flat = True
    for name, q in r["rss_mb_by_quarter"].items():
        if not q[3]:  # the process had ended before the last quarter came out (the encoder runs ahead)
            q = [x for x in q if x] or [0.0]
        ok = q[-1] <= max(q[1] if len(q) > 2 else q[0], q[0]) * (1 + args.tolerance)
        flat &= ok
        print(f"{name}: peak RSS by quarter of the frames {' / '.join(f'{x:.0f}' for x in q)} MiB "
              f"-> {'flat' if ok else 'NOT flat'}")
    write_json(args.json_out, params, **r)
    return 0 if flat else 1


def main(argv: list[str] | None = None) -> int:
    """Entry point for ``python -m benchmarks.pipe``; returns the exit status (1: memory grew)."""
    return call(command, argv, PROG)


if __name__ == "__main__":
    sys.exit(main())
