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

This module holds the token model's step and state; the loop is ``loop.Run`` (shared with the
enhancer's trainer, ``hybrid``), and the parts live beside it: ``checkpoint`` (``last.pt`` IO and
its load allowlist), ``distributed`` (ranks, gradient averaging), ``optim`` (lr schedule, parameter
groups, EMA), ``validate``, ``logs`` (the CSV files) and ``export`` (calibration and safetensors).
Their public names stay importable from here.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from imfcodec.errors import InputError
from imfcodec.train.checkpoint import CHECKPOINT_FORMAT, atomic_torch_save, init_from_weights, load_checkpoint
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
)
from imfcodec.train.distributed import Dist, hardware_string, params_digest, resolve_device, sync_grads
from imfcodec.train.loop import Run, run_to_end, step_seed
from imfcodec.train.export import calibrate_and_export, calibrate_tokens, export_model
from imfcodec.train.logs import LOG_COLUMNS, VAL_COLUMNS, append_csv, truncate_logs
from imfcodec.train.losses import GeneratorLoss, LossWeights, d_hinge_loss
from imfcodec.train.optim import load_optimizer, lr_at, param_groups, set_lr, update_ema
from imfcodec.train.validate import validate_model, write_grid

log = logging.getLogger("imfcodec.train")


# ---------------------------------------------------------------------------- the trainer


class Trainer(Run):
    """The token model (with its rate model and discriminator) for ``loop.Run``: models, optimizers,
    data and one step. ``run()`` trains to ``config.steps``."""

    def __init__(self, config: TrainConfig, resume: str | os.PathLike | None = None) -> None:
        from imfcodec.models import Discriminator, create_model

        super().__init__(config)
        cfg = self.cfg

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
        self.opt_g = torch.optim.Adam(param_groups(self.model, self.g_params, cfg.lr_align_scalars), lr=cfg.lr,
                                      betas=betas)
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

        self.name = f"train {self.model.config.name}"
        self._train_ready = False
        self._val_ready = False
        self._bad_steps = 0
        self.t0 = time.perf_counter()  # max_minutes counts from start-up, data loading included

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
        load_optimizer(self.opt_g, ck["opt_g"], self.model, self.g_params, self.cfg.lr_align_scalars)
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

    # ------------------------------------------------------------------ one step
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
        set_lr(self.opt_g, lr)
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
            update_ema(self.ema, self.model, self.cfg.ema)
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

    # ------------------------------------------------------------------ validation
    def eval_model(self) -> torch.nn.Module:
        return self.ema if self.ema is not None else self.model

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Metrics of the eval model on the held-out clips (``validate.validate_model``); writes a
        PNG grid to OUT/val/."""
        if self.valset is None:
            return {}
        out, grid_rows = validate_model(self.eval_model(), self.valset, self.cfg.resolution, self.qstep,
                                        self.device, self._autocast)
        write_grid(grid_rows, self.out / "val" / f"step{self.step:07d}.png")
        return out

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
        }
        res = calibrate_and_export(self.eval_model(), clips, path, resolution=self.cfg.resolution,
                                   device=self.device, fp16=fp16, metadata=meta,
                                   calib_frames=self.cfg.calib_frames)
        res["step"] = self.step
        log.info("exported %s (step %d, weights %s)", res["path"], self.step, res["weights_hash"])
        return res

    # ------------------------------------------------------------------ the loop's hooks
    def start(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "config.json").write_text(json.dumps(self.cfg.to_dict(), indent=2) + "\n")
        truncate_logs(self.out, self.step)
        hw = hardware_string(self.device, self.d.world)
        if hw not in self.hardware:
            self.hardware.append(hw)

    def batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return make_loader(self.dataset, self.local_batch, start_step=self.step, workers=self.cfg.workers,
                           pin_memory=self.device.type == "cuda")

    def log_train(self, row: dict[str, float], last: dict[str, float]) -> None:
        row["resolution"] = int(last["resolution"])
        append_csv(self.out / "log.csv", LOG_COLUMNS, row)

    def log_val(self, v: dict[str, float]) -> None:
        append_csv(self.out / "val.csv", VAL_COLUMNS, v)
        log.info("step %d val: psnr %.2f (q %.2f, repeat-ref %.2f) ssim %.3f ms-ssim %.3f",
                 v["step"], v["psnr"], v["psnr_q"], v["base_psnr"], v["ssim"], v["ms_ssim"])

    def replicas(self) -> list[torch.nn.Module | None]:
        return [self.model, self.rate_model, self.disc]


def train(config: TrainConfig, resume: str | os.PathLike | None = None) -> dict[str, Any]:
    """Train with ``config`` (optionally resuming from a checkpoint); returns a summary dict.

    Click-free core for the CLI: no argument parsing, no sys.exit.
    """
    return run_to_end(Trainer(config, resume=resume))


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


# names this module held before it was split, still importable from here
__all__ = [
    "Trainer", "train", "export_checkpoint", "step_seed",
    "CHECKPOINT_FORMAT", "atomic_torch_save", "load_checkpoint", "init_from_weights",
    "Dist", "sync_grads", "params_digest", "hardware_string", "resolve_device",
    "lr_at", "LOG_COLUMNS", "VAL_COLUMNS",
    "calibrate_tokens", "export_model", "calibrate_and_export",
]
