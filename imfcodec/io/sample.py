"""The built-in demo clip: the astronaut portrait with a simulated talking head (no download)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np

from ..errors import InputError
from ._common import _MAX_FPS, PathLike, _check_size
from .writer import VideoWriter

# Astronaut portrait (512x512): face centre and mouth in source pixels, found by eye.
_FACE_CENTRE = (225.0, 140.0)
_FACE_SIDE = 290.0
_MOUTH = (224.0, 146.0)


def _bilinear(src: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Sample float HxWxC ``src`` at float coordinates (pixel centres at integers), edge-clamped."""
    h, w = src.shape[:2]
    x = np.clip(x, 0, w - 1)
    y = np.clip(y, 0, h - 1)
    x0 = np.minimum(np.floor(x).astype(np.int64), w - 2)
    y0 = np.minimum(np.floor(y).astype(np.int64), h - 2)
    fx = (x - x0)[..., None]
    fy = (y - y0)[..., None]
    top = src[y0, x0] * (1 - fx) + src[y0, x0 + 1] * fx
    bottom = src[y0 + 1, x0] * (1 - fx) + src[y0 + 1, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy


def sample_frames(frames: int = 50, size: int = 256, fps: float | Fraction = 25) -> Iterator[np.ndarray]:
    """The demo clip's frames: the astronaut portrait with a simulated talking head.

    Smooth sums of sines (incommensurate periods of 1-4 s) drive a small translation (+-9 px),
    rotation (+-3 degrees) and zoom (+-4 %) of the face crop, and a jaw/lower-lip displacement
    (up to ~6 source px, syllable rate ~4.5 Hz) opens and closes the mouth. Pure numpy, float64,
    deterministic.
    """
    from skimage.data import astronaut  # bundled with scikit-image, no download

    frames = _check_size(frames, "frames")
    size = _check_size(size)
    rate = float(fps)
    if not 0 < rate <= _MAX_FPS:
        raise InputError(f"fps must be in (0, {_MAX_FPS}], got {fps}")
    src = astronaut().astype(np.float64)
    grid = (np.arange(size, dtype=np.float64) + 0.5) / size - 0.5
    gx, gy = np.meshgrid(grid, grid)
    tau = 2 * math.pi
    for i in range(frames):
        s = i / rate
        dx = 6 * math.sin(tau * s / 3.1) + 3 * math.sin(tau * s / 1.3 + 0.7)
        dy = 4 * math.sin(tau * s / 2.3 + 1.0) + 1.5 * math.sin(tau * s / 0.9)
        angle = math.radians(3.0 * math.sin(tau * s / 2.7 + 0.5))
        zoom = 1 + 0.04 * math.sin(tau * s / 3.7 + 2.0)
        side = _FACE_SIDE / zoom
        cos, sin = math.cos(angle), math.sin(angle)
        x = _FACE_CENTRE[0] + dx + side * (cos * gx - sin * gy) - 0.5
        y = _FACE_CENTRE[1] + dy + side * (sin * gx + cos * gy) - 0.5
        # Talking: pull the region under the mouth (lower lip, jaw) down; smooth, local.
        envelope = 0.6 + 0.4 * math.sin(tau * s / 1.7)
        opening = 6.0 * envelope * max(0.0, math.sin(tau * 4.5 * s)) ** 2
        mx, my = _MOUTH[0] + dx, _MOUTH[1] + dy
        weight = np.exp(-(((x - mx) / 28.0) ** 2) - ((y - my - 14.0) / 22.0) ** 2)
        below = 1 / (1 + np.exp(-(y - my) / 2.0))  # only below the lip line
        y = y - opening * weight * below
        out = _bilinear(src, x, y)
        yield np.clip(np.rint(out), 0, 255).astype(np.uint8)


def make_sample(path: PathLike, frames: int = 50, size: int = 256, fps: float | Fraction = 25) -> Path:
    """Write the demo clip (``sample_frames``) to ``path`` with ``VideoWriter``; returns the path.

    Written with ``reproducible=True``: the same arguments give the same bytes in any process (the
    conformance streams are coded from this clip)."""
    frames = _check_size(frames, "frames")
    size = _check_size(size)
    with VideoWriter(path, fps, size, size, reproducible=True) as writer:
        for rgb in sample_frames(frames, size, fps):
            writer.write(rgb)
    return writer.path
