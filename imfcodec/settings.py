"""What a user can choose about an encode (``EncoderSettings``): one definition of each default.

Kept free of torch, numpy and PyAV at import, so the CLI can show these defaults in ``--help``
without loading the codec; ``validated`` imports what it checks against when it runs.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from .errors import InputError

DEFAULT_QUALITY = 9  # the quality the shipped model was trained for (noise of 0.35 token std)
DEFAULT_CHUNK = 5
# scene cuts (imfcodec.scenecut): a key frame where the luma thumbnail's mean absolute difference from the
# previous frame reaches this percent of the 8-bit range; 0 = off. Chosen on the training clips: uncut clips
# score at most 6.5, cuts between clips of different sources 10.1 at the lowest, 13.4 or more in 99 % of them
# (python -m benchmarks.keyframes)
DEFAULT_SCENECUT = 10.0


# The named efforts (--preset) and what each encoder does at each: one table, imfcodec.presets (re-exported here).
from .presets import DEFAULT_PRESET, PRESETS, Preset  # noqa: E402,F401


def _preset(name: str) -> Preset:
    """The preset called ``name``; InputError naming --preset otherwise."""
    if name not in PRESETS:
        raise InputError(f"--preset must be one of {', '.join(PRESETS)}, got {name!r}")
    return PRESETS[name]


DEFAULT_SEARCH_ITERS = PRESETS[DEFAULT_PRESET].search_iters
DEFAULT_KEY_CODEC = "hevc"
# The encoder's own ceiling on --chunk (10 s of tokens per packet at 25 fps). Decoders accept up to the
# format's bitstream.MAX_CHUNK (1024), so this is a choice of the encoder, not a limit of the wire.
MAX_ENCODER_CHUNK = 250
# hybrid mode (imfcodec.hybrid): a conventional base layer at 1/BASE_FACTOR of the frame size, lifted by an enhancer
# what --hybrid uses without --base-codec: VP9 gave the best enhanced quality at every rate from 6 kbit/s up on
# the held-out training clips (benchmarks/hybrid_table.py: +0.1 to +1.1 dB over the best x265-base point at the
# same rate for a 10 s clip); x265 reaches lower rates (its 1/4 points), which --kbps picks when they fit
DEFAULT_BASE_CODEC = "vp9"
# the CLI's choices without importing the codecs (imfcodec.baselayer's registry; a test keeps them equal)
BASE_CODECS = ("av1", "hevc", "vp9")
DEFAULT_BASE_FACTOR = 2
BASE_FACTORS = (1, 2, 4)
DEFAULT_ENHANCER = "enh-wide"
# `imfcodec encode`'s modes. The hybrid mode is the default: on the 10 test clips it is about 4.9 dB above the
# token mode at the token mode's default rate, and it encodes and decodes in real time on 2 CPU cores (README,
# Status and Models); the token mode is chosen with --mode token or by naming a token model (--model).
MODES = ("hybrid", "token")
DEFAULT_MODE = "hybrid"
# The hybrid mode's key quality where none is given (per key codec; others use the codec's own default). From
# the enh-wide --kbps table (held-out training clips, 10 s): over the default base (vp9 1/2 q8) hevc key q16
# costs 0.74 kbit/s more than q11 for +0.24 dB and q21 1.3 more than q16 for +0.11 dB, where the same bits in
# the base layer buy about +0.2 dB per kbit/s; so q16, below the token mode's 21.
HYBRID_KEY_QUALITY = {"hevc": 16}


@dataclass(frozen=True)
class EncoderSettings:
    """Everything a user can choose about an encode; validated once, up front."""

    quality: int = DEFAULT_QUALITY
    keyint: int = 0
    refresh_below: float | None = None
    scenecut: float = DEFAULT_SCENECUT  # scene-cut threshold (imfcodec.scenecut): a key frame at a cut; 0 = off
    key_codec: str = DEFAULT_KEY_CODEC
    key_quality: int | None = None  # None: the key-frame codec's own default (hybrid: HYBRID_KEY_QUALITY first)
    chunk: int = DEFAULT_CHUNK
    search_iters: int = DEFAULT_SEARCH_ITERS  # token search iterations per frame (CLI --refine); 0 = E_T's token
    preset: str = DEFAULT_PRESET  # the encoder's effort: the token search's steps (above) or the base encoder's speed
    # hybrid mode: a base_codec ('hevc', 'av1' or 'vp9') selects it; quality and search_iters then have no effect,
    # chunk is the frames per base packet
    base_codec: str | None = None
    base_factor: int = DEFAULT_BASE_FACTOR  # the base layer is coded at 1/base_factor of the frame size
    base_quality: int | None = None  # None: the base codec's own default (vp9 8: CRF 55; hevc 13: CRF 38; av1 13: CRF 50)
    enhancer: str | None = None  # None: DEFAULT_ENHANCER's shipped weights; else as --model (NAME, PATH, random:NAME)

    @property
    def hybrid(self) -> bool:
        return self.base_codec is not None

    @classmethod
    def from_preset(cls, preset: str = DEFAULT_PRESET, **fields) -> "EncoderSettings":
        """The settings of a named preset (``PRESETS``); ``fields`` set or override any field, e.g.
        ``search_iters`` (the CLI's ``--refine``, the expert knob)."""
        return cls(**{"search_iters": _preset(preset).search_iters, "preset": preset, **fields})

    def validated(self) -> "EncoderSettings":
        """These settings with ``key_quality`` (and ``base_quality``) resolved, or InputError naming the CLI
        option at fault."""
        from .entropy.quant import QUALITY_RANGE
        from .keyframe import get_keyframe_codec
        from .token_search import SearchSettings

        lo, hi = QUALITY_RANGE
        if not lo <= self.quality <= hi:
            raise InputError(f"--quality must be in {lo}..{hi}, got {self.quality}")
        if self.keyint < 0:
            raise InputError(f"--keyint must be >= 0 (0 = one key frame), got {self.keyint}")
        if not 1 <= self.chunk <= MAX_ENCODER_CHUNK:
            raise InputError(f"--chunk must be in 1..{MAX_ENCODER_CHUNK}, got {self.chunk}")
        SearchSettings(self.search_iters).validated()
        _preset(self.preset)
        if isinstance(self.scenecut, bool) or not isinstance(self.scenecut, (int, float)) \
                or not 0 <= self.scenecut <= 100:
            raise InputError(f"--scenecut must be a threshold in 0..100 (0 = off), got {self.scenecut!r}")
        if self.refresh_below is not None and not (0 < self.refresh_below < 100):
            raise InputError(f"--refresh-below must be a PSNR in dB (0..100), got {self.refresh_below}")
        codec = get_keyframe_codec(self.key_codec)
        kq = self.key_quality
        if kq is None:
            kq = HYBRID_KEY_QUALITY.get(self.key_codec, codec.default_quality) if self.hybrid else codec.default_quality
        klo, khi = codec.quality_range
        if not klo <= kq <= khi:
            raise InputError(f"--key-quality for {self.key_codec} must be in {klo}..{khi}, got {kq}")
        if not self.hybrid:
            if (self.base_quality, self.enhancer, self.base_factor) != (None, None, DEFAULT_BASE_FACTOR):
                raise InputError("--base-scale, --base-quality and --enhancer need the hybrid mode (a base_codec)")
            return replace(self, key_quality=kq)
        return replace(self, key_quality=kq, base_quality=self._validated_base())

    def _validated_base(self) -> int:
        """The hybrid fields checked; returns the resolved base quality."""
        from .baselayer import get_base_codec, list_base_codecs
        from .errors import UnsupportedStreamError

        try:
            codec = get_base_codec(self.base_codec)
        except UnsupportedStreamError:
            raise InputError(f"--base-codec must be one of {', '.join(list_base_codecs())}, "
                             f"got {self.base_codec!r}") from None
        if self.base_factor not in BASE_FACTORS:
            raise InputError(f"--base-scale must be 1, 1/2 or 1/4 (base_factor {', '.join(map(str, BASE_FACTORS))}), "
                             f"got base_factor {self.base_factor!r}")
        if self.refresh_below is not None:
            raise InputError("--refresh-below is not available in the hybrid mode (use --keyint)")
        if self.enhancer is not None and (not isinstance(self.enhancer, str) or not self.enhancer.strip()):
            raise InputError(f"--enhancer must name an enhancer (NAME, PATH or random:NAME), got {self.enhancer!r}")
        bq = codec.default_quality if self.base_quality is None else self.base_quality
        blo, bhi = codec.quality_range
        if isinstance(bq, bool) or not isinstance(bq, int) or not blo <= bq <= bhi:
            raise InputError(f"--base-quality for {codec.name} must be in {blo}..{bhi}, got {bq!r}")
        return bq


def hybrid_defaults(**fields) -> EncoderSettings:
    """The hybrid mode at its default point (DEFAULT_BASE_CODEC, the base codec's default quality and size,
    HYBRID_KEY_QUALITY): what `imfcodec encode` codes without options; ``fields`` override any field."""
    return EncoderSettings(**{"base_codec": DEFAULT_BASE_CODEC, **fields})
