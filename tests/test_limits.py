"""imfcodec.limits: one definition of each limit, re-exported where it used to live, enforced where it applies."""

from __future__ import annotations

import numpy as np
import pytest

from imfcodec import bitstream, limits
from imfcodec.bitstream import format as fmt
from imfcodec.errors import CorruptStreamError, InputError
from imfcodec.limits import (BASE_DECODER_MIN_PIXELS, DECODER_PIXEL_SLACK, KEY_DECODER_MIN_PIXELS, MAX_KEY_SIDE,
                             Limits, decoder_max_pixels)


def test_the_old_homes_reexport_the_same_objects():
    assert bitstream.Limits is fmt.Limits is Limits
    for name in ("MAX_NAME", "MAX_TOKEN_DIM", "MAX_CHUNK", "MAX_FPS_TERM", "MAX_DURATION", "MAX_TIME"):
        assert getattr(fmt, name) == getattr(limits, name), name
    assert bitstream.MAX_CHUNK == 1024 and bitstream.MAX_TOKEN_DIM == 256 and bitstream.MAX_NAME == 64
    from imfcodec import baselayer
    from imfcodec.io import _common

    assert baselayer.MIN_BASE_SIDE == limits.MIN_BASE_SIDE == 16
    assert _common._MAX_FPS == limits.MAX_FPS == 1000


def test_api_input_cap_equals_the_limits_module():
    """api.MAX_INPUT_PIXELS still has its own line (api.py is restructured elsewhere); they must not drift."""
    from imfcodec import api

    assert api.MAX_INPUT_PIXELS == limits.MAX_INPUT_PIXELS == 8192 * 8192


def test_reader_limits_defaults_and_override():
    d = Limits()
    assert (d.max_width, d.max_height, d.max_frames, d.max_packet) == (4096, 4096, 1_000_000, 64 << 20)
    assert Limits(max_width=64).max_width == 64
    with pytest.raises(AttributeError):
        d.max_width = 1  # frozen: a reader's limits cannot change under it


def test_decoder_cap_has_slack_above_the_floor():
    for floor in (KEY_DECODER_MIN_PIXELS, BASE_DECODER_MIN_PIXELS):
        assert decoder_max_pixels(1, 1, floor) == floor
        assert decoder_max_pixels(4096, 4096, floor) == DECODER_PIXEL_SLACK * 4096 * 4096
    # where each floor stops ruling: 512x512 key frames, 128x128 base pictures
    assert decoder_max_pixels(511, 512, KEY_DECODER_MIN_PIXELS) == KEY_DECODER_MIN_PIXELS
    assert decoder_max_pixels(513, 512, KEY_DECODER_MIN_PIXELS) > KEY_DECODER_MIN_PIXELS
    assert decoder_max_pixels(127, 128, BASE_DECODER_MIN_PIXELS) == BASE_DECODER_MIN_PIXELS
    assert decoder_max_pixels(129, 128, BASE_DECODER_MIN_PIXELS) > BASE_DECODER_MIN_PIXELS
    assert (KEY_DECODER_MIN_PIXELS, BASE_DECODER_MIN_PIXELS) == (1 << 20, 1 << 16)  # unchanged values


def test_key_frame_decoder_cap_refuses_a_forged_size_before_allocating():
    """A key frame whose own header says 1040x1024 where 32x32 is expected exceeds the 1 Mpx floor and the
    decoder refuses it; 600x600 is inside the cap and reaches the clearer size check."""
    from imfcodec.keyframe import get_keyframe_codec

    hevc = get_keyframe_codec("hevc")
    for (w, h), match in (((600, 600), "decodes to 600x600, expected 32x32"), ((1040, 1024), "undecodable")):
        img = np.zeros((h, w, 3), np.uint8)
        img[::7] = 200
        with pytest.raises(CorruptStreamError, match=match):
            hevc.decode(hevc.encode(img, hevc.default_quality), 32, 32)


def test_key_frame_side_cap():
    from imfcodec.keyframe._common import check_payload

    assert check_payload(b"x", MAX_KEY_SIDE, 1, "t") == b"x"
    for w in (0, MAX_KEY_SIDE + 1, True, 2.0):
        with pytest.raises(CorruptStreamError, match="impossible size"):
            check_payload(b"x", w, 1, "t")


def test_working_frame_size_cap():
    from imfcodec.io._common import _check_size

    assert _check_size(limits.MAX_FRAME_SIDE) == 8192
    with pytest.raises(InputError, match=r"\[1, 8192\]"):
        _check_size(limits.MAX_FRAME_SIDE + 1)
