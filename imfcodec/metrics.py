"""Image quality metrics shared by training, validation and benchmarks.

Thin wrappers: the formulas come from scikit-image (PSNR, BT.601 luma) and pytorch-msssim
(SSIM, MS-SSIM); this module only normalises inputs and reductions so every caller measures
the same way.

Inputs: ``a`` (reference / original) and ``b`` (distorted) of the same kind and shape, either

* uint8 numpy frames, ``HxWx3`` or ``NxHxWx3`` (data range 255) -- what the codec outputs, or
* float torch tensors in [0, 1], ``3xHxW`` or ``Nx3xHxW`` (data range 1) -- what the model
  outputs during training. Float inputs are *not* rounded to 8 bits first; round them yourself
  to measure what a decoder would write to a file.

Every metric returns the mean over frames (``reduction="mean"``, a float) or one value per
frame (``reduction="none"``, a float64 numpy array). Video PSNR is the mean of per-frame PSNRs
(the JVET/MPEG convention); a frame identical to its reference is capped at ``PSNR_CAP`` dB so
means stay finite.

SSIM: pytorch-msssim's Gaussian-window SSIM (11x11, sigma 1.5, K = 0.01/0.03, valid region),
averaged over RGB channels. It equals ``skimage.metrics.structural_similarity(...,
gaussian_weights=True, sigma=1.5, use_sample_covariance=False, channel_axis=-1)``.

MS-SSIM: pytorch-msssim's 5-scale MS-SSIM needs a smaller side > 160 px. For smaller frames we
use as many scales as fit (each scale's side >= 11 px after the /2 poolings: 4 at 128 px, 3 at
64 px) with the standard scale weights truncated and renormalised to sum to 1. Values at < 161 px
are therefore not directly comparable with 5-scale values published elsewhere.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from .errors import InputError

Reduction = Literal["mean", "none"]

PSNR_CAP = 100.0
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
WIN_SIZE = 11
WIN_SIGMA = 1.5

__all__ = [
    "PSNR_CAP",
    "psnr",
    "psnr_y",
    "ssim",
    "ms_ssim",
    "ms_ssim_levels",
    "ms_ssim_torch",
    "frame_metrics",
]


# ---------------------------------------------------------------------------- input handling


def _as_nchw(a, b) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Both inputs as float64 Nx3xHxW tensors (on CPU, detached) plus their data range.
    (PSNR stays in float64; the SSIM family runs in float32.)"""
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
        if a.shape != b.shape:
            raise InputError(f"metric inputs differ in shape: {a.shape} vs {b.shape}")
        if a.dtype != np.uint8 or b.dtype != np.uint8:
            raise InputError(f"numpy frames must be uint8, got {a.dtype} and {b.dtype}")
        if a.ndim == 3:
            a, b = a[None], b[None]
        if a.ndim != 4 or a.shape[-1] != 3:
            raise InputError(f"numpy frames must be HxWx3 or NxHxWx3, got {a.shape}")
        # as float64 copies: decoder outputs can be read-only views, which torch.from_numpy warns about
        ta = torch.from_numpy(a.astype(np.float64)).permute(0, 3, 1, 2)
        tb = torch.from_numpy(b.astype(np.float64)).permute(0, 3, 1, 2)
        return ta, tb, 255.0
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        if a.shape != b.shape:
            raise InputError(f"metric inputs differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
        if a.dim() == 3:
            a, b = a[None], b[None]
        if a.dim() != 4 or a.shape[1] != 3:
            raise InputError(f"tensor frames must be 3xHxW or Nx3xHxW, got {tuple(a.shape)}")
        if a.dtype == torch.uint8:
            return a.detach().cpu().double(), b.detach().cpu().double(), 255.0
        return a.detach().cpu().double(), b.detach().cpu().double(), 1.0
    raise InputError(f"metric inputs must both be numpy uint8 or both torch tensors, "
                     f"got {type(a).__name__} and {type(b).__name__}")


def _reduce(values: np.ndarray, reduction: Reduction) -> float | np.ndarray:
    if reduction == "mean":
        return float(np.mean(values))
    if reduction == "none":
        return values
    raise InputError(f"reduction must be 'mean' or 'none', got {reduction!r}")


# ---------------------------------------------------------------------------- PSNR


def _psnr_frames(a: np.ndarray, b: np.ndarray, data_range: float) -> np.ndarray:
    from skimage.metrics import peak_signal_noise_ratio

    out = np.empty(len(a), dtype=np.float64)
    for i, (x, y) in enumerate(zip(a, b)):
        if np.array_equal(x, y):
            out[i] = PSNR_CAP
        else:
            out[i] = min(PSNR_CAP, float(peak_signal_noise_ratio(x, y, data_range=data_range)))
    return out


def psnr(a, b, reduction: Reduction = "mean") -> float | np.ndarray:
    """PSNR in dB over all RGB samples of each frame."""
    ta, tb, rng = _as_nchw(a, b)
    return _reduce(_psnr_frames(ta.numpy(), tb.numpy(), rng), reduction)


def psnr_y(a, b, reduction: Reduction = "mean") -> float | np.ndarray:
    """PSNR in dB of the BT.601 luma (studio range, Y in [16, 235], peak 255), as in
    skimage's ``rgb2ycbcr`` and the usual Y-PSNR of 8-bit video; not rounded to integers."""
    from skimage.color import rgb2ycbcr

    ta, tb, rng = _as_nchw(a, b)
    # rgb2ycbcr wants floats in [0, 1] (HxWx3); its Y is in 8-bit units whatever the input range
    ya = rgb2ycbcr((ta / rng).permute(0, 2, 3, 1).numpy(), channel_axis=-1)[..., 0]
    yb = rgb2ycbcr((tb / rng).permute(0, 2, 3, 1).numpy(), channel_axis=-1)[..., 0]
    return _reduce(_psnr_frames(ya, yb, 255.0), reduction)


# ---------------------------------------------------------------------------- SSIM family


def ssim(a, b, reduction: Reduction = "mean") -> float | np.ndarray:
    """Gaussian-window SSIM (pytorch-msssim), mean over RGB channels, per frame."""
    from pytorch_msssim import ssim as _pm_ssim

    ta, tb, rng = _as_nchw(a, b)
    ta, tb = ta.float(), tb.float()  # float32: ~30x faster than float64, same values to ~1e-6
    if min(ta.shape[-2:]) < WIN_SIZE:
        raise InputError(f"SSIM needs frames of at least {WIN_SIZE}x{WIN_SIZE} pixels")
    vals = _pm_ssim(ta, tb, data_range=rng, size_average=False, win_size=WIN_SIZE, win_sigma=WIN_SIGMA)
    return _reduce(vals.numpy().astype(np.float64), reduction)


def ms_ssim_levels(height: int, width: int | None = None) -> int:
    """How many MS-SSIM scales fit a frame: 5 (the standard) when the smaller side is > 160 px,
    otherwise as many as keep every scale >= 11 px (the Gaussian window)."""
    side = min(height, width if width is not None else height)
    if side > (WIN_SIZE - 1) * 2**4:
        return len(MS_SSIM_WEIGHTS)
    levels = 1
    while levels < len(MS_SSIM_WEIGHTS) and side // 2**levels >= WIN_SIZE:
        levels += 1
    if side < WIN_SIZE:
        raise InputError(f"MS-SSIM needs frames of at least {WIN_SIZE}x{WIN_SIZE} pixels")
    return levels


def ms_ssim_torch(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0,
                  eps: float | None = None) -> torch.Tensor:
    """Differentiable MS-SSIM per image ([N]) for Nx3xHxW tensors of any size >= 11 px.

    Uses pytorch-msssim directly at >= 161 px. Below that it runs the same per-scale
    computation (pytorch-msssim's ``_ssim``) with fewer scales (see the module docstring).
    ``eps``: clamp per-scale contrast terms to >= eps instead of 0 -- for use as a loss, where
    ``relu(cs) ** w`` has an infinite gradient at 0 and would turn the step into NaN.
    """
    from pytorch_msssim import ms_ssim as _pm_ms_ssim
    from pytorch_msssim.ssim import _fspecial_gauss_1d, _ssim

    levels = ms_ssim_levels(x.shape[-2], x.shape[-1])
    if levels == len(MS_SSIM_WEIGHTS) and eps is None:
        return _pm_ms_ssim(x, y, data_range=data_range, size_average=False,
                           win_size=WIN_SIZE, win_sigma=WIN_SIGMA)
    w = x.new_tensor(MS_SSIM_WEIGHTS[:levels])
    w = w / w.sum()
    win = _fspecial_gauss_1d(WIN_SIZE, WIN_SIGMA).repeat([x.shape[1], 1, 1, 1])
    floor = (lambda t: t.clamp_min(eps)) if eps is not None else torch.relu
    terms = []
    for i in range(levels):
        s, cs = _ssim(x, y, data_range=data_range, win=win, size_average=False)
        if i < levels - 1:
            terms.append(floor(cs))
            pad = [d % 2 for d in x.shape[2:]]
            x = F.avg_pool2d(x, kernel_size=2, padding=pad)
            y = F.avg_pool2d(y, kernel_size=2, padding=pad)
    terms.append(floor(s))
    stacked = torch.stack(terms, 0)  # (level, N, C)
    return torch.prod(stacked ** w.view(-1, 1, 1), 0).mean(1)


def ms_ssim(a, b, reduction: Reduction = "mean") -> float | np.ndarray:
    """MS-SSIM per frame (pytorch-msssim; fewer scales below 161 px, see module docstring)."""
    ta, tb, rng = _as_nchw(a, b)
    vals = ms_ssim_torch(ta.float(), tb.float(), data_range=rng)
    return _reduce(vals.numpy().astype(np.float64), reduction)


def frame_metrics(a, b) -> dict[str, float]:
    """All cheap metrics at once, averaged over frames: psnr, psnr_y, ssim, ms_ssim."""
    return {
        "psnr": psnr(a, b),
        "psnr_y": psnr_y(a, b),
        "ssim": ssim(a, b),
        "ms_ssim": ms_ssim(a, b),
    }
