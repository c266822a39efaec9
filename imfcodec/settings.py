"""What a user can choose about an encode (``EncoderSettings``): one definition of each default, and of the
default mode's default point (``EncoderSettings()`` is what ``imfcodec encode`` does without options).

Kept free of torch, numpy and PyAV at import, so the CLI can show these defaults in ``--help``
without loading the codec; ``validated`` imports what it checks against when it runs.

Measured figures behind the defaults live with the measurements, not here: the model cards
(``imfcodec/weights/*.md``), ``benchmarks/results/*/NOTES.md`` and the README.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from .errors import ArgumentError, InputError
from .limits import MAX_SEARCH_ITERS

DEFAULT_QUALITY = 9  # the token quality the shipped token model was trained for (its model card)
DEFAULT_CHUNK = 5
# scene cuts (imfcodec.scenecut): a key frame where the luma thumbnail's mean absolute difference from the
# previous frame reaches this percent of the 8-bit range; 0 = off. Chosen between the scores of uncut clips and
# of cuts on the training clips: benchmarks/results/2026-11-28-keyframes-train/NOTES.md (python -m benchmarks.keyframes)
DEFAULT_SCENECUT = 10.0


# The named efforts (--preset) and what each encoder does at each: one table, imfcodec.presets (re-exported here).
from .presets import DEFAULT_PRESET, PRESETS, Preset  # noqa: E402,F401


def _preset(name: str) -> Preset:
    """The preset called ``name``; ArgumentError naming preset= otherwise."""
    if not isinstance(name, str) or name not in PRESETS:
        raise ArgumentError(f"preset= must be one of {', '.join(PRESETS)}, got {name!r}")
    return PRESETS[name]


DEFAULT_SEARCH_ITERS = PRESETS[DEFAULT_PRESET].search_iters
DEFAULT_KEY_CODEC = "hevc"
# The encoder's own ceiling on --chunk (10 s of tokens per packet at 25 fps). Decoders accept up to the
# format's bitstream.MAX_CHUNK (1024), so this is a choice of the encoder, not a limit of the wire.
MAX_ENCODER_CHUNK = 250
# hybrid mode (imfcodec.modes.hybrid): a conventional base layer at 1/base_factor of the frame size, lifted by an
# enhancer. The base codec without --base-codec: the one that gave the best enhanced quality per bit on the held-out
# training clips (benchmarks/results/2026-11-28-hybrid-vp9-enh-small-60455f82/NOTES.md, benchmarks/hybrid_table.py);
# --kbps may pick another codec's points where they reach lower rates
DEFAULT_BASE_CODEC = "vp9"
# the CLI's choices without importing the codecs (imfcodec.baselayer's registry; a test keeps them equal)
BASE_CODECS = ("av1", "hevc", "vp9")
DEFAULT_BASE_FACTOR = 2
BASE_FACTORS = (1, 2, 4)
DEFAULT_ENHANCER = "enh-wide"
# `imfcodec encode`'s modes (imfcodec.modes). The hybrid mode is the default, the better of the two (README, Status
# and Models); the token mode is chosen with --mode token, by naming a token model (--model) or, in the API, by a
# token-mode field (quality, search_iters, refresh_below).
MODES = ("hybrid", "token")
DEFAULT_MODE = "hybrid"
# The hybrid mode's key quality where none is given (per key codec; others use the codec's own default): where
# key-frame bits stop paying as well as base-layer bits (imfcodec/weights/enh-wide.md, "Default key quality").
HYBRID_KEY_QUALITY = {"hevc": 16}
# --base-scale's choices and the base_factor each means
BASE_SCALES = {"1": 1, "1/2": 2, "1/4": 4}
# what each mode fills in where a field is None (the hybrid mode's default point: this, the base codec's default
# quality and HYBRID_KEY_QUALITY), and its key quality per key codec where none is given
_MODE_DEFAULTS = {"hybrid": {"base_codec": DEFAULT_BASE_CODEC}, "token": {}}
_MODE_KEY_QUALITY = {"hybrid": HYBRID_KEY_QUALITY, "token": {}}


@dataclass(frozen=True)
class EncoderSettings:
    """Everything a user can choose about an encode; validated once, up front (``validated``).

    Common to both modes: ``keyint``, ``scenecut``, ``key_codec``, ``key_quality``, ``chunk``, ``preset``. The
    token mode's own: ``quality``, ``search_iters``, ``refresh_below``. The hybrid mode's own: ``base_codec``,
    ``base_factor``, ``base_quality``, ``enhancer``, ``guard``. ``mode`` None lets the fields choose (one of a mode's own
    fields given away from its default; a hybrid one wins), else the network (a token model encodes tokens),
    else ``DEFAULT_MODE`` (``imfcodec.modes.choose``): ``EncoderSettings()`` is what `imfcodec encode` does
    without options, the hybrid mode at its default point.
    """

    quality: int = DEFAULT_QUALITY  # token mode: token quality (entropy.QUALITY_RANGE)
    keyint: int = 0
    refresh_below: float | None = None  # token mode: a key frame where the reconstruction's PSNR falls below
    scenecut: float = DEFAULT_SCENECUT  # scene-cut threshold (imfcodec.scenecut): a key frame at a cut; 0 = off
    key_codec: str = DEFAULT_KEY_CODEC
    key_quality: int | None = None  # None: the key-frame codec's own default (hybrid: HYBRID_KEY_QUALITY first)
    chunk: int = DEFAULT_CHUNK  # frames per token packet, or per base packet in the hybrid mode
    search_iters: int = DEFAULT_SEARCH_ITERS  # token mode: token search steps per frame (CLI --refine); 0 = E_T's
    preset: str = DEFAULT_PRESET  # the encoder's effort: the token search's steps (above) or the base encoder's speed
    base_codec: str | None = None  # hybrid mode: 'hevc', 'av1' or 'vp9'; None: DEFAULT_BASE_CODEC
    base_factor: int = DEFAULT_BASE_FACTOR  # hybrid mode: the base layer is coded at 1/base_factor of the frame size
    base_quality: int | None = None  # hybrid mode; None: the base codec's own default (baselayer)
    enhancer: str | None = None  # hybrid mode; None: DEFAULT_ENHANCER's shipped weights; else as --model
    mode: str | None = None  # "hybrid" or "token" (MODES); None: chosen as the class docstring says
    guard: bool = True  # hybrid mode: the encoder switches the enhancer off where it would hurt (format version 4)
    # hybrid mode: the key pictures coded by the base layer at full size (one intra picture per key frame; format
    # version 5); None: wherever the base codec can (baselayer.BaseCodec.intra_base, a 1/2 base)
    intra_base: bool | None = None
    lean: bool = True  # hybrid mode: lean base records (format version 5); False: the framing of versions 2-4
    # hybrid mode: code every other frame only; the decoder shows the mean of its neighbours between them (format
    # version 6): a base codec's bytes per frame have a floor, and on talking heads the mean of two neighbours costs
    # less than the bytes of the frame between; None: wherever the stream can (lean framing, a separate key image)
    half_rate: bool | None = None
    _checked: bool = field(default=False, init=False, repr=False, compare=False)  # validated() made it

    @property
    def implied_mode(self) -> str | None:
        """The mode these settings' own fields imply: an explicit ``mode``; else a hybrid field away from its
        default (as ``base_codec`` always chose the hybrid mode); else a token field away from its default
        (``quality``, ``refresh_below``, ``search_iters`` other than the default and the preset's); else None
        (undecided: the network, then ``DEFAULT_MODE``, decide; ``imfcodec.modes.choose``)."""
        if self.mode is not None:
            return self.mode
        if (self.base_codec, self.base_quality, self.enhancer, self.intra_base) != (None, None, None, None) \
                or self.base_factor != DEFAULT_BASE_FACTOR or self.guard is not True or self.lean is not True \
                or self.half_rate is not None:
            return "hybrid"
        steps = {DEFAULT_SEARCH_ITERS, PRESETS[self.preset].search_iters if self.preset in PRESETS else None}
        if self.quality != DEFAULT_QUALITY or self.refresh_below is not None or self.search_iters not in steps:
            return "token"
        return None

    @property
    def chosen_mode(self) -> str:
        """The mode these settings encode in without a network to say otherwise."""
        return self.implied_mode or DEFAULT_MODE

    @property
    def hybrid(self) -> bool:
        return self.chosen_mode == "hybrid"

    @classmethod
    def from_preset(cls, preset: str = DEFAULT_PRESET, **fields) -> "EncoderSettings":
        """The settings of a named preset (``PRESETS``); ``fields`` set or override any field, e.g.
        ``search_iters`` (the CLI's ``--refine``, the expert knob)."""
        return cls(**{"search_iters": _preset(preset).search_iters, "preset": preset, **fields})

    def in_mode(self, mode: str) -> "EncoderSettings":
        """These settings for the ``mode`` chosen (``modes.choose``): ``mode`` set, and in the hybrid mode the
        default base codec where none is given; InputError if they already name the other mode."""
        if self.mode is not None and self.mode not in MODES:
            raise ArgumentError(f"mode= must be one of {', '.join(MODES)} or None, got {self.mode!r}")
        if self.mode not in (None, mode):
            raise ArgumentError(f"these settings are for the {self.mode} mode, not the {mode} mode")
        if mode not in MODES:
            raise ArgumentError(f"mode= must be one of {', '.join(MODES)}, got {mode!r}")
        filled = {k: v for k, v in _MODE_DEFAULTS[mode].items() if getattr(self, k) is None}
        new = replace(self, mode=mode, **filled)
        return self if new == self else new

    def validated(self) -> "EncoderSettings":
        """These settings with the mode chosen (without a network: ``chosen_mode``) and ``key_quality`` (and
        ``base_quality``) resolved, or ArgumentError naming the field at fault (``quality=``; the CLI names its
        option instead). Settings it returns are not checked again."""
        if self._checked:
            return self
        from .errors import UnsupportedStreamError
        from .keyframe import get_keyframe_codec, list_keyframe_codecs

        s = self.in_mode(self.chosen_mode)
        if not _is_int(s.quality):
            raise ArgumentError(f"quality= must be an integer, got {s.quality!r}")
        if not _is_int(s.keyint) or s.keyint < 0:
            raise ArgumentError(f"keyint= must be >= 0 (0 = one key frame), got {s.keyint!r}")
        if not _is_int(s.chunk) or not 1 <= s.chunk <= MAX_ENCODER_CHUNK:
            raise ArgumentError(f"chunk= must be in 1..{MAX_ENCODER_CHUNK}, got {s.chunk!r}")
        if not _is_int(s.search_iters) or not 0 <= s.search_iters <= MAX_SEARCH_ITERS:
            raise ArgumentError(f"search_iters= must be an integer in 0..{MAX_SEARCH_ITERS}, got {s.search_iters!r}")
        _preset(s.preset)
        if not _is_number(s.scenecut) or not 0 <= s.scenecut <= 100:
            raise ArgumentError(f"scenecut= must be a threshold in 0..100 (0 = off), got {s.scenecut!r}")
        if s.refresh_below is not None and (not _is_number(s.refresh_below) or not 0 < s.refresh_below < 100):
            raise ArgumentError(f"refresh_below= must be a PSNR in dB (0..100) or None, got {s.refresh_below!r}")
        try:
            codec = get_keyframe_codec(s.key_codec)
        except UnsupportedStreamError:
            raise ArgumentError(f"key_codec= must be one of {', '.join(list_keyframe_codecs())}, "
                                f"got {s.key_codec!r}") from None
        kq = s.key_quality
        if kq is None:
            kq = _MODE_KEY_QUALITY[s.mode].get(s.key_codec, codec.default_quality)
        klo, khi = codec.quality_range
        if not _is_int(kq) or not klo <= kq <= khi:
            raise ArgumentError(f"key_quality= for {s.key_codec} must be in {klo}..{khi}, got {kq!r}")
        out = replace(s, key_quality=kq, **getattr(s, f"_validated_{s.mode}")())
        object.__setattr__(out, "_checked", True)
        return out

    def _validated_token(self) -> dict:
        """The token mode's own check: its quality and search in range, no hybrid field given. (Its modules are
        imported here, so that a hybrid encode never loads the token codec.)"""
        from .entropy.quant import QUALITY_RANGE
        from .token_search import SearchSettings

        lo, hi = QUALITY_RANGE
        if not lo <= self.quality <= hi:
            raise ArgumentError(f"quality= must be in {lo}..{hi}, got {self.quality!r}")
        SearchSettings(self.search_iters).validated()
        if (self.base_codec, self.base_quality, self.enhancer, self.base_factor) != (None, None, None,
                                                                                      DEFAULT_BASE_FACTOR):
            raise ArgumentError("base_factor=, base_quality= and enhancer= need the hybrid mode (a base_codec=)")
        if self.guard is not True:
            raise ArgumentError("guard=False needs the hybrid mode (the token mode has no enhancer to switch off)")
        if self.intra_base is not None or self.lean is not True or self.half_rate is not None:
            raise ArgumentError("intra_base=, lean= and half_rate= need the hybrid mode (they shape its base layer)")
        return {}

    def _validated_hybrid(self) -> dict:
        """The hybrid fields checked; returns the resolved base quality."""
        from .baselayer import get_base_codec, list_base_codecs
        from .errors import UnsupportedStreamError

        try:
            codec = get_base_codec(self.base_codec)
        except UnsupportedStreamError:
            raise ArgumentError(f"base_codec= must be one of {', '.join(list_base_codecs())}, "
                                f"got {self.base_codec!r}") from None
        if self.base_factor not in BASE_FACTORS or not _is_int(self.base_factor):
            raise ArgumentError(f"base_factor= must be one of {', '.join(map(str, BASE_FACTORS))}, "
                                f"got {self.base_factor!r}")
        if self.refresh_below is not None:
            raise ArgumentError("refresh_below= is not available in the hybrid mode (use keyint=)")
        if self.enhancer is not None and (not isinstance(self.enhancer, str) or not self.enhancer.strip()):
            raise ArgumentError(f"enhancer= must name an enhancer (NAME, PATH or random:NAME), got {self.enhancer!r}")
        if not isinstance(self.guard, bool):
            raise ArgumentError(f"guard= must be True or False, got {self.guard!r}")
        bq = codec.default_quality if self.base_quality is None else self.base_quality
        blo, bhi = codec.quality_range
        if not _is_int(bq) or not blo <= bq <= bhi:
            raise ArgumentError(f"base_quality= for {codec.name} must be in {blo}..{bhi}, got {bq!r}")
        if not isinstance(self.lean, bool):
            raise ArgumentError(f"lean= must be True or False, got {self.lean!r}")
        if self.half_rate is not None and not isinstance(self.half_rate, bool):
            raise ArgumentError(f"half_rate= must be True, False or None, got {self.half_rate!r}")
        if self.half_rate and not self.lean:
            raise ArgumentError("half_rate=True needs lean=True (format version 6 extends version 5)")
        from .baselayer import INTRA_BASE_FACTOR, INTRA_BASE_FACTORS

        can = codec.intra_base is not None and self.base_factor in INTRA_BASE_FACTORS
        # by default where the key pictures are at the frame's size (1/2); at 1/4 (keys at 1/2) when asked
        default = can and self.lean and self.base_factor == INTRA_BASE_FACTOR
        intra = default if self.intra_base is None else self.intra_base
        if not isinstance(intra, bool):
            raise ArgumentError(f"intra_base= must be True, False or None, got {self.intra_base!r}")
        if intra and not can:
            able = ", ".join(n for n in list_base_codecs() if get_base_codec(n).intra_base is not None)
            raise ArgumentError(f"intra_base=True (the key pictures in the base layer) needs a base codec that can "
                                f"carry them ({able}) at base_factor= {' or '.join(map(str, INTRA_BASE_FACTORS))}")
        if intra and not self.lean:
            raise ArgumentError("intra_base=True needs lean=True (both are format version 5)")
        if intra and self.key_quality is not None:
            raise ArgumentError("key_quality= has no effect when the key pictures are in the base layer (their "
                                "quality follows base_quality=); give intra_base=False for a separate key image")
        # by default with lean framing and a separate key image (the route the rate table measured half-rate)
        half = (self.lean and not intra) if self.half_rate is None else self.half_rate
        return {"base_quality": bq, "intra_base": intra, "half_rate": half}


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    """A real number that compares (not a bool, not NaN)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value


def hybrid_defaults(**fields) -> EncoderSettings:
    """The hybrid mode at its default point with ``fields`` overriding any field: ``EncoderSettings(**fields)``
    in the hybrid mode (kept for callers that name the mode this way)."""
    return EncoderSettings(**fields).in_mode("hybrid")
