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
from imfcodec.cliutil import Command, GreedyOption, call

COLUMNS = ["clip", "link", "codec", "refresh", "frames", "kbps_sent", "arr_p50_ms", "arr_p95_ms", "arr_max_ms",
           "arr_late", "lat_p50_ms", "lat_p95_ms", "lat_max_ms",
           "late", "frozen", "concealed", "lost", "unenhanced", "max_stall_ms", "psnr_shown", "psnr_enhanced", "frozen_arrival", "key_bytes", "key_q", "keys", "skipped"]


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
    try:
        receiver.wait(timeout=150)
        shaper.wait(timeout=30)
    except subprocess.TimeoutExpired:
        receiver.kill()
        shaper.kill()
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
    if codec == "imf":  # the same received bytes, every frame enhanced, shown by the arrival schedule
        from benchmarks.livecall import decode_offline

        lens = got["rx_len"]
        cuts = np.concatenate([[0], np.cumsum(lens)])
        raw = got["rx_bytes"].tobytes()
        dgrams = [(int(q), raw[cuts[k]:cuts[k + 1]]) for k, q in enumerate(got["rx_seq"])]
        offline, _ = decode_offline(got["setup"].tobytes(), dgrams)
        arr_ready = np.where(np.isfinite(arr), arr, np.inf)
        ma = display_metrics(np.minimum.accumulate(arr_ready[::-1])[::-1], float(got["start"]), float(fps), n,
                             bound - 1 / float(fps))
        p_off = [psnr(src[i], offline[j] if 0 <= j < len(offline) else grey) for i, j in enumerate(ma["shown"])]
        row["psnr_enhanced"] = round(float(np.mean(p_off)), 3)
        row["frozen_arrival"] = int(ma["frozen"].sum())
        series_extra = {"psnr_enhanced": p_off}
    else:
        series_extra = {}
    out.unlink(missing_ok=True)
    return row, {**series_extra, "latency_ms": lat.tolist(), "arrival_ms": arr_ms.tolist(), "psnr": shown_psnr.tolist(), "bound_ms": bound * 1000}


def parse_policy(text: str) -> dict:
    """``--policy key_codec=hevc,skip=0,intra_pct=100,base_factor=4,steady_ms=240``: ``LiveEncoder`` keywords
    (numbers as ints, but for the float fields)."""
    out: dict = {}
    for item in [t for t in text.split(",") if t]:
        name, _, value = item.partition("=")
        if name not in ("key_codec", "skip", "intra_pct", "base_factor", "scenecut", "rate_scale", "steady_ms"):
            raise click.BadParameter(f"unknown policy field {name!r}", param_hint="--policy")
        out[name] = value if name == "key_codec" else (bool(int(value)) if name == "skip" else float(value)
                                                         if name in ("scenecut", "rate_scale", "steady_ms") else int(value))
    return out


