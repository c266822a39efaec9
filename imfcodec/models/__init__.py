"""IMF neural model: configs/registry, the IMF module, its layers and the discriminator."""

from imfcodec.models.discriminator import Discriminator
from imfcodec.models.enhancer import Enhancer, EnhancerConfig, KeyState, upscale
from imfcodec.models.imf import IMF, IMFConfig, RefState
from imfcodec.models.registry import (
    build_model,
    count_parameters,
    create_model,
    decode_gflops,
    get_config,
    list_models,
    register_model,
)

__all__ = [
    "IMF",
    "IMFConfig",
    "RefState",
    "Discriminator",
    "Enhancer",
    "EnhancerConfig",
    "KeyState",
    "upscale",
    "build_model",
    "count_parameters",
    "create_model",
    "decode_gflops",
    "get_config",
    "list_models",
    "register_model",
]
