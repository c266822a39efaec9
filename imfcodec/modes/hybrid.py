"""The hybrid mode's encoder and decoder: key images plus a conventional low-resolution base layer,
lifted to full size by the enhancer (``imfcodec.models.enhancer``). Format: version 2 of FORMAT.md, version 4
with the enhancer switch (the default).

Stream: at every key frame a key packet (the key image, no token) followed by the base packet that starts
at that frame; base packets carry the access units of up to ``chunk`` consecutive frames
(``imfcodec.baselayer``), so the framing costs about one byte per frame plus a record per packet.

* Encoder: key frames follow the modes' shared policy (``common.KeyPolicy``: the first frame, every ``keyint``,
  and a scene cut); a key image is coded with the key-frame codec and decoded back (closed
  loop: ``key_image`` is what the decoder will show), and the base encoder starts a new GOP (an intra
  picture) at the same frame. With ``guard`` (the default) the encoder also decodes each base packet as the
  decoder will (``HybridDecoder`` on its own packets) and compares the enhanced pictures and the upscaled
  base pictures with the source: a packet whose enhanced pictures are further from the source (mean squared
  error over its frames after the key frame) is sent as a ``b`` record, which the decoder shows without the
  enhancer. The enhancer helps talking heads everywhere; it can hurt content unlike its training data
  (colour bars, screen content), and the encoder is the one that can tell. It enhances two frames of each
  packet (``guard_probe``): the cost stays well under the decoder's. Without ``guard`` the encoder never
  runs the enhancer (version 2 streams, about 4.5x faster encoding).
* Decoder: a key packet decodes the key image and restarts the base decoder; a base packet decodes the
  small picture and upscales it (``upscale``, bicubic). At a key frame the output is the key image, and
  the enhancer caches ``prepare_key(key, upscaled base)``; at the other frames the output is
  ``enhance(state, upscaled base)``, or with ``enhance=False`` the upscaled base itself (key frames are
  still the key image, so the two outputs differ exactly by what the enhancer adds).
* A recurrent enhancer (``models.recurrent``) also remembers the last frame shown: ``prepare_key`` starts the
  memory at the key image (a key frame, hence a scene cut, resets it), each enhanced frame replaces it, and a
  ``b`` record's last frame (the upscaled base) replaces it through ``remember``. Concealed frames never reach
  it: after a loss nothing is enhanced until the next key packet, which resets it, so the decoder is back on the
  encoder's frames exactly at the next key frame. The guard's mirror enhances every frame with such an enhancer
  (and ``sent_unenhanced`` after a ``b`` decision), so its memory is the decoder's.
"""

from __future__ import annotations

from collections.abc import Iterator
from fractions import Fraction

import numpy as np
import torch
import torch.nn.functional as F

from ..baselayer import MIN_BASE_SIDE, BaseDecoder, BaseEncoder, base_size, get_base_codec, intra_key_size
from ..bitstream import BasePacket, EndPacket, KeyPacket, StreamHeader, TokenPacket
from ..bitstream.format import coded_frames
from ..devices import model_device
from ..errors import CorruptStreamError, InputError, ModelMismatchError, UnsupportedStreamError, WeightsError
from ..keyframe import get_keyframe_codec
from ..models.enhancer import upscale
from ..settings import DEFAULT_ENHANCER, EncoderSettings
from ..stages import stage
from .common import DecoderState, KeyPolicy, Packet, check_frame, to_tensor, to_uint8


