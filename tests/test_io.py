"""Tests of imfcodec.io: probing, reading quirky inputs, writers, atomicity, the demo clip."""

from __future__ import annotations

import struct
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from helpers import timed_clip, video_times, write_video
from imfcodec.errors import InputError
from imfcodec.io import VideoWriter, make_sample, prepare_frame, probe_video, read_frames, sample_frames

DATA = Path(__file__).resolve().parents[1].parent / "shared/data/talking-heads"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason="shared talking-head clips not available")


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def gradient(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth colourful test image (codec friendly) with a small per-seed shift."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    r = 128 + 100 * np.sin((x + seed) / 11.0)
    g = 128 + 100 * np.cos((y - seed) / 13.0)
    b = 128 + 60 * np.sin((x + y) / 17.0)
    return np.clip(np.stack([r, g, b], -1), 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------- shared clips


@needs_data
@pytest.mark.parametrize(
    "name, width, height, fps_assumed",
    [
        ("test/openh264_foreman_cif_I_CABAC.264", 352, 288, True),
        ("test/grid_swiz3n.mpg", 360, 288, False),
        ("test/retalking_face5.mp4", 524, 524, False),
        ("train/liveportrait_d13.mp4", 720, 1280, False),
    ],
)
def test_read_shared_clips(name: str, width: int, height: int, fps_assumed: bool) -> None:
    path = DATA / name
    info = probe_video(path)
    assert (info.width, info.height) == (width, height)
    assert info.fps == 25 or not fps_assumed
    assert info.fps_assumed is fps_assumed
    assert isinstance(info.fps, Fraction) and info.fps > 0
    frames = list(read_frames(path, 64, max_frames=3))
    assert len(frames) == 3
    for f in frames:
        assert f.shape == (64, 64, 3) and f.dtype == np.uint8 and f.flags.c_contiguous
    assert frames[0].std() > 5  # real picture content, not a blank conversion


@needs_data
def test_read_is_streaming_and_stops_at_max_frames() -> None:
    it = read_frames(DATA / "test/grid_swiz3n.mpg", 32, max_frames=2)
    assert next(it).shape == (32, 32, 3)
    assert len(list(it)) == 1
    assert list(read_frames(DATA / "test/grid_swiz3n.mpg", 32, max_frames=0)) == []


# ----------------------------------------------------------------------------- prepare_frame


def test_prepare_frame_centre_crop_and_resize() -> None:
    img = np.zeros((50, 100, 3), np.uint8)
    img[:, :25] = (255, 0, 0)
    img[:, 25:75] = (0, 255, 0)
    img[:, 75:] = (0, 0, 255)
    before = img.copy()
    out = prepare_frame(img, 20)
    assert out.shape == (20, 20, 3) and out.dtype == np.uint8
    assert np.all(out[:, :, 1] >= 250) and out[:, :, [0, 2]].max() <= 5  # only the green centre
    assert np.array_equal(img, before)  # pure
    assert np.array_equal(out, prepare_frame(img, 20))  # deterministic
    # same size: an exact crop, no resampling
    assert np.array_equal(prepare_frame(img, 50), img[:, 25:75])
    # portrait input crops vertically
    assert prepare_frame(np.ascontiguousarray(img.transpose(1, 0, 2)), 20)[:, :, 1].min() >= 250


def test_prepare_frame_non_square_pixels() -> None:
    # 100x50 coded with SAR 1:2 is 50x50 on screen: the whole picture is the square.
    img = np.zeros((50, 100, 3), np.uint8)
    img[:, :50] = 255
    out = prepare_frame(img, 10, pixel_aspect=Fraction(1, 2))
    assert out[:, :4].min() >= 250 and out[:, 6:].max() <= 5


def test_prepare_frame_rejects_bad_input() -> None:
    with pytest.raises(InputError):
        prepare_frame(np.zeros((10, 10), np.uint8), 8)
    with pytest.raises(InputError):
        prepare_frame(np.zeros((10, 10, 3), np.float32), 8)
    with pytest.raises(InputError):
        prepare_frame(np.zeros((10, 10, 3), np.uint8), 0)


# ----------------------------------------------------------------------------- quirky inputs


def test_odd_size_10bit(tmp_path: Path) -> None:
    frames = [gradient(143, 175, s) for s in range(3)]
    path = write_video(tmp_path / "odd10.mkv", frames, "ffv1", "yuv420p10le")
    info = probe_video(path)
    assert (info.width, info.height) == (175, 143)
    assert info.pix_fmt == "yuv420p10le"
    out = list(read_frames(path, 143))
    assert len(out) == 3 and out[0].shape == (143, 143, 3)
    # same size: the crop is exact, only YUV 4:2:0 conversion error remains
    assert psnr(out[0], frames[0][:, 16:159]) > 30


def test_odd_size_10bit_hevc(tmp_path: Path) -> None:
    frames = [gradient(143, 175, s) for s in range(2)]  # x265 needs even sides for 4:2:0
    # Raw Annex-B: the point is the decoder at an odd 10-bit size. Muxing this stream into mp4 was
    # once refused by FFmpeg's muxer in CI ("not yet implemented"), not reproducibly; mp4 + 10-bit
    # HEVC stays covered by test_hostile.test_10_bit_video.
    path = write_video(tmp_path / "odd10.hevc", frames, "libx265", "yuv444p10le")
    assert probe_video(path).codec == "hevc"
    out = list(read_frames(path, 32))
    assert len(out) == 2 and out[1].shape == (32, 32, 3) and out[1].dtype == np.uint8


def test_one_frame_video(tmp_path: Path) -> None:
    path = write_video(tmp_path / "one.mp4", [gradient(64, 80)], "libx264", "yuv420p")
    info = probe_video(path)
    assert info.frames == 1 and (info.width, info.height) == (80, 64)
    assert len(list(read_frames(path, 16))) == 1


def test_zero_frame_files(tmp_path: Path) -> None:
    y4m = tmp_path / "empty.y4m"
    y4m.write_bytes(b"YUV4MPEG2 W64 H48 F25:1 Ip A1:1 C444\n")
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    for path in (y4m, empty):
        with pytest.raises(InputError):
            probe_video(path)
        with pytest.raises(InputError):
            list(read_frames(path, 16))


def test_not_a_video(tmp_path: Path) -> None:
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 50)
    with pytest.raises(InputError) as e:
        probe_video(text)
    assert "\n" not in str(e.value)
    with pytest.raises(InputError):
        read_frames(text, 16)
    with pytest.raises(InputError, match="not found"):
        probe_video(tmp_path / "missing.mp4")
    with pytest.raises(InputError):
        probe_video(tmp_path)


def test_audio_only(tmp_path: Path) -> None:
    path = tmp_path / "tone.wav"
    with av.open(str(path), "w") as c:
        s = c.add_stream("pcm_s16le", rate=8000, layout="mono")
        t = np.arange(800) / 8000
        samples = (3000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)[None, :]
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate = 8000
        for p in s.encode(frame):
            c.mux(p)
        for p in s.encode():
            c.mux(p)
    with pytest.raises(InputError, match="no video stream"):
        probe_video(path)
    with pytest.raises(InputError, match="no video stream"):
        read_frames(path, 16)


def _set_rotation(path: Path, out: Path) -> None:
    """Patch the mp4 track header matrix to 'display rotated 90 degrees clockwise' (phone portrait)."""
    data = bytearray(path.read_bytes())
    identity = struct.pack(">9I", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)
    at = data.find(identity, data.find(b"tkhd"))
    assert at > 0
    data[at : at + 36] = struct.pack(">9i", 0, 0x10000, 0, -0x10000, 0, 0, 0, 0, 0x40000000)
    out.write_bytes(bytes(data))


def test_rotation_metadata(tmp_path: Path) -> None:
    img = np.zeros((48, 64, 3), np.uint8)
    img[:16, :16] = 255  # white block at the top-left of the coded picture
    plain = write_video(tmp_path / "plain.mp4", [img, img], "libx264", "yuv444p")
    rotated = tmp_path / "rotated.mp4"
    _set_rotation(plain, rotated)
    info = probe_video(rotated)
    assert info.rotation == 270 and (info.width, info.height) == (48, 64)
    (frame,) = read_frames(rotated, 48, max_frames=1)
    # shown rotated clockwise: the block is now top-right; the 48x64 display is cropped to 48x48
    assert frame[:6, -14:].mean() > 200 and frame[:6, :14].mean() < 50 and frame[10:].mean() < 50


# ----------------------------------------------------------------------------- writers


def _frames(n: int = 4, size: int = 64) -> list[np.ndarray]:
    return list(sample_frames(n, size))


def _face_frames(n: int = 4) -> list[np.ndarray]:
    """Real 256x256 face frames (the codec's use case), or the demo clip without the shared data."""
    if DATA.is_dir():
        return list(read_frames(DATA / "test/dagan_driving.mp4", 256, max_frames=n))
    return list(sample_frames(n, 256))


def test_png_folder_round_trip_exact(tmp_path: Path) -> None:
    frames = _frames(3)
    out = tmp_path / "frames"
    with VideoWriter(str(out) + "/", 25, 64, 64) as w:
        for f in frames:
            w.write(f)
    assert sorted(p.name for p in out.iterdir()) == ["frame_000000.png", "frame_000001.png", "frame_000002.png"]
    from PIL import Image

    for i, f in enumerate(frames):
        assert np.array_equal(np.asarray(Image.open(out / f"frame_{i:06d}.png")), f)
    assert [p.name for p in tmp_path.iterdir()] == ["frames"]  # no temporary left


@pytest.mark.parametrize("suffix, min_psnr", [(".y4m", 50.0), (".mp4", 40.0), (".mkv", 42.0)])
def test_video_writers_round_trip(tmp_path: Path, suffix: str, min_psnr: float) -> None:
    frames = _face_frames(4)
    if not DATA.is_dir():
        min_psnr -= 3.0  # the demo clip is more detailed than a face crop; 4:2:0 caps it near 40 dB
    path = tmp_path / f"out{suffix}"
    with VideoWriter(path, Fraction(25), 256, 256) as w:
        for f in frames:
            w.write(f)
    info = probe_video(path)
    assert info.fps == 25 and (info.width, info.height) == (256, 256)
    back = list(read_frames(path, 256))
    assert len(back) == len(frames)
    for a, b in zip(frames, back):
        assert psnr(a, b) > min_psnr
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


@pytest.mark.parametrize("suffix", [".mp4", ".mkv", ".y4m", "/"])
def test_writer_keeps_per_frame_times_where_the_format_can(tmp_path: Path, suffix: str) -> None:
    """mp4 and mkv place each frame at its time for its duration (the file lasts as long as its source);
    y4m and PNGs cannot, and play the frames at ``fps``."""
    ms = Fraction(1, 1000)
    durations = [40, 80, 33, 250, 40, 557]
    path = tmp_path / f"out{suffix}" if suffix != "/" else str(tmp_path / "png") + "/"
    with VideoWriter(path, Fraction(6), 64, 64, time_base=ms) as w:
        pts = 0
        for i, d in enumerate(durations):
            w.write(gradient(64, 64, i), pts, d)
            pts += d
    assert w.keeps_timing == (suffix in (".mp4", ".mkv"))
    if suffix == "/":
        return
    times, end, duration = video_times(Path(path))
    if w.keeps_timing:
        assert times == [Fraction(sum(durations[:i]), 1000) for i in range(6)] and end == 1
        assert duration == pytest.approx(1.0, abs=0.002)
    else:
        assert times == [Fraction(i, 6) for i in range(6)] and end == 1 and duration == 1
    with pytest.raises(InputError, match="needs each frame's pts and duration"):
        with VideoWriter(tmp_path / "x.mkv", 25, 64, 64, time_base=ms) as w:
            w.write(gradient(64, 64))


def test_source_records_the_timestamps_it_hands_out(tmp_path: Path) -> None:
    from imfcodec.io import open_video

    ms = Fraction(1, 1000)
    src = timed_clip(tmp_path / "vfr.mkv", [0, 40, 60, 200, 210], ms, 300)
    with open_video(src) as v:
        assert len(list(v.frames(32))) == 5
        t = v.timing.finish()
    assert t.time_base == ms and list(t.durations) == [40, 20, 140, 10, 300]
    with open_video(src) as v:  # --frames: only the frames read, the last one for its own duration
        assert len(list(v.frames(32, max_frames=3))) == 3
        assert list(v.timing.finish().durations) == [40, 20, 140]
    cfr = timed_clip(tmp_path / "ntsc.mp4", [1001 * i for i in range(10)], Fraction(1, 30000), 1001,
                     rate=Fraction(30000, 1001))
    with open_video(cfr) as v:
        assert v.info.fps == Fraction(30000, 1001) and len(list(v.frames(32))) == 10
        assert v.timing.finish() is None  # a constant rate: nothing to keep


def test_writer_atomic_on_exception(tmp_path: Path) -> None:
    for name in ("a.mp4", "b.y4m", "c/"):
        with pytest.raises(RuntimeError):
            with VideoWriter(tmp_path / name if not name.endswith("/") else str(tmp_path / name), 25, 32, 32) as w:
                w.write(np.zeros((32, 32, 3), np.uint8))
                raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_writer_replaces_only_on_close(tmp_path: Path) -> None:
    path = tmp_path / "out.y4m"
    path.write_bytes(b"old")
    w = VideoWriter(path, 25, 16, 16)
    w.write(np.zeros((16, 16, 3), np.uint8))
    assert path.read_bytes() == b"old"
    w.close()
    assert path.read_bytes().startswith(b"YUV4MPEG2")
    assert [p.name for p in tmp_path.iterdir()] == ["out.y4m"]


def test_writer_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="unknown output"):
        VideoWriter(tmp_path / "out.avi", 25, 16, 16)
    src = tmp_path / "in.mp4"
    src.write_bytes(b"input")
    with pytest.raises(InputError, match="input"):
        VideoWriter(src, 25, 16, 16, protect=[src])
    with pytest.raises(InputError):
        VideoWriter(src, 25, 16, 16, overwrite=False)
    full = tmp_path / "full"
    full.mkdir()
    (full / "x.txt").write_text("x")
    with pytest.raises(InputError, match="not empty"):
        VideoWriter(full, 25, 16, 16)
    with pytest.raises(InputError):
        VideoWriter(tmp_path / "x.mp4", 0, 16, 16)
    w = VideoWriter(tmp_path / "y.mp4", 25, 16, 16)
    with pytest.raises(InputError):
        w.write(np.zeros((16, 17, 3), np.uint8))
    with pytest.raises(InputError, match="no frames"):
        w.close()  # nothing written: nothing is created
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full", "in.mp4"]
    assert src.read_bytes() == b"input"


