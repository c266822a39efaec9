"""Training configuration: one flat dataclass per network (``TrainConfig`` here for the token model,
``hybrid.EnhancerConfig`` for the enhancer), loadable from JSON (a file path or the name of a bundled
config in ``imfcodec/train/configs/``) and overridable field by field.

Flat on purpose: every field maps 1:1 to a JSON key and to a ``--kebab-case`` command-line
override, and the whole config is stored in every checkpoint and exported weights file. The fields
the loop reads (``train.loop.Run``) have the same names and meanings in both configs.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imfcodec.errors import InputError

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


class RunConfig:
    """What every run config can do: a JSON round trip, and overrides checked by name and validated."""

    def validate(self):
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        data = {k: v for k, v in data.items() if not k.startswith("_")}  # "_comment" keys
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(f"unknown training config keys: {', '.join(unknown)}")
        return cls(**data).validate()

    def replace(self, **overrides: Any):
        known = {f.name for f in dataclasses.fields(self)}
        bad = sorted(set(overrides) - known)
        if bad:
            raise InputError(f"unknown training config keys: {', '.join(bad)}")
        return dataclasses.replace(self, **overrides).validate()


@dataclass
class TrainConfig(RunConfig):
    # model
    model: str = "imf-small-v2"
    model_overrides: dict[str, Any] = field(default_factory=dict)
    init_from: str | None = None          # weights (.safetensors) to start a fresh run from
    # data
    data: list[str] = field(default_factory=lambda: ["../shared/data/talking-heads/train"])
    max_frames: int | None = 200          # per clip, first N frames
    cache_dir: str | None = "runs/frame-cache"
    val_clips: int = 5
    val_frames: int = 8                   # current frames per validation clip (reference = frame 0)
    calib_frames: int | None = 50         # consecutive frames per validation clip for export calibration
    max_distance: int | None = 50         # max frame distance of a training pair (None: any)
    flip: bool = True
    color_jitter: float = 0.05
    zoom: float = 0.0                     # random zoom up to 1 + zoom, shared by both frames of a pair
    workers: int = 0
    # schedule
    resolution: int = 256                 # final training / validation resolution
    stages: list[list[int]] = field(default_factory=list)  # [[start_step, resolution], ...]
    batch_size: int = 8                   # global batch (split over DDP ranks)
    steps: int = 100_000
    lr: float = 2e-4
    lr_d: float = 2e-4
    lr_align_scalars: float = 1.0         # lr multiplier for the alignment's locality / window bias
    betas: list[float] = field(default_factory=lambda: [0.5, 0.999])
    grad_clip: float = 1.0                # max global grad norm (0: off)
    warmup_steps: int = 0                 # linear lr warm-up
    lr_decay: list[float] | None = None   # [start_step, end_step, final_fraction]: cosine lr decay
    # losses (weight 0 skips the term)
    w_l1: float = 10.0
    w_perceptual: float = 10.0            # needs vgg_weights; ignored (with a warning) otherwise
    w_ms_ssim: float = 0.0
    w_gan: float = 1.0
    w_feat_match: float = 0.0
    gan_start: int = 0                    # step at which the discriminator starts
    lambda_rate: float = 0.0              # weight of R (bits per frame)
    vgg_weights: str | None = None
    vgg_levels: int = 4
    # weight-free fallback used when w_perceptual > 0 but no vgg_weights file is given
    fallback_feat_match: float = 10.0
    fallback_ms_ssim: float = 1.0
    # quantization simulation
    quant_noise: bool = True              # uniform noise of one quantization step on tokens
    quant_noise_ref: bool = True          # also on the reference token (the codec quantizes it too)
    train_quality: int = 6                # quality whose step the noise and the rate use
    train_quality_range: list[int] | None = None  # [lo, hi]: per-sample random quality instead
    token_scale_momentum: float = 0.01    # running per-channel token std -> token_scale (0: fixed)
    # run
    out: str = "runs/imf-small-v2"
    seed: int = 0
    device: str = "auto"                  # auto | cpu | cuda | cuda:N
    amp: bool = False                     # CUDA only
    amp_dtype: str = "bf16"               # bf16 | fp16 (fp16 uses a GradScaler)
    tf32: bool = False                    # TF32 convolutions/matmuls on a GPU (devices.resolve_device)
    ema: float = 0.0                      # EMA decay of generator weights (0: off), e.g. 0.999
    log_every: int = 10
    val_every: int = 500
    ckpt_every: int = 250
    export_every: int = 0                 # also export safetensors every N steps (0: only at the end)
    max_minutes: float | None = None
    threads: int | None = None
    progress: bool | None = None          # None: only on a TTY and not under CI

    # ------------------------------------------------------------------ helpers
    def validate(self) -> "TrainConfig":
        if self.batch_size < 1:
            raise InputError("batch_size must be >= 1")
        if self.steps < 0:
            raise InputError("steps must be >= 0")
        if self.resolution % 32:
            raise InputError(f"resolution must be a multiple of 32, got {self.resolution}")
        for st in self.stages:
            if len(st) != 2 or st[1] % 32 or st[0] < 0:
                raise InputError(f"bad curriculum stage {st}: want [start_step, resolution (x32)]")
        if self.lr_decay is not None and (
                len(self.lr_decay) != 3 or not 0 <= self.lr_decay[0] < self.lr_decay[1]
                or not 0.0 <= self.lr_decay[2] <= 1.0):
            raise InputError("lr_decay must be [start_step, end_step > start_step, final_fraction in [0, 1]]")
        if self.amp_dtype not in ("bf16", "fp16"):
            raise InputError("amp_dtype must be bf16 or fp16")
        if not 0.0 <= self.ema < 1.0:
            raise InputError("ema must be in [0, 1)")
        if self.train_quality_range is not None and (
                len(self.train_quality_range) != 2 or self.train_quality_range[0] > self.train_quality_range[1]):
            raise InputError("train_quality_range must be [lo, hi]")
        if isinstance(self.data, str):
            self.data = [self.data]
        return self

    @property
    def cache_resolution(self) -> int:
        """The largest resolution the run ever needs: frames are decoded once at this size."""
        return max([self.resolution] + [int(s[1]) for s in self.stages])

    def resolution_at(self, step: int) -> int:
        """Curriculum: the resolution of the last stage that has started (else ``resolution``)."""
        res = self.resolution
        best = -1
        for start, r in self.stages:
            if start <= step and start > best:
                best, res = start, int(r)
        return res


def list_configs() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.json"))


def load_config(name_or_path: str | os.PathLike | None) -> TrainConfig:
    """A bundled config by name (``small-cpu``), or a JSON file; None gives the defaults."""
    if name_or_path is None:
        return TrainConfig().validate()
    p = Path(name_or_path)
    if not p.is_file():
        bundled = CONFIG_DIR / f"{name_or_path}.json"
        if not bundled.is_file():
            raise InputError(f"no training config '{name_or_path}' (bundled: {', '.join(list_configs())})")
        p = bundled
    try:
        data = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise InputError(f"cannot read training config {p}: {e}") from None
    if not isinstance(data, dict):
        raise InputError(f"training config {p} must be a JSON object")
    return TrainConfig.from_dict(data)