def simulate_session(clip: Path, link: dict, codec: str, scale: str, seconds: float, max_delay: float,
                     refresh: bool, keyint: int, policy: dict | None = None) -> tuple[dict, dict]:
    """One call on a simulated clock (no processes, no sockets, no processing time): the same encoder, link
    model and decoder as ``run_session``, deterministic (the link's seed), so what the encoder controls is
    measured apart from the machine's load. A refresh request leaves at the arrival that shows a loss and
    reaches the sender one propagation delay later."""
    import av

    from benchmarks.livecall import _anchor_decoder, _anchor_encoder, _frames, anchor_payload, decode_offline
    from benchmarks.livelink import Link, LinkSpec
    from imfcodec.bitstream import encode_packet, stream_start
    from imfcodec.live import LiveLink, datagram, open_live_encoder
    from imfcodec.metrics import psnr

    src, fps = _frames(str(clip), seconds)
    n, f = len(src), 1 / float(fps)
    spec = LinkSpec(link["kbps"], link["delay_ms"], link.get("loss", 0.0), link.get("burst", 0.0),
                    seed=link.get("seed", 1))
    net = Link(spec)
    prop = link["delay_ms"] / 1000
    llink = LiveLink(link["kbps"], max_delay).validated()
    if codec == "imf":
        from imfcodec.modes.hybrid import load_enhancer

        enc = open_live_encoder(load_enhancer(None), fps, llink, keyint=keyint, **(policy or {}))
    else:
        side = 256 // {"1": 1, "1/2": 2, "1/4": 4}[scale]
        enc = _anchor_encoder(codec, link["kbps"], llink.send_window_s, fps, side)
    arrivals = np.full(n, np.inf)
    got: list[tuple[int, bytes]] = []
    pli_at: list[float] = []  # when refresh requests reach the sender
    last_seen, key_since_loss, last_pli, lost, nbytes = 0, True, -1e9, 0, 0
    for i, rgb in enumerate(src):
        t = i * f
        want = refresh and any(p <= t for p in pli_at)
        pli_at = [p for p in pli_at if p > t]
        if codec == "imf":
            payload = b"".join(encode_packet(p, enc.header) for p in enc.encode(rgb, t, t, refresh=want))
            sent_key = enc.stats.key_frames[-1:] == [i]
        else:
            payload = anchor_payload(codec, enc, rgb, i)
        data = datagram(i + 1, payload)
        nbytes += len(data)
        due = net.admit(t, len(data))
        if due is None:
            lost += 1
            continue
        arrivals[i] = due
        if codec == "imf":
            if i + 1 - last_seen > 1:
                key_since_loss = False
            if sent_key:
                key_since_loss = True
            if refresh and not key_since_loss and due - last_pli > 0.5:
                pli_at.append(due + prop)
                last_pli = due
        last_seen = i + 1
        got.append((i + 1, payload))
    hidden: list[int] = []
    if codec == "imf":
        out, hidden = decode_offline(stream_start(enc.header), got)
    else:
        dec, out, shown = _anchor_decoder(codec), [], None
        body = dict(got)
        for i in range(n):
            if i + 1 in body:
                try:
                    for fr in dec.decode(av.Packet(body[i + 1])):
                        shown = fr.reformat(width=256, height=256, format="rgb24", interpolation="BICUBIC").to_ndarray()
                except av.FFmpegError:
                    pass
            out.append(shown if shown is not None else np.full_like(src[0], 128))
    avail = np.minimum.accumulate(arrivals[::-1])[::-1]  # a lost frame's concealment comes with the next arrival
    bound = max_delay / 1000 + prop
    m = display_metrics(avail, 0.0, float(fps), n, bound + f)
    grey = np.full_like(src[0], 128)
    shown_psnr = [psnr(src[i], out[j] if 0 <= j < len(out) else grey) for i, j in enumerate(m["shown"])]
    lat = (arrivals - np.arange(n) * f) * 1000
    ok = lat[np.isfinite(lat)]
    frozen = m["frozen"]
    concealed = np.isinf(arrivals) | np.isin(np.arange(n), hidden)
    stats = enc.stats if codec == "imf" else None
    row = {"clip": clip.stem, "link": link["label"], "codec": codec, "refresh": int(refresh), "frames": n,
           "kbps_sent": round(nbytes * 8 / (n * f) / 1000, 2), "arr_p50_ms": round(float(np.percentile(ok, 50)), 1),
           "arr_p95_ms": round(float(np.percentile(ok, 95)), 1), "arr_max_ms": round(float(ok.max()), 1),
           "arr_late": int((ok > bound * 1000 + 1e-6).sum()), "lat_p50_ms": "", "lat_p95_ms": "", "lat_max_ms": "",
           "late": int(m["late"].sum()), "frozen": int(frozen.sum()), "concealed": int(concealed.sum()),
           "lost": lost, "unenhanced": 0, "max_stall_ms": round(longest_run(frozen | concealed) * f * 1000, 0),
           "psnr_shown": round(float(np.mean(shown_psnr)), 3), "psnr_enhanced": "", "frozen_arrival": "",
           "key_bytes": stats.key_sizes[0] if stats else "", "key_q": stats.key_qualities[0] if stats else "",
           "keys": len(stats.key_frames) if stats else "", "skipped": len(stats.skipped) if stats else ""}
    return row, {"arrival_ms": lat.tolist(), "psnr": shown_psnr, "bound_ms": bound * 1000}


