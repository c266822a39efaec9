"""A thin link between two processes: capacity, propagation delay, random and burst loss, jitter.

``Link`` is the model, on any clock (pure: the tests drive it with a simulated one): a datagram handed to
the link at ``t`` waits for the ones ahead of it, takes ``size / capacity`` to send, is lost (after using the
link, as on a radio link) with the loss model's probability, and arrives ``delay`` (+ jitter) later. Arrivals
keep their order (one path: jitter delays, never reorders). Loss is a Gilbert-Elliott chain: in the good
state a datagram is lost with ``loss``, in the bad state always; ``burst`` sets how often the chain enters the
bad state and ``burst_len`` how many datagrams it stays on average.

``python -m benchmarks.livelink --listen PORT --to HOST:PORT ...`` (``shaper``) runs the model between UDP
sockets on loopback: datagrams from the sender go through the link to the receiver; what the receiver sends
back (refresh requests, acks) goes back to the last sender address with the propagation delay only. Bytes
charged are the datagrams' payloads (IP/UDP headers not charged, as on a link with header compression).
"""

from __future__ import annotations

import heapq
import math
import random
import select
import socket
import sys
import time
from dataclasses import dataclass

import click

from imfcodec.cliutil import call


@dataclass(frozen=True)
class LinkSpec:
    """One link: ``kbps`` capacity, ``delay_ms`` one-way propagation, ``loss`` (good-state loss rate),
    ``burst`` (per-datagram chance of entering a loss burst), ``burst_len`` (mean datagrams in a burst),
    ``jitter_ms`` (each datagram delayed by up to this much more, uniformly), ``seed``."""

    kbps: float
    delay_ms: float = 150.0
    loss: float = 0.0
    burst: float = 0.0
    burst_len: float = 4.0
    jitter_ms: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not (self.kbps > 0 and math.isfinite(self.kbps)):
            raise ValueError(f"a link's capacity is above 0 kbit/s, got {self.kbps!r}")
        for name in ("delay_ms", "jitter_ms"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        for name in ("loss", "burst"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be a probability in [0, 1], got {getattr(self, name)!r}")
        if not self.burst_len >= 1:
            raise ValueError(f"burst_len must be >= 1, got {self.burst_len!r}")

    @property
    def label(self) -> str:
        parts = [f"{self.kbps:g}k", f"{self.delay_ms:g}ms"]
        if self.loss:
            parts.append(f"loss{self.loss * 100:g}%")
        if self.burst:
            parts.append(f"burst{self.burst * 100:g}%x{self.burst_len:g}")
        if self.jitter_ms:
            parts.append(f"jitter{self.jitter_ms:g}ms")
        return "-".join(parts)


class Link:
    """The link model: ``admit(t, nbytes)`` -> arrival time at the far end, or None for a lost datagram."""

    def __init__(self, spec: LinkSpec) -> None:
        self.spec = spec
        self.rng = random.Random(spec.seed)
        self.free_at = -math.inf  # when the link has sent everything admitted so far
        self.last_arrival = -math.inf
        self.bad = False  # Gilbert-Elliott state
        self.sent = self.lost = self.bytes = 0

    def _lose(self) -> bool:
        s = self.spec
        if self.bad:
            self.bad = self.rng.random() >= 1.0 / s.burst_len
        elif s.burst:
            self.bad = self.rng.random() < s.burst
        return self.bad or (s.loss > 0 and self.rng.random() < s.loss)

    def admit(self, t: float, nbytes: int) -> float | None:
        s = self.spec
        self.free_at = max(t, self.free_at) + nbytes * 8 / (s.kbps * 1000)
        self.sent += 1
        self.bytes += nbytes
        if self._lose():
            self.lost += 1
            return None
        jitter = self.rng.uniform(0, s.jitter_ms) / 1000 if s.jitter_ms else 0.0
        self.last_arrival = max(self.last_arrival, self.free_at + s.delay_ms / 1000 + jitter)
        return self.last_arrival


def parse_addr(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise click.BadParameter(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


def shape(listen: int, to: tuple[str, int], spec: LinkSpec, until: float | None = None) -> dict:
    """Run the link between UDP sockets until ``until`` (monotonic seconds) or a b"BYE" datagram from the
    sender has been delivered; returns the link's counts."""
    link = Link(spec)
    inp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    inp.bind(("127.0.0.1", listen))
    back = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # to the receiver, and its replies
    back.bind(("127.0.0.1", 0))
    sender: tuple[str, int] | None = None
    queue: list[tuple[float, int, str, bytes]] = []  # (due, order, direction, datagram)
    order = 0
    done = False
    while not done:
        now = time.monotonic()
        while queue and queue[0][0] <= now:
            _, _, way, data = heapq.heappop(queue)
            if way == "fwd":
                back.sendto(data, to)
                if data == b"BYE":
                    done = True
            elif sender is not None:
                inp.sendto(data, sender)
        if until is not None and now > until:
            break
        timeout = max(0.0, min(0.05, queue[0][0] - now)) if queue else 0.05
        ready, _, _ = select.select([inp, back], [], [], timeout)
        now = time.monotonic()
        for s in ready:
            data, addr = s.recvfrom(65536)
            order += 1
            if s is inp:
                sender = addr
                if data == b"BYE" or data.startswith(b"START"):  # signalling: never lost, after the queue
                    heapq.heappush(queue, (max(link.last_arrival, now) + spec.delay_ms / 1000, order, "fwd", data))
                    continue
                due = link.admit(now, len(data))
                if due is not None:
                    heapq.heappush(queue, (due, order, "fwd", data))
            else:
                heapq.heappush(queue, (now + spec.delay_ms / 1000, order, "back", data))
    inp.close()
    back.close()
    return {"sent": link.sent, "lost": link.lost, "bytes": link.bytes}


@click.command()
@click.option("--listen", type=int, required=True, help="UDP port the sender sends to")
@click.option("--to", "to", required=True, help="the receiver, HOST:PORT")
@click.option("--kbps", type=float, required=True)
@click.option("--delay-ms", type=float, default=150.0, show_default=True)
@click.option("--loss", type=float, default=0.0, show_default=True)
@click.option("--burst", type=float, default=0.0, show_default=True)
@click.option("--burst-len", type=float, default=4.0, show_default=True)
@click.option("--jitter-ms", type=float, default=0.0, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--seconds", type=float, default=None, help="stop after this long (default: at the sender's BYE)")
def _cli(listen, to, kbps, delay_ms, loss, burst, burst_len, jitter_ms, seed, seconds):
    """The link shaper between a live sender and receiver (UDP on loopback)."""
    try:
        spec = LinkSpec(kbps, delay_ms, loss, burst, burst_len, jitter_ms, seed)
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    until = None if seconds is None else time.monotonic() + seconds
    counts = shape(listen, parse_addr(to), spec, until)
    click.echo(f"link {spec.label}: {counts['sent']} datagrams, {counts['lost']} lost, {counts['bytes']} bytes",
               err=True)


def main(argv: list[str] | None = None) -> int:
    return call(_cli, argv, "python -m benchmarks.livelink")


if __name__ == "__main__":
    sys.exit(main())
