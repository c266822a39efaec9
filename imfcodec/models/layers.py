"""Building blocks for the IMF model, in plain PyTorch (no custom CUDA ops).

The StyleGAN2-style layers (equalized learning rate, modulated/demodulated convolution) are
used where the paper uses them: the latent token encoder E_T and the token decoder IMF_D.
The dense feature encoder E_F and the frame decoder D_F use ordinary convolutions in small
residual blocks without normalisation: batch sizes on a CPU are tiny, so BatchNorm statistics
would be noisy and would make train and eval behaviour differ.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

LRELU_GAIN = math.sqrt(2.0)


def randn(*shape: int, divisor: float = 1.0) -> Tensor:
    """``torch.randn(*shape) / divisor`` (the same values), except on the meta device, where the
    weights loader builds a model to check shapes (``zoo._check_shapes``): there it stays uninitialised,
    because torch's meta kernels for ``normal_`` and scalar arithmetic import torch._dynamo and sympy
    (about 120 MB of a decoder's memory)."""
    t = torch.empty(*shape)
    if t.is_meta:
        return t
    t.normal_()
    return t if divisor == 1.0 else t.div_(divisor)


def lrelu(x: Tensor, gain: float = LRELU_GAIN) -> Tensor:
    """Leaky ReLU (slope 0.2) rescaled so activations keep unit variance (StyleGAN convention)."""
    return F.leaky_relu(x, 0.2) * gain


class EqualLinear(nn.Module):
    """Linear layer with equalized learning rate: weights are stored N(0,1)/lr_mul and scaled
    at run time, so Adam sees every layer with the same effective step size."""

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        bias: bool = True,
        bias_init: float = 0.0,
        lr_mul: float = 1.0,
        activation: bool = False,
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(randn(out_dim, in_dim, divisor=lr_mul))
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init))) if bias else None
        self.scale = lr_mul / math.sqrt(in_dim)
        self.lr_mul = lr_mul
        self.activation = activation

    def forward(self, x: Tensor) -> Tensor:
        bias = self.bias * self.lr_mul if self.bias is not None else None
        out = F.linear(x, self.weight * self.scale, bias)
        return lrelu(out) if self.activation else out


