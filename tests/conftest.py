"""Shared fixtures: a tiny seeded model and a short sample clip, made once per session."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: see imfcodec/cli.py

import pytest  # noqa: E402
import torch  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "talking-heads"
TINY = "random:imf-tiny"


@pytest.fixture(autouse=True, scope="session")
def _few_threads():
    """Two cores on CI: keep torch from oversubscribing when tests spawn subprocesses."""
    torch.set_num_threads(2)


@pytest.fixture(scope="session")
def sample_clip(tmp_path_factory) -> Path:
    from imfcodec.io import make_sample

    path = tmp_path_factory.mktemp("clip") / "sample.mp4"
    make_sample(path, frames=14, size=96, fps=25)
    return path


@pytest.fixture(scope="session")
def tiny():
    from imfcodec.zoo import load_model

    return load_model(TINY)


@pytest.fixture(scope="session")
def tiny_stream(tmp_path_factory, sample_clip, tiny) -> Path:
    from imfcodec.api import encode_video
    from imfcodec.codec import EncoderSettings

    out = tmp_path_factory.mktemp("stream") / "s.imf"
    encode_video(sample_clip, out, model=tiny, settings=EncoderSettings(keyint=6, chunk=3))
    return out
