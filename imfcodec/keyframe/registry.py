"""The key-frame codec interface and the name -> codec registry.

A module of its own so that the codec modules can import ``register_keyframe_codec`` from here while
the package ``__init__`` imports them: registry first, codecs after, no import cycle.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from ..errors import UnsupportedStreamError


@runtime_checkable
class KeyframeCodec(Protocol):
    """What the codec core needs from a key-frame codec (stateless; one shared instance each)."""

    name: str
    quality_range: tuple[int, int]
    default_quality: int

    def encode(self, rgb: np.ndarray, quality: int) -> bytes:
        """uint8 HxWx3 RGB -> self-contained payload bytes."""
        ...

    def decode(self, data: bytes, width: int, height: int) -> np.ndarray:
        """Payload -> uint8 (height, width, 3) RGB; CorruptStreamError on anything undecodable."""
        ...


_REGISTRY: dict[str, KeyframeCodec] = {}


def register_keyframe_codec(cls: type) -> type:
    """Class decorator: instantiate ``cls`` once and register it under ``cls.name``."""
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise TypeError(f"{cls!r} has no string 'name'")
    if name in _REGISTRY and type(_REGISTRY[name]) is not cls:
        raise ValueError(f"key-frame codec {name!r} is already registered")
    _REGISTRY[name] = cls()
    return cls


def get_keyframe_codec(name: str) -> KeyframeCodec:
    """The codec registered as ``name``; UnsupportedStreamError (a stream may name it) otherwise."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        known = ", ".join(list_keyframe_codecs())
        raise UnsupportedStreamError(
            f"unknown key-frame codec {name!r} (known: {known})"
        ) from None


def list_keyframe_codecs() -> list[str]:
    """Registered names, sorted."""
    return sorted(_REGISTRY)
