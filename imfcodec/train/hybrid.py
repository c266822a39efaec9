"""Training the hybrid mode's enhancer: ``python -m imfcodec.train.hybrid``.

Why a loop of its own beside the token model's trainer: the enhancer's inputs are *coded* base-layer
frames, so the expensive part of its data is made once, not per step. Every training clip is coded
once per base-layer operating point (codec, frame-size factor and quality) and its first frame once per
key-frame quality; the decoded results live in an ``.npz`` cache next to the frame cache. A step then
only samples (clip, operating point, key quality, frame), upscales, and runs the enhancer.

The split into training and held-out clips is the token trainer's (``data.split_clips``: by a hash of the
file names), so validation never sees a training clip; the benchmark's test clips are refused by
``data.find_videos``. Validation reports the enhancer's PSNR against the bicubic base on the held-out
clips at every operating point (the gain is what the hybrid mode is for). Runs resume exactly enough
(model, optimizer, EMA, step, RNG) from ``OUT/last.pt`` and stop cleanly after ``--max-minutes``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import signal
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Callable

import click
import numpy as np
import torch
import torch.nn.functional as F

from imfcodec.cliutil import CONTEXT_SETTINGS, Command, GreedyOption, call
from imfcodec.devices import DEVICE_HELP
from imfcodec.fsutil import AtomicOutput
from imfcodec.metrics import ms_ssim_torch
from imfcodec.settings import DEFAULT_ENHANCER

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


def point_key(point: tuple[str, int, int]) -> str:
    """The cache's array name of a base-layer operating point."""
    codec, factor, quality = point
    return f"base_{codec}_{factor}_{quality}"


