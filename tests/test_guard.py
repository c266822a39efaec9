"""The hybrid encoder's guard (issue 25): the decode is never worse than its own base layer.

The encoder decodes what it sends and marks a base packet whose enhanced pictures are further from the
source than the upscaled base pictures (a 'b' record, format version 4); the decoder shows those frames
without the enhancer. Checked with the shipped enhancer (an untrained one returns the base exactly) on content
unlike its training data: per base packet, the default decode is not more than 0.1 dB below --no-enhance."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from imfcodec.api import encode_frames_to_file, iter_decoded
from imfcodec.bitstream import BasePacket, read_stream
from imfcodec.metrics import psnr
from imfcodec.settings import EncoderSettings

SIZE, FRAMES = 256, 10
COLOURS = np.array([[255, 255, 255], [255, 255, 0], [0, 255, 255], [0, 255, 0], [255, 0, 255], [255, 0, 0],
                    [0, 0, 255], [0, 0, 0]], np.uint8)


def bars(t: int) -> np.ndarray:
    x = ((np.arange(SIZE) + 3 * t) % SIZE) * 8 // SIZE
    return np.ascontiguousarray(np.broadcast_to(COLOURS[x][None], (SIZE, SIZE, 3)))


def noise(t: int) -> np.ndarray:
    rng = np.random.default_rng(t)
    return np.repeat(np.repeat(rng.integers(0, 256, (SIZE // 2, SIZE // 2, 3), dtype=np.uint8), 2, 0), 2, 1)


def text(t: int) -> np.ndarray:
    """Dark glyph-like strokes on a light page, scrolling up 2 px a frame."""
    rng = np.random.default_rng(7)
    page = np.full((SIZE * 2, SIZE, 3), 245, np.uint8)
    for row in range(8, SIZE * 2 - 12, 14):
        for col in range(6, SIZE - 8, 7):
            if rng.random() < 0.8:
                h, w = rng.integers(5, 10), rng.integers(1, 5)
                page[row:row + h, col:col + w] = 20
    return np.ascontiguousarray(page[2 * t:2 * t + SIZE])


def screen(t: int) -> np.ndarray:
    """A window with flat regions, sharp edges and a moving panel: screen content."""
    f = np.full((SIZE, SIZE, 3), (40, 44, 52), np.uint8)
    f[10:40, 10:246] = (60, 120, 200)
    f[60:200, 10 + 4 * t:120 + 4 * t] = (220, 220, 220)
    f[70:74, 20 + 4 * t:100 + 4 * t] = (30, 30, 30)
    f[120 - t:170 - t, 150:200] = (200, 80, 60)
    return f


CONTENT = {"bars": bars, "noise": noise, "text": text, "screen": screen}


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    """name -> (source frames, stream path), each coded at the default point with its guard."""
    out = {}
    for name, make in CONTENT.items():
        frames = np.stack([make(t) for t in range(FRAMES)])
        path = tmp_path_factory.mktemp("guard") / f"{name}.imf"
        encode_frames_to_file(frames, path, fps=Fraction(25), settings=EncoderSettings())
        out[name] = frames, path
    return out


@pytest.mark.parametrize("name", list(CONTENT))
def test_default_decode_is_never_worse_than_its_base(guarded, name):
    src, path = guarded[name]
    on = [f for _, out in iter_decoded(path) for f in out]
    off = [f for _, out in iter_decoded(path, enhance=False) for f in out]
    header, packets = read_stream(path)
    assert header.enhancer_switch and header.half_rate and path.read_bytes()[8] == 6  # the default: half-rate
    assert len(on) == len(off) == len(src)
    for p in (p for p in packets if isinstance(p, BasePacket)):
        idx = range(2 * p.frame, min(2 * (p.frame + p.count), len(src)))  # its frames as shown, and those between
        got = psnr(src[list(idx)], np.stack([on[i] for i in idx]))
        base = psnr(src[list(idx)], np.stack([off[i] for i in idx]))
        assert got >= base - 0.1, f"{name}: frames {p.frame}..{p.frame + p.count - 1} at {got:.2f} dB, base {base:.2f}"


def test_the_guard_switches_the_enhancer_off_on_colour_bars(guarded):
    """The shipped enhancer hurts moving colour bars by several dB: the encoder marks their packets."""
    _, path = guarded["bars"]
    marks = [p.enhance for p in read_stream(path)[1] if isinstance(p, BasePacket)]
    assert marks and not any(marks)


def test_without_the_guard_no_packet_is_switched_off(tmp_path):
    frames = np.stack([bars(t) for t in range(3)])
    path = tmp_path / "b.imf"
    encode_frames_to_file(frames, path, fps=Fraction(25), settings=EncoderSettings(guard=False))
    header, packets = read_stream(path)
    assert path.read_bytes()[8] == 6 and not header.enhancer_switch  # lean records and half-rate: version 6 still
    assert all(p.enhance for p in packets if isinstance(p, BasePacket))
    encode_frames_to_file(frames, path, fps=Fraction(25), settings=EncoderSettings(guard=False, lean=False),
                          overwrite=True)
    assert path.read_bytes()[8] == 2  # the classic framing without the switch: readable by version 2 decoders


def test_cli_reports_the_switch_and_refuses_no_guard_in_the_token_mode(guarded, tmp_path):
    from helpers import cli

    _, path = guarded["bars"]
    r = cli("info", path)
    assert r.exit_code == 0 and "version 6" in r.stdout and "(enhancer off)" in r.stdout
    coded = (FRAMES + 1) // 2  # half-rate by default: the unenhanced count is of coded frames
    assert f"enhancer switch: off for {coded - 1} of the {coded} coded frames" in r.stdout  # the key: the key image
    clip = tmp_path / "s.mp4"
    assert cli("sample", clip, "--frames", 3, "--size", 64).exit_code == 0
    r = cli("encode", clip, "-o", tmp_path / "t.imf", "--mode", "token", "--no-guard")  # a usage error: 2
    assert r.exit_code == 2 and r.stderr.startswith("error: --no-guard is a hybrid-mode option"), r.output
    r = cli("encode", clip, "-o", tmp_path / "h.imf", "--no-guard", "--classic-framing", "--enhancer",
            "random:enh-tiny")
    assert r.exit_code == 0 and (tmp_path / "h.imf").read_bytes()[8] == 2, r.output
    r = cli("encode", clip, "-o", tmp_path / "i.imf", "--base-codec", "av1", "--enhancer", "random:enh-tiny")
    assert r.exit_code == 0 and (tmp_path / "i.imf").read_bytes()[8] == 5, r.output
    assert "in the av1 base layer" in cli("info", tmp_path / "i.imf").stdout
    r = cli("encode", clip, "-o", tmp_path / "j.imf", "--intra-base", "--enhancer", "random:enh-tiny")  # vp9
    assert r.exit_code == 2 and "--intra-base" in r.stderr and "av1" in r.stderr, r.output
