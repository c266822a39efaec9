"""Encoder and Decoder: GOP logic, the closed loop, and the per-key-frame cache.

Data flows one way: RGB frame -> (key frame codec | E_T token) -> quantized ints -> rANS -> packets,
and back. Both sides work from the *decoded* key frame and from integers only, so the decoder
reproduces the encoder's reference state exactly up to float rounding in the networks.
"""

from __future__ import annotations

from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np
import torch

from .bitstream import EndPacket, KeyPacket, StreamHeader, TokenPacket
from .entropy import (
    QUALITY_RANGE,
    TokenCoder,
    dequantize,
    pack_key_token,
    prior_delta_std,
    quantization_steps,
    quantize,
    scale_indexes,
    unpack_key_token,
)
from .devices import model_device
from .errors import CorruptStreamError, InputError, ModelMismatchError, UnsupportedStreamError
from .keyframe import get_keyframe_codec
from .metrics import psnr
from .models.imf import RefState
from .scenecut import SceneCutDetector
from .stages import stage
from .settings import (  # noqa: F401 - re-exported: callers import the settings with the codec
    DEFAULT_CHUNK,
    DEFAULT_KEY_CODEC,
    DEFAULT_QUALITY,
    DEFAULT_SEARCH_ITERS,
    EncoderSettings,
)
from .token_search import SearchSettings, grad_state, search_tokens, table_scales

Packet = KeyPacket | TokenPacket | EndPacket


def check_frame(rgb: np.ndarray, size: int) -> None:
    """What both encoders take: one uint8 RGB frame at the model's size (InputError otherwise)."""
    if rgb.shape != (size, size, 3) or rgb.dtype != np.uint8:
        raise InputError(f"frame must be uint8 {size}x{size}x3, got {rgb.dtype} {rgb.shape}")


def to_tensor(rgb: np.ndarray, device: torch.device | str | None = None) -> torch.Tensor:
    """uint8 HxWx3 -> float 1x3xHxW in [0, 1] (on ``device``: the bytes travel, not the floats)."""
    t = torch.from_numpy(np.array(rgb, dtype=np.uint8))
    if device is not None:
        t = t.to(device)
    return t.permute(2, 0, 1).unsqueeze(0).float().div_(255.0)


def to_uint8(x: torch.Tensor) -> list[np.ndarray]:
    """float Bx3xHxW in [0, 1] -> list of uint8 HxWx3 (round to nearest)."""
    y = x.detach().clamp(0, 1).mul(255.0).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return [np.ascontiguousarray(f) for f in y]


class _Reference:
    """What both sides cache per key frame: the decoded image, its token ints and the model state."""

    def __init__(self, model: torch.nn.Module, image: np.ndarray, q: np.ndarray, steps: np.ndarray):
        self.image = image
        self.q = q
        device = model_device(model)
        t = dequantize(q[None, :], steps).to(device)
        with stage("reference features"):
            self.state = model.prepare_reference(to_tensor(image, device), t)
        self._grad_state: RefState | None = None

    @property
    def grad_state(self) -> RefState:
        """The cache as autograd-usable tensors, for the token search (built once per key frame)."""
        if self._grad_state is None:
            self._grad_state = grad_state(self.state)
        return self._grad_state