def _cache_name(name: str, frames: np.ndarray) -> str:
    h = hashlib.sha1(f"{CACHE_VERSION}|{KEY_CODEC}|{BASE_POINTS}|{KEY_QUALITIES}|{frames.shape}".encode())
    h.update(frames[:: max(1, len(frames) // 8)].tobytes())
    return f"{name[:40]}-{h.hexdigest()[:16]}.npz"


def code_clip(name: str, frames: np.ndarray, cache_dir: Path | None) -> CodedClip:
    """Code ``frames`` at every operating point (or read the cache)."""
    from imfcodec.baselayer import code_clip as code_base
    from imfcodec.keyframe import get_keyframe_codec

    file = cache_dir / _cache_name(name, frames) if cache_dir is not None else None
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
    bases = {(c, f, q): np.stack(code_base(frames, c, f, q, Fraction(25))[1]) for c, f, q in BASE_POINTS}
    if file is not None:
        arrays = {f"key_{q}": a for q, a in keys.items()} | {point_key(p): a for p, a in bases.items()}
        with AtomicOutput(file) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
    return CodedClip(name, frames, keys, bases)


def _t(a: np.ndarray) -> torch.Tensor:
    """uint8 [...,H,W,3] -> float [...,3,H,W] in [0, 1]."""
    t = torch.from_numpy(np.ascontiguousarray(a))
    # contiguous NCHW: one memory layout everywhere, so equal pictures give bit-equal sums (validate's gain)
    return t.movedim(-1, -3).contiguous().float().div_(255.0)


def sample_batch(clips: list[CodedClip], batch: int, rng: np.random.Generator, size: int,
                 device: torch.device | str = "cpu") -> tuple[torch.Tensor, ...]:
    """(key, key_base, base, target), each [B,3,R,R] on ``device`` (and the side pictures before the target
    when the clips have them): random clip, operating point, key quality and frame (any distance from the
    key frame), a horizontal flip shared by all. The upscale runs on ``device``, one call per base size, so
    a GPU run is not held back by the CPU (bicubic is per picture: batching does not change the result)."""
    from imfcodec.models import upscale

    keys, key_bases, bases, targets, sides = [], [], [], [], []
    for _ in range(batch):
        c = clips[rng.integers(len(clips))]
        point = BASE_POINTS[rng.integers(len(BASE_POINTS))]
        kq = KEY_QUALITIES[rng.integers(len(KEY_QUALITIES))]
        i = int(rng.integers(1, len(c.frames)))
        small = c.bases[point]
        keys.append(c.keys[kq])
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
    flip = torch.from_numpy(rng.random(batch) < 0.5).to(device)
    out = []
    for x in (key, key_base, base, *([_t(np.stack(sides)).to(device)] if sides else []), target):
        x[flip] = x[flip].flip(-1)
        out.append(x)
    return tuple(out)


def loss_fn(out: torch.Tensor, target: torch.Tensor, w_ms_ssim: float) -> torch.Tensor:
    loss = F.l1_loss(out, target)
    if w_ms_ssim:
        loss = loss + w_ms_ssim * (1 - ms_ssim_torch(out, target, eps=1e-6).mean())
    return loss


@torch.no_grad()
def validate(model: torch.nn.Module, clips: list[CodedClip], per_clip: int = 6, key_quality: int = 16
             ) -> dict[str, float]:
    """Mean PSNR of the enhancer and of the bicubic base on held-out clips, per operating point and
    overall (frames evenly spaced after the key frame; key frame at ``key_quality``)."""
    from imfcodec.devices import model_device
    from imfcodec.models import upscale

    dev = model_device(model)
    was = model.training
    model.eval()
    per_point: dict[str, list[tuple[float, float]]] = {}
    by_clip: dict[str, list[tuple[float, float]]] = {}
    for c in clips:
        size = c.frames.shape[1]
        idx = np.linspace(1, len(c.frames) - 1, per_clip).round().astype(int)
        target = _t(c.frames[idx]).to(dev)
        for point in BASE_POINTS:
            small = c.bases[point]
            state = model.prepare_key(_t(c.keys[key_quality])[None].to(dev),
                                      upscale(_t(small[0])[None], (size, size)).to(dev))
            base = upscale(_t(small[idx]), (size, size)).to(dev)
            side = {} if c.side is None else {"side": _t(c.side[idx]).to(dev)}
            out = model.enhance(state, base, **side)
            for o, b, t in zip(out, base, target):
                p_enh = -10 * math.log10(max(F.mse_loss(o.mul(255).round() / 255, t).item(), 1e-10))
                p_base = -10 * math.log10(max(F.mse_loss(b.mul(255).round() / 255, t).item(), 1e-10))
                per_point.setdefault(point_key(point), []).append((p_enh, p_base))
                by_clip.setdefault(c.name, []).append((p_enh, p_base))
    model.train(was)
    result = {}
    for k, v in per_point.items():
        a = np.array(v)
        result[f"{k}/enh"], result[f"{k}/base"] = float(a[:, 0].mean()), float(a[:, 1].mean())
    allv = np.array([x for v in per_point.values() for x in v])
    result["psnr_enh"], result["psnr_base"] = float(allv[:, 0].mean()), float(allv[:, 1].mean())
    result["gain"] = result["psnr_enh"] - result["psnr_base"]
    # per clip too: a mean over few clips hides that near-still clips gain several dB and moving ones little
    for name, v in by_clip.items():
        a = np.array(v)
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


def _lr(step: int, steps: int, lr: float, warmup: int = 200) -> float:
    if step < warmup:
        return lr * (step + 1) / warmup
    return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, steps - warmup)))))


def _per_clip(v: dict[str, float]) -> str:
    return " ".join(f"{k[5:].rsplit('/', 1)[-1][:12]} {x:+.2f}" for k, x in v.items() if k.startswith("clip/"))


