"""The two ends of a live call over UDP (``benchmarks.live`` runs them with ``benchmarks.livelink`` between):

* ``python -m benchmarks.livecall send CLIP --to HOST:PORT --link-kbps C`` reads the clip's frames into
  memory first (a camera's frames do not wait on a disk), then releases frame i at ``start + i / fps`` on the
  monotonic clock (real time at the clip's rate), encodes it and sends one datagram per frame. ``--codec
  imf`` is the live hybrid mode (``imfcodec.live``); ``vp9``, ``x264``, ``x265`` are conventional live
  anchors through PyAV (libvpx-vp9 realtime CBR; x264/x265 zerolatency with VBV at the link's rate), one
  datagram per frame too (a 2-byte sequence number, then the access unit). The session starts with a setup
  datagram (the stream's header; repeated until the receiver acknowledges it, before the first capture) and
  ends with ``BYE``. A refresh request from the receiver (``PLI``) makes the live encoder send a key frame as
  soon as one fits the bucket (``--refresh``).
* ``python -m benchmarks.livecall receive --port P --out FILE.npz`` decodes what arrives (the hybrid decoder
  with concealment: a lost datagram freezes the picture until the next key frame) and records when each
  frame is ready; with ``--refresh`` it asks for a key frame when it sees a loss (again every ``--pli-every``
  ms until one arrives).

Both ends use ``time.monotonic()`` (system-wide on Linux), so a frame's latency is its ready time less its
capture time, ``start + i / fps``.
"""

from __future__ import annotations

import io
import json
import queue
import socket
import threading
import sys
import time
from fractions import Fraction

import click
import numpy as np

from benchmarks.livelink import parse_addr
from imfcodec.cliutil import call

SETUP = b"\x8bIMF"  # a setup datagram's records start with the stream's magic (anchors: b"\x8bANC" + json)


def _frames(clip: str, seconds: float) -> tuple[list[np.ndarray], Fraction]:
    from imfcodec.io import open_video

    with open_video(clip) as src:
        fps = Fraction(src.info.fps)
        n = int(seconds * float(fps))
        return list(src.frames(256, max_frames=n)), fps


def without_sei(data: bytes) -> bytes:
    """An H.264 access unit (Annex B) without its SEI NAL units: x264 writes its version and options (about
    600 bytes) into the first one, which a live sender would not send (as ``benchmarks.anchors`` drops it)."""
    import re

    starts = [m.start() for m in re.finditer(b"\x00\x00\x01", data)]
    if not starts:
        return data
    out = [data[:starts[0]]]
    for k, s in enumerate(starts):
        end = starts[k + 1] if k + 1 < len(starts) else len(data)
        if end > s + 3 and data[s + 3] & 0x1F == 6:
            if out and out[-1].endswith(b"\x00"):
                out[-1] = out[-1][:-1]  # the 4-byte start code's leading zero
            continue
        out.append(data[s:end])
    return b"".join(out)


def anchor_payload(codec: str, enc, rgb: np.ndarray, index: int) -> bytes:
    """Frame ``index`` (uint8 RGB) through an anchor encoder: its access unit as sent (the first one intra)."""
    import av

    from imfcodec.keyframe._common import rgb_to_frame

    frame = rgb_to_frame(np.ascontiguousarray(rgb), "yuv420p", enc.width, enc.height)
    frame.pts = index
    if index == 0:
        frame.pict_type = av.video.frame.PictureType.I
    data = b"".join(bytes(p) for p in enc.encode(frame))
    return without_sei(data) if codec == "x264" else data


