"""Scene-cut detection at the encoder: a key frame where the picture changes completely.

Why: a token frame and a hybrid frame are both drawn from the last key frame (the decoder moves the key
frame's content into place), so after a cut to another scene every decoded frame keeps showing the old one
(7-13 dB PSNR) until the next key frame. Conventional encoders insert an intra picture at a cut by
default (x265's ``--scenecut``); so does imfcodec, with a detector cheap enough to run on every frame of a
real-time encode (a 32x32 luma thumbnail and one mean absolute difference: 0.25 ms a 256x256 frame on
one CPU core) and blind to what the networks do, so a stream where no cut fires is unchanged.

The score is the mean absolute difference between the luma thumbnails (block means, BT.601 weights) of a
frame and the frame before it, in percent of the 8-bit range. Threshold chosen on the 65 training clips
(``python -m benchmarks.keyframes``): consecutive frames of an uncut clip score at most 6.5 (head motion,
blinks, lighting; 9.4 between frames two apart, as at half the frame rate); synthetic cuts (the last frame
of one training clip against the first of another, every ordered pair) score 13.4 or more in 99 % of the
pairs whose clips come from different sources, 10.1 at the lowest. The default threshold, 10
(``settings.DEFAULT_SCENECUT``, the CLI's ``--scenecut``), fires on none of the uncut clips' frames and on
every one of those cuts. Cuts between two clips of one source (the same studio and speaker) are missed
more often (14 % of them), and matter less: the picture hardly changes, which is what the detector
measures.
"""

from __future__ import annotations

import numpy as np

#: thumbnail side: fine enough to see a new scene, coarse enough to ignore a moving mouth or a blink
THUMB = 32
#: BT.601 luma weights (what the thumbnail averages)
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def thumbnail(rgb: np.ndarray) -> np.ndarray:
    """uint8 HxWx3 RGB -> float32 luma thumbnail of at most ``THUMB`` x ``THUMB`` block means (0..255).

    Blocks split the frame as evenly as integers allow, so any frame size works; a frame smaller than
    the thumbnail is kept at its own size.
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 RGB frame, got shape {rgb.shape}")
    y = rgb.astype(np.float32) @ _LUMA
    h, w = y.shape
    rows = np.linspace(0, h, min(THUMB, h) + 1).astype(np.int64)
    cols = np.linspace(0, w, min(THUMB, w) + 1).astype(np.int64)
    sums = np.add.reduceat(np.add.reduceat(y, rows[:-1], axis=0), cols[:-1], axis=1)
    return sums / np.outer(np.diff(rows), np.diff(cols)).astype(np.float32)


def cut_score(prev: np.ndarray, cur: np.ndarray) -> float:
    """How different two luma thumbnails (``thumbnail``) are: the mean absolute difference in percent of
    the 8-bit range (0 = identical, 100 = black against white)."""
    if prev.shape != cur.shape:
        raise ValueError(f"thumbnails differ in shape: {prev.shape} and {cur.shape}")
    return float(np.abs(prev - cur).mean()) * (100.0 / 255.0)


def is_cut(prev: np.ndarray, cur: np.ndarray, threshold: float) -> bool:
    """True when ``cur`` starts a new scene after ``prev`` (both thumbnails): its ``cut_score`` reaches
    ``threshold`` (> 0; a threshold of 0 means detection is off and never fires)."""
    return threshold > 0 and cut_score(prev, cur) >= threshold


class SceneCutDetector:
    """``is_cut`` over a stream: call it with every frame in order; it says whether that frame starts a
    new scene (never the first frame) and keeps the frame's thumbnail for the next call. A threshold of 0
    turns it off (no thumbnail is even made)."""

    def __init__(self, threshold: float) -> None:
        self.threshold = float(threshold)
        self.prev: np.ndarray | None = None

    def __call__(self, rgb: np.ndarray) -> bool:
        if self.threshold <= 0:
            return False
        thumb = thumbnail(rgb)
        prev, self.prev = self.prev, thumb
        return prev is not None and is_cut(prev, thumb, self.threshold)