def _summary(rows: list[dict]) -> str:
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["link"], r["codec"], r["refresh"]), []).append(r)
    lines = ["| link | codec | refresh | clips | kbit/s sent | arrival p50 / p95 / max (ms) | arrived late | latency p50 / p95 / max (ms) | late | frozen | "
             "concealed | longest stall (ms) | PSNR shown (dB) | PSNR, receiver that keeps up (dB) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for (link, codec, refresh), rs in groups.items():
        def mean(k):
            vals = [float(r[k]) for r in rs if r.get(k, "") != ""]
            return float(np.mean(vals)) if vals else float("nan")

        def most(k):
            vals = [float(r[k]) for r in rs if r.get(k, "") != ""]
            return max(vals) if vals else float("nan")

        lines.append(f"| {link} | {codec} | {('PLI' if refresh else 'keyint 2 s') if codec.startswith('imf') else '-'} | {len(rs)} | {mean('kbps_sent'):.2f} | "
                     f"{mean('arr_p50_ms'):.0f} / {mean('arr_p95_ms'):.0f} / {most('arr_max_ms'):.0f}"
                     f" | {sum(r['arr_late'] for r in rs)} | "
                     f"{mean('lat_p50_ms'):.0f} / {mean('lat_p95_ms'):.0f} / "
                     f"{most('lat_max_ms'):.0f} | {sum(r['late'] for r in rs)} | "
                     f"{sum(r['frozen'] for r in rs)} | {sum(r['concealed'] for r in rs)} | "
                     f"{most('max_stall_ms'):.0f} | {mean('psnr_shown'):.2f} | "
                     + (f"{mean('psnr_enhanced'):.2f} |" if any(r.get('psnr_enhanced', '') != '' for r in rs) else
                        f"{mean('psnr_shown'):.2f} |"))
    return "\n".join(lines) + "\n"


def _per_clip(rows: list[dict]) -> str:
    """One line per clip and lossless link: the live mode's PSNR shown and worst arrival beside each anchor's."""
    lossless = [r for r in rows if str(r["refresh"]) == "1" and "loss" not in r["link"] and "burst" not in r["link"]]
    codecs = list(dict.fromkeys(r["codec"] for r in lossless))
    lines = ["| clip | link | " + " | ".join(f"{c} dB (max arrival ms)" for c in codecs) + " |",
             "|---|---|" + "---|" * len(codecs)]
    cells: dict[tuple, dict] = {}
    for r in lossless:
        cells.setdefault((r["clip"], r["link"]), {})[r["codec"]] = r
    for (clip, link), by in sorted(cells.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        lines.append(f"| {clip} | {link} | " + " | ".join(
            f"{float(by[c]['psnr_shown']):.2f} ({float(by[c]['arr_max_ms']):.0f})" if c in by else "" for c in codecs)
            + " |")
    return "\n".join(lines) + "\n"


def report(out: Path, prefix: str) -> None:
    """summary.md and per-clip.md again from a results folder's sessions.csv."""
    with open(out / f"{prefix}sessions.csv") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        for k in ("late", "frozen", "concealed", "arr_late", "refresh"):
            r[k] = int(r[k]) if r.get(k, "") != "" else 0
    write_result(out, f"{prefix}summary.md", _summary(rows))
    write_result(out, f"{prefix}per-clip.md", _per_clip(rows))


def _plots(out: Path, series: dict[str, dict], clip: str, prefix: str = "") -> None:
    """Per-frame series of one clip, one panel per link: the live mode and each anchor (colour: codec; line
    style: frame size)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    links = list(dict.fromkeys(label.split(" ", 1)[1] for label in series))
    colours = {"imf": "black", "vp9": "tab:green", "x264": "tab:blue", "x265": "tab:red"}
    for key, name, ylabel in (("latency_ms", "latency.png", "capture to ready (ms)"),
                              ("arrival_ms", "arrival.png", "capture to arrival (ms)"),
                              ("psnr", "psnr.png", "PSNR of what is shown (dB)")):
        if not any(key in s for s in series.values()):
            continue
        fig, axes = plt.subplots(1, len(links), figsize=(6 * len(links), 4), squeeze=False, sharey=True)
        for ax, link in zip(axes[0], links):
            for label, s in series.items():
                codec, lab_link = label.split(" ", 1)
                if lab_link != link or key not in s:
                    continue
                y = np.asarray(s[key], dtype=float)
                family = codec.split("@")[0]
                ax.plot(np.arange(len(y)) / 25.0, np.where(np.isfinite(y), y, np.nan), label=codec,
                        color=colours.get(family, "grey"), lw=1.6 if family == "imf" else 1,
                        ls=":" if codec.endswith("1/4") else "-")
                if key != "psnr":
                    ax.axhline(s["bound_ms"], color="grey", ls="--", lw=0.8)
            ax.set_title(f"{clip}, {link}")
            ax.set_xlabel("capture time (s)")
            ax.legend(fontsize=7)
        axes[0][0].set_ylabel(ylabel)
        fig.tight_layout()
        fig.savefig(out / (prefix + name), dpi=110)
        plt.close(fig)


@click.command(cls=Command)
@click.option("--videos", cls=GreedyOption, default=(str(TEST_DATA),), show_default=True, metavar="PATH [PATH ...]")
@click.option("--clips", cls=GreedyOption, default=None, metavar="NAME [NAME ...]", help="only these clips")
@click.option("--links", default="8,16", show_default=True, help="link capacities, kbit/s")
@click.option("--delay-ms", type=float, default=150.0, show_default=True, help="one-way propagation")
@click.option("--max-delay", type=float, default=None, help="ms: the live encoder's bound (its default)")
@click.option("--codecs", default="imf,vp9,x264,x265", show_default=True)
@click.option("--anchor-scales", default="1/2", show_default=True,
              help="anchors' coded frame sizes (each is a row: CODEC@SCALE)")
@click.option("--seconds", type=float, default=8.0, show_default=True, help="clip length cap")
@click.option("--loss", "losses", default="", help="loss runs of the live mode: e.g. 0.01,0.05,burst")
@click.option("--loss-kbps", type=float, default=16.0, show_default=True)
@click.option("--loss-clips", type=int, default=5, show_default=True, help="first N clips for the loss runs")
@click.option("--no-refresh-loss", "no_refresh_loss", default="0.05", show_default=True,
              help="loss runs also made without refresh requests (a key frame every 2 s instead)")
@click.option("--clock", type=click.Choice(["real", "simulated"]), default="real", show_default=True,
              help="real: processes, sockets and the wall clock; simulated: the same models in one process, "
                   "no processing time (what the encoder controls)")
@click.option("--policy", default="", help="simulated clock, expert: live encoder policy, e.g. key_codec=hevc,skip=0 "
              "(key_codec, skip, intra_pct, base_factor, scenecut); rows are labelled imf[POLICY]")
@click.option("--plot-clip", default=None, help="the clip whose series are plotted (default: the first)")
@click.option("--report", "report_only", is_flag=True, help="only remake summary.md and per-clip.md from sessions.csv")
@out_option("sessions.csv", "summary.md", "per-clip.md", "latency.png", "arrival.png", "psnr.png", required=True)
def _cli(videos, clips, links, delay_ms, max_delay, codecs, anchor_scales, seconds, losses, loss_kbps, loss_clips,
         plot_clip, clock, no_refresh_loss, policy, report_only, out):
    """Live calls through a shaped link, imfcodec's live mode against conventional live anchors."""
    from benchmarks import require_bench_extra
    from imfcodec.live import DEFAULT_MAX_DELAY_MS

    require_bench_extra()
    max_delay = DEFAULT_MAX_DELAY_MS if max_delay is None else max_delay
    parse_policy(policy)
    if report_only:
        report(out, "" if clock == "real" else "sim-")
        return 0
    if policy and clock == "real":
        raise click.UsageError("--policy needs --clock simulated")
    found = find_clips(list(videos), list(clips) if clips else None)
    plot_clip = plot_clip or next(iter(found))
    jobs = []
    for kbps in [float(k) for k in links.split(",") if k]:
        link = {"kbps": kbps, "delay_ms": delay_ms, "label": f"{kbps:g}k-{delay_ms:g}ms"}
        for name, path in found.items():
            for codec in [c for c in codecs.split(",") if c]:
                for scale in (["1/2"] if codec == "imf" else anchor_scales.split(",")):
                    jobs.append((path, link, codec, True, 0, scale))
    for spec in [s for s in losses.split(",") if s]:
        link = {"kbps": loss_kbps, "delay_ms": delay_ms}
        if spec == "burst":
            link.update(burst=0.01, label=f"{loss_kbps:g}k-{delay_ms:g}ms-burst")  # ~4 % in bursts of 4
        else:
            link.update(loss=float(spec), label=f"{loss_kbps:g}k-{delay_ms:g}ms-loss{float(spec) * 100:g}%")
        for name, path in list(found.items())[:loss_clips]:
            jobs.append((path, link, "imf", True, 0, "1/2"))
            if spec in no_refresh_loss.split(","):
                jobs.append((path, link, "imf", False, 50, "1/2"))  # no requests: a key frame every 2 s instead
    rows, series = [], {}
    prefix = "" if clock == "real" else "sim-"  # the two clocks' results side by side in one folder
    t0 = time.monotonic()
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for k, (path, link, codec, refresh, keyint, scale) in enumerate(jobs):
            if clock == "real":
                row, s = run_session(path, link, codec, scale, seconds, max_delay, refresh, keyint, Path(tmp))
            else:
                row, s = simulate_session(path, link, codec, scale, seconds, max_delay, refresh, keyint,
                                          parse_policy(policy))
            if codec == "imf" and policy:
                row["codec"] = f"imf[{policy}]"
            if codec != "imf":
                row["codec"] = f"{codec}@{scale}"
            rows.append(row)
            if path.stem == plot_clip and "loss" not in link["label"] and "burst" not in link["label"]:
                series[f"{row['codec']} {link['label']}"] = s
            click.echo(f"[{k + 1}/{len(jobs)} {time.monotonic() - t0:.0f}s] " + json.dumps(row), err=True)
            with open(out / f"{prefix}sessions.csv", "w", newline="") as f:
                w = csv.DictWriter(f, COLUMNS, restval="")
                w.writeheader()
                w.writerows(rows)
    _plots(out, series, plot_clip, prefix)
    report(out, prefix)
    return 0


def main(argv: list[str] | None = None) -> int:
    return call(_cli, argv, "python -m benchmarks.live")


if __name__ == "__main__":
    sys.exit(main())
