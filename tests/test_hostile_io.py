"""Hostile input, encoder input (issue #5, theme 4): files that are not videos, audio only, no frames,
one frame, odd sizes, 10-bit, variable frame rate, rotation, 4K and absurd sizes, in the token and the default
(hybrid) mode (``mode``: conftest.py)."""

from __future__ import annotations

import struct
from pathlib import Path

import av
import numpy as np
import pytest
from click.testing import CliRunner

from helpers import TINY, cli, fast_video, gradient, header_of, leftovers, one_line_error
from imfcodec.api import encode_video, iter_decoded
from imfcodec.cli import main
from imfcodec.codec import EncoderSettings
from imfcodec.errors import InputError

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def encode_cli(src: Path, tmp_path: Path, mode, *extra):
    out = tmp_path / "out.imf"
    return cli("encode", src, "-o", out, *mode.encode_args, *extra), out


@pytest.mark.parametrize("case", ["text", "audio", "empty_file", "header_only_y4m", "no_frames_mp4"])
def test_unusable_inputs_are_refused_with_one_line(case, mode, tmp_path):
    src = tmp_path / "in.mp4"
    if case == "text":
        src.write_text("this is not a video\n" * 50)
        needle = "not a readable video file"
    elif case == "audio":
        src = tmp_path / "tone.wav"
        with av.open(str(src), "w") as c:
            s = c.add_stream("pcm_s16le", rate=8000, layout="mono")
            samples = (3000 * np.sin(np.arange(800) / 3.0)).astype(np.int16)[None, :]
            frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
            frame.sample_rate = 8000
            for p in [*s.encode(frame), *s.encode()]:
                c.mux(p)
        needle = "no video stream"
    elif case == "empty_file":
        src.write_bytes(b"")
        needle = "not a readable video file"
    elif case == "header_only_y4m":
        src = tmp_path / "in.y4m"
        src.write_bytes(b"YUV4MPEG2 W64 H48 F25:1 Ip A1:1 C444\n")
        needle = "no frames"
    elif case == "no_frames_mp4":
        with av.open(str(src), "w") as c:
            s = c.add_stream("libx264", rate=25)
            s.width, s.height, s.pix_fmt = 64, 64, "yuv420p"
        needle = ""
    r, out = encode_cli(src, tmp_path, mode)
    one_line_error(r, needle)
    assert not out.exists() and leftovers(tmp_path) == []


def _encode_ok(src: Path, tmp_path: Path, mode, frames: int):
    r, out = encode_cli(src, tmp_path, mode)
    assert r.exit_code == 0, r.output
    h, got = header_of(out.read_bytes()), [f for _, fs in iter_decoded(out, model=mode.model) for f in fs]
    assert h.frames == frames == len(got) and (h.width, h.height) == (64, 64)
    assert bool(h.base_codec) == mode.hybrid  # a base layer in the header: the hybrid mode
    return h, got


def test_one_frame_video(tmp_path, mode):
    _encode_ok(fast_video(tmp_path / "one.mp4", [gradient(64, 80)], "libx264", "yuv420p"), tmp_path, mode, 1)


def test_odd_size_175x143(tmp_path, mode):
    frames = [gradient(143, 175, s) for s in range(3)]
    _encode_ok(fast_video(tmp_path / "odd.mkv", frames, "ffv1", "yuv420p"), tmp_path, mode, 3)


def test_10_bit_video(tmp_path, mode):
    frames = [gradient(72, 96, s) for s in range(3)]
    src = fast_video(tmp_path / "ten.mp4", frames, "libx265", "yuv420p10le")
    from imfcodec.io import probe_video

    assert probe_video(src).pix_fmt == "yuv420p10le"
    _encode_ok(src, tmp_path, mode, 3)


def test_variable_frame_rate(tmp_path, mode):
    frames = [gradient(64, 64, s) for s in range(6)]
    pts = [0, 40, 60, 200, 210, 400]  # ms: irregular gaps
    src = fast_video(tmp_path / "vfr.mkv", frames, "libx264", "yuv420p", pts=pts)
    h, _ = _encode_ok(src, tmp_path, mode, 6)  # every frame is coded once, in order
    assert 0 < h.fps_num / h.fps_den <= 1000


def test_rotated_video(tmp_path, mode):
    img = np.zeros((48, 64, 3), np.uint8)
    img[:16, :16] = 255  # white block at the top-left of the coded picture
    plain = fast_video(tmp_path / "plain.mp4", [img, img], "libx264", "yuv444p")
    data = bytearray(plain.read_bytes())
    identity = struct.pack(">9I", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)
    at = data.find(identity, data.find(b"tkhd"))
    data[at:at + 36] = struct.pack(">9i", 0, 0x10000, 0, -0x10000, 0, 0, 0, 0, 0x40000000)
    rotated = tmp_path / "rotated.mp4"
    rotated.write_bytes(bytes(data))
    _, frames = _encode_ok(rotated, tmp_path, mode, 2)
    key = frames[0].astype(float)  # the key frame: shown rotated clockwise, the block is top-right
    assert key[:8, -16:].mean() > 150 and key[:8, :16].mean() < 100


def test_large_frames(tmp_path, mode):
    big = np.zeros((2160, 3840, 3), np.uint8)
    big[:, 1500:2340] = 200
    _encode_ok(fast_video(tmp_path / "uhd.mp4", [big], "libx264", "yuv420p"), tmp_path, mode, 1)
    (tmp_path / "out.imf").unlink()
    # absurd sizes are refused from the header, before a frame is decoded (no 300 MB allocation)
    huge = tmp_path / "huge.y4m"
    huge.write_bytes(b"YUV4MPEG2 W10000 H10000 F25:1 Ip A1:1 C420jpeg\nFRAME\n" + bytes(4096))
    r, out = encode_cli(huge, tmp_path, mode)
    one_line_error(r, "10000x10000 frames are too large")
    assert not out.exists() and leftovers(tmp_path) == []
    with pytest.raises(InputError, match="too large"):
        encode_video(tmp_path / "uhd.mp4", tmp_path / "x.imf", model=mode.model, max_input_pixels=1920 * 1080,
                     settings=EncoderSettings(**mode.settings))


def test_debug_shows_the_traceback(tmp_path):
    txt = tmp_path / "t.mp4"
    txt.write_text("no")
    r = CliRunner().invoke(main, ["--debug", "encode", str(txt), "--model", TINY])
    assert isinstance(r.exception, InputError)
