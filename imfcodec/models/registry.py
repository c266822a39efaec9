"""Named model configs (timm-style registry): ``create_model("imf-small")``.

Config names are part of the bitstream (the header names the model), so a registered config
must never change once weights for it are shipped; add a new name instead.

The registry holds configs (``imfcodec.models.config``), not networks: a network's module is imported
only when one is built, so listing or building enhancers never imports the token model.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import nn

from imfcodec.errors import InputError
from imfcodec.models.config import EnhancerConfig, IMFConfig

if TYPE_CHECKING:
    from imfcodec.models.enhancer import Enhancer
    from imfcodec.models.imf import IMF

ModelConfig = IMFConfig | EnhancerConfig
_REGISTRY: dict[str, Callable[[], ModelConfig]] = {}


def register_model(name: str) -> Callable[[Callable[[], ModelConfig]], Callable[[], ModelConfig]]:
    """Decorator: register a zero-argument function returning the config (IMFConfig for a token
    model, EnhancerConfig for a hybrid-mode enhancer) for ``name``."""

    def deco(fn: Callable[[], IMFConfig]) -> Callable[[], IMFConfig]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} registered twice")
        _REGISTRY[name] = fn
        return fn

    return deco


def list_models(kind: str | None = None) -> list[str]:
    """Registered names, sorted; ``kind`` "imf" (token models) or "enhancer" (hybrid mode) filters."""
    return sorted(n for n, fn in _REGISTRY.items() if kind is None or getattr(fn(), "kind", "imf") == kind)


def get_config(name: str) -> ModelConfig:
    if name not in _REGISTRY:
        raise InputError(f"unknown model {name!r}; known: {', '.join(list_models())}")
    cfg = _REGISTRY[name]()
    return cfg if cfg.name == name else dataclasses.replace(cfg, name=name)


def build_model(cfg: ModelConfig) -> IMF | Enhancer:
    """The (untrained) module a config describes; imports only that network's module."""
    if isinstance(cfg, EnhancerConfig):
        if cfg.recurrent:
            from imfcodec.models.recurrent import RecurrentEnhancer

            return RecurrentEnhancer(cfg)
        from imfcodec.models.enhancer import Enhancer

        return Enhancer(cfg)
    from imfcodec.models.imf import IMF

    return IMF(cfg)


def create_model(name: str, **overrides) -> IMF | Enhancer:
    """Build an (untrained) model for a registered config, with optional field overrides."""
    cfg = get_config(name)
    if overrides:
        bad = sorted(set(overrides) - {f.name for f in dataclasses.fields(type(cfg))})
        if bad:
            raise InputError(f"unknown config fields: {', '.join(bad)}")
        cfg = dataclasses.replace(cfg, **overrides)
    return build_model(cfg)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def decode_gflops(model: IMF | Enhancer, resolution: int | None = None) -> float:
    """GFLOPs (2 x multiply-adds) of one frame's decode at batch 1 (decode_frame, or an enhancer's
    enhance); the reference is prepared outside the count because the decoder does it once per key
    frame.

    FlopCounterMode is imported here, not with the registry: it imports triton (about 100 MB) where
    installed, which the codec never needs."""
    from torch.utils.flop_counter import FlopCounterMode

    r = resolution or model.config.resolution
    was_training = model.training
    model.eval()
    x = torch.rand(1, 3, r, r)
    if model.config.kind == "enhancer":
        with torch.no_grad():
            ref = model.prepare_key(x, x)
        run = lambda: model.enhance(ref, x)  # noqa: E731
    else:
        t = torch.zeros(1, model.config.token_dim)
        with torch.no_grad():
            ref = model.prepare_reference(x, t)
        run = lambda: model.decode_frame(ref, t)  # noqa: E731
    counter = FlopCounterMode(display=False)
    # grad mode on: FlopCounterMode's module tracker asserts on some no_grad graphs
    with counter:
        run()
    model.train(was_training)
    return counter.get_total_flops() / 1e9


# --------------------------------------------------------------------------------------------
# configs


@register_model("imf-paper")
def _imf_paper() -> IMFConfig:
    """Paper widths at 256x256 (IMFConfig defaults). Heavy: for reference, not for CPUs."""
    return IMFConfig(name="imf-paper")


@register_model("imf-base")
def _imf_base() -> IMFConfig:
    """Between small and paper: full attention at the three coarse scales, wider everywhere."""
    return IMFConfig(
        name="imf-base",
        resolution=256,
        token_dim=32,
        ef_stem=32,
        ef_widths=(32, 64, 128, 192, 256),
        et_widths=(32, 32, 64, 128, 192, 256, 256),
        et_mlp_layers=2,
        et_mlp_width=256,
        imfd_widths=(256, 192, 128, 64),
        m_dims=(128, 96, 64, 32),
        imfd_convs=2,
        style_dim=256,
        mapping_layers=2,
        align_modes=("full", "full", "full", "window"),
        align_window=9,
        align_locality=3.0,
        tf_blocks=(2, 2, 1, 0),
        tf_heads=4,
        tf_mlp_ratio=2.0,
        df_widths=(256, 192, 128, 64),
        df_feat_blocks=1,
        df_up_widths=(32, 16),
        pixel_skip=True,
        disc_widths=(64, 128, 256, 256),
    )


