"""Live calls over a thin link (``imfcodec encode --live --link-kbps C --max-delay MS``): a hybrid stream
whose every frame reaches the far end of a link of capacity C within a delay bound of its capture.

Why a mode of its own: a file encode sends a 2-4 KB burst first (the key image and the base layer's intra
picture), which takes seconds on an 8 kbit/s link, and its rate is an average over the file. A call needs
each frame on time. The live encoder therefore keeps a **leaky-bucket model of the link** (``LeakyBucket``:
the bytes queued ahead of the link, drained at C) and holds every frame's bytes to what the bucket can pass
before the frame's deadline (capture + ``max_delay`` - ``reserve``, the reserve being the time the encoder
and the decoder take). The stream is an ordinary hybrid stream (format version 5 with lean base records, chunk
1, no guard): any decoder plays it. Lean records matter most here: at chunk 1 every frame pays its record's
framing, 4-5 bytes (type, length, CRC-16) where the records of versions 2-4 spent 10-12, about 1.2 kbit/s of
an 8 kbit/s link at 25 fps.

What the policy does (measured in ``benchmarks/results/2026-12-04-live/NOTES.md``):

* the base layer is VP9 in **CBR** (libvpx's own buffer model, sized to the delay bound) at the link's rate
  less the stream's framing, instead of a constant quality;
* a **key frame is sized to the room the bucket has left** once its base intra picture is coded: the key
  quality is searched (a few encodes, started from the last key's quality), so the first frame fits the
  bound at whatever quality the link allows; a key that cannot fit yet (a scene cut or a refresh request
  while the bucket is full) waits for the bucket to drain;
* a frame whose base unit would not fit is **skipped**: the encoder codes the previous picture again, which
  costs a few bytes, and the decoder shows the previous frame again (still a valid stream, one unit per frame).

The format forbids spreading a key over several frames' time (a key packet comes right before its frame's
base packet, and frames are sent in order), so no key can be larger than C x bound: that, not the policy,
caps a live key's quality at low rates.

``datagram`` / ``parse_datagram``: the live wire, one datagram per frame (a 2-byte sequence number, so the
receiver sees a loss, then the frame's records as in a file). The sequence number also places the lean records,
which state no frame index, after a loss (``WireFrames``, then ``bitstream.read_records``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np

from .errors import ArgumentError

#: the live wire's bytes per datagram before the records: a sequence number (u16, big-endian)
DATAGRAM_HEADER = 2
DEFAULT_MAX_DELAY_MS = 600.0
#: the part of the bound kept for the encoder and decoder's own time (one frame at 25 fps)
DEFAULT_RESERVE_MS = 40.0
MIN_LINK_KBPS, MAX_LINK_KBPS = 1.0, 100_000.0
#: frames an owed key frame waits for room for one as large as the last; after that it takes the room there is
#: (on a sender whose own processing lags, the room for a full-size key may never come)
KEY_WAIT_FRAMES = 12
#: how long a frame that is not a key frame may wait in the link's queue (key frames: the whole bound); 240 ms
#: against 120: +0.18 dB at 8 kbit/s and +0.19 at 16 on three training clips, typical arrival +25-70 ms
STEADY_MS = 240.0
MIN_MAX_DELAY_MS, MAX_MAX_DELAY_MS = 50.0, 10_000.0
#: the key image encodes a live key frame's coding time is planned for (``LiveEncoder._time_key_coding``)
KEY_ENCODES = 4
#: a live sender this many frames behind its capture clock skips the frame (see ``LiveEncoder.encode``)
BEHIND_FRAMES = 1.0
#: the key codec of live streams: AV1 intra codes a 250-600 byte picture as well as HEVC and 2-3x faster
#: (benchmarks/results/2026-12-04-live/NOTES.md), and a key's encode time is latency here
LIVE_KEY_CODEC = "av1"


@dataclass(frozen=True)
class LiveLink:
    """What the encoder knows of the link: its capacity and the delay bound of a frame (capture to the last
    byte through the link at capacity, propagation not included: the encoder cannot shorten it)."""

    kbps: float
    max_delay_ms: float = DEFAULT_MAX_DELAY_MS
    reserve_ms: float = DEFAULT_RESERVE_MS

    def validated(self) -> "LiveLink":
        """One-line ``ArgumentError`` for a rate or a bound out of range (also NaN, inf, bools)."""
        for name, v, lo, hi in (("link_kbps", self.kbps, MIN_LINK_KBPS, MAX_LINK_KBPS),
                                ("max_delay_ms", self.max_delay_ms, MIN_MAX_DELAY_MS, MAX_MAX_DELAY_MS)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not (lo <= v <= hi):
                raise ArgumentError(f"{name}= must be a number in [{lo:g}, {hi:g}], got {v!r}")
        r = self.reserve_ms
        if isinstance(r, bool) or not isinstance(r, (int, float)) or not 0 <= r < self.max_delay_ms:
            raise ArgumentError(f"reserve_ms= must be in [0, max_delay_ms), got {r!r}")
        return self

    @property
    def bytes_per_s(self) -> float:
        return self.kbps * 1000.0 / 8.0

    @property
    def send_window_s(self) -> float:
        """How long after capture a frame's last byte may leave the link's queue."""
        return (self.max_delay_ms - self.reserve_ms) / 1000.0


class LeakyBucket:
    """The link's queue as the sender sees it: bytes handed to the link drain at ``bytes_per_s``.

    State is one number, ``free_at``: when the link will have sent everything queued so far. Times are in
    seconds on any clock (a simulated one in tests, the wall clock live)."""

    def __init__(self, bytes_per_s: float) -> None:
        if not bytes_per_s > 0:
            raise ArgumentError(f"a link drains at a rate above 0, got {bytes_per_s!r}")
        self.rate = float(bytes_per_s)
        self.free_at = -math.inf

    def level(self, t: float) -> float:
        """Bytes still queued at time ``t``."""
        return max(0.0, self.free_at - t) * self.rate

    def finish(self, t: float, nbytes: int) -> float:
        """When the last of ``nbytes`` queued at ``t`` would leave (without queueing them)."""
        return max(t, self.free_at) + nbytes / self.rate

    def send(self, t: float, nbytes: int) -> float:
        """Queue ``nbytes`` at ``t``; returns when their last byte leaves."""
        self.free_at = self.finish(t, nbytes)
        return self.free_at

    def room(self, t: float, deadline: float) -> float:
        """Bytes that can still be queued at ``t`` and leave by ``deadline`` (negative: late already)."""
        return (deadline - max(t, self.free_at)) * self.rate


def base_cbr_options(target_bps: int, window_s: float, intra_pct: int, threads: int = 1) -> dict[str, str]:
    """libvpx-vp9 in CBR for a live base layer: ``target_bps`` with its buffer the size of the send window (so
    its own model agrees with the bucket), an intra picture capped at ``intra_pct`` % of a frame's share, no
    lag, no alt-ref, no automatic key frames (a key picture is forced where the stream has a key packet)."""
    buf_ms = max(50, int(window_s * 1000))
    return {"b": str(target_bps), "minrate": str(target_bps), "maxrate": str(target_bps),
            "bufsize": str(int(target_bps * buf_ms / 1000)), "rc_init_occupancy": str(int(target_bps * buf_ms / 2000)),
            "deadline": "good", "cpu-used": "2", "lag-in-frames": "0", "auto-alt-ref": "0", "g": "1000000",
            "undershoot-pct": "50", "overshoot-pct": "10", "max-intra-rate": str(max(1, int(intra_pct))),
            "qmax": "63", "qmin": "4", "row-mt": "1", "threads": str(threads), "static-thresh": "0"}


#: a skipped frame's base unit: a VP9 frame header with show_existing_frame set, showing reference slot 0 (the
#: last coded picture: libvpx refreshes slot 0 with every frame) — one byte, decoded to the same picture
SKIP_UNIT = bytes([0b10001000])


def smoothed(rgb: np.ndarray, factor: int) -> np.ndarray:
    """``rgb`` scaled down ``factor`` times by area averaging and up again (``modes.hybrid.key_base``): a key
    image that costs fewer bytes, for when even the lowest quality does not fit. Not block-repeated: SVT-AV1
    takes 10 times as long on a picture of flat blocks (its screen-content tools), and a key's coding time is
    latency here."""
    import torch

    from .modes.common import to_tensor, to_uint8
    from .modes.hybrid import key_base

    h, w = rgb.shape[:2]
    with torch.inference_mode():
        soft = key_base(to_tensor(rgb), (max(1, h // factor), max(1, w // factor)), (h, w))
    return to_uint8(soft)[0]


def record_overhead(count: int = 1) -> int:
    """Bytes a chunk-1 lean base record (``B``, FORMAT.md §3.7) adds to its unit at most: type, a length of
    up to 2 bytes, CRC-16 — the estimate the encoder plans with before a unit exists."""
    return 1 + 2 + 2 if count == 1 else 0


def datagram(seq: int, records: bytes) -> bytes:
    """One frame's records on the live wire: a 16-bit sequence number (mod 65536), then the records."""
    return (seq & 0xFFFF).to_bytes(2, "big") + records