def guard_probe(first: int, count: int) -> list[int]:
    """The frames of a base packet the encoder's guard enhances (indices into the packet, from ``first``, the
    first frame after a key frame): its middle and its last frame, or fewer in a short packet."""
    if count <= first:
        return []
    return sorted({(first + count - 1) // 2, count - 1} - set(range(first)))


def key_base(key: torch.Tensor, base: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
    """The stand-in for a key frame's upscaled base picture when the key picture is coded by the base layer
    itself (there is no small picture of that instant): the key scaled down to the base size by area averaging
    and up again as every base picture is (``upscale``). The enhancer's attention keys then come from a picture
    as soft as the base pictures it is queried with."""
    return upscale(F.interpolate(key, size=base, mode="area"), size)


def is_enhancer(model: torch.nn.Module) -> bool:
    return getattr(getattr(model, "config", None), "kind", "imf") == "enhancer"


def is_recurrent(model: torch.nn.Module) -> bool:
    """An enhancer with a memory of the frames it showed (``models.recurrent``): its output depends on every
    frame since the key frame, so the guard's mirror must enhance them all."""
    return bool(getattr(getattr(model, "config", None), "recurrent", False))


def enhancer_name(spec: str | None = None) -> str:
    """The config name of the enhancer ``--enhancer spec`` names, checked as ``load_enhancer`` checks it but
    without loading its weights (``--kbps`` needs only the name to find its operating-point table)."""
    from ..zoo import spec_config

    name = _check_enhancer_spec(spec)
    found = spec_config(name)
    if found is None:
        return load_enhancer(spec).name  # loading says what is wrong with it
    config, kind = found
    if kind != "enhancer":
        raise InputError(f"{name} holds the token model '{config}', not an enhancer "
                         f"(enhancers: {', '.join(_enhancers())})")
    return config


def _enhancers() -> list[str]:
    from ..models import list_models

    return list_models("enhancer")


def _check_enhancer_spec(spec: str | None) -> str:
    """``spec`` with None as ``DEFAULT_ENHANCER``; a token model's name, or an enhancer without shipped weights,
    refused in one line."""
    from ..models import list_models
    from ..zoo import RANDOM_PREFIX, shipped_weights_path

    name = DEFAULT_ENHANCER if spec is None else spec
    enhancers = _enhancers()
    config = name[len(RANDOM_PREFIX):].partition(":")[0] if name.startswith(RANDOM_PREFIX) else name
    if config in list_models("imf"):
        raise InputError(f"'{config}' is a token model, not an enhancer (enhancers: {', '.join(enhancers)})")
    if name in enhancers and shipped_weights_path(name) is None:
        raise WeightsError(f"no trained weights are shipped for the enhancer '{name}' yet "
                           f"(imfcodec/weights/{name}.safetensors): pass --enhancer PATH.safetensors, or "
                           f"--enhancer {RANDOM_PREFIX}{name} for an untrained one")
    return name


def load_enhancer(spec: str | None = None):
    """Resolve ``--enhancer`` as ``zoo.load_model`` resolves ``--model`` (a config name with shipped
    weights, a .safetensors path, or ``random:NAME[:SEED]``); None is the shipped ``DEFAULT_ENHANCER``.
    Refuses token models with a one-line error."""
    from ..zoo import load_model

    loaded = load_model(_check_enhancer_spec(spec))
    if not is_enhancer(loaded.model):
        raise InputError(f"{loaded.source} holds the token model '{loaded.name}', not an enhancer "
                         f"(enhancers: {', '.join(_enhancers())})")
    return loaded


class HybridEncoder:
    """Streaming hybrid encoder: ``encode(frame)`` returns that frame's packets ([K,] B).

    Frames must already be at the enhancer's resolution (see ``imfcodec.io.read_frames``).
    """

    def __init__(self, model: torch.nn.Module, *, model_name: str, weights_hash: bytes, fps: Fraction,
                 settings: EncoderSettings = EncoderSettings(), frames: int = 0):
        self.settings = s = settings.in_mode("hybrid").validated()
        if not is_enhancer(model):
            raise InputError(f"the hybrid mode needs an enhancer, not the token model '{model_name}'")
        self.size = int(model.config.resolution)
        side = base_size(self.size, s.base_factor)
        fps = Fraction(fps)
        # a half-rate base: the stream's frames are the even source frames, at half the rate (FORMAT.md §3.8)
        self.half_rate = bool(s.half_rate)
        self.source_frames = 0  # frames given to ``encode`` (the stream's frames are every other one when half-rate)
        if self.half_rate:
            fps = fps / 2
        self.intra_base = bool(s.intra_base)  # the key pictures in the base layer: no key image of its own
        self.key_codec = None if self.intra_base else get_keyframe_codec(s.key_codec)
        self.base = BaseEncoder(s.base_codec, side, side, fps, s.base_quality, effort=s.preset,
                                key_size=intra_key_size((side, side)) if self.intra_base else None)
        # with the key pictures in the base layer the header's key fields repeat the base codec's (FORMAT.md §3.1)
        key_codec, key_quality = (s.base_codec, s.base_quality) if self.intra_base else (s.key_codec, s.key_quality)
        self.header = StreamHeader(
            model=model_name, weights_hash=weights_hash, width=self.size, height=self.size,
            fps_num=fps.numerator, fps_den=fps.denominator, frames=frames,
            key_codec=key_codec, key_quality=int(key_quality), quality=0, chunk=s.chunk, token_dim=0,
            scale_indexes=(), base_codec=s.base_codec, base_width=side, base_height=side,
            base_quality=int(s.base_quality), enhancer_switch=bool(s.guard), lean=bool(s.lean),
            intra_base=self.intra_base, half_rate=self.half_rate)
        # the guard's decoder: it sees exactly the packets the real decoder will (closed loop)
        self.mirror = HybridDecoder(model, self.header) if s.guard else None
        self.sources: list[np.ndarray] = []  # source frames of the pending base packet (for the guard)
        self.unenhanced: list[int] = []  # first frames of the packets sent without the enhancer
        self.unenhanced_frames = 0  # frames (after key frames) those packets hold
        self.index = 0
        self.keys = KeyPolicy((s.keyint + 1) // 2 if self.half_rate else s.keyint, s.scenecut)
        self.key_frames = self.keys.key_frames
        self.scene_cuts = self.keys.scene_cuts  # the key frames the scene-cut detector asked for
        self.key_image: np.ndarray | None = None  # the decoded last key image (closed loop)
        self.pending: list[bytes] = []  # access units of frames not yet in a packet
        self.pending_first = 0
        self.pending_key = False  # the pending packet starts with a key picture in the base layer

    def _flush_units(self) -> list[Packet]:
        if not self.pending:
            return []
        packet = BasePacket(frame=self.pending_first, units=tuple(self.pending), key=self.pending_key)
        self.pending = []
        sources, self.sources = self.sources, []
        if self.mirror is not None and not self._enhancer_helps(packet, sources):
            packet = BasePacket(frame=packet.frame, units=packet.units, enhance=False, key=packet.key)
            self.mirror.sent_unenhanced()  # a recurrent enhancer's memory: what the decoder will show
            self.unenhanced.append(packet.frame)
            self.unenhanced_frames += packet.count - (packet.frame in self.key_frames)
        return [packet]

    def _enhancer_helps(self, packet: BasePacket, sources: list[np.ndarray]) -> bool:
        """Decode ``packet`` as the decoder will and say whether its enhanced pictures are at least as close
        to ``sources`` as the upscaled base pictures (summed squared error over the probed frames; ties keep
        the enhancer). The probe (``guard_probe``) is at most two frames after a key frame, the packet's middle
        and last: content the enhancer hurts (unlike its training data) is hurt throughout a packet, and two
        frames keep the guard's cost well under the decoder's. A recurrent enhancer's mirror enhances every frame
        (its memory must be the decoder's), the probe is still what is compared."""
        with stage("guard"):
            mirror = self.mirror
            first = 1 if mirror.key_image is not None or packet.key else 0
            probe = guard_probe(first, packet.count)
            enhanced = mirror.decode(packet, probe)
            if not probe:
                return True
            base = to_uint8(mirror.last_upscaled[probe])
            src = np.stack([sources[i] for i in probe]).astype(np.int32)
            err_enh = int(((np.stack(enhanced).astype(np.int32) - src) ** 2).sum())
            err_base = int(((np.stack(base).astype(np.int32) - src) ** 2).sum())
        return err_enh <= err_base

    def encode(self, rgb: np.ndarray) -> list[Packet]:
        check_frame(rgb, self.size)
        self.source_frames += 1
        if self.half_rate and self.source_frames % 2 == 0:  # an odd source frame: the decoder interpolates it
            return []
        i, s = self.index, self.settings
        self.index += 1
        key = self.keys(i, rgb)
        out: list[Packet] = []
        if key:  # a base packet never spans a key frame
            out += self._flush_units()
        if key and self.intra_base:  # the key picture is the first unit of the base packet starting here
            self.keys.keyed(i)
        elif key:  # the key packet precedes the base packet starting here
            with stage("key-frame encode"):
                image = self.key_codec.encode(rgb, int(s.key_quality))
                self.key_image = self.key_codec.decode(image, self.size, self.size)
            self.keys.keyed(i)
            out.append(KeyPacket(frame=i, key_token=b"", image=image))
            if self.mirror is not None:
                self.mirror.decode(out[-1])
        if not self.pending:
            self.pending_first = i
            self.pending_key = key and self.intra_base
        with stage("base-layer encode"):
            self.pending.append(self.base.encode(rgb, intra=key))
        if self.mirror is not None:
            self.sources.append(rgb)
        if len(self.pending) >= s.chunk:
            out += self._flush_units()
        return out

    def flush(self) -> list[Packet]:
        """The pending base packet and the END packet (the base encoder itself runs with zero latency)."""
        with stage("base-layer encode"):
            self.base.close()
        return self._flush_units() + [EndPacket(frames=self.source_frames)]  # (every frame given, coded or not)


class HybridDecoder(DecoderState):
    """Streaming hybrid decoder: ``decode(packet)`` returns the frames (uint8 RGB) that packet completes
    (a key packet none, a base packet its ``count``; the enhancer runs on them as one batch).

    ``decode`` is strict (any inconsistency raises ``CorruptStreamError``); ``decode_concealing`` is the
    ``--conceal`` mode: a damaged or missing base or key packet repeats the last good frame until the next
    key packet, where base decoding restarts (the base layer predicts each picture from the previous one).
    """

    #: bytes a base record takes at least (type, length, frame, count, a unit's size and one byte, CRC)
    MIN_RECORD = 10
    BATCH = 8  # frames per enhancer call

    def __init__(self, model: torch.nn.Module, header: StreamHeader, *, enhance: bool = True):
        cfg = model.config
        if not header.hybrid:
            raise ModelMismatchError("HybridDecoder takes streams with a base layer; this one has tokens")
        if not is_enhancer(model):
            raise ModelMismatchError(f"a hybrid stream needs an enhancer, not the token model '{cfg.name}'")
        if header.width != cfg.resolution or header.height != cfg.resolution:
            raise ModelMismatchError(f"stream is {header.width}x{header.height}; enhancer '{cfg.name}' works at "
                                     f"{cfg.resolution}x{cfg.resolution}")
        # with the key pictures in the base layer the key fields name the base codec (checked below)
        self.key_codec = None if header.intra_base else get_keyframe_codec(header.key_codec)
        codec = get_base_codec(header.base_codec)
        lo, hi = codec.quality_range
        if not lo <= header.base_quality <= hi:
            raise UnsupportedStreamError(f"stream header: {codec.name} base quality {header.base_quality} is "
                                         f"outside {lo}..{hi}")
        bw, bh = header.base_width, header.base_height
        if (bw % 2 or bh % 2 or min(bw, bh) < MIN_BASE_SIDE or bw > header.width or bh > header.height):
            raise UnsupportedStreamError(f"stream header: a {bw}x{bh} base layer for {header.width}x{header.height}"
                                         f" frames (sides must be even, >= {MIN_BASE_SIDE} and at most the frame's)")
        if header.intra_base and (header.key_codec, header.key_quality) != (codec.name, header.base_quality):
            raise UnsupportedStreamError(f"stream header: key pictures in the base layer, but the key codec "
                                         f"{header.key_codec} {header.key_quality} is not the base layer's "
                                         f"{codec.name} {header.base_quality}")
        key_size = intra_key_size((bw, bh)) if header.intra_base else None
        base = BaseDecoder(codec.name, bw, bh, key_size=key_size)  # UnsupportedStreamError if it cannot
        super().__init__(header)
        self.model = model.eval()
        self.device = model_device(model)  # where the enhancer runs (--device); the base layer is CPU code
        self.enhance = bool(enhance)
        self.recurrent = is_recurrent(model)
        self.base = base
        if header.lean:
            self.MIN_RECORD = 4  # a lean record: type, length, a one-byte unit, CRC-16
        self.state = None  # the enhancer's KeyState of the current key frame
        self.key_image: np.ndarray | None = None  # decoded key image waiting for its frame's base packet
        self.started = False  # a key packet has been decoded
        self.last_bases: list[np.ndarray] = []  # the last base packet's decoded pictures (small; tests/tools)
        self.last_upscaled: torch.Tensor | None = None  # ... upscaled to the output size (the encoder's guard)
        self.last_start = 0  # where its frames after the key frame start (1 when it starts at a key frame)
        self.unenhanced = 0  # frames shown without the enhancer because their packet said so (``b`` records)

    @torch.inference_mode()
    def decode(self, packet: Packet, probe: list[int] | None = None) -> list[np.ndarray]:
        """The frames ``packet`` completes. ``probe`` (the encoder's guard): run the enhancer on those of the
        packet's frames only (indices into it, none the key frame) and return just them; the decoder's state
        (base decoder, key, frame count) advances as for a whole decode."""
        h = self.header
        if isinstance(packet, EndPacket):
            if self.key_image is not None:
                raise CorruptStreamError(f"the key packet of frame {self.next_frame} has no base packet")
            if coded_frames(h, packet.frames) != self.next_frame:
                raise CorruptStreamError(f"END says {packet.frames} frames but {self.next_frame} were sent")
            return []
        if isinstance(packet, TokenPacket):
            raise CorruptStreamError(f"token packet at frame {packet.frame} in a stream with a base layer")
        if packet.frame != self.next_frame:
            raise CorruptStreamError(f"packet starts at frame {packet.frame}, expected {self.next_frame}")
        if isinstance(packet, KeyPacket):
            if self.key_image is not None:
                raise CorruptStreamError(f"a second key packet for frame {packet.frame}")
            if packet.key_token:
                raise CorruptStreamError(f"key packet at frame {packet.frame} carries a token in a hybrid stream")
            with stage("key-frame decode"):
                self.key_image = self.key_codec.decode(packet.image, h.width, h.height)
            self.base.restart()
            self.started = True
            return []
        if packet.key and not h.intra_base:
            raise CorruptStreamError(f"an intra base packet at frame {packet.frame} in a stream with key images")
        if packet.key:  # the key picture is this packet's first unit: the base decoder restarts here
            self.base.restart()
            self.started = True
        if not self.started:
            raise CorruptStreamError(f"base packet at frame {packet.frame} before any key packet")
        with stage("base-layer decode"):
            smalls = [self.base.decode(unit, key=packet.key and j == 0) for j, unit in enumerate(packet.units)]
        if packet.key:  # shown at the frame's size (a 1/4 base's key pictures are coded at 1/2)
            key = smalls[0]
            if key.shape[:2] != (h.height, h.width):
                with stage("upscale"):
                    key = to_uint8(upscale(to_tensor(key, self.device), (h.height, h.width)))[0]
            self.key_image = key
        self.last_bases = smalls
        with stage("upscale"):
            small = smalls[1:] if packet.key else smalls
            up = upscale(torch.cat([to_tensor(x, self.device) for x in small]), (h.height, h.width)) if small \
                else torch.empty(0, 3, h.height, h.width, device=self.device)
            if packet.key:  # at the key frame the picture shown is the key picture itself
                up = torch.cat([to_tensor(self.key_image, self.device), up])
        self.last_upscaled = up
        frames: list[np.ndarray] = []
        start = 0
        if self.key_image is not None:  # the packet starts at a key frame
            frame, self.key_image = self.key_image, None
            with stage("enhancer key preparation"):
                if not self.enhance:
                    self.state = None
                elif packet.key:  # up[:1] is the key picture; its base stand-in is made from it
                    self.state = self.model.prepare_key(up[:1], key_base(up[:1], (h.base_height, h.base_width),
                                                                         (h.height, h.width)))
                else:
                    self.state = self.model.prepare_key(to_tensor(frame, self.device), up[:1])
            self.report.key_frames.append(packet.frame)
            frames.append(frame)
            start = 1
        self.last_start = start
        enhance = self.enhance and packet.enhance  # a 'b' record: the encoder found the enhancer hurts here
        if self.enhance and not packet.enhance:
            self.unenhanced += len(smalls) - start
        if probe is not None:
            self.next_frame += len(smalls)
            if not probe:
                return []
            if not self.recurrent:
                with stage("enhancer"):
                    return to_uint8(self.model.enhance(self.state, up[probe]))
            enhanced = self._frames(up, start, True)  # every frame: the memory moves on as the decoder's will
            return [enhanced[i - start] for i in probe]
        frames += self._frames(up, start, enhance)
        if self.recurrent and self.enhance and not enhance:
            self._remember_upscaled(start)
        self.next_frame += len(frames)
        self.report.frames += len(frames)
        return frames

    def _frames(self, up: torch.Tensor, start: int, enhance: bool) -> list[np.ndarray]:
        """The output frames of ``up[start:]``, enhanced or not, in bounded batches (memory stays flat for any
        chunk; a recurrent enhancer takes each batch's frames in order). The encoder's mirror and the decoder
        both come here, so their batches, hence their frames and memories, are the same."""
        frames: list[np.ndarray] = []
        for i in range(start, up.shape[0], self.BATCH):
            rest = up[i:i + self.BATCH]
            if enhance:
                with stage("enhancer"):
                    rest = self.model.enhance(self.state, rest)
            with stage("output conversion"):
                frames += to_uint8(rest)
        return frames

    def _remember_upscaled(self, start: int) -> None:
        """A recurrent enhancer's memory after a packet shown without it (a ``b`` record): the last frame shown,
        the upscaled base (a packet with only its key frame leaves the key in the memory)."""
        if self.state is not None and self.last_upscaled.shape[0] > start:
            last = self.last_upscaled[-1:]
            with stage("enhancer"):
                self.model.remember(self.state, last, last)

    @torch.inference_mode()
    def sent_unenhanced(self) -> None:
        """The encoder's mirror: the packet it just decoded with ``probe`` goes out as a ``b`` record, so its
        memory becomes what the decoder will show (``_remember_upscaled``); nothing to do for other enhancers."""
        if self.recurrent and self.enhance:
            self._remember_upscaled(self.last_start)

    def _lost(self) -> None:
        super()._lost()
        self.key_image = None  # a key image whose base packet is lost has nothing to start

    def decode_concealing(self, packet: Packet) -> Iterator[list[np.ndarray]]:
        """Concealment mode: yields batches of frames; never raises for damaged packet content."""
        target = coded_frames(self.header, packet.frames) if isinstance(packet, EndPacket) else packet.frame
        count = packet.count if isinstance(packet, BasePacket) else 0
        if not (yield from self._catch_up(target)):
            return
        if isinstance(packet, EndPacket):
            self.key_image = None  # (a key whose base packet was lost was concealed by the gap above)
            return
        if isinstance(packet, TokenPacket):  # not reached through ResyncReader, which refuses them here
            self._note(f"ignored a token packet for frame {target} in a stream with a base layer")
            return
        if isinstance(packet, KeyPacket) or packet.key:
            self.key_image = None  # a repeated key packet replaces the one before
        elif self.broken or not self.started:
            self.key_image = None
            yield from self.conceal(count)
            return
        yield from self._decode_or_conceal(packet, count)


def load_network(spec, settings: EncoderSettings):
    """The enhancer to encode with: ``spec`` (a ``LoadedModel``, or as ``--enhancer``), else the settings'
    ``enhancer``, else the shipped default (``load_enhancer``)."""
    from ..zoo import LoadedModel

    if isinstance(spec, LoadedModel):
        return spec  # (a token model is refused by HybridEncoder)
    return load_enhancer(spec if spec is not None else settings.enhancer)


def open_encoder(loaded, fps: Fraction, settings: EncoderSettings) -> HybridEncoder:
    return HybridEncoder(loaded.model, model_name=loaded.name, weights_hash=loaded.weights_hash, fps=fps,
                         settings=settings)


def open_decoder(loaded, header: StreamHeader, enhance: bool = True) -> HybridDecoder:
    return HybridDecoder(loaded.model, header, enhance=enhance)
