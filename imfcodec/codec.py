"""The token mode under its old name: ``imfcodec.modes.token`` (the encoder and decoder) and what the modes
share (``imfcodec.modes.common``), re-exported so ``from imfcodec.codec import ...`` keeps working."""

from .modes.common import (  # noqa: F401
    DecodeReport,
    DecoderState,
    KeyPolicy,
    Packet,
    check_frame,
    encode_frames,
    to_tensor,
    to_uint8,
)
from .modes.token import Decoder, Encoder, _Reference  # noqa: F401
from .settings import (  # noqa: F401 - callers import the settings with the codec
    DEFAULT_CHUNK,
    DEFAULT_KEY_CODEC,
    DEFAULT_QUALITY,
    DEFAULT_SEARCH_ITERS,
    EncoderSettings,
)