def _anchor_encoder(codec: str, kbps: float, window_s: float, fps: Fraction, side: int):
    import av

    bps = int(kbps * 1000 - 2 * 8 * float(fps))  # the link less the datagrams' sequence numbers
    ctx = av.CodecContext.create({"vp9": "libvpx-vp9", "x264": "libx264", "x265": "libx265"}[codec], "w")
    ctx.width = ctx.height = side
    ctx.pix_fmt = "yuv420p"
    ctx.time_base = 1 / fps
    ctx.framerate = fps
    buf = int(bps * window_s)
    if codec == "vp9":
        ctx.options = {"b": str(bps), "minrate": str(bps), "maxrate": str(bps), "bufsize": str(buf),
                       "deadline": "realtime", "cpu-used": "6", "lag-in-frames": "0", "auto-alt-ref": "0",
                       "g": "1000000", "row-mt": "1", "threads": "1", "undershoot-pct": "50",
                       "overshoot-pct": "10", "max-intra-rate": "300", "error-resilient": "1"}
    elif codec == "x264":
        # capped CRF (CRF 30 under the VBV): x264's ABR with a buffer this small starts with a 40-byte picture and
        # stays far under the rate (16.8 against 21.9 dB at 8 kbit/s on a training clip)
        ctx.options = {"preset": "medium", "tune": "zerolatency", "crf": "30", "maxrate": str(bps),
                       "bufsize": str(buf), "threads": "1",
                       "x264-params": "bframes=0:keyint=infinite:scenecut=0:repeat-headers=1:nal-hrd=none"}
    else:
        ctx.options = {"preset": "medium", "tune": "zerolatency", "b": str(bps),
                       "x265-params": (f"vbv-maxrate={bps // 1000}:vbv-bufsize={max(1, buf // 1000)}:bframes=0:"
                                       "keyint=-1:scenecut=0:repeat-headers=1:info=0:log-level=error:pools=1")}
    return ctx


@click.group()
def _cli():
    """Live call ends (sender, receiver) for benchmarks.live."""


@_cli.command()
@click.argument("clip", type=click.Path(exists=True, dir_okay=False))
@click.option("--to", "to", required=True, help="where datagrams go (the shaper, or the receiver), HOST:PORT")
@click.option("--link-kbps", type=float, required=True)
@click.option("--max-delay", "max_delay", type=float, default=None, help="ms (imfcodec.live's default)")
@click.option("--codec", type=click.Choice(["imf", "vp9", "x264", "x265"]), default="imf", show_default=True)
@click.option("--scale", type=click.Choice(["1", "1/2", "1/4"]), default="1/2", show_default=True,
              help="anchors: coded frame size")
@click.option("--seconds", type=float, default=8.0, show_default=True, help="clip length cap")
@click.option("--start", type=float, default=None, help="monotonic time of the first capture (default: setup + 1 s)")
@click.option("--refresh/--no-refresh", default=True, show_default=True, help="answer refresh requests")
@click.option("--keyint", type=int, default=0, show_default=True, help="imf: a key frame every N frames")
def send(clip, to, link_kbps, max_delay, codec, scale, seconds, start, refresh, keyint):
    """Send CLIP in real time as a live call."""
    from imfcodec.bitstream import encode_packet, stream_start
    from imfcodec.live import DEFAULT_MAX_DELAY_MS, LiveLink, datagram, open_live_encoder

    frames, fps = _frames(clip, seconds)
    max_delay = DEFAULT_MAX_DELAY_MS if max_delay is None else max_delay
    link = LiveLink(link_kbps, max_delay).validated()
    if codec == "imf":
        import torch

        torch.set_num_threads(1)
        from imfcodec.modes.hybrid import load_enhancer

        enc = open_live_encoder(load_enhancer(None), fps, link, keyint=keyint, clock=time.monotonic)
        setup = stream_start(enc.header)
    else:
        side = 256 // {"1": 1, "1/2": 2, "1/4": 4}[scale]
        enc = _anchor_encoder(codec, link_kbps, link.send_window_s, fps, side)
        setup = b"\x8bANC" + json.dumps({"codec": codec, "side": side, "frames": len(frames)}).encode()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    dest = parse_addr(to)
    acked = False
    deadline = time.monotonic() + 120  # a loaded machine can take long to start the receiver's torch
    while not acked and time.monotonic() < deadline:  # signalling: the header until it is acknowledged
        sock.sendto(datagram(0, setup), dest)
        t = time.monotonic() + 0.3
        while time.monotonic() < t and not acked:
            try:
                acked = sock.recv(64).startswith(b"ACK")
            except BlockingIOError:
                time.sleep(0.005)
    if not acked:
        raise click.ClickException("no receiver acknowledged the session")
    start = (time.monotonic() + 1.0) if start is None else max(start, time.monotonic())
    sock.sendto(b"START" + repr(start).encode() + b" " + str(fps).encode(), dest)
    requests = 0
    sizes = []
    lags = []  # ms from capture to the datagram leaving the sender (its processing and its waiting)
    for i, rgb in enumerate(frames):
        t_capture = start + i / float(fps)
        time.sleep(max(0.0, t_capture - time.monotonic()))
        want_key = False
        while True:
            try:
                msg = sock.recv(64)
            except BlockingIOError:
                break
            if msg.startswith(b"PLI"):
                requests += 1
                want_key = want_key or refresh
        if codec == "imf":
            packets = enc.encode(rgb, t_capture, time.monotonic(), refresh=want_key)
            payload = b"".join(encode_packet(p, enc.header) for p in packets)
        else:
            payload = anchor_payload(codec, enc, rgb, i)
        sizes.append(len(payload) + 2)
        sock.sendto(datagram(i + 1, payload), dest)
        lags.append(round((time.monotonic() - t_capture) * 1000, 1))
    for _ in range(3):
        sock.sendto(b"BYE", dest)
    stats = {"frames": len(frames), "fps": str(fps), "bytes": sum(sizes), "refresh_requests": requests,
             "lag_ms": lags}
    if codec == "imf":
        stats.update(key_frames=enc.stats.key_frames, key_sizes=enc.stats.key_sizes,
                     key_qualities=enc.stats.key_qualities, skipped=len(enc.stats.skipped))
    click.echo(json.dumps(stats))


