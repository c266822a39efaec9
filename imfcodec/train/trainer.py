"""The training loop: one generator step (and optionally one discriminator step) per iteration,
data parallel over ``torchrun`` ranks, with validation, checkpoints, exact resume and export.

What a step does (all randomness derives from (seed, rank, step), so a resumed run repeats an
uninterrupted one exactly, on the same hardware and thread count):

1. a batch of (reference, current) pairs from the in-memory frame cache, resized to the
   curriculum resolution of this step;
2. tokens of both frames from E_T; the running per-channel token std updates ``token_scale``
   (so quantization steps stay meaningful while the token distribution drifts);
3. uniform noise of one quantization step (token_scale * quality_step(train_quality)) on the
   tokens, so the decoder learns to live with quantized tokens;
4. x_hat = decode_frame(prepare_reference(x_ref, t_ref~), t_cur~); generator loss; rate R of the
   token delta (see losses.py); Adam step with gradient clipping; EMA update;
5. discriminator hinge step on (x_cur, x_hat) when a GAN or feature-matching weight is set.

Data parallelism: gradients are averaged across ranks with one flat all-reduce per optimizer
step (rather than torch's DistributedDataParallel wrapper, whose hooks assume one forward per
backward and every parameter used -- neither holds with a GAN and per-term skipping). Same
result, simpler; the cost is no overlap of communication with the backward pass.

Checkpoints (``last.pt``) are full training states written with torch.save (pickle) and read
with ``weights_only=False``: they are the user's own files, never downloaded ones. Shipped
weights are exported as safetensors (``export_model``), which never run code on load.
"""

from __future__ import annotations

import copy
import csv
import importlib
import json
import logging
import math
import os
import platform
import random
import re
import signal
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from imfcodec.errors import InputError
from imfcodec.fsutil import AtomicOutput
from imfcodec.train.config import TrainConfig
from imfcodec.train.data import (
    Clips,
    PairDataset,
    find_videos,
    load_clips,
    make_loader,
    make_valset,
    resize_batch,
    split_clips,
    to_float,
)
from imfcodec.train.losses import GeneratorLoss, LossWeights, d_hinge_loss

log = logging.getLogger("imfcodec.train")

CHECKPOINT_FORMAT = "imfcodec-train/1"
LOG_COLUMNS = ["step", "resolution", "loss", "l1", "perceptual", "ms_ssim", "gan_g", "feat_match",
               "rate_bits", "d_loss", "d_real", "d_fake", "grad_norm", "lr", "sec_per_step",
               "images_per_s", "hours"]
VAL_COLUMNS = ["step", "resolution", "psnr", "ssim", "ms_ssim", "psnr_q", "ssim_q", "ms_ssim_q",
               "base_psnr", "base_ssim", "base_ms_ssim", "frames"]


# ---------------------------------------------------------------------------- small helpers


def lr_at(cfg: TrainConfig, step: int) -> float:
    """Generator lr at ``step``: linear warm-up, then constant, then an optional cosine decay.

    A pure function of the step, so a resumed run continues the same schedule, and a run that
    has been going at constant lr can be annealed from where it stands."""
    if cfg.warmup_steps > 0 and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.lr_decay is None:
        return cfg.lr
    start, end, final = float(cfg.lr_decay[0]), float(cfg.lr_decay[1]), float(cfg.lr_decay[2])
    t = min(max((step - start) / (end - start), 0.0), 1.0)
    return cfg.lr * (final + (1.0 - final) * 0.5 * (1.0 + math.cos(math.pi * t)))