class Encoder:
    """Streaming encoder: ``encode(frame)`` returns the packets that frame completes.

    Frames must already be at the model resolution (see ``imfcodec.io.read_frames``). Key frames: the
    first, every ``keyint``-th after the last key frame, a scene cut (``settings.scenecut``,
    ``imfcodec.scenecut``: listed in ``scene_cuts``), and with ``refresh_below`` a frame whose
    reconstruction falls below that PSNR.
    """

    def __init__(self, model: torch.nn.Module, *, model_name: str, weights_hash: bytes, fps: Fraction,
                 settings: EncoderSettings = EncoderSettings(), frames: int = 0):
        self.model = model.eval()
        self.device = model_device(model)  # where the networks run; entropy coding stays on the CPU
        self.settings = settings.validated()
        self.size = int(model.config.resolution)
        self.steps = quantization_steps(model.token_scale, self.settings.quality)
        # entropy tables: chosen once from the model's delta prior, written in the header as integers
        self.scale_indexes = scale_indexes(prior_delta_std(model), self.steps)
        self.coder = TokenCoder(int(model.config.token_dim), self.scale_indexes)
        self.search_settings = SearchSettings(self.settings.search_iters)
        self.table_scales = table_scales(self.scale_indexes)
        self.key_codec = get_keyframe_codec(self.settings.key_codec)
        fps = Fraction(fps)
        self.header = StreamHeader(
            model=model_name, weights_hash=weights_hash, width=self.size, height=self.size,
            fps_num=fps.numerator, fps_den=fps.denominator, frames=frames,
            key_codec=self.settings.key_codec, key_quality=int(self.settings.key_quality),
            quality=self.settings.quality, chunk=self.settings.chunk,
            token_dim=int(model.config.token_dim), scale_indexes=tuple(self.scale_indexes))
        self.index = 0
        self.last_key = -1
        self.ref: _Reference | None = None
        self.prev_q: np.ndarray | None = None
        self.pending: list[np.ndarray] = []
        self.pending_first = 0
        self.key_frames: list[int] = []
        self.scene_cut = SceneCutDetector(self.settings.scenecut)
        self.scene_cuts: list[int] = []  # the key frames the scene-cut detector asked for

    @torch.inference_mode()
    def encode(self, rgb: np.ndarray) -> list[Packet]:
        """Encode one frame; returns zero or more finished packets."""
        check_frame(rgb, self.size)
        i, s = self.index, self.settings
        self.index += 1
        with stage("scene cut"):
            cut = self.scene_cut(rgb)  # sees every frame: it compares each with the one before
        if self.ref is None or (s.keyint > 0 and i - self.last_key >= s.keyint):
            return self._key(i, rgb)
        if cut:
            self.scene_cuts.append(i)
            return self._key(i, rgb)
        with stage("E_T"):
            x = to_tensor(rgb, self.device)
            q = quantize(self.model.encode_token(x), self.steps)[0]  # float64 on the CPU: device-independent
        if s.search_iters:
            prev = self.pending[-1] if self.pending else self.prev_q
            with stage("token search"):
                q = search_tokens(self.model, self.ref.grad_state, x, q[None], prev, self.steps,
                                  self.table_scales, self.search_settings)[0]
        if s.refresh_below is not None:
            with stage("refresh check"):
                t = dequantize(q[None, :], self.steps).to(self.device)
                recon = to_uint8(self.model.decode_frame(self.ref.state, t))[0]
                low = psnr(recon, rgb) < s.refresh_below
            if low:
                return self._key(i, rgb)
        if not self.pending:
            self.pending_first = i
        self.pending.append(q)
        return self._flush_tokens() if len(self.pending) >= s.chunk else []

    def flush(self) -> list[Packet]:
        """Emit the pending token chunk and the END packet."""
        return self._flush_tokens() + [EndPacket(frames=self.index)]

    def _flush_tokens(self) -> list[Packet]:
        if not self.pending:
            return []
        qs = np.stack(self.pending).astype(np.int32)
        with stage("entropy coding"):
            data = self.coder.encode_chunk(self.prev_q, qs)
        packet = TokenPacket(frame=self.pending_first, count=len(self.pending), data=data)
        self.prev_q = qs[-1]
        self.pending = []
        return [packet]

    def _key(self, i: int, rgb: np.ndarray) -> list[Packet]:
        out = self._flush_tokens()
        with stage("key-frame encode"):
            image_bytes = self.key_codec.encode(rgb, int(self.settings.key_quality))
            decoded = self.key_codec.decode(image_bytes, self.size, self.size)  # closed loop
        with stage("key token (E_T)"):
            q = quantize(self.model.encode_token(to_tensor(decoded, self.device)), self.steps)[0]
        self.ref = _Reference(self.model, decoded, q, self.steps)
        self.prev_q = q
        self.last_key = i
        self.key_frames.append(i)
        out.append(KeyPacket(frame=i, key_token=pack_key_token(q), image=image_bytes))
        return out


@dataclass
class DecodeReport:
    """What happened during a decode: frames out, key frames, concealed frames."""

    frames: int = 0
    key_frames: list[int] = field(default_factory=list)
    concealed: list[int] = field(default_factory=list)
    damage: list[str] = field(default_factory=list)  # why bytes or packets were skipped (first 100)
    damage_count: int = 0
    truncated: bool = False  # concealment: the stream ended without its END packet


