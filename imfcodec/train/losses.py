"""Training losses: reconstruction (L1, VGG19 perceptual, MS-SSIM), hinge GAN with feature
matching, and the token rate term.

Generator loss (every weight configurable; a weight of 0 skips that term's computation):

    L_G = w_l1 * L1 + w_perceptual * VGG + w_ms_ssim * (1 - MS-SSIM)
          + w_gan * hinge_G + w_feat_match * FM + lambda_rate * R

The paper uses 10 * L1 + 10 * VGG + 1 * GAN. VGG19 ImageNet weights cannot be downloaded on the
machines this was built on, so the perceptual term runs only when a local torchvision-layout
VGG19 file is given. The weight-free fallback is discriminator feature matching (pix2pixHD-style
L1 between the discriminator's intermediate features of real and generated frames: a learned
perceptual distance) plus MS-SSIM (structure at several scales, no learned weights at all).

Rate: R = bits per frame of the quantized current token, coded as a delta against the reference
token (the codec codes the delta to the previous token). The model is the entropy module's
``TokenRateModel``: per channel a zero-mean Gaussian with a learnable std, discretised to integer
quantization steps -- the same family as the coder's tables, so R is what the bitstream pays up to
table rounding. The trainer computes it (it needs the tokens) and passes ``bits`` in here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from imfcodec.errors import WeightsError
from imfcodec.metrics import ms_ssim_torch

# torchvision vgg19().features indices of relu1_1, relu2_1, relu3_1, relu4_1, relu5_1
VGG19_RELU_X_1 = (1, 6, 11, 20, 29)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class LossWeights:
    l1: float = 10.0
    perceptual: float = 10.0
    ms_ssim: float = 0.0
    gan: float = 1.0
    feat_match: float = 0.0
    rate: float = 0.0


# ---------------------------------------------------------------------------- perceptual


def load_state_dict_file(path: str | os.PathLike) -> dict[str, Tensor]:
    """A tensor dict from .safetensors or a torch file, never unpickling arbitrary objects."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:
        raise WeightsError(f"cannot read weights {path}: {type(e).__name__}: {str(e)[:120]}") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise WeightsError(f"{path} does not hold a state dict")
    return state


class VGG19Features(nn.Module):
    """Frozen VGG19 trunk up to relu5_1, from a local torchvision-layout weights file
    (keys ``features.N.weight``/``features.N.bias``; classifier keys are ignored)."""

    def __init__(self, weights: str | os.PathLike) -> None:
        super().__init__()
        from torchvision.models.vgg import cfgs, make_layers

        state = load_state_dict_file(weights)
        feats = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
        # vgg19().features without building (and randomly initialising) the 120M-weight classifier
        # (built on the meta device: no time wasted on a random init that is overwritten)
        with torch.device("meta"):
            trunk = make_layers(cfgs["E"])[: VGG19_RELU_X_1[-1] + 1]
        wanted = trunk.state_dict()
        missing = sorted(set(wanted) - set(feats))
        if missing:
            raise WeightsError(f"{weights}: not a torchvision VGG19 state dict (missing features.{missing[0]})")
        bad = [k for k in wanted if tuple(feats[k].shape) != tuple(wanted[k].shape)]
        if bad:
            raise WeightsError(f"{weights}: features.{bad[0]} has shape {tuple(feats[bad[0]].shape)}, "
                               f"VGG19 wants {tuple(wanted[bad[0]].shape)}")
        trunk.load_state_dict({k: feats[k].float().contiguous() for k in wanted}, assign=True)
        self.trunk = trunk.eval().requires_grad_(False)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def train(self, mode: bool = True) -> "VGG19Features":  # always frozen and in eval mode
        return super().train(False)

    def forward(self, x: Tensor) -> list[Tensor]:
        h = (x - self.mean) / self.std
        out = []
        for i, layer in enumerate(self.trunk):
            h = layer(h)
            if i in VGG19_RELU_X_1:
                out.append(h)
        return out


