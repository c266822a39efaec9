"""The networks: configs and registry, the IMF token model, the hybrid mode's enhancer, their layers and the
discriminator.

Names are imported lazily (PEP 562): ``from imfcodec.models import upscale, create_model`` loads the
registry and the enhancer but not the token model (``imf``) or the discriminator, so the default (hybrid)
mode never imports them. Only the kernel settings are imported now: ``kernels`` turns flush-to-zero on,
which must happen before the first tensor operation of any entry point that touches a network.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from imfcodec.models import kernels  # noqa: F401 - flush-to-zero before any tensor op (kernels.flush_denormals)

if TYPE_CHECKING:
    from imfcodec.models.config import EnhancerConfig, IMFConfig
    from imfcodec.models.discriminator import Discriminator
    from imfcodec.models.enhancer import Enhancer, KeyState, upscale
    from imfcodec.models.imf import IMF, RefState
    from imfcodec.models.recurrent import RecurrentEnhancer, RecurrentState
    from imfcodec.models.registry import (
        build_model,
        count_parameters,
        create_model,
        decode_gflops,
        get_config,
        list_models,
        register_model,
    )

#: public name -> the submodule that defines it
_HOMES = {
    "IMF": "imf",
    "IMFConfig": "config",
    "RefState": "imf",
    "Discriminator": "discriminator",
    "Enhancer": "enhancer",
    "EnhancerConfig": "config",
    "KeyState": "enhancer",
    "RecurrentEnhancer": "recurrent",
    "RecurrentState": "recurrent",
    "upscale": "enhancer",
    "build_model": "registry",
    "count_parameters": "registry",
    "create_model": "registry",
    "decode_gflops": "registry",
    "get_config": "registry",
    "list_models": "registry",
    "register_model": "registry",
}

__all__ = list(_HOMES)


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOMES))