def train(data: list[str], out: Path, *, model_name: str = DEFAULT_ENHANCER, steps: int = 20000, batch: int = 8,
          lr: float = 5e-4, w_ms_ssim: float = 0.1, ema: float = 0.998, max_minutes: float | None = None,
          val_every: int = 500, ckpt_every: int = 100, threads: int = 2, seed: int = 0, max_frames: int = 200,
          cache_dir: str = "runs/frame-cache", val_clips: int = 5, resume: bool = True,
          init_from: str | None = None, model: torch.nn.Module | None = None,
          side: Callable[[CodedClip], np.ndarray] | None = None, device: str = "cpu") -> dict[str, float]:
    """Train (or resume) an enhancer; returns the last validation. ``model`` (a fresh module) replaces
    ``create_model(model_name)`` for variants outside the registry, ``side`` gives each coded clip its side
    pictures, and ``init_from`` loads weights of the same enhancer or of one with fewer inputs (``init_state``:
    the new input channels start at zero, so the variant starts as the plain enhancer). ``device`` as
    ``imfcodec.devices.resolve_device`` takes it (``cpu``, ``cuda[:N]``, ``auto``); a run resumes on any device
    (``load_checkpoint`` maps every tensor to the CPU, and the optimizer's state follows the parameters)."""
    from imfcodec.devices import resolve_device
    from imfcodec.models import create_model
    from imfcodec.train.checkpoint import CHECKPOINT_FORMAT, atomic_torch_save, load_checkpoint
    from imfcodec.train.data import find_videos, load_clips, split_clips
    from imfcodec.zoo import load_weights, save_weights

    torch.set_num_threads(threads)
    dev = torch.device(resolve_device(device, note=log.info))
    out.mkdir(parents=True, exist_ok=True)
    variant = model is not None
    model = create_model(model_name) if model is None else model
    size = model.config.resolution
    if init_from:
        init_state(model, load_weights(init_from).state_dict())
    model.to(dev)
    ema_model = copy.deepcopy(model).eval()
    opt = torch.optim.Adam(model.parameters(), lr, betas=(0.9, 0.99))
    rng = np.random.default_rng(seed)
    step, elapsed, history = 0, 0.0, []
    ckpt = out / "last.pt"
    if resume and ckpt.is_file():
        state = load_checkpoint(ckpt)
        model.load_state_dict(state["model"])
        ema_model.load_state_dict(state["ema"])
        opt.load_state_dict(state["opt"])
        step, elapsed = int(state["step"]), float(state["elapsed_s"])
        rng = np.random.default_rng([seed, step])
        history = json.loads(state.get("history", "[]"))
        log.info("resumed %s at step %d (%.2f h)", ckpt, step, elapsed / 3600)
    (out / "config.json").write_text(json.dumps({"model": model.config.to_dict(), "steps": steps, "batch": batch,
                                                 "lr": lr, "w_ms_ssim": w_ms_ssim, "ema": ema,
                                                 "base_points": BASE_POINTS, "key_qualities": KEY_QUALITIES,
                                                 "key_codec": KEY_CODEC}, indent=1))
    train_paths, val_paths = split_clips(find_videos(data), val_clips)
    cache = Path(cache_dir) if cache_dir != "none" else None
    coded = {}
    for group, paths in (("val", val_paths), ("train", train_paths)):
        clips = load_clips(paths, size, max_frames, cache)
        t0 = time.perf_counter()
        coded[group] = [code_clip(n, f, cache) for n, f in zip(clips.names, clips.frames)]
        if side is not None:
            for c in coded[group]:
                c.side = side(c)
        log.info("%s: %d clips coded at %d base points x %d key qualities in %.0f s", group, len(clips),
                 len(BASE_POINTS), len(KEY_QUALITIES), time.perf_counter() - t0)

    stop = {"now": False}

    def on_signal(signum, frame):
        stop["now"] = True

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)

    def save() -> None:
        atomic_torch_save({"format": CHECKPOINT_FORMAT, "step": step, "elapsed_s": elapsed,
                           "model": model.state_dict(), "ema": ema_model.state_dict(),
                           "opt": opt.state_dict(), "history": json.dumps(history)}, ckpt)

    if step == 0:
        v = validate(ema_model, coded["val"])
        history.append({"step": 0, **v})
        log.info("step 0: val enhancer %.2f dB, bicubic base %.2f dB", v["psnr_enh"], v["psnr_base"])
    session, first_step = time.perf_counter(), step
    start = session - elapsed  # elapsed counts the hours of every session of this run
    model.train()
    while step < steps and not stop["now"]:
        if max_minutes is not None and time.perf_counter() - session > max_minutes * 60:
            break
        for g in opt.param_groups:
            g["lr"] = _lr(step, steps, lr)
        *inputs, target = sample_batch(coded["train"], batch, rng, size, dev)
        loss = loss_fn(model(*inputs), target, w_ms_ssim)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            for pe, p in zip(ema_model.parameters(), model.parameters()):
                pe.lerp_(p, 1 - ema)
        step += 1
        elapsed = time.perf_counter() - start
        if step % 50 == 0:
            log.info("step %d loss %.4f lr %.2e %.2f s/step", step, loss.item(), opt.param_groups[0]["lr"],
                     (time.perf_counter() - session) / max(1, step - first_step))
        if step % val_every == 0:
            v = validate(ema_model, coded["val"])
            history.append({"step": step, **v})
            log.info("step %d: val enhancer %.2f dB, bicubic base %.2f dB (gain %+.2f; per clip %s)", step,
                     v["psnr_enh"], v["psnr_base"], v["gain"], _per_clip(v))
        if step % ckpt_every == 0:
            save()
    save()
    v = validate(ema_model, coded["val"])
    history.append({"step": step, **v})
    save()
    meta = {"steps": str(step), "hours": f"{elapsed / 3600:.2f}", "val": json.dumps(v)}
    exported = "not exported (a variant outside the registry; last.pt has it)"
    if not variant:  # a weights file names a registry config; a sweep's variant has none
        save_weights(ema_model, out / "model.safetensors", metadata=meta)
        exported = f"exported {out / 'model.safetensors'}"
    log.info("done at step %d: val enhancer %.2f dB, base %.2f dB (gain %+.2f; per clip %s); %s", step,
             v["psnr_enh"], v["psnr_base"], v["gain"], _per_clip(v), exported)
    return v