def parse_datagram(data: bytes) -> tuple[int, bytes]:
    """(sequence number, records) of a datagram; ``ArgumentError`` for one shorter than its header."""
    if len(data) < DATAGRAM_HEADER:
        raise ArgumentError(f"a live datagram has at least {DATAGRAM_HEADER} bytes, got {len(data)}")
    return int.from_bytes(data[:2], "big"), bytes(data[2:])


def seq_gap(last: int | None, seq: int) -> int:
    """Datagrams lost between sequence numbers ``last`` and ``seq`` (16-bit, wrapping); 0 for the first."""
    return 0 if last is None else (seq - last - 1) % 65536


class WireFrames:
    """The receiving end's frame numbering: datagram ``seq`` carries frame ``seq - 1`` (the setup datagram is
    0), unwrapped past 65535 by counting the gaps, so a datagram's lean records are placed even after losses."""

    def __init__(self) -> None:
        self.last_seq: int | None = None
        self.frame = -1  # the frame of the last datagram received

    def place(self, seq: int) -> tuple[int, int]:
        """(frame of datagram ``seq``, datagrams lost just before it)."""
        if self.last_seq is None:
            gap = max(0, seq - 1)
            self.frame = seq - 1
        else:
            gap = seq_gap(self.last_seq, seq)
            self.frame += gap + 1
        self.last_seq = seq
        return self.frame, gap