def packets_of(setup: bytes, body: bytes, frame: int) -> list:
    """The packets of one datagram's records, the first at ``frame`` (its sequence number's), parsed against
    the session's header (``setup``: the stream start); none when a record fails its check (the datagram is
    then as good as lost: the decoder conceals from there to the next key frame)."""
    from imfcodec.bitstream import read_records
    from imfcodec.errors import BitstreamError

    try:
        return read_records(setup, body, frame)
    except BitstreamError:
        return []


def decode_offline(setup: bytes, datagrams: list[tuple[int, bytes]], loaded=None) -> tuple[list[np.ndarray], list[int]]:
    """The frames a receiver with the CPU to enhance every frame shows for the datagrams it received (loss
    concealed as live): the same bytes as the live receiver, decoded without a clock; (frames, the indices of
    the frames concealment repeated). ``loaded``: the enhancer (default: the shipped one)."""
    import torch

    from imfcodec.bitstream import StreamReader
    from imfcodec.live import WireFrames
    from imfcodec.modes.hybrid import HybridDecoder, load_enhancer

    torch.set_num_threads(2)
    dec = HybridDecoder((loaded or load_enhancer(None)).model, StreamReader(io.BytesIO(setup)).header)
    frames: list[np.ndarray] = []
    wire = WireFrames()
    for seq, body in datagrams:
        frame, gap = wire.place(seq)
        packets = packets_of(setup, body, frame)
        if gap or not packets:
            dec.damage(gap * 4096 or len(body), "lost")
        for packet in packets:
            for batch in dec.decode_concealing(packet):
                frames += batch
    return frames, sorted(set(dec.report.concealed))


def _anchor_decoder(codec: str):
    import av

    ctx = av.CodecContext.create({"vp9": "vp9", "x264": "h264", "x265": "hevc"}[codec], "r")
    ctx.thread_count = 1
    return ctx


@_cli.command()
@click.option("--port", type=int, required=True)
@click.option("--out", type=click.Path(dir_okay=False), required=True, help=".npz of ready times and frames")
@click.option("--refresh/--no-refresh", default=True, show_default=True, help="send refresh requests on loss")
@click.option("--pli-every", type=float, default=500.0, show_default=True, help="ms between repeated requests")
@click.option("--timeout", type=float, default=120.0, show_default=True)
@click.option("--bound-ms", type=float, default=None,
              help="enhance a frame only while it can still be ready within this bound of its capture")
