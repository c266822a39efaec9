"""Quality of decoded frames against the reference frames.

PSNR (RGB and BT.601 Y), SSIM and MS-SSIM come from ``imfcodec.metrics`` (scikit-image and
pytorch-msssim underneath), so the benchmark measures exactly as training and validation do. Video
values are means of per-frame values. Frames are processed in chunks to bound memory.

VMAF uses ``vmaf-torch`` (a PyTorch port of Netflix's VMAF v0.6.1 model, within ~0.03 of libvmaf on
Netflix's public set) on the BT.601 luma, because neither the PyAV wheels nor anything else on PyPI
here ships libvmaf. When the package is missing the column is left empty and the reason is reported.

LPIPS and DISTS need ImageNet backbone weights that cannot be downloaded here; they are computed
only when the user passes local weight files (see ``PerceptualSpec``), otherwise reported as skipped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

CHUNK = 32
METRICS = ("psnr", "psnr_y", "ssim", "ms_ssim", "vmaf", "lpips", "dists")
HIGHER_IS_BETTER = {"psnr": True, "psnr_y": True, "ssim": True, "ms_ssim": True, "vmaf": True,
                    "lpips": False, "dists": False}
LABELS = {"psnr": "PSNR RGB (dB)", "psnr_y": "PSNR Y (dB)", "ssim": "SSIM", "ms_ssim": "MS-SSIM",
          "vmaf": "VMAF", "lpips": "LPIPS (lower is better)", "dists": "DISTS (lower is better)"}


@dataclass(frozen=True)
class PerceptualSpec:
    """Which optional metrics to compute and from which local files.

    ``lpips_weights``: torchvision AlexNet ImageNet weights (``alexnet-owt-7be5be79.pth`` or a
    safetensors copy); the LPIPS linear layers come with the ``lpips`` package.
    ``dists_weights``: torchvision VGG16 ImageNet weights (``vgg16-397923af.pth``); DISTS' alpha/beta
    come with the ``DISTS_pytorch`` package.
    """

    vmaf: bool = True
    vmaf_subsample: int = 1
    lpips_weights: str | None = None
    dists_weights: str | None = None


def vmaf_status(enabled: bool = True, subsample: int = 1) -> tuple[bool, str]:
    """(available, one-line description) for the VMAF column."""
    if not enabled:
        return False, "VMAF: skipped (--no-vmaf)"
    try:
        import vmaf_torch  # noqa: F401
    except ImportError:
        return False, ("VMAF: skipped: no usable VMAF here (PyAV's FFmpeg has no libvmaf filter and "
                       "the `vmaf-torch` package is not installed: pip install vmaf-torch)")
    every = f", every {subsample}th frame (--vmaf-subsample)" if subsample > 1 else ""
    return True, f"VMAF: vmaf-torch (PyTorch port of libvmaf, VMAF v0.6.1 model) on BT.601 luma{every}"


def perceptual_status(spec: PerceptualSpec) -> dict[str, tuple[bool, str]]:
    """(available, one-line description) for LPIPS and DISTS."""
    out = {}
    for name, path, package, backbone in (("lpips", spec.lpips_weights, "lpips", "AlexNet"),
                                          ("dists", spec.dists_weights, "DISTS_pytorch", "VGG16")):
        label = name.upper()
        if not path:
            out[name] = (False, f"{label}: skipped: no local weights (pass --{name}-weights PATH to "
                                f"torchvision {backbone} ImageNet weights)")
            continue
        try:
            __import__(package)
        except ImportError:
            out[name] = (False, f"{label}: skipped: package `{package}` is not installed")
            continue
        from pathlib import Path

        if not Path(path).is_file():
            out[name] = (False, f"{label}: skipped: no local weights ({path} does not exist)")
            continue
        out[name] = (True, f"{label}: {package} with {backbone} weights from {path}")
    return out


def _luma(frames: np.ndarray) -> np.ndarray:
    """BT.601 studio-range luma in 8-bit units (float32, N x H x W), as imfcodec.metrics.psnr_y uses."""
    from skimage.color import rgb2ycbcr

    return rgb2ycbcr(frames.astype(np.float32) / 255.0, channel_axis=-1)[..., 0].astype(np.float32)


def vmaf_score(ref: np.ndarray, dec: np.ndarray, subsample: int = 1) -> float:
    """Mean VMAF (v0.6.1, clipped to 0..100) of a decoded clip.

    Same computation as ``vmaf_torch.VMAF.compute_vmaf_score``, split up to bound memory: the motion
    feature (reference only, needs neighbouring frames) over the whole clip, then the per-frame ADM and
    VIF features chunk by chunk. ``subsample`` = n scores every n-th frame only (libvmaf's
    ``--subsample``), the motion feature still seeing every frame.
    """
    import torch
    from vmaf_torch import VMAF

    model = VMAF(temporal_pooling=False, enable_motion=True, clip_score=True).eval()
    scores = []
    with torch.inference_mode():
        motion2 = model.compute_motion2(torch.from_numpy(_luma(ref))[:, None])
        picked = np.arange(0, len(ref), max(1, int(subsample)))
        for s in range(0, len(picked), CHUNK):
            idx = picked[s:s + CHUNK]
            r = torch.from_numpy(_luma(ref[idx]))[:, None]
            d = torch.from_numpy(_luma(dec[idx]))[:, None]
            adm = model.compute_adm_score(r, d)
            vif = model.compute_vif_features(r, d)
            scores.append(model.predict(adm, motion2[torch.from_numpy(idx)], vif).flatten().double().numpy())
    return float(np.mean(np.concatenate(scores)))


def _load_state(path: str) -> dict:
    import torch

    if str(path).endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(str(path))
    return torch.load(str(path), map_location="cpu", weights_only=True)  # weights only: runs no code


def _lpips_model(path: str):
    import warnings

    import lpips
    import torchvision

    with warnings.catch_warnings():  # lpips passes torchvision's deprecated `pretrained=` argument
        warnings.simplefilter("ignore")
        model = lpips.LPIPS(net="alex", pretrained=True, pnet_rand=True, verbose=False)
    alex = torchvision.models.alexnet(weights=None)
    alex.load_state_dict(_load_state(path))
    for k in range(1, 6):
        for name, layer in getattr(model.net, f"slice{k}").named_children():
            layer.load_state_dict(alex.features[int(name)].state_dict())
    return model.eval()


def _dists_model(path: str):
    import torchvision
    from DISTS_pytorch import DISTS_pt

    state = _load_state(path)

    class _Models:  # DISTS builds vgg16(pretrained=True), which downloads; hand it local weights
        @staticmethod
        def vgg16(*_args, **_kwargs):
            vgg = torchvision.models.vgg16(weights=None)
            vgg.load_state_dict(state)
            return vgg

    saved = DISTS_pt.models
    DISTS_pt.models = _Models
    try:
        model = DISTS_pt.DISTS(load_weights=False)
    finally:
        DISTS_pt.models = saved
    weights = _load_state(_dists_alpha_beta())
    model.alpha.data, model.beta.data = weights["alpha"], weights["beta"]
    return model.eval()


def _dists_alpha_beta() -> str:
    """DISTS_pytorch ships its alpha/beta in its package folder (and, oddly, in sys.prefix)."""
    import importlib.resources
    import sys
    from pathlib import Path

    p = Path(str(importlib.resources.files("DISTS_pytorch"))) / "weights.pt"
    return str(p if p.is_file() else Path(sys.prefix) / "weights.pt")


def _perceptual(model, ref: np.ndarray, dec: np.ndarray, lpips_scale: bool) -> float:
    import torch

    vals = []
    with torch.inference_mode():
        for s in range(0, len(ref), CHUNK):
            r = torch.from_numpy(ref[s:s + CHUNK]).permute(0, 3, 1, 2).float() / 255.0
            d = torch.from_numpy(dec[s:s + CHUNK]).permute(0, 3, 1, 2).float() / 255.0
            if lpips_scale:  # LPIPS expects [-1, 1]
                v = model(r * 2 - 1, d * 2 - 1)
            else:
                v = model(r, d)
            vals.append(v.flatten().double().numpy())
    return float(np.mean(np.concatenate(vals)))


def measure(ref: np.ndarray, dec: np.ndarray, spec: PerceptualSpec = PerceptualSpec()) -> dict[str, float]:
    """All metrics for one decoded clip (N x H x W x 3 uint8 each), averaged over frames.

    Metrics that cannot be computed are NaN (the run's summary says why).
    """
    from imfcodec import metrics

    if ref.shape != dec.shape:
        raise ValueError(f"decoded frames {dec.shape} do not match the reference {ref.shape}")
    import torch

    per = {k: [] for k in ("psnr", "psnr_y", "ssim", "ms_ssim")}
    with torch.inference_mode():
        for s in range(0, len(ref), CHUNK):
            a, b = ref[s:s + CHUNK], dec[s:s + CHUNK]
            for name in per:  # per-frame values, so the mean is over the clip's frames, not its chunks
                per[name].append(getattr(metrics, name)(a, b, reduction="none"))
    out = {k: float(np.mean(np.concatenate(v))) for k, v in per.items()}
    out["ms_ssim_scales"] = metrics.ms_ssim_levels(ref.shape[1], ref.shape[2])
    out["vmaf"] = vmaf_score(ref, dec, spec.vmaf_subsample) if spec.vmaf and vmaf_status(True)[0] else math.nan
    status = perceptual_status(spec)
    out["lpips"] = _perceptual(_lpips_model(spec.lpips_weights), ref, dec, True) if status["lpips"][0] else math.nan
    out["dists"] = _perceptual(_dists_model(spec.dists_weights), ref, dec, False) if status["dists"][0] else math.nan
    return out
