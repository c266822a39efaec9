"""The modes seam: the one place that knows which coding modes exist and which one a job uses.

A mode is a way of coding the frames between key frames: ``token`` (IMF latent tokens, ``modes.token``) or
``hybrid`` (a conventional low-resolution base layer lifted by an enhancer, ``modes.hybrid``, the default). What
both share (frame checks, tensor conversion, the key-frame policy, the frame loop, the packet type, the decoder's
bookkeeping) is in ``modes.common``.

The chooser: ``choose(settings, network)`` for an encode (the settings' ``mode``, else the mode a mode-only
field implies, else the network's kind, else ``settings.DEFAULT_MODE``), ``for_header`` for a stream,
``for_kind`` for a network config. The CLI, the API and the zoo ask it instead of branching on the mode;
each ``Mode`` loads its network and opens its encoder and decoder (``load_network``, ``open_encoder``,
``open_decoder`` of its module, imported only when used: importing this package loads no torch).

A third mode: a module beside ``token.py`` and ``hybrid.py`` with those three functions, a ``Mode`` entry in
``MODES``, its name in ``settings.MODES`` and its fields in ``EncoderSettings``; the bitstream says how a
stream names it (``bitstream/format.py``).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from ..errors import ArgumentError
from ..settings import DEFAULT_MODE


@dataclass(frozen=True)
class Mode:
    """One coding mode: its names in each place a mode is named, and the module that implements it."""

    name: str  # --mode, EncoderSettings.mode
    stream_name: str  # stream_info's "mode"
    network_kind: str  # the model config's kind (zoo metadata "kind", models.list_models(kind))
    network_label: str  # what the CLI calls its network in a summary
    payload: str  # what the CLI calls its bytes other than key frames
    stream_line: str  # `imfcodec info`'s line about the coding, formatted with stream_info's dict
    module_name: str

    def module(self):
        return importlib.import_module(self.module_name, __name__)

    def load_network(self, spec: Any, settings) -> Any:
        """The ``LoadedModel`` this mode encodes with: ``spec`` (a ``LoadedModel``, or as ``--model``), or the
        settings' default; a network of the other mode's kind is refused in one line."""
        return self.module().load_network(spec, settings)

    def open_encoder(self, loaded, fps, settings):
        return self.module().open_encoder(loaded, fps, settings)

    def open_decoder(self, loaded, header, enhance: bool = True):
        return self.module().open_decoder(loaded, header, enhance)


TOKEN = Mode("token", "tokens", "imf", "model", "tokens",
             "tokens q{quality}, chunk {chunk}, dim {token_dim}", ".token")
HYBRID = Mode("hybrid", "hybrid", "enhancer", "enhancer", "base",
              "base layer: {base_codec} {base_width}x{base_height} q{base_quality}", ".hybrid")
MODES: dict[str, Mode] = {m.name: m for m in (HYBRID, TOKEN)}
_BY_KIND = {m.network_kind: m for m in MODES.values()}
_BY_STREAM = {m.stream_name: m for m in MODES.values()}


def get_mode(name: str) -> Mode:
    if name not in MODES:
        raise ArgumentError(f"mode= must be one of {', '.join(MODES)}, got {name!r}")
    return MODES[name]


def for_header(header) -> Mode:
    """The mode of a stream (its header says whether it has a base layer: FORMAT.md)."""
    return _BY_STREAM["hybrid" if header.hybrid else "tokens"]


def for_stream_name(name: str) -> Mode:
    """The mode ``stream_info`` calls ``name``."""
    return _BY_STREAM[name]


def for_kind(kind: str | None) -> Mode | None:
    """The mode a network of config kind ``kind`` codes (None for an unknown kind)."""
    return _BY_KIND.get(kind or "")


def network_kind(network: Any) -> str | None:
    """The config kind of a network: a ``LoadedModel`` or an ``nn.Module`` (its config), or a spec as
    ``--model`` takes (read from the registry or the file's metadata, without loading weights); None when it
    cannot tell (no network, or a spec that loading will refuse with its own message)."""
    if network is None:
        return None
    if not isinstance(network, str):
        model = getattr(network, "model", network)
        return getattr(getattr(model, "config", None), "kind", "imf")
    from ..zoo import spec_kind

    return spec_kind(network)


def choose(settings, network: Any = None) -> Mode:
    """The mode of an encode: ``settings.implied_mode``, else the network's (a token model encodes tokens, an
    enhancer the hybrid mode), else ``DEFAULT_MODE``. So ``EncoderSettings()`` without a network is the
    default mode, as `imfcodec encode` without options."""
    name = settings.implied_mode
    if name is not None:
        return get_mode(name)
    return for_kind(network_kind(network)) or MODES[DEFAULT_MODE]