def step_seed(*parts: int) -> int:
    """A 63-bit seed from integers (e.g. seed, rank, step, purpose)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(2, np.uint64)[0] >> np.uint64(1))


def atomic_torch_save(obj: Any, path: Path) -> None:
    """torch.save to a temp file in the same folder, then rename: never a half-written file."""
    with AtomicOutput(path) as tmp:
        torch.save(obj, tmp)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a training checkpoint with ``torch.load(weights_only=True)``: tensors and plain
    containers only, plus the few numpy/torch types a checkpoint holds (the numpy RNG state),
    allowlisted by name, so a hostile .pt file cannot run code."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"checkpoint not found: {path}")
    try:
        with torch.serialization.safe_globals(_checkpoint_globals()):
            ckpt = torch.load(str(path), map_location=map_location, weights_only=True)
    except Exception as e:  # pickle / zip errors of all kinds: one line, no traceback
        m = re.search(r"GLOBAL (\S+)", str(e))
        why = f"refers to code: {m.group(1)[:80]}" if m else type(e).__name__
        raise InputError(f"{path} is not a loadable imfcodec training checkpoint ({why})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise InputError(f"{path} is not an imfcodec training checkpoint")
    return ckpt


def _checkpoint_globals() -> list[Any]:
    """The non-tensor types in a checkpoint: numpy's legacy RNG state (an ndarray) and the
    torch version string of older checkpoints."""
    from torch.torch_version import TorchVersion

    multiarray = importlib.import_module(
        "numpy._core.multiarray" if int(np.__version__.split(".")[0]) >= 2 else "numpy.core.multiarray")
    return [multiarray._reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32)), TorchVersion]


def init_from_weights(model: torch.nn.Module, path: str | os.PathLike,
                      log_to: logging.Logger | None = None) -> tuple[list[str], list[str]]:
    """Warm start: copy every tensor of an imfcodec weights file whose name and shape match
    ``model`` (safetensors, no code runs); the rest keeps its fresh initialisation. Lets a new
    config (a new registered name) start from a shipped model's trained parts.
    Returns (copied, skipped) parameter names."""
    from safetensors.torch import load_file

    from imfcodec.zoo import read_metadata

    meta = read_metadata(path)
    if "config" not in meta:
        raise InputError(f"init_from {path}: not an imfcodec weights file")
    src = load_file(str(path))
    own = model.state_dict()
    copied, skipped = [], []
    with torch.no_grad():
        for name, t in own.items():
            s = src.get(name)
            if s is not None and s.shape == t.shape:
                t.copy_(s.to(t.dtype))
                copied.append(name)
            else:
                skipped.append(name)
    if not copied:
        raise InputError(f"init_from {path}: no tensor matches the model's names and shapes")
    if log_to is not None:
        log_to.info("init_from %s: copied %d tensors, kept %d fresh (%s)", path, len(copied),
                    len(skipped), ", ".join(skipped[:8]) + (" ..." if len(skipped) > 8 else ""))
    return copied, skipped


def params_digest(*modules: torch.nn.Module | None) -> str:
    """sha256 of all parameters and buffers (to check that DDP replicas agree)."""
    import hashlib

    h = hashlib.sha256()
    for m in modules:
        if m is None:
            continue
        for k, v in sorted(m.state_dict().items()):
            h.update(k.encode())
            h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:32]


def hardware_string(device: torch.device, world: int = 1) -> str:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        return f"{world}x {name}"
    return f"{platform.machine()} CPU, {torch.get_num_threads()} threads" + (f", {world} processes" if world > 1 else "")


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InputError("--device cuda requested but CUDA is not available")
        if name == "cuda":
            return torch.device("cuda", local_rank)
    return torch.device(name)


def _on_ci() -> bool:
    return any(os.environ.get(k) for k in ("CI", "GITHUB_ACTIONS", "BUILDKITE", "GITLAB_CI"))


# ---------------------------------------------------------------------------- distributed


class Dist:
    """Rank/world info; no-ops when not launched by torchrun."""

    def __init__(self) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.enabled = self.world > 1
        self.owns_group = False

    def init(self, device: torch.device) -> None:
        if self.enabled and not dist.is_initialized():
            backend = "nccl" if device.type == "cuda" else "gloo"
            if device.type == "cuda":
                torch.cuda.set_device(device)
            dist.init_process_group(backend=backend)
            self.owns_group = True

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def broadcast_module(self, module: torch.nn.Module) -> None:
        if self.enabled:
            for t in list(module.parameters()) + list(module.buffers()):
                dist.broadcast(t.data, 0)

    def allreduce_mean_(self, tensors: list[torch.Tensor]) -> None:
        """Average tensors across ranks in place, as one flat buffer."""
        if not self.enabled or not tensors:
            return
        flat = torch.cat([t.reshape(-1).float() for t in tensors])
        dist.all_reduce(flat)
        flat /= self.world
        i = 0
        for t in tensors:
            n = t.numel()
            t.copy_(flat[i:i + n].view_as(t))
            i += n

    def any(self, flag: bool, device: torch.device) -> bool:
        if not self.enabled:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item() > 0)

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def sync_grads(d: Dist, params: list[torch.nn.Parameter]) -> None:
    """Average gradients across ranks (missing gradients count as zero on every rank)."""
    if not d.enabled:
        return
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    d.allreduce_mean_([p.grad for p in params])


# ---------------------------------------------------------------------------- export


@torch.no_grad()
def calibrate_tokens(model: torch.nn.Module, clips: Clips, resolution: int, device: torch.device,
                     batch: int = 16, max_frames: int | None = None) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Per-channel std of E_T tokens over the frames of ``clips`` (the first ``max_frames`` of
    each) and per-channel RMS of consecutive-frame token deltas (within clips), in token units.
    Returns (token_std, delta_std, frames)."""
    was = model.training
    model.eval()
    toks, deltas = [], []
    for frames in clips.frames:
        frames = frames[:max_frames] if max_frames else frames
        ts = []
        for i in range(0, len(frames), batch):
            x = resize_batch(to_float(frames[i:i + batch]).to(device), resolution)
            ts.append(model.encode_token(x).float().cpu())
        t = torch.cat(ts)
        toks.append(t)
        if len(t) > 1:
            deltas.append(t[1:] - t[:-1])
    model.train(was)
    allt = torch.cat(toks).double()
    token_std = allt.std(0, unbiased=False).clamp_min(1e-4).float()
    if deltas:
        d = torch.cat(deltas).double()
        delta_std = d.pow(2).mean(0).sqrt().clamp_min(1e-6).float()  # zero-mean model: RMS
    else:
        delta_std = token_std * 0.5
    return token_std, delta_std, int(len(allt))


def export_model(model: torch.nn.Module, path: str | os.PathLike, fp16: bool = True,
                 metadata: dict[str, Any] | None = None) -> bytes:
    """Write ``model`` as safetensors with its IMFConfig JSON (and ``metadata``) in the header.

    Non-string metadata values are JSON-encoded. If the model has a ``delta_std`` attribute it is
    also stored as metadata ``delta_std`` (JSON list, token units) unless already given.
    Returns the weights hash a stream made with the reloaded file carries.
    """
    from imfcodec.zoo import save_weights

    meta = {}
    for k, v in (metadata or {}).items():
        meta[str(k)] = v if isinstance(v, str) else json.dumps(v, sort_keys=True)
    ds = getattr(model, "delta_std", None)
    if isinstance(ds, torch.Tensor) and "delta_std" not in meta:
        meta["delta_std"] = json.dumps([round(float(v), 7) for v in ds.detach().cpu().tolist()])
    return save_weights(model, path, fp16=fp16, metadata=meta)