@click.command("imfcodec.train.hybrid", cls=Command, context_settings=CONTEXT_SETTINGS,
               help=__doc__.splitlines()[0])
@click.option("--data", cls=GreedyOption, default=("../shared/data/talking-heads/train",), show_default=True,
              help="video folder(s)/file(s); 'test' folders are refused")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="run folder [default: runs/MODEL]")
@click.option("--model", "model_name", default=DEFAULT_ENHANCER, show_default=True)
@click.option("--steps", type=int, default=20000, show_default=True)
@click.option("--batch-size", type=int, default=8, show_default=True)
@click.option("--lr", type=float, default=5e-4, show_default=True)
@click.option("--w-ms-ssim", type=float, default=0.1, show_default=True)
@click.option("--max-minutes", type=float, default=None)
@click.option("--val-every", type=int, default=500, show_default=True)
@click.option("--ckpt-every", type=int, default=100, show_default=True)
@click.option("--threads", type=int, default=2, show_default=True)
@click.option("--max-frames", type=int, default=200, show_default=True)
@click.option("--val-clips", type=int, default=5, show_default=True,
              help="held-out training clips (the first N by the hash of their names)")
@click.option("--cache-dir", default="runs/frame-cache", show_default=True)
@click.option("--init-from", default=None, help="start from these enhancer weights (.safetensors)")
@click.option("--fresh", is_flag=True, help="ignore OUT/last.pt")
@click.option("--device", default="cpu", show_default=True, help=f"where the enhancer trains: {DEVICE_HELP}")
def main_command(data, out, model_name, steps, batch_size, lr, w_ms_ssim, max_minutes, val_every, ckpt_every,
                 threads, max_frames, val_clips, cache_dir, init_from, fresh, device):
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    train(list(data), out or Path("runs") / model_name, model_name=model_name, steps=steps, batch=batch_size, lr=lr, w_ms_ssim=w_ms_ssim,
          max_minutes=max_minutes, val_every=val_every, ckpt_every=ckpt_every, threads=threads,
          max_frames=max_frames, val_clips=val_clips, cache_dir=cache_dir, resume=not fresh, init_from=init_from, device=device)
    return 0  # an IMFError becomes one line and status 1 in cliutil.call


def main(argv=None) -> int:
    return call(main_command, argv, "python -m imfcodec.train.hybrid")


if __name__ == "__main__":
    raise SystemExit(main())
