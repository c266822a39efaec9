"""Video input/output: probing, streaming RGB frames, writers, and a built-in demo clip.

``reader`` (``open_video``, ``probe_video``, ``read_frames``: any PyAV-decodable input, ``-`` for
standard input, normalised to the model's square RGB frames), ``writer`` (``VideoWriter``: .mp4 /
.mkv / .y4m / PNG folder, atomically; in place for stdout, FIFOs and devices) and ``sample`` (the demo
clip) are separate modules; import their names from here.
"""

from __future__ import annotations

# DEFAULT_FPS, RESAMPLE, X264_CRF and PathLike are not in __all__ but stay importable from here, as they
# were from the single io.py module
from ._common import PathLike  # noqa: F401
from .reader import (
    DEFAULT_FPS,
    RAW_STREAM_FORMATS,
    RESAMPLE,
    VideoInfo,
    VideoSource,
    frame_to_rgb,
    framing_note,
    open_video,
    prepare_frame,
    probe_video,
    read_frames,
)
from .sample import make_sample, sample_frames
from .writer import FORMATS, X264_CRF, VideoWriter

__all__ = [
    "VideoInfo",
    "VideoSource",
    "open_video",
    "probe_video",
    "read_frames",
    "prepare_frame",
    "frame_to_rgb",
    "framing_note",
    "VideoWriter",
    "FORMATS",
    "sample_frames",
    "make_sample",
    "RAW_STREAM_FORMATS",
]
