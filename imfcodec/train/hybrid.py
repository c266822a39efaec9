"""Training the hybrid mode's enhancer: ``python -m imfcodec.train.hybrid``.

The loop is the token model's (``loop.Run``: schedule, checkpoints, time limit, signals, ``torchrun``
ranks); this module supplies the enhancer's parts: its config (:class:`EnhancerConfig`), model, data,
loss and validation. What differs is the data: the enhancer's inputs are *coded* base-layer
frames, so the expensive part of its data is made once, not per step. Every training clip is coded
once per base-layer operating point (codec, frame-size factor and quality) and its first frame once per
key-frame quality; the decoded results live in an ``.npz`` cache next to the frame cache. A step then
only samples (clip, operating point, key quality, frame), upscales, and runs the enhancer.

The split into training and held-out clips is the token trainer's (``data.split_clips``: by a hash of the
file names), so validation never sees a training clip; the benchmark's test clips are refused by
``data.find_videos``. Validation reports the enhancer's PSNR against the bicubic base on the held-out
clips at every operating point (the gain is what the hybrid mode is for). Runs resume exactly enough
(model, optimizer, EMA, step, RNG) from ``OUT/last.pt`` and stop cleanly after ``--max-minutes``.
Several processes: ``torchrun --nproc_per_node N -m imfcodec.train.hybrid ...`` (the batch is split over
the ranks, gradients averaged, as for the token model).
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable

import click
import numpy as np
import torch
import torch.nn.functional as F

from imfcodec.cliutil import CONTEXT_SETTINGS, Command, GreedyOption, call
from imfcodec.devices import DEVICE_HELP
from imfcodec.errors import InputError
from imfcodec.fsutil import AtomicOutput
from imfcodec.metrics import ms_ssim_torch
from imfcodec.settings import DEFAULT_ENHANCER
from imfcodec.train.config import RunConfig
from imfcodec.train.loop import Run, run_to_end

log = logging.getLogger("imfcodec.train.hybrid")

CACHE_VERSION = "enh-cache/2"
#: base-layer operating points trained on: (codec, frame-size factor, codec quality). The x265 points span
#: 3.5-18 kbit/s on the held-out clips; the VP9 ones (CRF = 63 - quality) the same range from VP9's side,
#: since an enhancer that has only seen one codec's artefacts lifts another's less.
BASE_POINTS: tuple[tuple[str, int, int], ...] = (
    ("hevc", 2, 5), ("hevc", 2, 9), ("hevc", 2, 13), ("hevc", 2, 17), ("hevc", 4, 13), ("hevc", 4, 19),
    ("vp9", 2, 0), ("vp9", 2, 6), ("vp9", 2, 12), ("vp9", 4, 0), ("vp9", 4, 8), ("vp9", 4, 16))
#: key-frame qualities trained on (hevc key codec, CRF = 51 - quality); 6 is the cheap key of short clips
KEY_QUALITIES: tuple[int, ...] = (6, 11, 16, 21)
KEY_CODEC = "hevc"
#: the intra-base route's points (format version 5: the key picture coded by the AV1 base itself at full size,
#: so the key's quality follows the base quality; CRF 61, 55, 49), drawn with probability ``intra_share``
INTRA_POINTS: tuple[tuple[str, int, int], ...] = (("av1", 2, 2), ("av1", 2, 8), ("av1", 2, 14))
INTRA_CACHE_VERSION = "enh-intra-cache/1"
#: the frame rate the base points are coded at (the training clips are taken as 25 frames/s, as the cache always
#: has); a half-rate run (``--half-rate``) codes every other frame at half of it, as format version 6 streams do
FPS = Fraction(25)


@dataclass
class CodedClip:
    """One clip, decoded once per operating point: full frames, decoded key frames, small base frames."""

    name: str
    frames: np.ndarray  # [T,R,R,3] uint8 (the source at the model resolution)
    keys: dict[int, np.ndarray]  # key quality -> decoded first frame [R,R,3]
    bases: dict[tuple[str, int, int], np.ndarray]  # (codec, factor, quality) -> decoded base frames [T,s,s,3]
    #: optional per-frame side picture [T,R,R,3] for enhancers that take one (``enhance(..., side=)``); the
    #: tokens-on sweep (benchmarks.enhancer_sweep) puts the token mode's decoded frames here
    side: np.ndarray | None = None
    #: intra-base points (``INTRA_POINTS``) -> (the decoded full-size key picture [R,R,3], the decoded base
    #: pictures [T,s,s,3], whose frame 0 is unused: the key's base picture is ``modes.hybrid.key_base``)
    intra: dict[tuple[str, int, int], tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)


def point_key(point: tuple[str, int, int]) -> str:
    """The cache's array name of a base-layer operating point."""
    codec, factor, quality = point
    return f"base_{codec}_{factor}_{quality}"


