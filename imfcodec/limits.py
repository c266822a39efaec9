"""Every size and count limit in one place: the format's, a reader's, the decoders' and the encoder's inputs.

Three kinds, kept apart because they answer to different rules:

* **wire limits** are the format's (``bitstreams/FORMAT.md``): a stream beyond them is not a valid stream, on
  any machine; ``imfcodec.bitstream`` checks them and re-exports them;
* **``Limits``** are what one reader is willing to spend on a valid stream (overridable: ``--max-width`` ...);
  a stream beyond them is unsupported here, not corrupt;
* **decoder and input caps** bound what hostile or unusual bytes can make a codec library allocate
  (``max_pixels``) and which inputs the encoder takes at all.

Pure Python (no torch, numpy or PyAV), like ``imfcodec.bitstream``.
"""

from __future__ import annotations

from dataclasses import dataclass

# ---------------------------------------------------------------------------------------------- wire limits
MAX_NAME = 64  # bytes, for the model, key-codec and base-codec names
MAX_TOKEN_DIM = 256  # channels per token (header token_dim)
MAX_CHUNK = 1024  # frames per token packet (header chunk)
MAX_FPS_TERM = 2**32 - 1  # numerator and denominator of the frame rate (and of the time base)
MAX_DURATION = 2**32 - 1  # ticks one frame may be shown (timing records)
MAX_TIME = 2**63 - 1  # a frame's end time in ticks: what every container's int64 timestamps hold


# ---------------------------------------------------------------------------------------------- a reader's
@dataclass(frozen=True)
class Limits:
    """Resource limits a reader enforces before trusting any size in a stream (all overridable)."""

    max_width: int = 4096
    max_height: int = 4096
    max_frames: int = 1_000_000
    max_packet: int = 64 * 1024 * 1024  # bytes of payload in one record


# ---------------------------------------------------------------------------------------------- decoders
# A decoder context gets ``max_pixels``: a forged SPS / sequence header cannot make it allocate more. The cap
# has slack (DECODER_PIXEL_SLACK times the expected picture) so that a merely wrong size reaches the clearer
# "decodes to WxH, expected ..." check, and a floor so that small pictures keep room for the codecs' padding.
# The two floors were set in different commits (316dbd3 key frames, 77962fd base layer) with no recorded
# reason for the difference. Neither is a bug: a floor only has to exceed the padded size of the smallest
# legal picture, which both do many times over, and the lower one suits the base decoder, which lives for a
# whole GOP with a pool of reference pictures, where a key-frame decoder holds one picture. The floor rules
# below 512x512 for key frames (so at the usual sizes: the cap is 1 Mpx) and below 128x128 for the base layer.
# Changing either would change only which of two CorruptStreamError messages a forged stream gets.
DECODER_PIXEL_SLACK = 4
KEY_DECODER_MIN_PIXELS = 1 << 20
BASE_DECODER_MIN_PIXELS = 1 << 16
MAX_KEY_SIDE = 16384  # a key frame's width or height a key-frame decoder accepts at all (else: corrupt)


def decoder_max_pixels(width: int, height: int, floor: int) -> int:
    """``max_pixels`` for a decoder that expects ``width`` x ``height`` pictures (see above)."""
    return max(DECODER_PIXEL_SLACK * width * height, floor)


# ---------------------------------------------------------------------------------------------- encoder inputs
MIN_BASE_SIDE = 16  # base-layer picture side: x265 and SVT-AV1 refuse smaller (8 for SVT-AV1; 16 keeps one rule)
MAX_FPS = 1000  # frame rate a video reader reports / a writer accepts (above: the container's rate is ignored)
MAX_FRAME_SIDE = 8192  # the working frame size (a model's resolution) the video readers resize to
MAX_INPUT_PIXELS = 8192 * 8192  # a source video's declared picture size the encoder opens at all

#: the token search: at most this many steps per frame (``--refine``, ``EncoderSettings.search_iters``)
MAX_SEARCH_ITERS = 100