@dataclass
class LiveStats:
    """What the live encoder did, per frame: when its bytes leave the link's queue, what it cost."""

    departures: list[float] = field(default_factory=list)  # last byte of each frame leaves (bucket clock)
    captures: list[float] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)  # wire bytes of each frame's datagram
    skipped: list[int] = field(default_factory=list)  # frames that repeat the previous picture
    key_frames: list[int] = field(default_factory=list)
    key_qualities: list[int] = field(default_factory=list)
    key_sizes: list[int] = field(default_factory=list)
    postponed: int = 0  # frames a key frame waited for room

    def sender_delays_ms(self) -> list[float]:
        return [(d - c) * 1000 for d, c in zip(self.departures, self.captures)]


def fit_key(encode, lo: int, hi: int, budget: int, start: int, tries: int = 3,
            more=lambda: True) -> tuple[int, bytes] | None:
    """The best key quality whose image fits ``budget`` bytes, searched with at most ``tries`` encodes from
    ``start`` (a key's encode time is latency, so no exhaustive search). ``encode(q) -> bytes``. The steps
    assume a key's size roughly doubles every 6 quality steps (HEVC and AV1 intra near these sizes). None
    when not even quality ``lo`` fits (then the caller waits for room). ``more()`` is asked before every encode
    but the first: False stops the search (the key's coding time is spent)."""
    if budget <= 0:
        return None
    best: tuple[int, bytes] | None = None
    smallest: tuple[int, bytes] | None = None
    q = min(hi, max(lo, start))
    tried: set[int] = set()
    for _ in range(tries):
        if q in tried or (tried and not more()):
            break
        tried.add(q)
        data = encode(q)
        if smallest is None or q < smallest[0]:
            smallest = (q, data)
        if len(data) <= budget:
            if best is None or q > best[0]:
                best = (q, data)
            step = int(6 * math.log2(budget / len(data))) if len(data) else hi - q
            if step < 1 or q >= hi:
                break
            q = min(hi, q + step)
            while q in tried and q > lo:
                q -= 1
        else:
            if q <= lo:
                break
            step = max(1, math.ceil(6 * math.log2(len(data) / budget)))
            q = max(lo, q - step)
            if best is not None and q <= best[0]:
                break
    return best