@register_model("imf-small")
def _imf_small() -> IMFConfig:
    """The shipped default: 256x256, decodes in real time on 2 CPU cores."""
    return IMFConfig(
        name="imf-small",
        resolution=256,
        token_dim=32,
        ef_stem=16,
        ef_widths=(24, 32, 64, 96, 128),
        et_widths=(16, 32, 48, 64, 96, 128, 128),
        et_mlp_layers=2,
        et_mlp_width=256,
        imfd_widths=(192, 128, 64, 32),
        m_dims=(64, 64, 32, 32),
        imfd_convs=1,
        style_dim=128,
        mapping_layers=2,
        align_modes=("full", "full", "full", "window"),
        align_window=7,
        align_locality=3.0,
        tf_blocks=(1, 1, 0, 0),
        tf_heads=4,
        tf_mlp_ratio=2.0,
        df_widths=(128, 96, 64, 32),
        df_feat_blocks=1,
        df_up_widths=(32,),
        pixel_skip=True,
        disc_widths=(32, 64, 128, 256),
    )


@register_model("imf-small-v2")
def _imf_small_v2() -> IMFConfig:
    """The shipped default since imf-small: the same widths plus learned attention offsets and
    8x8 reference pixels gathered at R/8, and a token encoder that sees a fixed 128x128 frame and
    keeps a 4x4 layout (decisions 11-13 in imfcodec.models.imf), which let a CPU-trained model
    learn motion; a milder initial locality (a = 2)."""
    return dataclasses.replace(_imf_small(), name="imf-small-v2", align_offsets=True,
                               coarse_pixels=True, align_locality=2.0,
                               et_widths=(16, 32, 48, 64, 96, 128), et_input=128, et_pool=4)


@register_model("imf-tiny")
def _imf_tiny() -> IMFConfig:
    """64x64 test model (< 0.3M parameters)."""
    return IMFConfig(
        name="imf-tiny",
        resolution=64,
        token_dim=32,
        ef_stem=8,
        ef_widths=(8, 16, 24, 32, 32),
        et_widths=(8, 16, 24, 32, 32),
        et_mlp_layers=1,
        et_mlp_width=64,
        imfd_widths=(48, 32, 24, 16),
        m_dims=(16, 16, 16, 16),
        imfd_convs=1,
        style_dim=32,
        mapping_layers=1,
        align_modes=("full", "full", "full", "window"),
        align_window=5,
        align_locality=3.0,
        pos_freqs=4,
        tf_blocks=(1, 0, 0, 0),
        tf_heads=2,
        tf_mlp_ratio=2.0,
        df_widths=(24, 24, 16, 16),
        df_feat_blocks=1,
        df_up_widths=(8,),
        pixel_skip=True,
        disc_widths=(16, 32, 64, 64),
    )


# --------------------------------------------------------------------------------------------
# hybrid-mode enhancers (imfcodec.models.enhancer)


@register_model("enh-small")
def _enh_small() -> EnhancerConfig:
    """The hybrid mode's first enhancer at 256x256 (about 0.5 GMAC per frame; shipped until enh-wide replaced
    it): the cheap config, trains about twice as fast as enh-wide."""
    return EnhancerConfig(name="enh-small", resolution=256)


@register_model("enh-wide")
def _enh_wide() -> EnhancerConfig:
    """The shipped enhancer (DEFAULT_ENHANCER): enh-small at about twice the width (2.1x the FLOPs, 2.4x the
    parameters), which the width sweep (benchmarks.enhancer_sweep) found worth its decode time."""
    return EnhancerConfig(name="enh-wide", resolution=256, widths=(24, 48), m_fine=48, m_coarse=64,
                          fuse_width=80, fuse_blocks=3)


@register_model("enh-tiny")
def _enh_tiny() -> EnhancerConfig:
    """64x64 test enhancer."""
    return EnhancerConfig(name="enh-tiny", resolution=64, widths=(8, 16), m_fine=8, m_coarse=8, window=5,
                          pos_freqs=2, fuse_width=16, fuse_blocks=1)


@register_model("enh-rec")
def _enh_rec() -> EnhancerConfig:
    """enh-wide plus a recurrent memory (``models.recurrent``, issue 23): the previous shown frame, aligned at
    R/4 beside the key frame; warm-started from enh-wide's weights, where it equals enh-wide exactly."""
    return dataclasses.replace(_enh_wide(), name="enh-rec", recurrent=True)


@register_model("enh-tiny-rec")
def _enh_tiny_rec() -> EnhancerConfig:
    """64x64 test enhancer with the recurrent memory."""
    return dataclasses.replace(_enh_tiny(), name="enh-tiny-rec", recurrent=True)
