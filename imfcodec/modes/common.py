"""What both modes share: the frame check, uint8 <-> tensor conversion, the key-frame policy, the frame loop,
the packet type and the decoder's bookkeeping (next frame, report, concealment).

The one home of uint8 <-> tensor conversion in the package: the encoders, the decoders, the benchmarks and the
trainers should all convert here, so rounding is the same everywhere (a stream's meaning depends on it).
"""

from __future__ import annotations

from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from ..bitstream import BasePacket, EndPacket, KeyPacket, StreamHeader, TokenPacket
from ..errors import CorruptStreamError, InputError
from ..scenecut import SceneCutDetector
from ..stages import stage

#: every packet a mode's encoder makes or its decoder takes (the token mode never makes base packets, the
#: hybrid mode never token packets: each decoder refuses the other's)
Packet = KeyPacket | TokenPacket | BasePacket | EndPacket


def check_frame(rgb: np.ndarray, size: int) -> None:
    """What both encoders take: one uint8 RGB frame at the network's size (InputError otherwise)."""
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


class KeyPolicy:
    """Which frames are key frames, for every mode: the first, every ``keyint``-th after the last key frame
    (0: none), and a scene cut (``imfcodec.scenecut``; 0 = off). A mode may add its own reasons (the token
    mode's ``refresh_below``) and report them with ``keyed``."""

    def __init__(self, keyint: int, scenecut: float) -> None:
        self.keyint = keyint
        self.last_key = -1
        self.key_frames: list[int] = []
        self.scene_cut = SceneCutDetector(scenecut)
        self.scene_cuts: list[int] = []  # the key frames the scene-cut detector asked for

    def __call__(self, i: int, rgb: np.ndarray) -> bool:
        """Whether frame ``i`` must be a key frame; sees every frame (the detector compares each with the one
        before)."""
        with stage("scene cut"):
            cut = self.scene_cut(rgb)
        if self.last_key < 0 or (self.keyint > 0 and i - self.last_key >= self.keyint):
            return True
        if cut:
            self.scene_cuts.append(i)
            return True
        return False

    def keyed(self, i: int) -> None:
        """Frame ``i`` was coded as a key frame."""
        self.last_key = i
        self.key_frames.append(i)


def encode_frames(frames: Iterable[np.ndarray], encoder) -> Iterator[Packet]:
    """Drive any mode's encoder (``encode(frame)``, ``flush()``) over frames, yielding packets (END last)."""
    for rgb in frames:
        yield from encoder.encode(rgb)
    yield from encoder.flush()


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
    bookkeeping (every mode's decoder shares it)."""

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
        if isinstance(packet, KeyPacket) or getattr(packet, "key", False):  # (a base packet that starts with a key)
            self.broken = False
        if frames:
            self.last_frame = frames[-1]
            yield frames