def _cache_name(name: str, frames: np.ndarray, fps: Fraction = FPS) -> str:
    rate = "" if fps == FPS else f"|{fps}"  # (the 25 frames/s caches keep their names)
    h = hashlib.sha1(f"{CACHE_VERSION}|{KEY_CODEC}|{BASE_POINTS}|{KEY_QUALITIES}|{frames.shape}{rate}".encode())
    h.update(frames[:: max(1, len(frames) // 8)].tobytes())
    return f"{name[:40]}-{h.hexdigest()[:16]}.npz"


def half_rate(frames: np.ndarray) -> np.ndarray:
    """The frames a half-rate stream codes (its even frames; a copy, so the clip can be freed)."""
    return np.array(frames[::2])


def code_clip(name: str, frames: np.ndarray, cache_dir: Path | None, fps: Fraction = FPS) -> CodedClip:
    """Code ``frames`` at every operating point (or read the cache); the base layer is told they run at ``fps``
    (``FPS / 2`` for a half-rate clip's frames, ``half_rate``)."""
    from imfcodec.baselayer import code_clip as code_base
    from imfcodec.keyframe import get_keyframe_codec

    file = cache_dir / _cache_name(name, frames, fps) if cache_dir is not None else None
    if file is not None and file.is_file():
        try:
            with np.load(file) as z:
                keys = {q: z[f"key_{q}"] for q in KEY_QUALITIES}
                bases = {p: z[point_key(p)] for p in BASE_POINTS}
            return CodedClip(name, frames, keys, bases)
        except (OSError, KeyError, ValueError):
            log.warning("ignoring unreadable cache file %s", file)
    size = frames.shape[1]
    codec = get_keyframe_codec(KEY_CODEC)
    keys = {q: codec.decode(codec.encode(frames[0], q), size, size) for q in KEY_QUALITIES}
    bases = {(c, f, q): np.stack(code_base(frames, c, f, q, fps)[1]) for c, f, q in BASE_POINTS}
    if file is not None:
        arrays = {f"key_{q}": a for q, a in keys.items()} | {point_key(p): a for p, a in bases.items()}
        with AtomicOutput(file) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
    return CodedClip(name, frames, keys, bases)


def code_stream(name: str, frames: np.ndarray, cache_dir: Path | None, half: bool = False) -> CodedClip:
    """``code_clip`` of what a stream codes of ``frames``: every frame, or (``half``, a half-rate stream) every other
    one at half the frame rate (``--half-rate``)."""
    return code_clip(name, half_rate(frames), cache_dir, FPS / 2) if half else code_clip(name, frames, cache_dir)


def code_intra(name: str, frames: np.ndarray, cache_dir: Path | None) -> dict:
    """``CodedClip.intra`` of ``frames``: coded at every ``INTRA_POINTS`` point (or read from its own cache
    file, so that the base points' caches stay valid)."""
    from imfcodec.baselayer import code_clip as code_base

    h = hashlib.sha1(f"{INTRA_CACHE_VERSION}|{INTRA_POINTS}|{frames.shape}".encode())
    h.update(frames[:: max(1, len(frames) // 8)].tobytes())
    file = cache_dir / f"{name[:40]}-intra-{h.hexdigest()[:16]}.npz" if cache_dir is not None else None
    if file is not None and file.is_file():
        try:
            with np.load(file) as z:
                return {p: (z[f"key_{point_key(p)}"], z[point_key(p)]) for p in INTRA_POINTS}
        except (OSError, KeyError, ValueError):
            log.warning("ignoring unreadable cache file %s", file)
    out = {}
    for p in INTRA_POINTS:
        small = code_base(frames, p[0], p[1], p[2], Fraction(25), intra_base=True)[1]
        side = small[1].shape if len(small) > 1 else (frames.shape[1] // p[1],) * 2 + (3,)
        out[p] = (small[0], np.stack([np.zeros(side, np.uint8)] + small[1:]))
    if file is not None:
        arrays = {f"key_{point_key(p)}": k for p, (k, _) in out.items()} | {point_key(p): b for p, (_, b) in out.items()}
        with AtomicOutput(file) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
    return out


def first_frames(clip: CodedClip, n: int) -> CodedClip:
    """``clip`` cut to its first ``n`` frames (copies, so the rest is freed): ``--train-frames``, which holds the
    coded training set in less memory (95 clips x 200 frames at every operating point take about 12 GB) while
    the cache, keyed by the clips' full length, is still the one other runs use."""
    cut = lambda a: a[:n].copy()  # noqa: E731 - (a first-axis slice is contiguous: ascontiguousarray would not copy)
    return CodedClip(clip.name, cut(clip.frames), clip.keys, {p: cut(b) for p, b in clip.bases.items()},
                     None if clip.side is None else cut(clip.side),
                     {p: (k, cut(b)) for p, (k, b) in clip.intra.items()})


def _t(a: np.ndarray) -> torch.Tensor:
    """uint8 [...,H,W,3] -> float [...,3,H,W] in [0, 1]."""
    t = torch.from_numpy(np.ascontiguousarray(a))
    # contiguous NCHW: one memory layout everywhere, so equal pictures give bit-equal sums (validate's gain)
    return t.movedim(-1, -3).contiguous().float().div_(255.0)


def sample_batch(clips: list[CodedClip], batch: int, rng: np.random.Generator, size: int,
                 device: torch.device | str = "cpu", intra_share: float = 0.0) -> tuple[torch.Tensor, ...]:
    """(key, key_base, base, target), each [B,3,R,R] on ``device`` (and the side pictures before the target
    when the clips have them): random clip, operating point, key quality and frame (any distance from the
    key frame), a horizontal flip shared by all. The upscale runs on ``device``, one call per base size, so
    a GPU run is not held back by the CPU (bicubic is per picture: batching does not change the result)."""
    from imfcodec.models import upscale

    keys, key_bases, bases, targets, sides, intra = [], [], [], [], [], []
    for _ in range(batch):
        c = clips[rng.integers(len(clips))]
        if intra_share and rng.random() < intra_share:  # the intra-base route: its own key picture
            key, small = c.intra[INTRA_POINTS[rng.integers(len(INTRA_POINTS))]]
            intra.append(len(keys))
        else:
            point = BASE_POINTS[rng.integers(len(BASE_POINTS))]
            kq = KEY_QUALITIES[rng.integers(len(KEY_QUALITIES))]
            key, small = c.keys[kq], c.bases[point]
        i = int(rng.integers(1, len(c.frames)))
        keys.append(key)
        key_bases.append(small[0])
        bases.append(small[i])
        targets.append(c.frames[i])
        if c.side is not None:
            sides.append(c.side[i])
    if sides and len(sides) != batch:
        raise ValueError("either every clip has side pictures or none")
    key, target = _t(np.stack(keys)).to(device), _t(np.stack(targets)).to(device)
    # operating points differ in base size: upscale the pairs (key's base, frame's base) of each size together
    key_base = torch.empty_like(key)
    base = torch.empty_like(key)
    for shape in {b.shape for b in bases}:
        idx = [i for i, b in enumerate(bases) if b.shape == shape]
        small = _t(np.stack([key_bases[i] for i in idx] + [bases[i] for i in idx])).to(device)
        up = upscale(small, (size, size))
        key_base[idx], base[idx] = up[:len(idx)], up[len(idx):]
    if intra:  # as the decoder makes it: from the key picture itself
        from imfcodec.modes.hybrid import key_base as intra_key_base

        for shape in {bases[i].shape for i in intra}:
            idx = [i for i in intra if bases[i].shape == shape]
            key_base[idx] = intra_key_base(key[idx], shape[:2], (size, size))
    flip = torch.from_numpy(rng.random(batch) < 0.5).to(device)
    out = []
    for x in (key, key_base, base, *([_t(np.stack(sides)).to(device)] if sides else []), target):
        x[flip] = x[flip].flip(-1)
        out.append(x)
    return tuple(out)


def _random_start(clips: list[CodedClip], rng: np.random.Generator, unroll: int) -> tuple[CodedClip, Any, int, int]:
    """A sequence's (clip, operating point, key quality, first frame ``s``): ``s`` is 1 (the key frame before it)
    half the time, else a random frame after a ``b`` record."""
    c = clips[rng.integers(len(clips))]
    point = BASE_POINTS[rng.integers(len(BASE_POINTS))]
    kq = KEY_QUALITIES[rng.integers(len(KEY_QUALITIES))]
    s = 1 if rng.random() < 0.5 else int(rng.integers(2, len(c.frames) - unroll + 1))
    return c, point, kq, s


def _check_unroll(clips: list[CodedClip], unroll: int) -> None:
    t_min = min(len(c.frames) for c in clips)
    if unroll < 1 or unroll >= t_min:
        raise InputError(f"--unroll {unroll}: the clips have {t_min} frames, a sequence needs 1..{t_min - 1}")


def _windows(picks: list[tuple[CodedClip, Any, int, int]], flip: torch.Tensor, size: int, unroll: int,
             device: torch.device | str) -> tuple[torch.Tensor, ...]:
    """``sample_sequences``' tensors for the windows ``picks`` (clip, point, key quality, first frame), each sample
    flipped horizontally where ``flip``."""
    from imfcodec.models import upscale

    batch = len(picks)
    key = _t(np.stack([c.keys[kq] for c, _, kq, _ in picks])).to(device)
    target = _t(np.stack([c.frames[s:s + unroll] for c, _, _, s in picks])).to(device)  # [B,N,3,R,R]
    # the small pictures of a sample: its key's base, frames s-1 .. s+N-1; upscaled per base size
    smalls = [c.bases[point][[0, *range(s - 1, s + unroll)]] for c, point, _, s in picks]
    up = torch.empty(batch, unroll + 2, 3, size, size, device=device)
    for shape in {x.shape for x in smalls}:
        idx = [i for i, x in enumerate(smalls) if x.shape == shape]
        small = _t(np.stack([smalls[i] for i in idx])).to(device)
        up[idx] = upscale(small.flatten(0, 1), (size, size)).view(len(idx), unroll + 2, 3, size, size)
    start = torch.stack([key[i] if s == 1 else up[i, 1] for i, (_, _, _, s) in enumerate(picks)])
    flip = flip.to(device)
    out = []
    for x in (key, up[:, 0], start, up[:, 2:], target):
        x = x.clone()
        x[flip] = x[flip].flip(-1)
        out.append(x)
    key, key_base, start, bases, targets = out
    from_key = torch.tensor([s == 1 for *_, s in picks], device=device)
    return key, key_base, start, from_key, bases.transpose(0, 1), targets.transpose(0, 1)


def sample_sequences(clips: list[CodedClip], batch: int, rng: np.random.Generator, size: int, unroll: int,
                     device: torch.device | str = "cpu") -> tuple[torch.Tensor, ...]:
    """A recurrent enhancer's batch: (key, key_base, start, from_key, bases, targets); key, key_base and start
    [B,3,R,R], from_key [B] bool, bases and targets [N,B,3,R,R] (N = ``unroll`` consecutive frames). Per sample a random clip, operating point,
    key quality and first frame ``s``; ``start`` is what the memory holds before frame ``s``: the key frame when
    ``s`` is 1 (half the samples: the decoder's state after a key frame), else the upscaled base frame ``s - 1``
    (the decoder's state after a ``b`` record; the unroll then fills the memory with the model's own frames).
    A horizontal flip shared by all of a sample's pictures."""
    _check_unroll(clips, unroll)
    picks = [_random_start(clips, rng, unroll) for _ in range(batch)]
    return _windows(picks, torch.from_numpy(rng.random(batch) < 0.5), size, unroll, device)


class Tracks:
    """``--carry-memory``: each of the batch's B sequences runs on through its clip from step to step, the memory
    carried from one window of N frames to the next (detached: truncated back-propagation through time), so the
    enhancer trains on the memory it meets in a decoder after tens of frames, its own output, not only on the
    first N frames after a start. A sequence that reaches its clip's end is replaced by a new one
    (``_random_start``: after a key frame or a ``b`` record, as ``sample_sequences`` draws them). The carried
    memory is not in the checkpoint: a resumed run starts new sequences."""

    def __init__(self, clips: list[CodedClip], batch: int, rng: np.random.Generator, size: int, unroll: int,
                 device: torch.device | str = "cpu") -> None:
        _check_unroll(clips, unroll)
        self.clips, self.rng, self.size, self.unroll, self.device = clips, rng, size, unroll, device
        self.picks: list[tuple[CodedClip, Any, int, int] | None] = [None] * batch
        self.flip = torch.zeros(batch, dtype=torch.bool)
        self.carried = torch.zeros(batch, dtype=torch.bool)  # which samples continue a sequence
        self.memory: tuple[torch.Tensor, ...] | None = None   # the last window's end, [B,...] (detached)

    def next(self) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        """The next window of every sequence (``sample_sequences``' tuple) and the mask of those that continue
        (their memory is ``self.memory``)."""
        for i, p in enumerate(self.picks):
            if p is not None and p[3] + 2 * self.unroll <= len(p[0].frames):
                self.picks[i] = (*p[:3], p[3] + self.unroll)
                self.carried[i] = self.memory is not None
            else:
                self.picks[i] = _random_start(self.clips, self.rng, self.unroll)
                self.flip[i] = bool(self.rng.random() < 0.5)
                self.carried[i] = False
        return _windows(self.picks, self.flip, self.size, self.unroll, self.device), self.carried.clone()

    def keep(self, memory: tuple[torch.Tensor, ...]) -> None:
        """Where the windows just trained on ended: the next ones start from it."""
        self.memory = tuple(m.detach() for m in memory)


def unrolled(model: torch.nn.Module, key: torch.Tensor, key_base: torch.Tensor, start: torch.Tensor,
             from_key: torch.Tensor, bases: torch.Tensor, carried: torch.Tensor | None = None,
             memory: tuple[torch.Tensor, ...] | None = None) -> tuple[list[torch.Tensor], tuple[torch.Tensor, ...]]:
    """A recurrent enhancer along ``bases`` ([N,B,3,R,R]) from the memory ``start`` (where ``from_key``, the key
    frame: ``prepare_key``'s own memory) or, where ``carried``, from ``memory`` (``Tracks``): the enhanced frames,
    back-propagation through all N, and the memory after the last one."""
    state = model.prepare_key(key, key_base)
    carry = carried.to(key.device) if carried is not None and memory is not None else torch.zeros_like(from_key)
    if not bool((from_key | carry).all()):  # the others start from an upscaled base frame: remember it
        keep = state.memory
        model.remember(state, start, start)
        m = from_key.view(-1, 1, 1, 1)
        state.memory = tuple(torch.where(m, a, b) for a, b in zip(keep, state.memory))
    # (an upscaled base frame shown: its features and its values over itself, what the decoder remembers)
    if bool(carry.any()):
        m = carry.view(-1, 1, 1, 1)
        state.memory = tuple(torch.where(m, a, b) for a, b in zip(memory, state.memory))
    outs = [model.enhance(state, b) for b in bases]
    return outs, state.memory


def loss_fn(out: torch.Tensor, target: torch.Tensor, w_ms_ssim: float) -> torch.Tensor:
    """The enhancer's loss: L1 plus ``w_ms_ssim`` (1 - MS-SSIM)."""
    loss = F.l1_loss(out, target)
    if w_ms_ssim:
        loss = loss + w_ms_ssim * (1 - ms_ssim_torch(out, target, eps=1e-6).mean())
    return loss


@torch.no_grad()
def validate(model: torch.nn.Module, clips: list[CodedClip], per_clip: int = 6, key_quality: int = 16,
             frames: int = 0) -> dict[str, float]:
    """Mean PSNR of the enhancer and of the bicubic base on held-out clips, per operating point and
    overall (frames evenly spaced after the key frame; key frame at ``key_quality``). PSNR is
    ``imfcodec.metrics.psnr`` of uint8 frames (``codec.to_uint8``), as a decoder would output them.
    A recurrent enhancer runs through every frame up to the last one measured (``validate_sequences``; the same
    frames are measured); ``frames`` (> 0) measures within the first ``frames`` after the key frame only, a
    cheaper check for a recurrent enhancer during training."""
    from imfcodec.codec import to_uint8
    from imfcodec.devices import model_device
    from imfcodec.metrics import psnr
    from imfcodec.models import upscale
    from imfcodec.modes.hybrid import is_recurrent

    if is_recurrent(model):
        return validate_sequences(model, clips, per_clip, key_quality, frames)
    dev = model_device(model)
    was = model.training
    model.eval()
    per_point: dict[str, list[np.ndarray]] = {}
    by_clip: dict[str, list[np.ndarray]] = {}
    for c in clips:
        size = c.frames.shape[1]
        idx = _measured(len(c.frames), per_clip, frames)
        target = c.frames[idx]
        for point in BASE_POINTS:
            small = c.bases[point]
            state = model.prepare_key(_t(c.keys[key_quality])[None].to(dev),
                                      upscale(_t(small[0])[None], (size, size)).to(dev))
            base = upscale(_t(small[idx]), (size, size)).to(dev)
            side = {} if c.side is None else {"side": _t(c.side[idx]).to(dev)}
            out = model.enhance(state, base, **side)
            # [frames, 2]: (enhanced, bicubic base) per frame
            p = np.stack([psnr(np.stack(to_uint8(x)), target, reduction="none") for x in (out, base)], 1)
            per_point.setdefault(point_key(point), []).append(p)
            by_clip.setdefault(c.name, []).append(p)
    intra_pts: dict[str, list[np.ndarray]] = {}
    from imfcodec.modes.hybrid import key_base as intra_key_base

    for c in clips:
        size = c.frames.shape[1]
        idx = np.linspace(1, len(c.frames) - 1, per_clip).round().astype(int)
        for point, (key, small) in c.intra.items():
            k = _t(key)[None].to(dev)
            state = model.prepare_key(k, intra_key_base(k, small.shape[1:3], (size, size)))
            base = upscale(_t(small[idx]), (size, size)).to(dev)
            out = model.enhance(state, base)
            p = np.stack([psnr(np.stack(to_uint8(x)), c.frames[idx], reduction="none") for x in (out, base)], 1)
            intra_pts.setdefault(f"intra_{point_key(point)}", []).append(p)
    model.train(was)
    return _summary(per_point, by_clip, intra_pts)


def _measured(length: int, per_clip: int, frames: int = 0) -> np.ndarray:
    """The frames validation measures: ``per_clip`` evenly spaced after the key frame (within ``frames``)."""
    last = length - 1 if frames <= 0 else min(length - 1, frames)
    return np.linspace(1, last, per_clip).round().astype(int)


@torch.no_grad()
def validate_sequences(model: torch.nn.Module, clips: list[CodedClip], per_clip: int = 6, key_quality: int = 16,
                       frames: int = 0) -> dict[str, float]:
    """``validate`` for a recurrent enhancer: per clip its 12 operating points run as 12 sequences side by side
    (one batch), every frame from the key frame to the last measured one enhanced in order, as the decoder does
    (no ``b`` records); the measured frames and the summary are ``validate``'s."""
    from imfcodec.codec import to_uint8
    from imfcodec.devices import model_device
    from imfcodec.metrics import psnr
    from imfcodec.models import upscale

    dev = model_device(model)
    was = model.training
    model.eval()
    per_point: dict[str, list[np.ndarray]] = {}
    by_clip: dict[str, list[np.ndarray]] = {}
    for c in clips:
        size = c.frames.shape[1]
        idx = _measured(len(c.frames), per_clip, frames)
        groups: dict[tuple, list[int]] = {}
        for j, point in enumerate(BASE_POINTS):
            groups.setdefault(c.bases[point].shape, []).append(j)

        def ups(t: int) -> torch.Tensor:
            """The upscaled base frames of time ``t`` at every point, [P,3,R,R]."""
            out = torch.empty(len(BASE_POINTS), 3, size, size)
            for js in groups.values():
                out[js] = upscale(_t(np.stack([c.bases[BASE_POINTS[j]][t] for j in js])), (size, size))
            return out.to(dev)

        key = _t(c.keys[key_quality])[None].expand(len(BASE_POINTS), -1, -1, -1).to(dev)
        state = model.prepare_key(key, ups(0))
        got: dict[int, np.ndarray] = {}
        for t in range(1, int(idx[-1]) + 1):
            base = ups(t)
            out = model.enhance(state, base)
            if t in idx:
                got[t] = np.stack([psnr(np.stack(to_uint8(x)), np.repeat(c.frames[t][None], len(BASE_POINTS), 0),
                                        reduction="none") for x in (out, base)], 1)  # [P, 2]
        for j, point in enumerate(BASE_POINTS):
            p = np.stack([got[int(t)][j] for t in idx])  # [frames, 2]
            per_point.setdefault(point_key(point), []).append(p)
            by_clip.setdefault(c.name, []).append(p)
    model.train(was)
    return _summary(per_point, by_clip)


def _summary(per_point: dict[str, list[np.ndarray]], by_clip: dict[str, list[np.ndarray]],
             intra_pts: dict[str, list[np.ndarray]] | None = None) -> dict[str, float]:
    """``validate``'s result from its (enhanced, base) PSNR pairs per operating point and per clip (and the
    intra-base route's, reported apart)."""
    result = {}
    if intra_pts:  # the intra-base route, apart from the overall figure (which stays comparable across runs)
        a = np.concatenate([x for v in intra_pts.values() for x in v])
        result["intra/enh"], result["intra/base"] = float(a[:, 0].mean()), float(a[:, 1].mean())
        for k, v in intra_pts.items():
            b = np.concatenate(v)
            result[f"{k}/enh"], result[f"{k}/base"] = float(b[:, 0].mean()), float(b[:, 1].mean())
    for k, v in per_point.items():
        a = np.concatenate(v)
        result[f"{k}/enh"], result[f"{k}/base"] = float(a[:, 0].mean()), float(a[:, 1].mean())
    allv = np.concatenate([x for v in per_point.values() for x in v])
    result["psnr_enh"], result["psnr_base"] = float(allv[:, 0].mean()), float(allv[:, 1].mean())
    result["gain"] = result["psnr_enh"] - result["psnr_base"]
    # per clip too: a mean over few clips hides that near-still clips gain several dB and moving ones little
    for name, v in by_clip.items():
        a = np.concatenate(v)
        result[f"clip/{name}"] = float(a[:, 0].mean() - a[:, 1].mean())
    return result


def init_state(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> list[str]:
    """Load every tensor of ``state`` into ``model``: same name and shape, or grown in its input channels
    (dim 1: an extra input), which get the old channels and zeros in the rest. Tensors of the model that
    the file lacks keep their initialisation. Returns what was not loaded as is; WeightsError when a
    tensor of the file fits nowhere (another architecture)."""
    from imfcodec.errors import WeightsError

    own = model.state_dict()
    misfits = [n for n, src in state.items() if n not in own or not (
        src.shape == own[n].shape or (src.dim() == own[n].dim() >= 2 and src.shape[0] == own[n].shape[0]
                                      and src.shape[2:] == own[n].shape[2:] and src.shape[1] < own[n].shape[1]))]
    if misfits:
        raise WeightsError(f"--init-from: {len(misfits)} tensors of the file do not fit this enhancer "
                           f"(first: {misfits[0]})")
    fresh = []
    with torch.no_grad():
        for name, t in own.items():
            src = state.get(name)
            if src is None:
                fresh.append(name)
            elif src.shape == t.shape:
                t.copy_(src)
            else:
                t[:, :src.shape[1]].copy_(src)
                t[:, src.shape[1]:].zero_()
                fresh.append(f"{name}[:, {src.shape[1]}:] (zero)")
    if fresh:
        log.info("init: %d of %d tensors not from the file: %s", len(fresh), len(own), ", ".join(fresh))
    return fresh


def _intra(v: dict[str, float]) -> str:
    """The intra-base route's validation, for the log."""
    return f"; intra-base route: enhancer {v['intra/enh']:.2f} dB, bicubic {v['intra/base']:.2f} dB" \
        if "intra/enh" in v else ""


def _per_clip(v: dict[str, float]) -> str:
    return " ".join(f"{k[5:].rsplit('/', 1)[-1][:12]} {x:+.2f}" for k, x in v.items() if k.startswith("clip/"))


@dataclass
class EnhancerConfig(RunConfig):
    """An enhancer run; the fields the loop reads mean what they mean in ``config.TrainConfig``."""

    # model
    model: str = DEFAULT_ENHANCER
    init_from: str | None = None          # weights of this enhancer or of one with fewer inputs (init_state)
    # data
    data: list[str] = field(default_factory=lambda: ["../shared/data/talking-heads/train"])
    max_frames: int = 200                 # per clip, first N frames
    cache_dir: str | None = "runs/frame-cache"  # decoded frames and coded operating points ("none": off)
    val_clips: int = 5                    # held-out training clips (the first N by the hash of their names)
    val_frames: int = 0                   # > 0: validate within the first N frames after the key (recurrent: cheaper)
    train_frames: int = 0                 # > 0: training clips keep their first N frames once coded (memory)
    unroll: int = 1                       # frames per training sequence (a recurrent enhancer needs >= 2)
    carry_memory: bool = False            # recurrent: sequences run on across steps, the memory carried (Tracks)
    half_rate: bool = False               # train and validate on half-rate streams' frames (every other, FPS / 2)
    first_val: bool = True                # validate at step 0 (a warm start's is its init's: skip it to save time)
    # schedule and loss
    batch_size: int = 8                   # global batch (split over DDP ranks)
    steps: int = 20000
    lr: float = 5e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.99])
    warmup_steps: int = 200               # linear lr warm-up, then a cosine decay to lr_final x lr at ``steps``
    lr_final: float = 0.1
    w_ms_ssim: float = 0.1
    ema: float = 0.998                    # EMA decay of the weights (the EMA weights are validated and exported)
    intra_share: float = 0.0              # share of samples from the intra-base route (INTRA_POINTS; 0: none)
    # run
    out: str = ""                         # run folder ("": runs/MODEL)
    seed: int = 0
    device: str = "cpu"                   # cpu | cuda | cuda:N | auto
    tf32: bool = False                    # TF32 convolutions/matmuls on a GPU (devices.resolve_device)
    threads: int | None = 2
    log_every: int = 50
    val_every: int = 500
    ckpt_every: int = 100
    export_every: int = 0                 # also export every N steps (0: only at the end)
    max_minutes: float | None = None      # counts from the end of the data preparation
    progress: bool | None = None          # None: only on a TTY and not under CI

    @property
    def lr_decay(self) -> list[float]:
        """``optim.lr_at``'s cosine decay: from the end of the warm-up to ``steps``, down to ``lr_final``."""
        return [self.warmup_steps, self.steps, self.lr_final]

    def validate(self) -> "EnhancerConfig":
        if self.batch_size < 1 or self.steps < 0:
            raise InputError("batch_size must be >= 1 and steps >= 0")
        if not 0.0 <= self.ema < 1.0:
            raise InputError("ema must be in [0, 1)")
        if isinstance(self.data, str):
            self.data = [self.data]
        if not self.out:
            self.out = str(Path("runs") / self.model)
        return self


class EnhancerTrainer(Run):
    """The enhancer for ``loop.Run``: ``model`` (a fresh module) replaces ``create_model(cfg.model)`` for
    variants outside the registry (not exported: a weights file names a registry config), ``side`` gives
    each coded clip its side pictures, and ``resume`` continues from ``OUT/last.pt`` when there is one. A run
    resumes on any device (``load_checkpoint`` maps every tensor to the CPU, and the optimizer's state
    follows the parameters)."""

    def __init__(self, cfg: EnhancerConfig, model: torch.nn.Module | None = None,
                 side: Callable[[CodedClip], np.ndarray] | None = None, resume: bool = True) -> None:
        from imfcodec.models import create_model
        from imfcodec.train.checkpoint import load_checkpoint
        from imfcodec.zoo import load_weights

        super().__init__(cfg)  # the device is checked before any work
        cfg = self.cfg
        self.variant = model is not None
        self.model = create_model(cfg.model) if model is None else model
        self.name = f"train {self.model.config.name}"
        self.size = self.model.config.resolution
        self.side = side
        self.recurrent = bool(getattr(self.model.config, "recurrent", False))
        if self.recurrent and cfg.unroll < 2:
            raise InputError("a recurrent enhancer trains on sequences: --unroll N with N >= 2 (truncated "
                             "back-propagation through N frames)")
        if not self.recurrent and cfg.carry_memory:
            raise InputError(f"--carry-memory is for recurrent enhancers; {self.model.config.name} has no memory")
        if cfg.half_rate and cfg.intra_share:
            raise InputError("--half-rate with --intra-share: the intra-base route has no half-rate streams")
        if not self.recurrent and cfg.unroll != 1:
            raise InputError(f"--unroll is for recurrent enhancers; {self.model.config.name} enhances single frames")
        if cfg.init_from:
            fresh = init_state(self.model, load_weights(cfg.init_from).state_dict())
            if self.recurrent and any(n.startswith("align_mem.") for n in fresh):
                self.model.start_memory_from_key()  # a single-frame enhancer's weights: see models.recurrent
        self.model.to(self.device)
        self.d.broadcast_module(self.model)
        self.ema_model = copy.deepcopy(self.model).eval()
        self.opt = torch.optim.Adam(self.model.parameters(), cfg.lr, betas=tuple(cfg.betas))
        self.history: list[dict[str, float]] = []
        self.tracks: Tracks | None = None
        ckpt = self.out / "last.pt"
        if resume and ckpt.is_file():
            state = load_checkpoint(ckpt)
            self.model.load_state_dict(state["model"])
            self.ema_model.load_state_dict(state["ema"])
            self.opt.load_state_dict(state["opt"])
            self.step, self.elapsed_s = int(state["step"]), float(state["elapsed_s"])
            self.history = json.loads(state.get("history", "[]"))
            log.info("resumed %s at step %d (%.2f h)", ckpt, self.step, self.elapsed_s / 3600)
        # a fresh run's sampler starts from the seed, a resumed one's from (seed, step); ranks > 0 add their rank
        seed = cfg.seed if self.step == 0 else [cfg.seed, self.step]
        self.rng = np.random.default_rng(seed if not self.d.rank else [cfg.seed, self.step, self.d.rank])
        self.model.train()

    def prepare_data(self) -> None:
        """Every clip coded at every operating point (``code_clip``; rank 0 fills the cache first)."""
        from imfcodec.train.data import find_videos, load_clips, split_clips

        cfg = self.cfg
        train_paths, val_paths = split_clips(find_videos(cfg.data), cfg.val_clips)
        cache = Path(cfg.cache_dir) if cfg.cache_dir not in (None, "none") else None
        if self.d.enabled and not self.d.main:
            self.d.barrier()
        self.coded: dict[str, list[CodedClip]] = {}
        for group, paths in (("val", val_paths), ("train", train_paths)):
            clips = load_clips(paths, self.size, cfg.max_frames, cache)
            t0 = time.perf_counter()
            cut = cfg.train_frames if group == "train" else 0
            self.coded[group] = []
            for i, name in enumerate(clips.names):  # (cut one by one, the full clip freed at once: peak memory)
                coded = code_stream(name, clips.frames[i], cache, cfg.half_rate)
                if cfg.half_rate:  # (what was coded is a copy: the clip's own frames can go)
                    clips.frames[i] = None
                if cfg.intra_share:  # the intra-base route: trained on and validated apart
                    coded.intra = code_intra(coded.name, coded.frames, cache)
                if cut > 0:
                    coded, clips.frames[i] = first_frames(coded, cut), None
                self.coded[group].append(coded)
            if self.side is not None:
                for c in self.coded[group]:
                    c.side = self.side(c)
            log.info("%s: %d clips coded at %d base points x %d key qualities in %.0f s%s", group, len(clips),
                     len(BASE_POINTS), len(KEY_QUALITIES), time.perf_counter() - t0,
                     " (half-rate: every other frame)" if cfg.half_rate else "")
        if self.d.enabled and self.d.main:
            self.d.barrier()
        self.t0 = time.perf_counter()  # max_minutes counts the training, not the coding

    def start(self) -> None:
        cfg = self.cfg
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "config.json").write_text(json.dumps(
            {"model": self.model.config.to_dict(), "steps": cfg.steps, "batch": cfg.batch_size, "lr": cfg.lr,
             "w_ms_ssim": cfg.w_ms_ssim, "ema": cfg.ema, "base_points": BASE_POINTS,
             "key_qualities": KEY_QUALITIES, "key_codec": KEY_CODEC, "config": cfg.to_dict()}, indent=1))
        if self.step == 0 and cfg.first_val:
            v = self.validate()
            self.history.append({"step": 0, **v})
            log.info("step 0: val enhancer %.2f dB, bicubic base %.2f dB%s", v["psnr_enh"], v["psnr_base"], _intra(v))

    def batches(self) -> Iterator[tuple[torch.Tensor, ...]]:
        while True:
            if self.recurrent and self.cfg.carry_memory:
                if self.tracks is None:
                    self.tracks = Tracks(self.coded["train"], self.local_batch, self.rng, self.size, self.cfg.unroll,
                                         self.device)
                batch, carried = self.tracks.next()
                yield (*batch[:-1], carried, batch[-1])
            elif self.recurrent:  # (the intra-base route is not drawn for a recurrent enhancer yet)
                yield sample_sequences(self.coded["train"], self.local_batch, self.rng, self.size, self.cfg.unroll,
                                       self.device)
            else:
                yield sample_batch(self.coded["train"], self.local_batch, self.rng, self.size, self.device,
                                   self.cfg.intra_share)

    def train_step(self, *batch: torch.Tensor) -> dict[str, float]:
        """One Adam step on (key, key_base, base[, side], target), or for a recurrent enhancer on
        ``sample_sequences``' batch, the loss averaged over the unrolled frames."""
        from imfcodec.train.distributed import sync_grads
        from imfcodec.train.optim import lr_at, set_lr, update_ema

        *inputs, target = batch
        lr = lr_at(self.cfg, self.step)
        set_lr(self.opt, lr)
        if self.recurrent:
            if self.tracks is not None:  # --carry-memory: (key, key_base, start, from_key, bases, carried)
                *inputs, carried = inputs
                outs, memory = unrolled(self.model, *inputs, carried=carried, memory=self.tracks.memory)
                self.tracks.keep(memory)
            else:
                outs, _ = unrolled(self.model, *inputs)
            loss = sum(loss_fn(o, t, self.cfg.w_ms_ssim) for o, t in zip(outs, target)) / len(outs)
        else:
            loss = loss_fn(self.model(*inputs), target, self.cfg.w_ms_ssim)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        sync_grads(self.d, list(self.model.parameters()))
        self.opt.step()
        update_ema(self.ema_model, self.model, self.cfg.ema)
        self.step += 1
        return {"loss": float(loss.detach()), "lr": lr}

    def validate(self) -> dict[str, float]:
        return validate(self.ema_model, self.coded["val"], frames=self.cfg.val_frames)

    def log_train(self, row: dict[str, float], last: dict[str, float]) -> None:
        log.info("step %d loss %.4f lr %.2e %.2f s/step", row["step"], last["loss"], last["lr"], row["sec_per_step"])

    def log_val(self, v: dict[str, float]) -> None:
        self.history.append({"step": v["step"], **v})
        log.info("step %d: val enhancer %.2f dB, bicubic base %.2f dB (gain %+.2f; per clip %s)%s", v["step"],
                 v["psnr_enh"], v["psnr_base"], v["gain"], _per_clip(v), _intra(v))

    def finish(self) -> dict[str, float]:
        v = self.validate()
        self.history.append({"step": self.step, **v})
        log.info("done at step %d: val enhancer %.2f dB, base %.2f dB (gain %+.2f; per clip %s)%s", self.step,
                 v["psnr_enh"], v["psnr_base"], v["gain"], _per_clip(v), _intra(v))
        return v

    def export(self) -> dict[str, Any] | None:
        """The EMA weights as ``OUT/model.safetensors``, with the latest validation in the metadata."""
        from imfcodec.zoo import save_weights

        if self.variant:  # a weights file names a registry config; a sweep's variant has none
            log.info("not exported (a variant outside the registry; last.pt has it)")
            return None
        v = {k: x for k, x in (self.history[-1] if self.history else {}).items() if k != "step"}
        meta = {"steps": str(self.step), "hours": f"{self.elapsed_s / 3600:.2f}", "val": json.dumps(v)}
        path = self.out / "model.safetensors"
        whash = save_weights(self.ema_model, path, metadata=meta)
        log.info("exported %s", path)
        return {"path": str(path), "weights_hash": whash.hex(), "step": self.step}

    def state_dict(self) -> dict[str, Any]:
        from imfcodec.train.checkpoint import CHECKPOINT_FORMAT

        return {"format": CHECKPOINT_FORMAT, "step": self.step, "elapsed_s": self.elapsed_s,
                "model": self.model.state_dict(), "ema": self.ema_model.state_dict(),
                "opt": self.opt.state_dict(), "history": json.dumps(self.history)}

    def replicas(self) -> list[torch.nn.Module | None]:
        return [self.model]


#: train()'s older keyword names of EnhancerConfig fields
_ALIASES = {"model_name": "model", "batch": "batch_size"}


def fit(cfg: EnhancerConfig, model: torch.nn.Module | None = None,
        side: Callable[[CodedClip], np.ndarray] | None = None, resume: bool = True) -> dict[str, Any]:
    """Train (or resume) an enhancer run; returns the loop's summary (its ``val``: the last validation)."""
    return run_to_end(EnhancerTrainer(cfg, model=model, side=side, resume=resume))


def train(data: list[str], out: Path, *, model: torch.nn.Module | None = None,
          side: Callable[[CodedClip], np.ndarray] | None = None, resume: bool = True,
          **settings: Any) -> dict[str, float]:
    """Train (or resume) an enhancer; returns the last validation. ``settings`` are
    :class:`EnhancerConfig` fields (``model_name`` and ``batch`` name ``model`` and ``batch_size``);
    ``model``, ``side`` and ``resume`` as for :class:`EnhancerTrainer`."""
    fields = {_ALIASES.get(k, k): v for k, v in settings.items()}
    cfg = EnhancerConfig(data=list(data), out=str(out)).replace(**fields)
    return fit(cfg, model=model, side=side, resume=resume)["val"]


_D = EnhancerConfig()


@click.command("imfcodec.train.hybrid", cls=Command, context_settings=CONTEXT_SETTINGS,
               help=__doc__.splitlines()[0])
@click.option("--data", cls=GreedyOption, default=tuple(_D.data), show_default=True,
              help="video folder(s)/file(s); 'test' folders are refused")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="run folder [default: runs/MODEL]")
@click.option("--model", "model_name", default=_D.model, show_default=True)
@click.option("--steps", type=int, default=_D.steps, show_default=True)
@click.option("--batch-size", type=int, default=_D.batch_size, show_default=True)
@click.option("--lr", type=float, default=_D.lr, show_default=True)
@click.option("--warmup-steps", type=int, default=_D.warmup_steps, show_default=True)
@click.option("--w-ms-ssim", type=float, default=_D.w_ms_ssim, show_default=True)
@click.option("--ema", type=float, default=_D.ema, show_default=True)
@click.option("--intra-share", type=click.FloatRange(0, 1), default=_D.intra_share, show_default=True,
              help="share of samples from the intra-base route (the key picture in the AV1 base layer)")
@click.option("--max-minutes", type=float, default=None)
@click.option("--log-every", type=int, default=_D.log_every, show_default=True)
@click.option("--val-every", type=int, default=_D.val_every, show_default=True)
@click.option("--ckpt-every", type=int, default=_D.ckpt_every, show_default=True)
@click.option("--threads", type=int, default=_D.threads, show_default=True)
@click.option("--max-frames", type=int, default=_D.max_frames, show_default=True)
@click.option("--val-clips", type=int, default=_D.val_clips, show_default=True,
              help="held-out training clips (the first N by the hash of their names)")
@click.option("--val-frames", type=int, default=_D.val_frames, show_default=True,
              help="> 0: validate on frames within the first N after the key frame (a recurrent enhancer runs "
                   "through every frame up to the last one measured; 0: the whole clip)")
@click.option("--train-frames", type=int, default=_D.train_frames, show_default=True,
              help="> 0: training clips keep only their first N frames once coded (less memory; the cache is "
                   "unchanged)")
@click.option("--first-val/--no-first-val", default=_D.first_val, show_default=True,
              help="validate at step 0 (warm-started from a single-frame enhancer, a recurrent one validates as it)")
@click.option("--unroll", type=int, default=_D.unroll, show_default=True,
              help="recurrent enhancers: frames per training sequence (truncated back-propagation through them)")
@click.option("--carry-memory/--no-carry-memory", default=_D.carry_memory, show_default=True,
              help="recurrent enhancers: each sequence runs on through its clip across steps, the memory carried "
                   "from one window of --unroll frames to the next")
@click.option("--half-rate/--full-rate", default=_D.half_rate, show_default=True,
              help="train and validate on what a half-rate stream codes (the default stream, format version 6): "
                   "every other frame, coded at half the frame rate; --train-frames and --val-frames count those")
@click.option("--cache-dir", default=_D.cache_dir, show_default=True)
@click.option("--init-from", default=None, help="start from these enhancer weights (.safetensors)")
@click.option("--seed", type=int, default=_D.seed, show_default=True)
@click.option("--fresh", is_flag=True, help="ignore OUT/last.pt")
@click.option("--device", default=_D.device, show_default=True, help=f"where the enhancer trains: {DEVICE_HELP}")
@click.option("--tf32", is_flag=True, help="TF32 convolutions and matmuls on a GPU (faster, less exact)")
def main_command(data, out, model_name, fresh, **options):
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    cfg = EnhancerConfig(model=model_name, data=list(data), out=str(out or ""), **options).validate()
    fit(cfg, resume=not fresh)
    return 0  # an IMFError becomes one line and status 1 in cliutil.call


def main(argv=None) -> int:
    return call(main_command, argv, "python -m imfcodec.train.hybrid")


if __name__ == "__main__":
    raise SystemExit(main())
