"""The recurrent enhancer (issue 23): ``Enhancer`` plus a second memory, the previous shown frame, which the
current frame attends to beside the key frame.

Why: the single-frame enhancer gains almost all of its lift from the static key frame, which is worth little
where the face has moved; the detail the current frame needs is where the face is now, and the frame just shown
holds it (temporal fusion: MFQE 2.0, STDF, BasicVSR++). Causal: only frames already shown, no added latency.

Data flow (as ``enhancer``; R = frame size):

* ``prepare_key(key, key_base)``: the key state of ``Enhancer`` plus the memory, started from the key frame
  itself (the frame the decoder shows there), so the memory resets at every key frame and scene cut (a scene
  cut is a key frame);
* ``enhance(state, base)``: everything that does not depend on the memory runs batched (features, the key's
  alignments, ``fuse_in``); then, frame after frame, the fine features of the current base frame query the
  memory's keys (the fine features of the *base* frame behind the shown frame: like is matched with like, and
  they were computed when that frame was enhanced, so the keys cost nothing), gathering the shown frame's
  pixels and detail (``enhancer.fine_values``) through a windowed alignment at R/4 of its own; a zero-initialised
  1x1 conv (``mem_in``) adds them to the fusion's input; the enhanced frame becomes the memory;
* ``remember(state, shown, base)``: the memory becomes what the decoder showed instead (a frame sent without
  the enhancer, a ``b`` record: the upscaled base, no detail).

Design decisions:
1. Image memory (the shown frame), not hidden features: what is in the memory is what the viewer saw, so a
   ``b`` record and the encoder's guard have one definition (``remember``), and the memory is as compact as
   a frame (96 x R/4 x R/4 values plus the 48-wide keys).
2. ``mem_in`` is zero-initialised and separate from ``fuse_in``: with enh-wide's weights loaded, the model
   *is* enh-wide (the added term is exactly 0.0, so frames are bit-equal), and training starts there.
3. Batches: a key state of one key (the decoder) takes a batch of *consecutive frames* and processes them in
   order; a key state of B keys (training, validation) takes B frames, one time step of B sequences.
4. Only the fine scale: motion between consecutive frames is small (window 7 at R/4 reaches +-12 pixels), so
   no full attention at R/8 for the memory.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from imfcodec.errors import InputError
from imfcodec.models.alignment import Alignment
from imfcodec.models.config import FINE, EnhancerConfig
from imfcodec.models.enhancer import Enhancer, KeyState, fine_values


@dataclass
class RecurrentState(KeyState):
    """A key state plus the memory: (fine attention features of the shown frame's base frame, the shown frame's
    ``fine_values``), each batched as the keys are. Mutable: ``enhance`` and ``remember`` replace it."""

    memory: tuple[Tensor, Tensor] | None = None

    def copy(self) -> "RecurrentState":
        """A state whose memory can move on without this one's (the key's tensors are shared, read-only)."""
        return dataclasses.replace(self, cache=self.cache)


class RecurrentEnhancer(Enhancer):
    """See the module docstring."""

    def __init__(self, config: EnhancerConfig) -> None:
        super().__init__(config)
        cfg = config
        self.align_mem = Alignment(cfg.m_fine, "window", cfg.window, cfg.locality, cfg.pos_freqs,
                                   native_cells=cfg.resolution // FINE)
        self.mem_in = nn.Conv2d(2 * 3 * FINE * FINE, cfg.fuse_width, 1)
        nn.init.zeros_(self.mem_in.weight)
        nn.init.zeros_(self.mem_in.bias)

    def start_memory_from_key(self) -> None:
        """Give the memory's alignment the key's fine alignment (after loading a single-frame enhancer's
        weights): the two match like with like at the same scale, so training starts from a working one."""
        self.align_mem.load_state_dict(self.align_fine.state_dict())

    def prepare_key(self, key: Tensor, key_base: Tensor) -> RecurrentState:
        state, m_fine, v_fine = self._prepare_key(key, key_base)
        return RecurrentState(state.fine, state.coarse, state.size, memory=(m_fine, v_fine))

    def remember(self, state: RecurrentState, shown: Tensor, base: Tensor) -> None:
        """The memory becomes ``shown`` (what the decoder showed, [B,3,H,W]) over its upscaled base frame."""
        fast = self.kernels == "fast" and not self.training
        if fast:
            base = base.contiguous(memory_format=torch.channels_last)
        state.memory = (self.features(base)[1], fine_values(shown, base))

    def enhance(self, state: KeyState, base: Tensor, extra: Sequence[Tensor] = ()) -> Tensor:
        """As ``Enhancer.enhance``, with the memory (decision 3 for what a batch means); the memory moves on
        to the last enhanced frame."""
        if not isinstance(state, RecurrentState) or state.memory is None:
            raise InputError("a recurrent enhancer needs the state its own prepare_key made")
        keys, n = state.fine[0].shape[0], base.shape[0]
        if keys != 1 and n != keys:
            raise InputError(f"{keys} keys take {keys} frames (one step of each sequence), not {n}")
        base, m_fine, fused = self._fused(state, base, extra)
        fast = self.kernels == "fast"
        steps = [slice(i, i + 1) for i in range(n)] if keys == 1 else [slice(0, n)]
        outs = []
        for s in steps:
            mem = self.align_mem.attend(m_fine[s], *self.align_mem.prepare(*state.memory), fast=fast)
            out = self._output(base[s], self.fuse(F.leaky_relu(fused[s] + self.mem_in(mem), 0.2)))
            state.memory = (m_fine[s], fine_values(out, base[s]))
            outs.append(out)
        return outs[0] if len(outs) == 1 else torch.cat(outs)