def receive(port, out, refresh, pli_every, timeout, bound_ms):
    """Receive, decode and time a live call."""
    from dataclasses import replace

    from imfcodec.bitstream import StreamReader
    from imfcodec.live import WireFrames, parse_datagram

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", port))
    sock.settimeout(timeout)
    setup = dec = anchor = None
    start, fps = None, None
    peer = None
    shown: list[np.ndarray] = []
    ready: list[float] = []
    concealed: list[int] = []
    wire = WireFrames()
    lost = 0
    unenhanced = 0
    arrived: dict[int, float] = {}
    received: list[tuple[int, float, bytes]] = []  # every media datagram, for an offline decode of the same bytes
    enh_cost = 0.05  # seconds a base packet takes with the enhancer (running estimate)
    last_pli = -1e9
    key_since_loss = True
    inbox: queue.Queue = queue.Queue()

    def network() -> None:  # the network thread: arrival times do not wait on the decoder
        while True:
            try:
                data, addr = sock.recvfrom(65536)
            except (socket.timeout, OSError):
                inbox.put((time.monotonic(), b"BYE", None))
                return
            inbox.put((time.monotonic(), data, addr))
            if data == b"BYE":
                return

    threading.Thread(target=network, daemon=True).start()
    while True:
        now, data, addr = inbox.get()
        peer = addr or peer
        if data == b"BYE":
            break
        if data.startswith(b"START"):
            a, b = data[5:].split(b" ")
            start, fps = float(a), Fraction(b.decode())
            continue
        seq, body = parse_datagram(data)
        if not body.startswith((SETUP, b"\x8bANC")):
            received.append((seq, now, body))
        if body.startswith(SETUP):
            if setup is None:
                import torch

                torch.set_num_threads(1)
                from imfcodec.modes.hybrid import HybridDecoder, load_enhancer

                setup = body
                dec = HybridDecoder(load_enhancer(None).model, StreamReader(io.BytesIO(body)).header)
            sock.sendto(b"ACK", peer)
            continue
        if body.startswith(b"\x8bANC"):
            if anchor is None:
                setup = body
                anchor = json.loads(body[4:])
                dec = _anchor_decoder(anchor["codec"])
            sock.sendto(b"ACK", peer)
            continue
        frame, gap = wire.place(seq)
        arrived[frame] = now  # frame seq - 1's datagram is here (before any decoding)
        frames: list[np.ndarray] = []
        if anchor is not None:
            import av

            for _ in range(gap):  # a lost anchor frame: the picture freezes (no concealment of its own)
                if shown:
                    frames.append(shown[-1])
            try:
                for f in dec.decode(av.Packet(body)):
                    frames.append(f.reformat(width=256, height=256, format="rgb24",
                                             interpolation="BICUBIC").to_ndarray())
            except av.FFmpegError:
                if shown:
                    frames.append(shown[-1])
        else:
            packets = packets_of(setup, body, frame)
            if gap or not packets:
                lost += gap
                dec.damage(gap * 4096 or len(body), f"{gap} datagram(s) lost before seq {seq}" if gap else
                           f"datagram {seq} damaged")
                key_since_loss = False
            for packet in packets:
                if type(packet).__name__ == "KeyPacket":
                    key_since_loss = True
                if type(packet).__name__ == "BasePacket" and bound_ms is not None and start is not None:
                    # the enhancer only where the frame is still ready in time with it and nothing waits behind
                    # it; otherwise the upscaled base (what a receiver short of CPU shows)
                    late = time.monotonic() - (start + packet.frame / float(fps))
                    waiting = not inbox.empty()
                    if waiting or late + enh_cost > bound_ms / 1000 - 0.02:
                        packet = replace(packet, enhance=False)
                        unenhanced += packet.count
                t_dec = time.monotonic()
                before = dec.next_frame
                for batch in dec.decode_concealing(packet):
                    frames += batch
                if type(packet).__name__ == "BasePacket" and packet.enhance:
                    enh_cost = 0.7 * enh_cost + 0.3 * (time.monotonic() - t_dec)
                concealed += [f for f in dec.report.concealed if f >= before]
            if refresh and not key_since_loss and now - last_pli > pli_every / 1000 and peer is not None:
                sock.sendto(b"PLI", peer)
                last_pli = now
        t = time.monotonic()
        for f in frames:
            shown.append(f)
            ready.append(t)
    n = len(shown)
    np.savez(out, frames=np.stack(shown) if n else np.zeros((0, 256, 256, 3), np.uint8),
             ready=np.array(ready), start=start if start is not None else np.nan,
             fps=float(fps) if fps else np.nan, concealed=np.array(sorted(set(concealed)), dtype=np.int64),
             lost=lost, unenhanced=unenhanced,
             setup=np.frombuffer(setup or b"", np.uint8), rx_seq=np.array([r[0] for r in received], np.int64),
             rx_len=np.array([len(r[2]) for r in received], np.int64),
             rx_bytes=np.frombuffer(b"".join(r[2] for r in received), np.uint8),
             arrived=np.array([arrived.get(i, np.nan) for i in range(max(arrived, default=-1) + 1)]))


def main(argv: list[str] | None = None) -> int:
    return call(_cli, argv, "python -m benchmarks.livecall")


if __name__ == "__main__":
    sys.exit(main())
