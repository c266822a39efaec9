"""The networks' hyper-parameters: what the registry names, the weights' metadata stores and the bitstream's
model name stands for. Plain dataclasses, JSON-serialisable, no network code: the registry and the weights
loader read them without importing either network, so the default (hybrid) mode never imports the token
model.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from imfcodec.errors import WeightsError

# the token model (imfcodec.models.imf): scales are ordered coarse to fine, R/32, R/16, R/8, R/4
NUM_SCALES = 4
FINEST_FACTOR = 4  # the finest alignment scale is R/4
COARSEST_FACTOR = 32
COARSE_PIXEL_SCALE = 2  # index of R/8, where ``coarse_pixels`` gathers 8x8 reference patches
COARSE_PIXEL_FACTOR = 8

# the hybrid mode's enhancer (imfcodec.models.enhancer)
FINE = 4  # R/4: windowed attention over 4x4 patches
COARSE = 8  # R/8: full attention over 8x8 patches


@dataclass(frozen=True)
class IMFConfig:
    """Every hyper-parameter of an IMF model. Tuples are ordered coarse to fine where they are
    per scale (R/32, R/16, R/8, R/4). JSON-serialisable via to_dict()/from_dict()."""

    name: str = "imf-custom"
    resolution: int = 256
    token_dim: int = 32
    # E_F: stem conv 7x7 at R, then DownConvResBlocks to R/2, R/4, R/8, R/16, R/32
    ef_stem: int = 64
    ef_widths: tuple[int, ...] = (64, 128, 256, 512, 512)
    # E_T: ConvLayer(et_widths[0]) at R, then one ResBlock (/2) per further width
    et_widths: tuple[int, ...] = (64, 64, 128, 256, 512, 512, 512)
    et_mlp_layers: int = 4
    et_mlp_width: int = 512
    et_input: int = 0  # >0: E_T sees the frame resized to this size (resolution-independent token)
    et_pool: int = 1   # E_T pools its last feature map to et_pool x et_pool and flattens it
    # IMF_D: trunk widths and motion-feature (attention) dims per scale
    imfd_widths: tuple[int, ...] = (512, 512, 512, 256)
    m_dims: tuple[int, ...] = (512, 512, 512, 256)
    imfd_convs: int = 2
    style_dim: int = 512
    mapping_layers: int = 0
    # IMF_A
    align_modes: tuple[str, ...] = ("full", "full", "full", "full")
    align_window: int = 7
    align_locality: float = 3.0
    align_offsets: bool = False
    pos_freqs: int = 8
    tf_blocks: tuple[int, ...] = (4, 4, 4, 1)
    tf_heads: int = 8
    tf_mlp_ratio: float = 4.0
    # D_F
    df_widths: tuple[int, ...] = (512, 512, 256, 128)
    df_feat_blocks: int = 3
    df_up_widths: tuple[int, ...] = (128, 64)
    pixel_skip: bool = False
    coarse_pixels: bool = False
    # discriminator (training only)
    disc_widths: tuple[int, ...] = (64, 128, 256, 512)

    kind = "imf"  # what zoo.load_weights builds from a file's metadata (not a field)

    def __post_init__(self) -> None:
        per_scale = ("imfd_widths", "m_dims", "align_modes", "tf_blocks", "df_widths")
        for key in per_scale:
            if len(getattr(self, key)) != NUM_SCALES:
                raise WeightsError(f"config {self.name}: {key} needs {NUM_SCALES} entries")
        if len(self.ef_widths) != 5:
            raise WeightsError(f"config {self.name}: ef_widths needs 5 entries")
        if any(m not in ("full", "window") for m in self.align_modes):
            raise WeightsError(f"config {self.name}: align_modes must be 'full' or 'window'")
        if len(self.df_up_widths) > 2:
            raise WeightsError(f"config {self.name}: at most 2 df_up_widths")
        if self.align_window % 2 != 1:
            raise WeightsError(f"config {self.name}: align_window must be odd")
        if self.resolution % COARSEST_FACTOR:
            raise WeightsError(f"config {self.name}: resolution must be a multiple of 32")
        if len(self.et_widths) < 2:
            raise WeightsError(f"config {self.name}: et_widths needs at least 2 entries")
        if self.et_input < 0 or (self.et_input and self.et_input < 2 ** (len(self.et_widths) - 1)):
            raise WeightsError(f"config {self.name}: et_input must be 0 or >= 2^(len(et_widths)-1)")
        if not 1 <= self.et_pool <= 8:
            raise WeightsError(f"config {self.name}: et_pool must be 1..8")
        if self.coarse_pixels and (not self.pixel_skip or self.align_modes[COARSE_PIXEL_SCALE] != "full"):
            raise WeightsError(f"config {self.name}: coarse_pixels needs pixel_skip and full "
                               "attention at R/8")

    def to_dict(self) -> dict[str, Any]:
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v)
                for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IMFConfig:
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise WeightsError(f"unknown model config keys: {', '.join(unknown)}")
        kwargs = {k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items()}
        return cls(**kwargs)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> IMFConfig:
        return cls.from_dict(json.loads(text))

    @property
    def min_size(self) -> int:
        """Smallest frame side the model accepts (E_T needs >= 1 pixel after its downsamplings)."""
        if self.et_input:
            return COARSEST_FACTOR
        return max(COARSEST_FACTOR, 2 ** (len(self.et_widths) - 1))


@dataclass(frozen=True)
class EnhancerConfig:
    """Hyper-parameters of an enhancer (JSON-serialisable; the name is part of the bitstream)."""

    name: str = "enh-custom"
    resolution: int = 256
    widths: tuple[int, int] = (16, 32)  # feature encoder at R/2, R/4
    m_fine: int = 32  # attention dim at R/4
    m_coarse: int = 48  # attention dim at R/8 (0: no coarse alignment)
    window: int = 7
    locality: float = 2.0
    pos_freqs: int = 6
    fuse_width: int = 48
    fuse_blocks: int = 3
    recurrent: bool = False  # the previous shown frame as a second memory (models.recurrent)

    kind = "enhancer"  # what zoo.load_weights builds from a file's metadata (not a field)

    def __post_init__(self) -> None:
        if self.resolution % COARSE:
            raise WeightsError(f"enhancer {self.name}: resolution must be a multiple of {COARSE}")
        if self.window % 2 != 1:
            raise WeightsError(f"enhancer {self.name}: window must be odd")
        if len(self.widths) != 2 or min(self.widths) < 1 or self.m_fine < 1 or self.fuse_width < 1:
            raise WeightsError(f"enhancer {self.name}: widths must be 2 positive ints, dims positive")
        if self.fuse_blocks < 0 or self.m_coarse < 0:
            raise WeightsError(f"enhancer {self.name}: fuse_blocks and m_coarse must be >= 0")

    def to_dict(self) -> dict[str, Any]:
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v)
                for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EnhancerConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise WeightsError(f"unknown enhancer config keys: {', '.join(unknown)}")
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items()})

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)
