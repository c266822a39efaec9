"""imfcodec.metrics against scikit-image / pytorch-msssim reference values."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.color import rgb2ycbcr
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from imfcodec import metrics as M
from imfcodec.errors import InputError

torch.set_num_threads(1)


def frames(n: int, size: int, noise: int = 12, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Smooth-ish images (so SSIM is not trivially ~1) plus a noisy copy."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    base = np.stack([np.sin(xx / 5.0 + k) * np.cos(yy / 7.0 - k) for k in range(3)], -1)
    a = np.stack([((base + 0.3 * i) % 1.0) * 255 for i in range(n)]).astype(np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-noise, noise + 1, a.shape), 0, 255).astype(np.uint8)
    return a, b


def to_t(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255.0


def test_psnr_matches_skimage_per_frame_and_mean():
    a, b = frames(3, 48)
    want = np.array([peak_signal_noise_ratio(x, y, data_range=255) for x, y in zip(a, b)])
    got = M.psnr(a, b, reduction="none")
    assert np.allclose(got, want, atol=1e-9)
    assert M.psnr(a, b) == pytest.approx(want.mean())
    assert M.psnr(a[0], b[0]) == pytest.approx(want[0])  # a single HxWx3 frame
    # float tensors in [0, 1] give the same values (no rounding involved here)
    assert np.allclose(M.psnr(to_t(a), to_t(b), reduction="none"), want, atol=1e-4)
    assert M.psnr(a, a) == M.PSNR_CAP


def test_psnr_y_matches_skimage_bt601():
    a, b = frames(2, 40)
    ya = np.stack([rgb2ycbcr(f)[..., 0] for f in a])
    yb = np.stack([rgb2ycbcr(f)[..., 0] for f in b])
    want = [peak_signal_noise_ratio(x, y, data_range=255) for x, y in zip(ya, yb)]
    assert np.allclose(M.psnr_y(a, b, reduction="none"), want, atol=1e-6)


def test_ssim_matches_skimage_gaussian():
    a, b = frames(2, 64)
    want = [structural_similarity(x, y, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                  data_range=255, channel_axis=-1) for x, y in zip(a, b)]
    assert np.allclose(M.ssim(a, b, reduction="none"), want, atol=1e-4)
    assert np.allclose(M.ssim(to_t(a), to_t(b), reduction="none"), want, atol=1e-4)
    assert M.ssim(a, a) == pytest.approx(1.0)


def test_ms_ssim_full_scale_matches_pytorch_msssim():
    from pytorch_msssim import ms_ssim

    a, b = frames(1, 192)
    want = float(ms_ssim(to_t(a).double(), to_t(b).double(), data_range=1.0))
    assert M.ms_ssim(a, b) == pytest.approx(want, abs=1e-6)
    assert M.ms_ssim_levels(192) == 5


def test_ms_ssim_small_frames_use_fewer_scales():
    assert [M.ms_ssim_levels(s) for s in (11, 22, 44, 64, 128, 160, 161, 256)] == [1, 2, 3, 3, 4, 4, 5, 5]
    a, b = frames(2, 64, noise=30)
    v = M.ms_ssim(a, b, reduction="none")
    assert v.shape == (2,) and np.all((0 < v) & (v < 1))
    assert M.ms_ssim(a, a) == pytest.approx(1.0)
    # one scale equals plain SSIM
    a1, b1 = frames(1, 16)
    assert M.ms_ssim(a1, b1) == pytest.approx(M.ssim(a1, b1), abs=1e-6)
    # differentiable torch version (as a training loss) has finite gradients
    x = to_t(a).requires_grad_(True)
    M.ms_ssim_torch(x, to_t(b), eps=1e-4).mean().backward()
    assert torch.isfinite(x.grad).all()


def test_frame_metrics_and_errors():
    a, b = frames(2, 32)
    out = M.frame_metrics(a, b)
    assert set(out) == {"psnr", "psnr_y", "ssim", "ms_ssim"}
    with pytest.raises(InputError):
        M.psnr(a, b[:1])
    with pytest.raises(InputError):
        M.psnr(a.astype(np.float32), b.astype(np.float32))
    with pytest.raises(InputError):
        M.psnr(a, to_t(b))
    with pytest.raises(InputError):
        M.ssim(a[:, :8, :8], b[:, :8, :8])
    with pytest.raises(InputError):
        M.psnr(a, b, reduction="sum")
