"""Hostile input, long inputs (issue #5, theme 7): encoder and decoder memory does not grow with the
number of frames, in the token and the default (hybrid) mode (the measurement itself is
benchmarks/long_input.py)."""

from __future__ import annotations

import pytest

from helpers import cheap_clip, header_of, long_stream
from imfcodec.api import decode_stream, encode_video
from imfcodec.codec import EncoderSettings

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.slow
def test_memory_is_flat_in_the_number_of_frames(tmp_path, mode):
    """Smoke test (the real measurement is benchmarks/long_input.py): Python-heap peak of encode and
    decode at 1,000 frames is within 10% (+64 KiB) of 200 frames, in either mode (the hybrid stream has one
    key frame: its base layer is one GOP of every frame)."""
    import tracemalloc

    peaks = {}
    for n in (200, 1000):
        clip = cheap_clip(tmp_path / f"c{n}.mp4", n)
        encoded = tmp_path / f"e{n}.imf"
        tracemalloc.start()
        # token mode, search_iters=0: the token search is per-frame local work (its state dies with the frame)
        # and under tracemalloc it would make 1,200 frames take minutes
        encode_video(clip, encoded, model=mode.model, settings=EncoderSettings(**mode.settings))
        enc_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        # the token mode decodes a cheaper-made stream of unchanged tokens; the hybrid mode what it encoded
        stream = encoded if mode.hybrid else long_stream(mode.model, tmp_path / f"s{n}.imf", n)
        tracemalloc.start()
        decode_stream(stream, tmp_path / f"d{n}.y4m", model=mode.model)
        dec_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert header_of(stream.read_bytes()).frames == n
        peaks[n] = (enc_peak, dec_peak)
    for i in range(2):
        assert peaks[1000][i] <= 1.1 * peaks[200][i] + 65536, peaks
