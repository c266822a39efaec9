"""The token mode's Encoder and Decoder: GOP logic, the closed loop, and the per-key-frame cache.

Data flows one way: RGB frame -> (key frame codec | E_T token) -> quantized ints -> rANS -> packets,
and back. Both sides work from the *decoded* key frame and from integers only, so the decoder
reproduces the encoder's reference state exactly up to float rounding in the networks.
"""

from __future__ import annotations

from collections.abc import Iterator
from fractions import Fraction

import numpy as np
import torch

from ..bitstream import EndPacket, KeyPacket, StreamHeader, TokenPacket
from ..entropy import (
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
from ..devices import model_device
from ..errors import CorruptStreamError, InputError, ModelMismatchError, UnsupportedStreamError
from ..keyframe import get_keyframe_codec
from ..metrics import psnr
from ..models.imf import RefState
from ..settings import EncoderSettings
from ..stages import stage
from ..token_search import SearchSettings, grad_state, search_tokens, table_scales
from .common import DecoderState, KeyPolicy, Packet, check_frame, to_tensor, to_uint8


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
                 settings: EncoderSettings = EncoderSettings(mode="token"), frames: int = 0):
        self.model = model.eval()
        self.device = model_device(model)  # where the networks run; entropy coding stays on the CPU
        self.settings = settings.in_mode("token").validated()
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
        self.keys = KeyPolicy(self.settings.keyint, self.settings.scenecut)
        self.key_frames = self.keys.key_frames
        self.scene_cuts = self.keys.scene_cuts  # the key frames the scene-cut detector asked for
        self.ref: _Reference | None = None
        self.prev_q: np.ndarray | None = None
        self.pending: list[np.ndarray] = []
        self.pending_first = 0

    @torch.inference_mode()
    def encode(self, rgb: np.ndarray) -> list[Packet]:
        """Encode one frame; returns zero or more finished packets."""
        check_frame(rgb, self.size)
        i, s = self.index, self.settings
        self.index += 1
        if self.keys(i, rgb):
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
        self.keys.keyed(i)
        out.append(KeyPacket(frame=i, key_token=pack_key_token(q), image=image_bytes))
        return out


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


def load_network(spec, settings=None):
    """The token model to encode with: ``spec`` (a ``LoadedModel``, or as ``--model``; None: the shipped
    default); an enhancer is refused (it encodes only in the hybrid mode)."""
    from ..zoo import LoadedModel, load_model

    loaded = spec if isinstance(spec, LoadedModel) else load_model(spec)
    if getattr(loaded.model.config, "kind", "imf") != "imf":
        raise InputError(f"'{loaded.name}' is an enhancer: it encodes only in the hybrid mode "
                         f"(--enhancer {loaded.source}, in the default hybrid mode)")
    return loaded


def open_encoder(loaded, fps: Fraction, settings: EncoderSettings) -> Encoder:
    return Encoder(loaded.model, model_name=loaded.name, weights_hash=loaded.weights_hash, fps=fps,
                   settings=settings)


def open_decoder(loaded, header: StreamHeader, enhance: bool = True) -> Decoder:
    if not enhance:
        raise InputError("enhance=False applies to hybrid streams only; this stream codes tokens")
    return Decoder(loaded.model, header)
