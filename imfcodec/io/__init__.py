"""Video input/output: probing, streaming RGB frames, writers, and a built-in demo clip.

``reader`` (``probe_video``, ``read_frames``: any PyAV-decodable input normalised to the model's
square RGB frames), ``writer`` (``VideoWriter``: .mp4 / .mkv / .y4m / PNG folder, atomically) and
``sample`` (the demo clip) are separate modules; import their names from here.
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
    frame_to_rgb,
    prepare_frame,
    probe_video,
    read_frames,
)
from .sample import make_sample, sample_frames
from .writer import X264_CRF, VideoWriter

__all__ = [
    "VideoInfo",
    "probe_video",
    "read_frames",
    "prepare_frame",
    "frame_to_rgb",
    "VideoWriter",
    "sample_frames",
    "make_sample",
    "RAW_STREAM_FORMATS",
]
