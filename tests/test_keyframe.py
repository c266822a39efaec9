"""Tests of imfcodec.keyframe: registry, round trips, quality ordering, corrupt payloads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from imfcodec.errors import CorruptStreamError, InputError, UnsupportedStreamError
from imfcodec.keyframe import KeyframeCodec, get_keyframe_codec, list_keyframe_codecs, register_keyframe_codec

DATA = Path(__file__).resolve().parents[1].parent / "shared/data/talking-heads"
NAMES = ["av1", "hevc", "png", "webp"]
# three increasing qualities per codec, and the PSNR the middle one must reach on a 256x256 face
QUALITIES = {"hevc": (15, 21, 27), "av1": (23, 33, 43), "webp": (50, 85, 95)}
MIN_PSNR = {"hevc": 34.0, "av1": 33.0, "webp": 33.0}


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


@pytest.fixture(scope="module")
def face() -> np.ndarray:
    """A real 256x256 talking-head frame (or the astronaut portrait without the shared data)."""
    clip = DATA / "test/dagan_driving.mp4"
    if clip.exists():
        from imfcodec.io import read_frames

        return next(read_frames(clip, 256, max_frames=1))
    from PIL import Image
    from skimage.data import astronaut

    return np.asarray(Image.fromarray(astronaut()[:300, 75:375]).resize((256, 256), Image.LANCZOS))


@pytest.fixture(scope="module")
def payloads(face: np.ndarray) -> dict[str, bytes]:
    return {n: get_keyframe_codec(n).encode(face, get_keyframe_codec(n).default_quality) for n in NAMES}


def test_registry() -> None:
    assert list_keyframe_codecs() == NAMES
    for name in NAMES:
        codec = get_keyframe_codec(name)
        assert isinstance(codec, KeyframeCodec) and codec.name == name
        lo, hi = codec.quality_range
        assert lo <= codec.default_quality <= hi
    with pytest.raises(UnsupportedStreamError) as e:
        get_keyframe_codec("jpeg-xl")
    assert all(n in str(e.value) for n in NAMES)


def test_register_custom_codec() -> None:
    @register_keyframe_codec
    class Raw:
        name = "test-raw"
        quality_range = (0, 0)
        default_quality = 0

        def encode(self, rgb: np.ndarray, quality: int) -> bytes:
            return rgb.tobytes()

        def decode(self, data: bytes, width: int, height: int) -> np.ndarray:
            return np.frombuffer(data, np.uint8).reshape(height, width, 3)

    try:
        assert get_keyframe_codec("test-raw").encode(np.zeros((1, 1, 3), np.uint8), 0) == b"\0\0\0"
        with pytest.raises(ValueError):

            @register_keyframe_codec
            class Other(Raw):  # same name, different class
                pass

    finally:
        from imfcodec.keyframe import registry

        registry._REGISTRY.pop("test-raw", None)


@pytest.mark.parametrize("name", ["hevc", "av1", "webp"])
def test_lossy_round_trip_quality_order(name: str, face: np.ndarray) -> None:
    codec = get_keyframe_codec(name)
    sizes, scores = [], []
    for q in QUALITIES[name]:
        data = codec.encode(face, q)
        out = codec.decode(data, 256, 256)
        assert out.shape == (256, 256, 3) and out.dtype == np.uint8
        sizes.append(len(data))
        scores.append(psnr(face, out))
    assert sizes == sorted(sizes) and scores == sorted(scores), (sizes, scores)
    assert scores[1] > MIN_PSNR[name]
    assert sizes[1] < 16_000  # a key frame, not a raw image


def test_png_exact(face: np.ndarray, payloads: dict[str, bytes]) -> None:
    codec = get_keyframe_codec("png")
    assert np.array_equal(codec.decode(payloads["png"], 256, 256), face)
    assert len(codec.encode(face, 9)) <= len(codec.encode(face, 0))


@pytest.mark.parametrize("name", NAMES)
def test_deterministic(name: str, face: np.ndarray, payloads: dict[str, bytes]) -> None:
    codec = get_keyframe_codec(name)
    assert codec.encode(face, codec.default_quality) == payloads[name]
    a = codec.decode(payloads[name], 256, 256)
    b = codec.decode(bytearray(payloads[name]), 256, 256)
    assert np.array_equal(a, b)


@pytest.mark.parametrize("name", NAMES)
def test_odd_size(name: str, face: np.ndarray) -> None:
    codec = get_keyframe_codec(name)
    img = np.ascontiguousarray(face[:143, :175])
    out = codec.decode(codec.encode(img, codec.default_quality), 175, 143)
    assert out.shape == (143, 175, 3)
    assert psnr(img, out) > 28


@pytest.mark.parametrize("name", NAMES)
def test_garbage_and_truncation_raise_corrupt(name: str, payloads: dict[str, bytes]) -> None:
    codec = get_keyframe_codec(name)
    data = payloads[name]
    rng = np.random.default_rng(7)
    bad = [b"", b"\0", rng.bytes(1), rng.bytes(64), rng.bytes(5000), data[:16] + rng.bytes(len(data) - 16)]
    bad += [data[:n] for n in (1, 4, 12, len(data) // 3, len(data) // 2, len(data) - 60, len(data) - 2, len(data) - 1)]
    for blob in bad:
        with pytest.raises(CorruptStreamError):
            codec.decode(blob, 256, 256)
    for w, h in [(128, 256), (256, 255), (0, 256), (-1, 5)]:
        with pytest.raises(CorruptStreamError):
            codec.decode(data, w, h)
    with pytest.raises(CorruptStreamError):
        codec.decode("not bytes", 256, 256)  # type: ignore[arg-type]


def test_hevc_payload_layout(payloads: dict[str, bytes]) -> None:
    data = payloads["hevc"]
    assert data.startswith((b"\0\0\0\x01\x40\x01", b"\0\0\x01\x40\x01"))  # in-band VPS first
    assert b"x265" not in data  # no encoder-info SEI
    # a flipped bit inside the slice fails the MD5 picture hash instead of decoding silently
    damaged = bytearray(data)
    damaged[len(data) // 2] ^= 0x10
    with pytest.raises(CorruptStreamError):
        get_keyframe_codec("hevc").decode(bytes(damaged), 256, 256)


@pytest.mark.parametrize("name", NAMES)
def test_bad_encode_arguments(name: str, face: np.ndarray) -> None:
    codec = get_keyframe_codec(name)
    lo, hi = codec.quality_range
    for q in (lo - 1, hi + 1, 1.5, "5", True):
        with pytest.raises(InputError):
            codec.encode(face, q)  # type: ignore[arg-type]
    for img in (face.astype(np.float32), face[..., 0], face[..., :2], np.zeros((0, 4, 3), np.uint8)):
        with pytest.raises(InputError):
            codec.encode(img, codec.default_quality)