def calibrate_and_export(model: torch.nn.Module, clips: Clips, path: str | os.PathLike, *,
                         resolution: int, device: torch.device, fp16: bool = True,
                         metadata: dict[str, Any] | None = None,
                         calib_frames: int | None = None) -> dict[str, Any]:
    """Calibrate a *copy* of ``model`` (token_scale := token std, delta_std := delta RMS over
    ``clips``) and export it. The training model is left untouched."""
    m = copy.deepcopy(model).to(device).eval()
    token_std, delta_std, n = calibrate_tokens(m, clips, resolution, device, max_frames=calib_frames)
    m.token_scale.copy_(token_std.to(m.token_scale.device))
    if "delta_std" in dict(m.named_buffers()):
        m.delta_std.copy_(delta_std.to(m.delta_std.device))
    else:
        m.delta_std = delta_std  # plain attribute: export_model writes it to the metadata
    meta = dict(metadata or {})
    meta["calibration_frames"] = n
    meta["token_scale"] = [round(float(v), 7) for v in token_std.tolist()]
    meta["delta_std"] = [round(float(v), 7) for v in delta_std.tolist()]
    whash = export_model(m.cpu(), path, fp16=fp16, metadata=meta)
    return {"path": str(path), "weights_hash": whash.hex(), "calibration_frames": n,
            "token_scale": token_std, "delta_std": delta_std}


# ---------------------------------------------------------------------------- the trainer


