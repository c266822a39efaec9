"""Shared fixtures: a tiny seeded model, a short sample clip and the hostile-input streams, made once per
session."""

from __future__ import annotations

import os
from dataclasses import dataclass
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
    """The sample clip coded by the tiny model (no token search: what it costs is not the point here)."""
    from imfcodec.api import encode_video
    from imfcodec.codec import EncoderSettings

    out = tmp_path_factory.mktemp("stream") / "s.imf"
    encode_video(sample_clip, out, model=tiny, settings=EncoderSettings(keyint=6, chunk=3, search_iters=0))
    return out


@pytest.fixture(scope="module")
def one_torch_thread():
    """Small tensors: one thread is fastest, and the only sane choice on a loaded 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# (key codec, keyint, chunk, quality) of the hostile streams: their packets cover every layout (K, T of
# 1..3 frames, several keys)
HOSTILE_BASES = {
    "hevc": dict(key_codec="hevc", keyint=4, chunk=2),
    "png": dict(key_codec="png", keyint=3, chunk=3, quality=9),
    "webp": dict(key_codec="webp", keyint=0, chunk=1, quality=3),
    "av1": dict(key_codec="av1", keyint=5, chunk=3),
}


@pytest.fixture(scope="session")
def hostile_clip(tmp_path_factory) -> Path:
    from helpers import N_FRAMES
    from imfcodec.io import make_sample

    path = tmp_path_factory.mktemp("hostile") / "clip.mp4"
    make_sample(path, frames=N_FRAMES, size=64, fps=25)
    return path


@pytest.fixture(scope="session")
def streams(hostile_clip, tiny, tmp_path_factory) -> dict[str, bytes]:
    """One valid stream per entry of HOSTILE_BASES, for the tests/test_hostile_*.py modules to damage."""
    from imfcodec.api import encode_video
    from imfcodec.codec import EncoderSettings

    folder = tmp_path_factory.mktemp("streams")
    out = {}
    for name, kw in HOSTILE_BASES.items():
        path = folder / f"{name}.imf"
        encode_video(hostile_clip, path, model=tiny, settings=EncoderSettings(search_iters=0, **kw))
        out[name] = path.read_bytes()
    return out


@pytest.fixture(scope="session")
def hevc_stream(streams, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("hevc") / "s.imf"
    path.write_bytes(streams["hevc"])
    return path


# hybrid mode (format version 2, without the encoder's guard): the seeded untrained enhancer and one stream of the
# hostile clip, key frames 0 and 4 and one frame per base packet, so its records are H, K0, B0..B3, K4, B4..B7, E
HYBRID = dict(base_codec="hevc", base_factor=2, keyint=4, key_codec="png", chunk=1, guard=False, lean=False)
ENH_TINY = "random:enh-tiny"

# the hybrid mode's hostile streams, as HOSTILE_BASES for the token mode: every base codec, base packets of
# 1..3 frames, one or several key frames (the first is HYBRID, the stream of ``hybrid_stream``); the others with
# the guard and lean base records, as `imfcodec encode` makes them (format version 5: a flags byte in the header,
# no frame index in base records, a CRC-16), the last with the key pictures in the AV1 base layer
HYBRID_BASES = {
    "hevc": HYBRID,
    "vp9": dict(base_codec="vp9", base_factor=2, keyint=3, key_codec="webp", chunk=2, key_quality=3),
    "av1": dict(base_codec="av1", base_factor=4, keyint=0, key_codec="hevc", chunk=3),
    "av1-intra": dict(base_codec="av1", base_factor=2, keyint=3, chunk=2),
}


@pytest.fixture(scope="session")
def enh_tiny():
    from imfcodec.zoo import load_model

    return load_model(ENH_TINY)


@pytest.fixture(scope="session")
def hybrid_streams(hostile_clip, enh_tiny, tmp_path_factory) -> dict[str, bytes]:
    """One valid hybrid stream per entry of HYBRID_BASES, for the hostile tests to damage."""
    from imfcodec.api import encode_video
    from imfcodec.codec import EncoderSettings

    folder = tmp_path_factory.mktemp("hybrid_streams")
    out = {}
    for name, kw in HYBRID_BASES.items():
        path = folder / f"{name}.imf"
        encode_video(hostile_clip, path, model=enh_tiny, settings=EncoderSettings(**kw))
        out[name] = path.read_bytes()
    return out


@pytest.fixture(scope="session")
def hybrid_stream(hybrid_streams, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("hybrid") / "h.imf"
    path.write_bytes(hybrid_streams["hevc"])
    return path


# ------------------------------------------------------------------------------------------ both modes
# Tests that take ``mode`` run once per mode: the token mode (format version 1) and the default hybrid mode
# (format version 2 for its first stream, 4 for the guarded ones), each with its tiny seeded network and its
# hostile streams.

MODES = ("token", "hybrid")


@dataclass(frozen=True)
class Mode:
    """What a test needs to run the same check in either mode."""

    name: str  # "token" or "hybrid"
    model: object  # the loaded tiny network (zoo.LoadedModel) its streams decode with
    spec: str  # that network as the CLI names it (random:NAME)
    streams: dict  # name -> bytes of one valid stream of the hostile clip (HOSTILE_BASES / HYBRID_BASES)
    version: int  # the format version of its first stream (``stream``)
    encode_args: tuple  # `imfcodec encode` options for a fast encode in this mode with the tiny network
    settings: dict  # the same as EncoderSettings(**settings) for imfcodec.api.encode_video

    @property
    def stream(self) -> bytes:
        """The first stream: several key frames and packets of one or two frames."""
        return next(iter(self.streams.values()))

    @property
    def hybrid(self) -> bool:
        return self.name == "hybrid"


@pytest.fixture(scope="session", params=MODES)
def mode(request) -> Mode:
    if request.param == "token":
        return Mode("token", request.getfixturevalue("tiny"), TINY, request.getfixturevalue("streams"), 1,
                    ("--model", TINY, "--key-codec", "png", "--refine", 0), dict(key_codec="png", search_iters=0))
    return Mode("hybrid", request.getfixturevalue("enh_tiny"), ENH_TINY, request.getfixturevalue("hybrid_streams"),
                2, ("--enhancer", ENH_TINY, "--key-codec", "png"),  # the CLI's default base layer: vp9 at 1/2
                dict(key_codec="png", base_codec="vp9"))


@pytest.fixture
def mode_stream(mode, tmp_path) -> Path:
    """The mode's first stream as a file."""
    path = tmp_path / f"{mode.name}.imf"
    path.write_bytes(mode.stream)
    return path