class PerceptualLoss(nn.Module):
    """Multi-scale VGG19 loss: L1 between relu{1..5}_1 features, summed over layers, averaged
    over a ``levels``-level image pyramid (full size, /2, /4, /8; levels under 16 px skipped)."""

    def __init__(self, weights: str | os.PathLike, levels: int = 4) -> None:
        super().__init__()
        self.vgg = VGG19Features(weights)
        self.levels = levels

    def forward(self, x_hat: Tensor, x: Tensor) -> Tensor:
        total = x_hat.new_zeros(())
        used = 0
        for lvl in range(self.levels):
            if lvl:
                x_hat = F.avg_pool2d(x_hat, 2)
                x = F.avg_pool2d(x, 2)
            if min(x.shape[-2:]) < 16:  # relu5_1 sits after four 2x poolings
                break
            with torch.no_grad():
                target = self.vgg(x)
            for fa, fb in zip(self.vgg(x_hat), target):
                total = total + (fa - fb).abs().mean()
            used += 1
        return total / max(used, 1)


# ---------------------------------------------------------------------------- GAN


def d_hinge_loss(real_out, fake_out) -> Tensor:
    """Discriminator hinge loss, averaged over scales."""
    losses = [F.relu(1.0 - r).mean() + F.relu(1.0 + f).mean() for (r, _), (f, _) in zip(real_out, fake_out)]
    return sum(losses) / len(losses)


def g_hinge_loss(fake_out) -> Tensor:
    """Generator hinge loss: -D(fake), averaged over scales."""
    return sum(-f.mean() for f, _ in fake_out) / len(fake_out)


def feature_matching_loss(real_out, fake_out) -> Tensor:
    """L1 between discriminator features of real (detached) and fake frames, averaged over
    scales and layers."""
    terms = [(ff - fr.detach()).abs().mean()
             for (_, fr_list), (_, ff_list) in zip(real_out, fake_out)
             for fr, ff in zip(fr_list, ff_list)]
    return sum(terms) / len(terms)


# ---------------------------------------------------------------------------- combined


class GeneratorLoss(nn.Module):
    """Weighted sum of the reconstruction terms; returns (total, {name: float}).

    The GAN, feature-matching and rate terms need inputs computed elsewhere (discriminator
    outputs, bits), so the trainer passes them in; a term whose weight is 0 is neither computed
    nor reported.
    """

    def __init__(self, weights: LossWeights, vgg_weights: str | os.PathLike | None = None,
                 vgg_levels: int = 4) -> None:
        super().__init__()
        self.w = weights
        self.perceptual = None
        if weights.perceptual > 0 and vgg_weights:
            self.perceptual = PerceptualLoss(vgg_weights, vgg_levels)

    @property
    def uses_discriminator(self) -> bool:
        return self.w.gan > 0 or self.w.feat_match > 0

    def forward(self, x_hat: Tensor, x: Tensor, fake_out=None, real_out=None,
                bits: Tensor | None = None) -> tuple[Tensor, dict[str, float]]:
        w = self.w
        parts: dict[str, Tensor] = {}
        total = x_hat.new_zeros((), dtype=torch.float32)
        if w.l1 > 0:
            parts["l1"] = (x_hat - x).abs().mean()
            total = total + w.l1 * parts["l1"]
        if w.perceptual > 0 and self.perceptual is not None:
            parts["perceptual"] = self.perceptual(x_hat, x)
            total = total + w.perceptual * parts["perceptual"]
        if w.ms_ssim > 0:
            # fp32 always: products of small powers are fragile in half precision
            val = ms_ssim_torch(x_hat.float(), x.float(), data_range=1.0, eps=1e-4)
            parts["ms_ssim"] = 1.0 - val.mean()
            total = total + w.ms_ssim * parts["ms_ssim"]
        if w.gan > 0 and fake_out is not None:
            parts["gan_g"] = g_hinge_loss(fake_out)
            total = total + w.gan * parts["gan_g"]
        if w.feat_match > 0 and fake_out is not None and real_out is not None:
            parts["feat_match"] = feature_matching_loss(real_out, fake_out)
            total = total + w.feat_match * parts["feat_match"]
        if w.rate > 0 and bits is not None:
            parts["rate_bits"] = bits.mean()
            total = total + w.rate * parts["rate_bits"]
        return total, {k: float(v.detach()) for k, v in parts.items()}
