"""Shared by the reader, the writer and the demo clip: argument checks and one-line errors."""

from __future__ import annotations

import os
from typing import Any, Union

import numpy as np

from ..errors import InputError
from ..limits import MAX_FPS as _MAX_FPS
from ..limits import MAX_FRAME_SIDE

PathLike = Union[str, "os.PathLike[str]"]


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def _check_size(size: Any, what: str = "size") -> int:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or not 1 <= size <= MAX_FRAME_SIDE:
        raise InputError(f"{what} must be an integer in [1, {MAX_FRAME_SIDE}], got {size!r}")
    return int(size)
