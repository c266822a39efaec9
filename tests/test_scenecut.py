"""The scene-cut detector (imfcodec.scenecut) on its own: thumbnails, scores, the streaming detector, and
real training-clip excerpts joined into a cut. Its effect on streams: test_codec.py and test_hybrid.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from helpers import gradient, two_scene_frames
from imfcodec.scenecut import THUMB, SceneCutDetector, cut_score, is_cut, thumbnail
from imfcodec.settings import DEFAULT_SCENECUT

TRAIN = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "talking-heads" / "train"


def test_thumbnail_is_block_means_of_luma_at_any_size():
    rgb = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    t = thumbnail(rgb)
    luma = rgb.astype(np.float64) @ [0.299, 0.587, 0.114]
    np.testing.assert_allclose(t, luma.reshape(THUMB, 8, THUMB, 8).mean(axis=(1, 3)), atol=1e-3)
    assert thumbnail(np.zeros((97, 53, 3), np.uint8)).shape == (THUMB, THUMB)
    assert thumbnail(np.full((8, 12, 3), 200, np.uint8)).shape == (8, 12)  # smaller than the thumbnail
    np.testing.assert_allclose(thumbnail(np.full((64, 64, 3), 200, np.uint8)), 200, atol=1e-3)
    with pytest.raises(ValueError, match="HxWx3"):
        thumbnail(np.zeros((64, 64), np.uint8))


def test_score_is_a_percent_of_the_range():
    black, white = np.zeros((64, 64, 3), np.uint8), np.full((64, 64, 3), 255, np.uint8)
    g = thumbnail(gradient(64, 64))
    assert cut_score(g, g) == 0.0
    assert cut_score(thumbnail(black), thumbnail(white)) == pytest.approx(100.0, abs=1e-3)
    assert is_cut(thumbnail(black), thumbnail(white), DEFAULT_SCENECUT)
    assert not is_cut(thumbnail(black), thumbnail(white), 0)  # 0 = off
    with pytest.raises(ValueError, match="differ in shape"):
        cut_score(g, g[:16])


def test_detector_fires_at_the_cut_only():
    frames = two_scene_frames(6, 6)
    detect = SceneCutDetector(DEFAULT_SCENECUT)
    assert [i for i, f in enumerate(frames) if detect(f)] == [6]
    off = SceneCutDetector(0)
    assert not any(off(f) for f in frames) and off.prev is None  # off: not even a thumbnail is made


def test_training_clip_excerpts_joined_make_one_cut():
    """Two real talking-head excerpts (12 frames each, as the 64x64 test model reads them): no cut inside
    either, one at the join."""
    from imfcodec.io import read_frames

    a, b = TRAIN / "liveportrait_d0.mp4", TRAIN / "lia_vox_obama.mov"
    if not (a.is_file() and b.is_file()):
        pytest.skip(f"shared training clips not found under {TRAIN}")
    frames = list(read_frames(a, 64, max_frames=12)) + list(read_frames(b, 64, max_frames=12))
    detect = SceneCutDetector(DEFAULT_SCENECUT)
    assert [i for i, f in enumerate(frames) if detect(f)] == [12]