class DecoderState:
    """What every decoder keeps besides its model: the next frame, the report, and the concealment
    bookkeeping (the token ``Decoder`` and ``hybrid.HybridDecoder`` share it)."""

    def __init__(self, header: StreamHeader) -> None:
        self.header = header
        self.next_frame = 0
        self.report = DecodeReport()
        self.last_frame: np.ndarray | None = None
        self.broken = False  # a packet was lost: packets that depend on it are concealed until the next key
        self.damaged_bytes = 0  # bytes skipped since the last packet that was used

    def damage(self, nbytes: int, reason: str = "") -> None:
        """A ``ResyncReader`` skipped ``nbytes`` damaged bytes: whatever they held is lost."""
        self.broken = True
        self.damaged_bytes += max(0, int(nbytes))
        self._note(reason)

    def _note(self, reason: str) -> None:
        self.report.damage_count += 1
        if len(self.report.damage) < 100:  # a hostile file can hold millions: keep the first ones
            self.report.damage.append(reason)

    def conceal(self, count: int) -> Iterator[list[np.ndarray]]:
        """``count`` frames repeating the last good frame, in batches (the list shares one array)."""
        if self.last_frame is None:
            h = self.header
            self.last_frame = np.full((h.height, h.width, 3), 128, dtype=np.uint8)
            self.last_frame.flags.writeable = False
        while count > 0:
            n = min(count, 256)
            self.report.concealed.extend(range(self.next_frame, self.next_frame + n))
            self.report.frames += n
            self.next_frame += n
            count -= n
            yield [self.last_frame] * n

    #: bytes a packet record takes at least: a damaged stretch of N bytes can have held at most
    #: chunk * (N // MIN_RECORD + 1) frames (each decoder sets its own)
    MIN_RECORD = 1

    def _lost(self) -> None:
        """A packet was lost: what depends on it is concealed until the next key packet."""
        self.broken = True

    def _catch_up(self, target: int) -> Generator[list[np.ndarray], None, bool]:
        """Concealment, before a packet for frame ``target``: False for a stale or implausible packet (noted;
        the caller ignores it); otherwise the frames lost since the last packet are concealed, and True."""
        if target < self.next_frame:  # a stale or replayed packet (CRC-valid but out of place): skip it
            self._note(f"ignored a packet for frame {target}: out of order after frame {self.next_frame - 1}")
            return False
        gap = target - self.next_frame
        if gap:
            plausible = self.header.chunk * (self.damaged_bytes // self.MIN_RECORD + 1)
            if gap > plausible:  # more frames than the skipped bytes could have held: not believable
                self._note(f"ignored a packet for frame {target}: {gap} frames after frame {self.next_frame}, "
                           f"more than {self.damaged_bytes} damaged bytes can hold")
                return False
            self._lost()
            yield from self.conceal(gap)
        self.damaged_bytes = 0
        return True

    def _decode_or_conceal(self, packet: Packet, count: int) -> Iterator[list[np.ndarray]]:
        """Concealment: ``packet``'s frames, or, when its content is damaged, ``count`` concealed frames."""
        try:
            frames = self.decode(packet)
        except CorruptStreamError as e:
            self.damage(0, str(e))
            self._lost()
            yield from self.conceal(count)
            return
        if isinstance(packet, KeyPacket):
            self.broken = False
        if frames:
            self.last_frame = frames[-1]
            yield frames


class Decoder(DecoderState):
    """Streaming decoder: ``decode(packet)`` returns the frames (uint8 RGB) that packet completes.

    ``decode`` is strict: any inconsistency raises ``CorruptStreamError`` (FORMAT.md §6).
    ``decode_concealing`` is the error-resilient mode behind ``imfcodec decode --conceal``: it takes the
    packets and ``Damage`` of a ``ResyncReader`` and never raises for damaged packet content. Frames it
    cannot decode (a damaged or missing packet, and every token packet after it until the next key
    frame, since their deltas chain from the lost tokens) repeat the last good frame, i.e. the last good
    token synthesised against the current reference (mid-grey before the first key frame), and are
    listed in ``report.concealed``.
    """

    #: bytes a token record takes at least (type, length, frame, count, 8 bytes of rANS, CRC)
    MIN_RECORD = 16

    def __init__(self, model: torch.nn.Module, header: StreamHeader, *, batch: int = 8):
        cfg = model.config
        if header.hybrid or getattr(cfg, "kind", "imf") != "imf":
            raise ModelMismatchError(f"this decoder takes token streams and token models, not "
                                     f"{'a hybrid stream' if header.hybrid else f'the enhancer {cfg.name!r}'}")
        if header.token_dim != cfg.token_dim or header.width != cfg.resolution or header.height != cfg.resolution:
            raise ModelMismatchError(
                f"stream is {header.width}x{header.height} with {header.token_dim}-dim tokens; model "
                f"'{cfg.name}' codes {cfg.resolution}x{cfg.resolution} with {cfg.token_dim}")
        lo, hi = QUALITY_RANGE
        if not lo <= header.quality <= hi:
            raise UnsupportedStreamError(f"stream header: token quality {header.quality} is outside {lo}..{hi}")
        super().__init__(header)
        self.model = model.eval()
        self.device = model_device(model)
        self.steps = quantization_steps(model.token_scale, header.quality)
        self.coder = TokenCoder.from_header(header.token_dim, header.scale_indexes)
        self.key_codec = get_keyframe_codec(header.key_codec)
        self.batch = max(1, batch)
        self.ref: _Reference | None = None
        self.prev_q: np.ndarray | None = None
        self.last_tokens: np.ndarray | None = None  # integer tokens of the last token packet (for tests/tools)

    @torch.inference_mode()
    def decode(self, packet: Packet) -> list[np.ndarray]:
        if isinstance(packet, EndPacket):
            if packet.frames != self.next_frame:
                raise CorruptStreamError(f"END says {packet.frames} frames but {self.next_frame} were sent")
            return []
        if packet.frame != self.next_frame:
            raise CorruptStreamError(f"packet starts at frame {packet.frame}, expected {self.next_frame}")
        if isinstance(packet, KeyPacket):
            with stage("key-frame decode"):
                image = self.key_codec.decode(packet.image, self.header.width, self.header.height)
            q = unpack_key_token(packet.key_token, self.header.token_dim)
            self.ref = _Reference(self.model, image, q, self.steps)
            self.prev_q = q
            self.last_tokens = q[None, :]
            self.next_frame += 1
            self.report.key_frames.append(packet.frame)
            self.report.frames += 1
            return [image]
        if not isinstance(packet, TokenPacket):
            raise CorruptStreamError(f"{type(packet).__name__} at frame {packet.frame} in a token stream")
        if self.ref is None:
            raise CorruptStreamError(f"token packet at frame {packet.frame} before any key frame")
        with stage("token entropy decoding"):
            qs = self.coder.decode_chunk(self.prev_q, packet.data, packet.count)
        self.prev_q = qs[-1]
        self.last_tokens = qs
        frames = self.synthesize(qs)
        self.next_frame += packet.count
        self.report.frames += packet.count
        return frames

    def synthesize(self, qs: np.ndarray) -> list[np.ndarray]:
        """Decode frames from integer tokens against the cached reference, a few at a time."""
        out: list[np.ndarray] = []
        for start in range(0, len(qs), self.batch):
            with stage("token entropy decoding"):
                t = dequantize(qs[start:start + self.batch], self.steps).to(self.device)
            with stage("decode_frame"):
                y = self.model.decode_frame(self.ref.state, t)
            with stage("output conversion"):
                out.extend(to_uint8(y))
        return out

    def decode_concealing(self, packet: Packet) -> Iterator[list[np.ndarray]]:
        """Concealment mode: yields batches of frames; never raises for damaged packet content."""
        if isinstance(packet, EndPacket):
            target, count = packet.frames, 0
        else:
            target = packet.frame
            count = 1 if isinstance(packet, KeyPacket) else packet.count
        if not (yield from self._catch_up(target)) or isinstance(packet, EndPacket):
            return
        if isinstance(packet, TokenPacket) and (self.broken or self.ref is None):
            yield from self.conceal(count)
            return
        yield from self._decode_or_conceal(packet, count)


def encode_frames(frames: Iterable[np.ndarray], encoder: Encoder) -> Iterator[Packet]:
    """Drive an Encoder over an iterable of frames, yielding packets (END last)."""
    for rgb in frames:
        yield from encoder.encode(rgb)
    yield from encoder.flush()