class Trainer:
    """Holds models, optimizers, data and the loop state. ``run()`` trains to ``config.steps``."""

    def __init__(self, config: TrainConfig, resume: str | os.PathLike | None = None) -> None:
        from imfcodec.models import Discriminator, create_model

        self.cfg = cfg = config.validate()
        self.d = Dist()
        if cfg.threads:
            torch.set_num_threads(int(cfg.threads))
        self.device = resolve_device(cfg.device, self.d.local_rank)
        self.d.init(self.device)
        if cfg.batch_size % self.d.world:
            raise InputError(f"batch_size {cfg.batch_size} is not divisible by {self.d.world} ranks")
        self.local_batch = cfg.batch_size // self.d.world
        self.out = Path(cfg.out)

        ckpt = None
        if resume:
            ckpt = load_checkpoint(resume)
            if ckpt["config"]["model"] != cfg.model:
                raise InputError(f"checkpoint is a {ckpt['config']['model']} run, config asks for {cfg.model}")

        # models (same seed on every rank, then broadcast to be sure)
        torch.manual_seed(cfg.seed)
        if ckpt is not None:
            from imfcodec.models import IMF, IMFConfig

            self.model = IMF(IMFConfig.from_dict(ckpt["imf_config"]))
        else:
            self.model = create_model(cfg.model, **cfg.model_overrides)
        if ckpt is None and cfg.init_from:
            init_from_weights(self.model, cfg.init_from, log_to=log if self.d.main else None)
        self.model.to(self.device).train()
        from imfcodec.entropy import TokenRateModel

        self.rate_model = TokenRateModel(self.model.config.token_dim).to(self.device)
        fm, mss = cfg.w_feat_match, cfg.w_ms_ssim
        if cfg.w_perceptual > 0 and not cfg.vgg_weights:
            # no VGG weights on this machine: discriminator feature matching + MS-SSIM instead
            fm = fm or cfg.fallback_feat_match
            mss = mss or cfg.fallback_ms_ssim
            if self.d.main:
                log.warning("w_perceptual=%g but no vgg_weights file: using the weight-free fallback "
                            "(feature matching %g, MS-SSIM %g)", cfg.w_perceptual, fm, mss)
        self.weights = LossWeights(l1=cfg.w_l1, perceptual=cfg.w_perceptual if cfg.vgg_weights else 0.0,
                                   ms_ssim=mss, gan=cfg.w_gan, feat_match=fm, rate=cfg.lambda_rate)
        self.loss = GeneratorLoss(self.weights, cfg.vgg_weights, cfg.vgg_levels).to(self.device)
        self.use_disc = self.weights.gan > 0 or self.weights.feat_match > 0
        self.disc = Discriminator.from_config(self.model.config).to(self.device).train() if self.use_disc else None

        self.g_params = [p for p in list(self.model.parameters()) + list(self.rate_model.parameters())
                         if p.requires_grad]
        betas = tuple(cfg.betas)
        self.opt_g = torch.optim.Adam(self._param_groups(), lr=cfg.lr, betas=betas)
        self.opt_d = torch.optim.Adam(self.disc.parameters(), lr=cfg.lr_d, betas=betas) if self.disc else None

        # mixed precision (CUDA only)
        self.amp = bool(cfg.amp and self.device.type == "cuda")
        self.amp_dtype = torch.bfloat16 if cfg.amp_dtype == "bf16" else torch.float16
        use_scaler = self.amp and self.amp_dtype == torch.float16
        self.scaler_g = torch.amp.GradScaler("cuda", enabled=use_scaler)
        self.scaler_d = torch.amp.GradScaler("cuda", enabled=use_scaler)

        self.ema = None
        if cfg.ema > 0:
            self.ema = copy.deepcopy(self.model).eval().requires_grad_(False)

        from imfcodec.entropy import quality_step

        self.qstep = float(quality_step(cfg.train_quality))
        self.step = 0
        self.elapsed_s = 0.0          # training time over all sessions
        self.scale_init = False       # token_scale initialised from data yet?
        self.hardware: list[str] = []  # every setup this model has been trained on
        if ckpt is not None:
            self._restore(ckpt)
        else:
            self.d.broadcast_module(self.model)
            self.d.broadcast_module(self.rate_model)
            if self.disc is not None:
                self.d.broadcast_module(self.disc)
            if self.ema is not None:
                self.ema.load_state_dict(self.model.state_dict())

        self._stop_reason: str | None = None
        self._train_ready = False
        self._val_ready = False
        self._bad_steps = 0
        self._t0 = time.perf_counter()

    # ------------------------------------------------------------------ data
    def prepare_data(self, train: bool = True) -> None:
        """Decode (or load from the frame cache) the validation clips, and the training clips
        unless ``train`` is False (export only needs the validation clips)."""
        cfg = self.cfg
        if self._val_ready and (self._train_ready or not train):
            return
        paths = find_videos(cfg.data)
        train_paths, val_paths = split_clips(paths, cfg.val_clips)
        size = cfg.cache_resolution
        # rank 0 fills the disk cache first so ranks do not decode the same clips concurrently
        if self.d.enabled and not self.d.main:
            self.d.barrier()
        if not self._val_ready:
            self.val_clips = load_clips(val_paths, size, cfg.max_frames, cfg.cache_dir) if val_paths else Clips([], [])
            self.valset = make_valset(self.val_clips, cfg.val_frames) if len(self.val_clips) else None
            self._val_ready = True
        if train and not self._train_ready:
            self.train_clips = load_clips(train_paths, size, cfg.max_frames, cfg.cache_dir)
            self.dataset = PairDataset(self.train_clips, max_distance=cfg.max_distance, flip=cfg.flip,
                                       color_jitter=cfg.color_jitter, zoom=cfg.zoom, seed=cfg.seed,
                                       rank=self.d.rank)
            self._train_ready = True
            if self.d.main:
                log.info("train: %d clips / %d frames; validation: %d clips (%s)", len(self.train_clips),
                         self.train_clips.num_frames, len(self.val_clips), ", ".join(self.val_clips.names))
        if self.d.enabled and self.d.main:
            self.d.barrier()

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        rng = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return {
            "format": CHECKPOINT_FORMAT,
            "step": self.step,
            "elapsed_s": self.elapsed_s,
            "scale_init": self.scale_init,
            "hardware": self.hardware,
            "config": self.cfg.to_dict(),
            "imf_config": self.model.config.to_dict(),
            "model": self.model.state_dict(),
            "rate_model": self.rate_model.state_dict(),
            "disc": self.disc.state_dict() if self.disc is not None else None,
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict() if self.opt_d is not None else None,
            "scaler_g": self.scaler_g.state_dict(),
            "scaler_d": self.scaler_d.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "rng": rng,
            "torch_version": str(torch.__version__),
        }

    def _restore(self, ck: dict[str, Any]) -> None:
        self.model.load_state_dict(ck["model"])
        self.rate_model.load_state_dict(ck["rate_model"])
        self._load_optimizer(ck["opt_g"])
        for group in self.opt_g.param_groups:  # a changed --lr applies on resume
            group["initial_lr"] = self.cfg.lr
        if self.disc is not None and ck.get("disc") is not None:
            self.disc.load_state_dict(ck["disc"])
            if ck.get("opt_d") is not None:
                self.opt_d.load_state_dict(ck["opt_d"])
        if self.ema is not None:
            self.ema.load_state_dict(ck["ema"] if ck.get("ema") is not None else ck["model"])
        if ck.get("scaler_g"):
            self.scaler_g.load_state_dict(ck["scaler_g"])
        if ck.get("scaler_d"):
            self.scaler_d.load_state_dict(ck["scaler_d"])
        self.step = int(ck["step"])
        self.elapsed_s = float(ck.get("elapsed_s", 0.0))
        self.scale_init = bool(ck.get("scale_init", True))
        self.hardware = list(ck.get("hardware", []))
        rng = ck.get("rng") or {}
        if "torch" in rng:
            torch.set_rng_state(rng["torch"])
        if "numpy" in rng:
            np.random.set_state(rng["numpy"])
        if "python" in rng:
            random.setstate(rng["python"])
        if "cuda" in rng and torch.cuda.is_available():
            try:
                torch.cuda.set_rng_state_all(rng["cuda"])
            except RuntimeError:
                pass

    def save_checkpoint(self, path: Path | None = None) -> Path | None:
        if not self.d.main:
            return None
        path = path or self.out / "last.pt"
        atomic_torch_save(self.state_dict(), path)
        return path

    # ------------------------------------------------------------------ one step
    ALIGN_SCALARS = ("locality", "rel_bias")

    def _is_align_scalar(self, name: str) -> bool:
        return name.startswith("align.") and name.rsplit(".", 1)[-1] in self.ALIGN_SCALARS

    def _split_params(self, split: bool) -> list[list[torch.nn.Parameter]]:
        if not split:
            return [self.g_params]
        scalar_ids = {id(p) for n, p in self.model.named_parameters() if self._is_align_scalar(n)}
        return [[p for p in self.g_params if id(p) not in scalar_ids],
                [p for p in self.g_params if id(p) in scalar_ids]]

    def _param_groups(self) -> list[dict[str, Any]]:
        """One group, or two when ``lr_align_scalars`` != 1: the alignment's locality and window
        bias are a handful of scalars that must move by O(1), and Adam moves any parameter by
        about lr per step whatever its gradient, so at lr 2e-4 they would need ~10^4 steps."""
        groups = self._split_params(float(self.cfg.lr_align_scalars) != 1.0)
        return [{"params": ps, "lr_mult": self._lr_mult(i)} for i, ps in enumerate(groups)]

    def _lr_mult(self, group_index: int) -> float:
        """Group 0 holds every other parameter; group 1 (if any) the alignment scalars."""
        return 1.0 if group_index == 0 else float(self.cfg.lr_align_scalars)

    def _load_optimizer(self, state: dict[str, Any]) -> None:
        """Load Adam's state, also across a change of ``lr_align_scalars`` (1 <-> 2 groups): the
        per-parameter moments are re-keyed by each parameter's position in the new groups."""
        saved_groups = state["param_groups"]
        if len(saved_groups) == len(self.opt_g.param_groups):
            self.opt_g.load_state_dict(state)
            for i, g in enumerate(self.opt_g.param_groups):  # the multiplier follows the config
                g["lr_mult"] = self._lr_mult(i)
            return
        old_params = [p for ps in self._split_params(len(saved_groups) == 2) for p in ps]
        old_keys = [i for g in saved_groups for i in g["params"]]
        if len(saved_groups) > 2 or len(old_keys) != len(old_params):
            raise InputError("checkpoint optimizer does not match the model's parameters")
        by_param = {id(p): state["state"].get(k) for p, k in zip(old_params, old_keys)}
        cur = self.opt_g.state_dict()
        new_state: dict[int, Any] = {}
        idx = 0
        for group in self.opt_g.param_groups:
            for p in group["params"]:
                if by_param.get(id(p)) is not None:
                    new_state[idx] = by_param[id(p)]
                idx += 1
        cur["state"] = new_state
        self.opt_g.load_state_dict(cur)

    def _autocast(self):
        if self.amp:
            return torch.autocast("cuda", dtype=self.amp_dtype)
        return torch.autocast(self.device.type, enabled=False)

    @torch.no_grad()
    def _update_token_scale(self, t: torch.Tensor) -> None:
        m = self.cfg.token_scale_momentum
        if m <= 0 and self.scale_init:
            return
        std = t.detach().float().std(0, unbiased=False)
        self.d.allreduce_mean_([std])
        std = std.clamp_min(1e-4).to(self.model.token_scale.dtype)
        if not self.scale_init:
            self.model.token_scale.copy_(std)
            self.scale_init = True
        else:
            self.model.token_scale.lerp_(std, m)

    def train_step(self, x_ref: torch.Tensor, x_cur: torch.Tensor) -> dict[str, float]:
        """One optimisation step on a local batch; returns scalar logs."""
        cfg = self.cfg
        step = self.step
        res = cfg.resolution_at(step)
        x_ref = resize_batch(x_ref.to(self.device, non_blocking=True), res)
        x_cur = resize_batch(x_cur.to(self.device, non_blocking=True), res)
        gen = torch.Generator(device=self.device)
        gen.manual_seed(step_seed(cfg.seed, self.d.rank, step, 7))
        lr = lr_at(cfg, step)
        for g in self.opt_g.param_groups:
            g["lr"] = lr * g.get("lr_mult", 1.0)
        logs: dict[str, float] = {"resolution": res, "lr": lr}

        model = self.model
        with self._autocast():
            t = model.encode_token(torch.cat([x_ref, x_cur], 0)).float()
        self._update_token_scale(t)
        t_ref, t_cur = t.chunk(2, 0)
        if cfg.train_quality_range is not None:
            from imfcodec.entropy import quality_step

            lo, hi = cfg.train_quality_range
            qs = torch.randint(lo, hi + 1, (len(x_cur),), generator=gen, device=self.device)
            qmul = torch.tensor([quality_step(int(q)) for q in range(hi + 1)], device=self.device)[qs]
            qmul = qmul.unsqueeze(1)  # [B,1]: one quality per pair
        else:
            qmul = torch.full((1, 1), self.qstep, device=self.device)
        qstep = model.token_scale.detach().float().unsqueeze(0) * qmul
        if cfg.quant_noise:
            u = torch.rand(t.shape, generator=gen, device=self.device) - 0.5
            u_ref, u_cur = u.chunk(2, 0)
            t_cur_n = t_cur + u_cur * qstep
            t_ref_n = t_ref + u_ref * qstep if cfg.quant_noise_ref else t_ref
        else:
            t_ref_n, t_cur_n = t_ref, t_cur
        with self._autocast():
            x_hat = model.decode_frame(model.prepare_reference(x_ref, t_ref_n), t_cur_n).float()

        # rate of the current token's delta, in quantization steps (noise = rounding proxy)
        d = (t_cur - t_ref) / qstep
        d = d + (torch.rand(d.shape, generator=gen, device=self.device) - 0.5)
        rate = self.rate_model
        bits = rate(d, qmul, add_noise=False) if self.weights.rate > 0 else None
        # always fit the rate model's per-channel std (gradient reaches log_sigma only), so the
        # logged bits and the learned sigma are meaningful even when lambda_rate is 0
        rate_fit = rate(d.detach(), qmul, add_noise=False).mean()
        logs["rate_bits"] = float(rate_fit.detach())

        use_gan_now = self.disc is not None and step >= cfg.gan_start
        fake_out = real_out = None
        if use_gan_now:
            self.disc.requires_grad_(False)
            with self._autocast():
                out = self.disc(torch.cat([x_cur, x_hat], 0))
            real_out = [(lg[: len(x_cur)], [f[: len(x_cur)] for f in fs]) for lg, fs in out]
            fake_out = [(lg[len(x_cur):], [f[len(x_cur):] for f in fs]) for lg, fs in out]
            fake_out = [(lg.float(), [f.float() for f in fs]) for lg, fs in fake_out]
            real_out = [(lg.float(), [f.float() for f in fs]) for lg, fs in real_out]
        loss, parts = self.loss(x_hat, x_cur, fake_out=fake_out, real_out=real_out, bits=bits)
        logs.update(parts)
        logs["loss"] = float(loss.detach())
        if not math.isfinite(logs["loss"]) and not self.scaler_g.is_enabled() and not self.d.enabled:
            # (under DDP the all-reduced gradient norm below decides, identically on every rank)
            return self._skip_step(logs, f"non-finite generator loss {parts}")

        self.opt_g.zero_grad(set_to_none=True)
        self.scaler_g.scale(loss + rate_fit).backward()
        sync_grads(self.d, self.g_params)
        self.scaler_g.unscale_(self.opt_g)
        gn = torch.nn.utils.clip_grad_norm_(self.g_params, cfg.grad_clip if cfg.grad_clip > 0 else math.inf)
        logs["grad_norm"] = float(gn)  # before clipping
        if not math.isfinite(logs["grad_norm"]) and not self.scaler_g.is_enabled():
            self.opt_g.zero_grad(set_to_none=True)
            return self._skip_step(logs, "non-finite gradient")
        self._bad_steps = 0
        self.scaler_g.step(self.opt_g)
        self.scaler_g.update()

        if use_gan_now:
            self.disc.requires_grad_(True)
            for g in self.opt_d.param_groups:
                g["lr"] = cfg.lr_d
            with self._autocast():
                out = self.disc(torch.cat([x_cur, x_hat.detach()], 0))
            n = len(x_cur)
            real_o = [(lg[:n].float(), []) for lg, _ in out]
            fake_o = [(lg[n:].float(), []) for lg, _ in out]
            d_loss = d_hinge_loss(real_o, fake_o)
            self.opt_d.zero_grad(set_to_none=True)
            self.scaler_d.scale(d_loss).backward()
            d_params = list(self.disc.parameters())
            sync_grads(self.d, d_params)
            self.scaler_d.unscale_(self.opt_d)
            dn = torch.nn.utils.clip_grad_norm_(d_params, cfg.grad_clip if cfg.grad_clip > 0 else math.inf)
            if math.isfinite(float(dn)) or self.scaler_d.is_enabled():
                self.scaler_d.step(self.opt_d)
                self.scaler_d.update()
            else:
                log.warning("step %d: discriminator step skipped (non-finite gradient)", step)
            logs["d_loss"] = float(d_loss.detach())
            logs["d_real"] = float(sum(lg.mean() for lg, _ in real_o).detach()) / len(real_o)
            logs["d_fake"] = float(sum(lg.mean() for lg, _ in fake_o).detach()) / len(fake_o)

        if self.ema is not None:
            self._update_ema()
        self.step += 1
        return logs

    MAX_BAD_STEPS = 20

    def _skip_step(self, logs: dict[str, float], why: str) -> dict[str, float]:
        """Skip a step whose loss or gradient is not finite (its batch is not retried: the
        randomness of step s is fixed). Too many in a row means divergence: stop loudly."""
        self._bad_steps += 1
        log.warning("step %d skipped: %s", self.step, why)
        if self._bad_steps > self.MAX_BAD_STEPS:
            raise FloatingPointError(f"{self._bad_steps} non-finite steps in a row at step {self.step}; "
                                     "lower --lr or resume from an earlier checkpoint")
        self.step += 1
        logs["skipped"] = 1.0
        return logs

    @torch.no_grad()
    def _update_ema(self) -> None:
        decay = self.cfg.ema
        for pe, p in zip(self.ema.parameters(), self.model.parameters()):
            pe.lerp_(p.detach(), 1.0 - decay)
        for be, b in zip(self.ema.buffers(), self.model.buffers()):
            be.copy_(b)

    # ------------------------------------------------------------------ validation
    def eval_model(self) -> torch.nn.Module:
        return self.ema if self.ema is not None else self.model

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """PSNR/SSIM/MS-SSIM of the reconstruction (float tokens, and tokens quantized at
        train_quality) and of the repeat-reference baseline, on the held-out clips, from
        uint8-rounded frames; writes a PNG grid."""
        from imfcodec import metrics

        if self.valset is None:
            return {}
        model = self.eval_model()
        was = model.training
        model.eval()
        res = self.cfg.resolution
        step_q = (model.token_scale.float() * self.qstep).unsqueeze(0)
        u8 = lambda x: (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()  # noqa: E731
        acc: dict[str, list[np.ndarray]] = defaultdict(list)
        grid_rows = []
        for ci, (ref, cur) in enumerate(zip(self.valset.refs, self.valset.curs)):
            x_ref = resize_batch(ref.to(self.device), res)
            x_cur = resize_batch(cur.to(self.device), res)
            with self._autocast():
                t_ref = model.encode_token(x_ref).float()
                t_cur = model.encode_token(x_cur).float()
                x_hat = model.decode_frame(model.prepare_reference(x_ref, t_ref), t_cur).float()
                tq_ref = torch.round(t_ref / step_q) * step_q
                tq_cur = torch.round(t_cur / step_q) * step_q
                x_hat_q = model.decode_frame(model.prepare_reference(x_ref, tq_ref), tq_cur).float()
            gt = u8(x_cur)
            base = np.repeat(u8(x_ref), len(gt), 0)
            for key, pred in (("", u8(x_hat)), ("_q", u8(x_hat_q)), ("base_", base)):
                pre, suf = (key, "") if key == "base_" else ("", key)
                acc[f"{pre}psnr{suf}"].append(metrics.psnr(gt, pred, reduction="none"))
                acc[f"{pre}ssim{suf}"].append(metrics.ssim(gt, pred, reduction="none"))
                acc[f"{pre}ms_ssim{suf}"].append(metrics.ms_ssim(gt, pred, reduction="none"))
            if ci < 4:
                k = min(4, len(x_cur))
                grid_rows.append((x_ref.expand(k, -1, -1, -1), x_cur[:k], x_hat_q[:k]))
        model.train(was)
        out = {k: float(np.concatenate(v).mean()) for k, v in acc.items()}
        out["frames"] = int(sum(len(c) for c in self.valset.curs))
        out["resolution"] = res
        self._write_grid(grid_rows)
        return out

    def _write_grid(self, rows) -> None:
        from torchvision.utils import save_image

        if not rows:
            return
        imgs = []
        for ref, cur, rec in rows:  # each row block: reference / current / reconstruction
            imgs += [ref.cpu(), cur.cpu(), rec.cpu()]
        k = max(len(r) for r in imgs)
        imgs = [torch.cat([r, r.new_ones(k - len(r), *r.shape[1:])]) if len(r) < k else r for r in imgs]
        path = self.out / "val" / f"step{self.step:07d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        save_image(torch.cat(imgs), str(path), nrow=k, padding=2)

    # ------------------------------------------------------------------ export
    def export(self, path: Path | None = None, fp16: bool = True) -> dict[str, Any] | None:
        """Calibrate token_scale / delta_std on the validation clips and write safetensors."""
        if not self.d.main:
            return None
        self.prepare_data(train=False)
        if len(self.val_clips):
            clips = self.val_clips
        else:
            self.prepare_data()
            clips = self.train_clips
        path = path or self.out / "model.safetensors"
        meta = {
            "training": json.dumps({
                "steps": self.step,
                "hours": round(self.elapsed_s / 3600.0, 3),
                "hardware": "; ".join(self.hardware) or hardware_string(self.device, self.d.world),
                "data": list(self.cfg.data),
                "train_clips": len(self.train_clips) if self._train_ready else None,
                "val_clips": list(self.val_clips.names),
                "config": self.cfg.to_dict(),
                "ema": self.cfg.ema,
            }, sort_keys=True),
            "steps": str(self.step),
            "train_quality": str(self.cfg.train_quality),
            # learned delta std per channel in token_scale units (entropy.export_scale_indexes)
            "rate_sigma": [round(float(v), 7) for v in self.rate_model.log_sigma.detach().exp().cpu().tolist()],
        }
        res = calibrate_and_export(self.eval_model(), clips, path, resolution=self.cfg.resolution,
                                   device=self.device, fp16=fp16, metadata=meta,
                                   calib_frames=self.cfg.calib_frames)
        res["step"] = self.step
        log.info("exported %s (step %d, weights %s)", res["path"], self.step, res["weights_hash"])
        return res

    # ------------------------------------------------------------------ logging
    def _csv(self, name: str, columns: list[str], row: dict[str, Any]) -> None:
        path = self.out / name
        new = not path.exists()
        with open(path, "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
            if new:
                w.writeheader()
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})

    def _truncate_logs(self) -> None:
        """On resume drop log rows past the checkpoint's step (written after the last save)."""
        for name in ("log.csv", "val.csv"):
            path = self.out / name
            if not path.exists():
                continue
            with open(path, newline="") as f:
                rows = list(csv.reader(f))
            if not rows:
                continue
            keep = [rows[0]] + [r for r in rows[1:] if r and r[0].isdigit() and int(r[0]) <= self.step]
            if len(keep) != len(rows):
                with open(path, "w", newline="") as f:
                    csv.writer(f).writerows(keep)

    # ------------------------------------------------------------------ loop
    def request_stop(self, reason: str) -> None:
        self._stop_reason = reason

    def run(self) -> dict[str, Any]:
        cfg = self.cfg
        self.prepare_data()
        main = self.d.main
        if main:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
            self._truncate_logs()
        hw = hardware_string(self.device, self.d.world)
        if hw not in self.hardware:
            self.hardware.append(hw)
        start_step = self.step
        t_start = self._t0  # max_minutes counts from start-up, data loading included
        deadline = t_start + cfg.max_minutes * 60 if cfg.max_minutes else None
        loader = make_loader(self.dataset, self.local_batch, start_step=self.step, workers=cfg.workers,
                             pin_memory=self.device.type == "cuda")
        show = cfg.progress if cfg.progress is not None else (sys.stderr.isatty() and not _on_ci())
        from tqdm import tqdm

        bar = tqdm(total=cfg.steps, initial=self.step, disable=not (show and main), dynamic_ncols=True,
                   desc=f"train {self.model.config.name}")
        handlers = self._install_signals()
        window: dict[str, list[float]] = defaultdict(list)
        last_val: dict[str, float] = {}
        last_export: dict[str, Any] | None = None
        t_last = time.perf_counter()
        try:
            while self.step < cfg.steps:
                t_iter = time.perf_counter()
                x_ref, x_cur = next(loader)
                logs = self.train_step(x_ref, x_cur)
                dt = time.perf_counter() - t_iter  # data + step; validation/checkpoints excluded
                self.elapsed_s += time.perf_counter() - t_last  # wall time, everything included
                t_last = time.perf_counter()
                for k, v in logs.items():
                    window[k].append(float(v))
                window["sec_per_step"].append(dt)
                step = self.step
                if main and (step % cfg.log_every == 0 or step == cfg.steps):
                    row = {k: float(np.mean(v)) for k, v in window.items()}
                    row["step"] = step
                    row["resolution"] = int(logs["resolution"])
                    row["images_per_s"] = cfg.batch_size / max(row["sec_per_step"], 1e-9)
                    row["hours"] = self.elapsed_s / 3600.0
                    self._csv("log.csv", LOG_COLUMNS, row)
                    bar.set_postfix({k: f"{row[k]:.4g}" for k in ("loss", "l1", "rate_bits") if k in row}
                                    | {"s/it": f"{row['sec_per_step']:.2f}"}, refresh=False)
                    window.clear()
                bar.update(1)
                if cfg.val_every and step % cfg.val_every == 0:
                    if main:
                        last_val = self.validate()
                        if last_val:
                            last_val["step"] = step
                            self._csv("val.csv", VAL_COLUMNS, last_val)
                            log.info("step %d val: psnr %.2f (q %.2f, repeat-ref %.2f) ssim %.3f ms-ssim %.3f",
                                     step, last_val["psnr"], last_val["psnr_q"], last_val["base_psnr"],
                                     last_val["ssim"], last_val["ms_ssim"])
                    self.d.barrier()
                if cfg.ckpt_every and step % cfg.ckpt_every == 0:
                    self.save_checkpoint()
                    self.d.barrier()
                if main and cfg.export_every and step % cfg.export_every == 0:
                    last_export = self.export()
                if deadline is not None and time.perf_counter() > deadline:
                    self._stop_reason = self._stop_reason or f"max_minutes={cfg.max_minutes} reached"
                if self.d.any(self._stop_reason is not None, self.device):
                    self._stop_reason = self._stop_reason or "stop requested on another rank"
                    break
        finally:
            bar.close()
            self._restore_signals(handlers)
        # clean end (steps reached or stopped): checkpoint + export
        self.save_checkpoint()
        exported = None
        if main:
            fresh = last_export is not None and last_export.get("step") == self.step
            exported = last_export if fresh else self.export()
        self.d.barrier()
        summary = {
            "step": self.step,
            "steps_this_run": self.step - start_step,
            "stopped": self._stop_reason,
            "seconds": time.perf_counter() - t_start,
            "hours_total": self.elapsed_s / 3600.0,
            "checkpoint": str(self.out / "last.pt"),
            "exported": exported["path"] if exported else None,
            "weights_hash": exported["weights_hash"] if exported else None,
            "val": last_val,
            "rank": self.d.rank,
            "params_digest": params_digest(self.model, self.rate_model, self.disc),
        }
        if main:
            log.info("done: step %d (%s)", self.step, self._stop_reason or "all steps")
        return summary

    def _install_signals(self):
        if threading.current_thread() is not threading.main_thread():
            return None
        handlers = {}

        def handler(signum, frame):  # noqa: ARG001
            self.request_stop(f"signal {signal.Signals(signum).name}")

        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                handlers[sig] = signal.signal(sig, handler)
            except (ValueError, OSError):
                pass
        return handlers

    @staticmethod
    def _restore_signals(handlers) -> None:
        for sig, h in (handlers or {}).items():
            signal.signal(sig, h)

    def close(self) -> None:
        self.d.close()


def train(config: TrainConfig, resume: str | os.PathLike | None = None) -> dict[str, Any]:
    """Train with ``config`` (optionally resuming from a checkpoint); returns a summary dict.

    Click-free core for the CLI: no argument parsing, no sys.exit.
    """
    trainer = Trainer(config, resume=resume)
    try:
        return trainer.run()
    finally:
        trainer.close()


def export_checkpoint(checkpoint: str | os.PathLike, out: str | os.PathLike | None = None,
                      fp16: bool = True, config: TrainConfig | None = None) -> dict[str, Any]:
    """Export a training checkpoint (EMA weights if it has them) to safetensors, calibrating
    token_scale and delta_std on the run's validation clips."""
    ck = load_checkpoint(checkpoint)
    cfg = config or TrainConfig.from_dict(ck["config"])
    cfg = cfg.replace(device="cpu" if not torch.cuda.is_available() else cfg.device)
    trainer = Trainer(cfg, resume=checkpoint)
    try:
        path = Path(out) if out else Path(checkpoint).with_name("model.safetensors")
        return trainer.export(path, fp16=fp16)
    finally:
        trainer.close()