class EqualConv2d(nn.Module):
    """Conv2d with equalized learning rate (weights scaled by 1/sqrt(fan_in) at run time)."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel: int,
        stride: int = 1,
        padding: int | None = None,
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(randn(out_ch, in_ch, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(out_ch)) if bias else None
        self.scale = 1.0 / math.sqrt(in_ch * kernel * kernel)
        self.stride = stride
        self.padding = kernel // 2 if padding is None else padding

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight * self.scale, self.bias, self.stride, self.padding)


class ConvLayer(nn.Module):
    """EqualConv2d (+ optional 2x downsampling by stride) + bias + scaled leaky ReLU."""

    def __init__(
        self, in_ch: int, out_ch: int, kernel: int, downsample: bool = False, activate: bool = True
    ) -> None:
        super().__init__()
        self.conv = EqualConv2d(in_ch, out_ch, kernel, stride=2 if downsample else 1, bias=True)
        self.activate = activate

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv(x)
        return lrelu(out) if self.activate else out


class ResBlock(nn.Module):
    """StyleGAN2 discriminator-style residual block that halves the resolution (used by E_T)."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv1 = ConvLayer(in_ch, in_ch, 3)
        self.conv2 = ConvLayer(in_ch, out_ch, 3, downsample=True)
        self.skip = EqualConv2d(in_ch, out_ch, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv2(self.conv1(x))
        skip = self.skip(F.avg_pool2d(x, 2))
        return (out + skip) / math.sqrt(2.0)


class ModulatedConv2d(nn.Module):
    """Style-modulated convolution (StyleGAN2): per-sample input-channel scales from the style
    vector, optional demodulation (unit output variance), executed as one grouped conv over
    the batch. ``upsample`` doubles the resolution with bilinear interpolation first (simpler
    and cheaper on CPU than a transposed conv + blur)."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel: int,
        style_dim: int,
        demodulate: bool = True,
        upsample: bool = False,
    ) -> None:
        super().__init__()
        self.in_ch, self.out_ch, self.kernel = in_ch, out_ch, kernel
        self.weight = nn.Parameter(randn(1, out_ch, in_ch, kernel, kernel))
        self.scale = 1.0 / math.sqrt(in_ch * kernel * kernel)
        self.modulation = EqualLinear(style_dim, in_ch, bias_init=1.0)
        self.demodulate = demodulate
        self.upsample = upsample

    def forward(self, x: Tensor, style: Tensor, fast: bool = False) -> Tensor:
        if fast:
            return self._forward_fast(x, style)
        b = x.shape[0]
        if self.upsample:
            x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
        s = self.modulation(style).view(b, 1, self.in_ch, 1, 1)
        w = self.weight * self.scale * s  # [B, out, in, k, k]
        if self.demodulate:
            w = w * torch.rsqrt(w.pow(2).sum(dim=(2, 3, 4), keepdim=True) + 1e-8)
        h, wd = x.shape[-2:]
        if b == 1:
            return F.conv2d(x, w[0], padding=self.kernel // 2)
        w = w.reshape(b * self.out_ch, self.in_ch, self.kernel, self.kernel)
        out = F.conv2d(x.reshape(1, b * self.in_ch, h, wd), w, padding=self.kernel // 2, groups=b)
        return out.view(b, self.out_ch, h, wd)

    def _forward_fast(self, x: Tensor, style: Tensor) -> Tensor:
        """The same modulated convolution with the style applied to the activations instead of the
        weights (StyleGAN2's non-fused form): scale the input channels, convolve the whole batch with
        the shared weight, scale the output channels by the demodulation factors. A grouped convolution
        with per-sample weights is several times slower per frame on CPU, and channels-last inputs stay
        channels-last. Equal to ``forward`` up to float rounding."""
        b = x.shape[0]
        w = self.weight[0] * self.scale  # [out, in, k, k]
        s = self.modulation(style)  # [B, in]
        x = x * s.view(b, self.in_ch, 1, 1)  # before upsampling: a per-channel scale commutes with it
        if self.upsample:
            x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
        out = F.conv2d(x, w, padding=self.kernel // 2)
        if self.demodulate:  # rsqrt(sum_{i,k,k} (w s_i)^2 + eps) per sample and output channel
            d = torch.rsqrt(torch.matmul(s * s, w.pow(2).sum(dim=(2, 3)).t()) + 1e-8)  # [B, out]
            out = out * d.view(b, self.out_ch, 1, 1)
        return out


class StyledConv(nn.Module):
    """Modulated conv + bias + scaled leaky ReLU. No noise injection: a codec decoder must be
    deterministic, and the token alone should explain the frame."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel: int,
        style_dim: int,
        upsample: bool = False,
        demodulate: bool = True,
        activate: bool = True,
    ) -> None:
        super().__init__()
        self.conv = ModulatedConv2d(in_ch, out_ch, kernel, style_dim, demodulate, upsample)
        self.bias = nn.Parameter(torch.zeros(1, out_ch, 1, 1))
        self.activate = activate

    def forward(self, x: Tensor, style: Tensor, fast: bool = False) -> Tensor:
        out = self.conv(x, style, fast) + self.bias
        return lrelu(out) if self.activate else out


def conv3x3(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1)


class DownConvResBlock(nn.Module):
    """Residual block that halves the resolution (E_F): conv3x3/2 -> act -> conv3x3, plus a
    pooled 1x1 shortcut."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv1 = conv3x3(in_ch, out_ch, stride=2)
        self.conv2 = conv3x3(out_ch, out_ch)
        self.skip = nn.Conv2d(in_ch, out_ch, 1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv2(F.leaky_relu(self.conv1(x), 0.2))
        return F.leaky_relu(h + self.skip(F.avg_pool2d(x, 2)), 0.2)


class UpConvResBlock(nn.Module):
    """Residual block that doubles the resolution (D_F): bilinear x2 -> conv3x3 -> act ->
    conv3x3, plus a 1x1 shortcut of the upsampled input."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv1 = conv3x3(in_ch, out_ch)
        self.conv2 = conv3x3(out_ch, out_ch)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
        h = self.conv2(F.leaky_relu(self.conv1(x), 0.2))
        return F.leaky_relu(h + self.skip(x), 0.2)


class FeatResBlock(nn.Module):
    """Same-resolution residual refinement block (D_F's processing of aligned features)."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv1 = conv3x3(ch, ch)
        self.conv2 = conv3x3(ch, ch)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv2(F.leaky_relu(self.conv1(F.leaky_relu(x, 0.2)), 0.2))
        return x + h
