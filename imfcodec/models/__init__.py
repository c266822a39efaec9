"""IMF neural model: configs/registry, the IMF module, its layers and the discriminator."""

from imfcodec.models.discriminator import Discriminator
from imfcodec.models.imf import IMF, IMFConfig, RefState
from imfcodec.models.registry import (
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
    "count_parameters",
    "create_model",
    "decode_gflops",
    "get_config",
    "list_models",
    "register_model",
]
