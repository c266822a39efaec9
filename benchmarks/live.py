"""Live calls end to end: a sender and a receiver process over loopback UDP with the link shaper between
(``benchmarks.livecall``, ``benchmarks.livelink``), the clip read in real time, for imfcodec's live mode and
conventional live anchors (libvpx-vp9 realtime CBR, x264 and x265 zerolatency with VBV) on the same links.

Per session and frame: capture-to-ready latency (p50/p95/max), frames late (ready after the bound: max delay
+ propagation + one frame), frames frozen (at frame i's display time, capture + that bound, the newest frame
ready is not i, or i was concealed), and the PSNR of what is shown at each display time against frame i's
source (a frozen or concealed frame counts against the frame that should have been shown; before the first
frame a mid-grey picture is shown). Under loss: concealed frames and the longest stall.

``python -m benchmarks.live --out DIR`` writes ``sessions.csv`` (one row per clip, link and codec),
``summary.md`` and, for one clip, ``latency.png`` and ``psnr.png``. Measures on the test clips (tunes nothing).
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click
import numpy as np

from benchmarks.harness import TEST_DATA, find_clips, out_option, write_result
from imfcodec.cliutil import GreedyOption, call

COLUMNS = ["clip", "link", "codec", "refresh", "frames", "kbps_sent", "arr_p50_ms", "arr_p95_ms", "arr_max_ms",
           "arr_late", "lat_p50_ms", "lat_p95_ms", "lat_max_ms",
           "late", "frozen", "concealed", "lost", "unenhanced", "max_stall_ms", "psnr_shown", "key_bytes", "key_q"]


def display_metrics(ready: np.ndarray, start: float, fps: float, n: int, bound_s: float) -> dict:
    """Per-frame latency and what is shown when: ``ready[i]`` is when frame i was ready (its length may be
    short of ``n`` when frames never came). Returns latency (ms, inf for a frame never ready), ``shown[i]``:
    the index of the frame on screen at frame i's display time ``start + i / fps + bound_s`` (-1: nothing
    yet), late (latency above the bound) and frozen (shown != i)."""
    ready = np.maximum.accumulate(np.asarray(ready, dtype=float)) if len(ready) else np.zeros(0)
    capture = start + np.arange(n) / fps
    latency = np.full(n, np.inf)
    m = min(n, len(ready))
    latency[:m] = ready[:m] - capture[:m]
    slots = capture + bound_s
    shown = np.searchsorted(ready, slots, side="right") - 1
    shown = np.minimum(shown, np.arange(n))  # frame i's time shows i or an older frame, never a newer one
    late = latency > bound_s + 1e-9
    return {"latency_ms": latency * 1000, "shown": shown, "late": late, "frozen": shown != np.arange(n)}


def longest_run(flags: np.ndarray) -> int:
    """The longest run of True in ``flags``."""
    best = run = 0
    for f in flags:
        run = run + 1 if f else 0
        best = max(best, run)
    return best


def _free_ports(k: int) -> list[int]:
    import socket

    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(k)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def run_session(clip: Path, link: dict, codec: str, scale: str, seconds: float, max_delay: float,
                refresh: bool, keyint: int, tmp: Path) -> tuple[dict, dict]:
    """One call: receiver, shaper and sender as separate processes; returns (row, per-frame series)."""
    from benchmarks.livecall import _frames
    from imfcodec.metrics import psnr

    rx, sh = _free_ports(2)
    out = tmp / f"rx-{rx}.npz"
    py = [sys.executable, "-m"]
    bound_ms = max_delay + link["delay_ms"] + 40
    receiver = subprocess.Popen(py + ["benchmarks.livecall", "receive", "--port", str(rx), "--out", str(out),
                                      "--bound-ms", str(bound_ms)]
                                + ([] if refresh else ["--no-refresh"]))
    shaper = subprocess.Popen(py + ["benchmarks.livelink", "--listen", str(sh), "--to", f"127.0.0.1:{rx}",
                                    "--kbps", str(link["kbps"]), "--delay-ms", str(link["delay_ms"]),
                                    "--loss", str(link.get("loss", 0)), "--burst", str(link.get("burst", 0)),
                                    "--seed", str(link.get("seed", 1))], stderr=subprocess.PIPE, text=True)
    sender = subprocess.run(py + ["benchmarks.livecall", "send", str(clip), "--to", f"127.0.0.1:{sh}",
                                  "--link-kbps", str(link["kbps"]), "--max-delay", str(max_delay), "--codec", codec,
                                  "--scale", scale, "--seconds", str(seconds), "--keyint", str(keyint)]
                            + ([] if refresh else ["--no-refresh"]), capture_output=True, text=True, timeout=300)
    receiver.wait(timeout=120)
    shaper.wait(timeout=30)
    if sender.returncode != 0 or receiver.returncode != 0:
        raise RuntimeError(f"session {clip.name} {codec}: sender {sender.returncode} {sender.stderr[-400:]}")
    stats = json.loads(sender.stdout.strip().splitlines()[-1])
    got = np.load(out)
    src, fps = _frames(str(clip), seconds)
    n = len(src)
    bound = (max_delay + link["delay_ms"]) / 1000 + 1 / float(fps)
    m = display_metrics(got["ready"], float(got["start"]), float(fps), n, bound)
    frames = got["frames"]
    grey = np.full_like(src[0], 128)
    shown_psnr = np.array([psnr(src[i], frames[j] if j >= 0 else grey) for i, j in enumerate(m["shown"])])
    lat = m["latency_ms"]
    finite = lat[np.isfinite(lat)]
    concealed = set(got["concealed"].tolist())
    arr = np.full(n, np.nan)
    arr[:min(n, len(got["arrived"]))] = got["arrived"][:n]
    arr_ms = (arr - (float(got["start"]) + np.arange(n) / float(fps))) * 1000
    ok = arr_ms[np.isfinite(arr_ms)]
    arr_bound = max_delay + link["delay_ms"]
    row = {"clip": clip.stem, "link": link["label"], "codec": codec, "refresh": int(refresh), "frames": n,
           "kbps_sent": round(stats["bytes"] * 8 / (n / float(fps)) / 1000, 2),
           "arr_p50_ms": round(float(np.percentile(ok, 50)), 1), "arr_p95_ms": round(float(np.percentile(ok, 95)), 1),
           "arr_max_ms": round(float(ok.max()), 1), "arr_late": int((ok > arr_bound).sum()),
           "lat_p50_ms": round(float(np.percentile(finite, 50)), 1) if len(finite) else "",
           "lat_p95_ms": round(float(np.percentile(finite, 95)), 1) if len(finite) else "",
           "lat_max_ms": round(float(lat.max()), 1), "late": int(m["late"].sum()), "frozen": int(m["frozen"].sum()),
           "concealed": len(concealed), "lost": int(got["lost"]), "unenhanced": int(got["unenhanced"]),
           "max_stall_ms": round(longest_run(m["frozen"] | np.isin(np.arange(n), list(concealed))) * 1000
                                 / float(fps), 0),
           "psnr_shown": round(float(shown_psnr.mean()), 3),
           "key_bytes": stats.get("key_sizes", [""])[0] if stats.get("key_sizes") else "",
           "key_q": stats.get("key_qualities", [""])[0] if stats.get("key_qualities") else ""}
    out.unlink(missing_ok=True)
    return row, {"latency_ms": lat.tolist(), "arrival_ms": arr_ms.tolist(), "psnr": shown_psnr.tolist(), "bound_ms": bound * 1000}


def _summary(rows: list[dict]) -> str:
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["link"], r["codec"], r["refresh"]), []).append(r)
    lines = ["| link | codec | refresh | clips | kbit/s sent | arrival p50 / p95 / max (ms) | arrived late | latency p50 / p95 / max (ms) | late | frozen | "
             "concealed | longest stall (ms) | PSNR shown (dB) |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for (link, codec, refresh), rs in groups.items():
        def mean(k):
            return float(np.mean([float(r[k]) for r in rs if r[k] != ""]))
        lines.append(f"| {link} | {codec} | {'PLI' if refresh else 'no'} | {len(rs)} | {mean('kbps_sent'):.2f} | "
                     f"{mean('arr_p50_ms'):.0f} / {mean('arr_p95_ms'):.0f} / {max(float(r['arr_max_ms']) for r in rs):.0f}"
                     f" | {sum(r['arr_late'] for r in rs)} | "
                     f"{mean('lat_p50_ms'):.0f} / {mean('lat_p95_ms'):.0f} / "
                     f"{max(float(r['lat_max_ms']) for r in rs):.0f} | {sum(r['late'] for r in rs)} | "
                     f"{sum(r['frozen'] for r in rs)} | {sum(r['concealed'] for r in rs)} | "
                     f"{max(float(r['max_stall_ms']) for r in rs):.0f} | {mean('psnr_shown'):.2f} |")
    return "\n".join(lines) + "\n"


def _plots(out: Path, series: dict[str, dict], clip: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for key, name, ylabel in (("latency_ms", "latency.png", "capture to ready (ms)"),
                              ("arrival_ms", "arrival.png", "capture to arrival (ms)"),
                              ("psnr", "psnr.png", "PSNR of what is shown (dB)")):
        fig, ax = plt.subplots(figsize=(9, 4))
        for label, s in series.items():
            y = np.asarray(s[key], dtype=float)
            ax.plot(np.arange(len(y)) / 25.0, np.where(np.isfinite(y), y, np.nan), label=label, lw=1)
        if key != "psnr":
            for label, s in series.items():
                ax.axhline(s["bound_ms"], color="grey", ls="--", lw=0.8)
        ax.set_xlabel("capture time (s, frame / 25)")
        ax.set_ylabel(ylabel)
        ax.set_title(f"{clip}: {ylabel}")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / name, dpi=110)
        plt.close(fig)


@click.command()
@click.option("--videos", cls=GreedyOption, default=(str(TEST_DATA),), show_default=True, metavar="PATH [PATH ...]")
@click.option("--clips", cls=GreedyOption, default=None, metavar="NAME [NAME ...]", help="only these clips")
@click.option("--links", default="8,16", show_default=True, help="link capacities, kbit/s")
@click.option("--delay-ms", type=float, default=150.0, show_default=True, help="one-way propagation")
@click.option("--max-delay", type=float, default=None, help="ms: the live encoder's bound (its default)")
@click.option("--codecs", default="imf,vp9,x264,x265", show_default=True)
@click.option("--anchor-scale", default="1/2", show_default=True, help="anchors' coded frame size")
@click.option("--seconds", type=float, default=8.0, show_default=True, help="clip length cap")
@click.option("--loss", "losses", default="", help="loss runs of the live mode: e.g. 0.01,0.05,burst")
@click.option("--loss-kbps", type=float, default=16.0, show_default=True)
@click.option("--loss-clips", type=int, default=5, show_default=True, help="first N clips for the loss runs")
@click.option("--plot-clip", default=None, help="the clip whose series are plotted (default: the first)")
@out_option("sessions.csv", "summary.md", "latency.png", "psnr.png", required=True)
def _cli(videos, clips, links, delay_ms, max_delay, codecs, anchor_scale, seconds, losses, loss_kbps, loss_clips,
         plot_clip, out):
    """Live calls through a shaped link, imfcodec's live mode against conventional live anchors."""
    from benchmarks import require_bench_extra
    from imfcodec.live import DEFAULT_MAX_DELAY_MS

    require_bench_extra()
    max_delay = DEFAULT_MAX_DELAY_MS if max_delay is None else max_delay
    found = find_clips(list(videos), list(clips) if clips else None)
    plot_clip = plot_clip or next(iter(found))
    jobs = []
    for kbps in [float(k) for k in links.split(",") if k]:
        link = {"kbps": kbps, "delay_ms": delay_ms, "label": f"{kbps:g}k-{delay_ms:g}ms"}
        for name, path in found.items():
            for codec in [c for c in codecs.split(",") if c]:
                jobs.append((path, link, codec, True, 0))
    for spec in [s for s in losses.split(",") if s]:
        link = {"kbps": loss_kbps, "delay_ms": delay_ms}
        if spec == "burst":
            link.update(burst=0.01, label=f"{loss_kbps:g}k-{delay_ms:g}ms-burst")  # ~4 % in bursts of 4
        else:
            link.update(loss=float(spec), label=f"{loss_kbps:g}k-{delay_ms:g}ms-loss{float(spec) * 100:g}%")
        for name, path in list(found.items())[:loss_clips]:
            jobs.append((path, link, "imf", True, 0))
            jobs.append((path, link, "imf", False, 50))  # no requests: a key frame every 2 s instead
    rows, series = [], {}
    t0 = time.monotonic()
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for k, (path, link, codec, refresh, keyint) in enumerate(jobs):
            row, s = run_session(path, link, codec, anchor_scale, seconds, max_delay, refresh, keyint, Path(tmp))
            rows.append(row)
            if path.stem == plot_clip and "loss" not in link["label"] and "burst" not in link["label"]:
                series[f"{codec} {link['label']}"] = s
            click.echo(f"[{k + 1}/{len(jobs)} {time.monotonic() - t0:.0f}s] " + json.dumps(row), err=True)
            with open(out / "sessions.csv", "w", newline="") as f:
                w = csv.DictWriter(f, COLUMNS)
                w.writeheader()
                w.writerows(rows)
    write_result(out, "summary.md", _summary(rows))
    _plots(out, series, plot_clip)
    return 0


def main(argv: list[str] | None = None) -> int:
    return call(_cli, argv, "python -m benchmarks.live")


if __name__ == "__main__":
    sys.exit(main())