def test_writer_odd_size_mp4_falls_back_to_444(tmp_path: Path) -> None:
    img = gradient(21, 35)
    with VideoWriter(tmp_path / "odd.mp4", 30, 35, 21) as w:
        w.write(img)
    assert probe_video(tmp_path / "odd.mp4").pix_fmt == "yuv444p"


# ----------------------------------------------------------------------------- sample clip


def test_make_sample(tmp_path: Path) -> None:
    path = make_sample(tmp_path / "sample.mp4", frames=8, size=64, fps=25)
    info = probe_video(path)
    assert (info.width, info.height, info.frames, info.fps) == (64, 64, 8, 25)
    frames = list(read_frames(path, 64))
    assert len(frames) == 8
    diffs = [np.abs(frames[i].astype(int) - frames[i + 1]).mean() for i in range(7)]
    assert min(diffs) > 0.2  # everything moves
    assert frames[0].std() > 20


def test_sample_frames_deterministic() -> None:
    a = list(sample_frames(3, 48))
    b = list(sample_frames(3, 48))
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert all(f.shape == (48, 48, 3) and f.dtype == np.uint8 for f in a)


@pytest.mark.parametrize("shape", [(143, 175), (175, 143), (53, 48), (480, 512), (7, 1)])
@pytest.mark.parametrize("par", [Fraction(48, 53), Fraction(53, 48), Fraction(15, 16), Fraction(3)])
def test_prepare_frame_non_square_pixels_never_overruns(shape, par):
    """Regression (atheris): float rounding of the crop box used to exceed the image by an epsilon."""
    out = prepare_frame(np.zeros((*shape, 3), np.uint8), 64, par)
    assert out.shape == (64, 64, 3)