class LiveEncoder:
    """Streaming live encoder: ``encode(rgb, t_capture, t_now, refresh)`` returns the frame's packets ([K,] B)
    and queues their wire bytes in its bucket; ``flush`` returns END. The stream is a version 5 hybrid stream
    at chunk 1 (no guard: the guard's enhancer runs would be latency). ``t_capture``/``t_now`` default to the
    frame's time at the stream's rate (a simulated clock); a live sender passes its clock's."""

    def __init__(self, model, *, model_name: str, weights_hash: bytes, fps: Fraction, link: LiveLink,
                 base_factor: int = 2, key_codec: str = LIVE_KEY_CODEC, scenecut: float | None = None,
                 intra_pct: int = 300, skip: bool = True, keyint: int = 0, frames: int = 0, clock=None,
                 rate_scale: float = 1.0, steady_ms: float = STEADY_MS):
        from .baselayer import BaseEncoder, base_size, get_base_codec
        from .bitstream import StreamHeader
        from .keyframe import get_keyframe_codec
        from .modes.common import KeyPolicy
        from .settings import DEFAULT_SCENECUT

        self.link = link.validated()
        self.size = int(model.config.resolution)
        self.fps = Fraction(fps)
        side = base_size(self.size, base_factor)
        self.key_codec = get_keyframe_codec(key_codec)
        lo, hi = self.key_codec.quality_range
        self.key_quality = lo + (hi - lo) // 6  # where the search starts (then: the last key's quality)
        self.frame_s = 1.0 / float(self.fps)
        # the base layer's share: the link less each frame's record and datagram framing
        framing_bps = (record_overhead() + DATAGRAM_HEADER) * 8 * float(self.fps)
        self.base_bps = max(1000, int(rate_scale * (self.link.kbps * 1000 - framing_bps)))
        vp9 = get_base_codec("vp9")
        self.base = BaseEncoder("vp9", side, side, self.fps, vp9.default_quality,
                                options=base_cbr_options(self.base_bps, self.link.send_window_s, intra_pct))
        self.header = StreamHeader(
            model=model_name, weights_hash=weights_hash, width=self.size, height=self.size,
            fps_num=self.fps.numerator, fps_den=self.fps.denominator, frames=frames,
            key_codec=key_codec, key_quality=int(self.key_quality), quality=0, chunk=1, token_dim=0,
            scale_indexes=(), base_codec="vp9", base_width=side, base_height=side,
            base_quality=int(vp9.default_quality), enhancer_switch=False, lean=True)
        self.keys = KeyPolicy(keyint, DEFAULT_SCENECUT if scenecut is None else scenecut)
        self.key_frames = self.keys.key_frames
        self.scene_cuts = self.keys.scene_cuts
        self.bucket = LeakyBucket(self.link.bytes_per_s)
        self.skip = skip
        # a live sender's clock (``time.monotonic``): the key frame's own coding time is then planned for (its
        # bytes leave that much later), from the last key's measured time; without a clock, time is simulated
        self.clock = clock
        self.key_cost_s = self._time_key_coding() if clock is not None else 0.0
        # in steady state frames queue at most this long, so the link has drained for a refresh key when one is
        # asked for; only key frames use the whole window
        self.steady_s = min(self.link.send_window_s, steady_ms / 1000)
        self.stats = LiveStats()
        self.index = 0
        self.waited = 0  # frames the owed key frame has waited for room
        self.want_key = False  # a key frame is owed (first frame, scene cut, refresh request)
        self.previous: np.ndarray | None = None  # the last picture the base encoder coded
        self.p_size = 0.0  # a running estimate of a base frame's wire bytes (decides skips)
        self.p_time = 0.0  # a running estimate of a base frame's coding time, s (a live sender's clock only)

    # ------------------------------------------------------------------------------------------ policy
    def _time_key_coding(self) -> float:
        """The time a key frame's coding is planned with, measured before the call starts: one key image encode
        of a test picture (which also pays the codec's first-call costs) times ``KEY_ENCODES``, the encodes the
        key search may use (``fit_key``'s tries are cut off when the time is spent). Why: the key frame's
        coding time delays its bytes, and a first key planned at a guess arrived 200-350 ms late in real time."""
        picture = np.full((self.size, self.size, 3), 128, np.uint8)
        picture[self.size // 4: 3 * self.size // 4, self.size // 4: 3 * self.size // 4] = 200
        started = self.clock()
        self.key_codec.encode(picture, self.key_codec.quality_range[0])
        return KEY_ENCODES * (self.clock() - started)

    def _deadline(self, t_capture: float) -> float:
        return t_capture + self.link.send_window_s

    def _key_fits(self, room: float) -> bool:
        """Whether a key frame can start now: room for a key frame as large as the last one on the wire (its
        quality was fitted to the bound), or at least the smallest key a 256 px picture takes."""
        last = min(self.stats.sizes[k] for k in self.stats.key_frames) if self.stats.key_frames else 0
        if self.waited >= KEY_WAIT_FRAMES:  # waited long enough: a smaller key now beats a longer freeze
            last = 0
        return room >= max(self.min_key_bytes(), 0.9 * last)

    def min_key_bytes(self) -> int:
        """What the smallest key frame costs on the wire (planning estimate: a lowest-quality key image of
        about 250 bytes at 256 px, an intra base picture of 80, their records)."""
        return 250 + 80 + 2 * record_overhead() + DATAGRAM_HEADER + 8

    def encode(self, rgb: np.ndarray, t_capture: float | None = None, t_now: float | None = None,
               refresh: bool = False) -> list:
        """Frame ``index``'s packets (a key packet first when one is sent here)."""
        from .bitstream import BasePacket, KeyPacket, encode_packet
        from .modes.common import check_frame

        check_frame(rgb, self.size)
        i = self.index
        self.index += 1
        t_capture = i * self.frame_s if t_capture is None else float(t_capture)
        t_now = t_capture if t_now is None else max(float(t_now), t_capture)
        deadline = self._deadline(t_capture)
        if self.keys(i, rgb) or refresh:
            self.want_key = True
        room = self.bucket.room(t_now, deadline) - DATAGRAM_HEADER
        out: list = []
        if self.want_key and (i == 0 or self._key_fits(room - self.key_cost_s * self.bucket.rate)):
            started = self.clock() if self.clock is not None else 0.0
            room = self.bucket.room(t_now + self.key_cost_s, deadline) - DATAGRAM_HEADER
            unit = self.base.encode(rgb, intra=True)
            base_rec = len(encode_packet(BasePacket(frame=i, units=(unit,)), self.header))
            budget = int(room - base_rec - (record_overhead() + 4))
            lo, hi = self.key_codec.quality_range
            # no encode starts after half the planned coding time: one may take twice as long as measured (a
            # receiver starting on the same machine, other load) and still end within the plan
            spent = started + self.key_cost_s / 2
            more = (lambda: self.clock() < spent) if self.clock is not None else (lambda: True)
            coded: dict[int, bytes] = {}  # quality -> image: the second search does not code one again

            def code(q: int) -> bytes:
                if q not in coded:
                    coded[q] = self.key_codec.encode(rgb, q)
                return coded[q]

            got = fit_key(code, lo, hi, budget, self.key_quality, 3, more)
            if got is None and more():  # the search may have stopped above the lowest quality
                got = fit_key(code, lo, hi, budget, lo, 2, more)
            for factor in (2, 4):  # not even the lowest quality fits: a smoother picture costs less
                if got is not None or not more():
                    break
                got = fit_key(lambda q: self.key_codec.encode(smoothed(rgb, factor), q), lo, hi, budget, lo, 2,
                              more)
            if got is None:  # nothing fits: the smoothest at the lowest quality, late
                got = (lo, self.key_codec.encode(smoothed(rgb, 4), lo))
            q, image = got
            if self.clock is not None:
                t_now = max(t_now, self.clock())
                # a search that ran over its plan plans more next time (a slower machine, or a busier one)
                self.key_cost_s = max(self.key_cost_s, self.clock() - started)
            self.key_quality = q
            self.keys.keyed(i)
            self.want_key = False
            self.waited = 0
            out.append(KeyPacket(frame=i, key_token=b"", image=image))
            self.stats.key_qualities.append(q)
            self.stats.key_sizes.append(len(image))
            self.stats.key_frames.append(i)
            self.previous = rgb
        else:
            if self.want_key:
                self.stats.postponed += 1
                self.waited += 1
            # planned at the time the frame's bytes will leave: after its encode (``p_time``: a running estimate)
            steady = self.bucket.room(t_now + self.p_time, t_capture + self.steady_s) - DATAGRAM_HEADER
            # a sender whose own processing is behind its capture clock (a starved CPU) skips too: a skip costs
            # no encode, so it catches up instead of sending every later frame late
            behind = self.clock is not None and t_now - t_capture > BEHIND_FRAMES * self.frame_s
            if self.skip and self.previous is not None and (self.want_key or behind
                                                            or steady < max(self.p_size, 1.0)):
                # skip: the link drains (after a key frame, or for an owed one); libvpx sees no time pass, so
                # it does not spend the skipped frames' share later
                unit = SKIP_UNIT  # the decoder shows its last picture again; the encoder's refs are untouched
                self.stats.skipped.append(i)
            else:
                t0 = self.clock() if self.clock is not None else 0.0
                unit = self.base.encode(rgb, intra=False)
                if self.clock is not None:
                    self.p_time = 0.8 * self.p_time + 0.2 * (self.clock() - t0)
                self.previous = rgb
                n = len(unit) + record_overhead()
                self.p_size = n if self.p_size == 0 else 0.8 * self.p_size + 0.2 * n
        out.append(BasePacket(frame=i, units=(unit,)))
        wire = DATAGRAM_HEADER + sum(len(encode_packet(p, self.header)) for p in out)
        self.stats.captures.append(t_capture)
        sent = max(t_now, self.clock()) if self.clock is not None else t_now  # the bytes leave after the coding
        self.stats.departures.append(self.bucket.send(sent, wire))
        self.stats.sizes.append(wire)
        return out

    def flush(self) -> list:
        from .bitstream import EndPacket

        self.base.close()
        return [EndPacket(frames=self.index)]


def open_live_encoder(loaded, fps: Fraction, link: LiveLink, **policy) -> LiveEncoder:
    """A ``LiveEncoder`` for a loaded enhancer (``modes.hybrid.load_enhancer``)."""
    return LiveEncoder(loaded.model, model_name=loaded.name, weights_hash=loaded.weights_hash, fps=fps, link=link,
                       **policy)
