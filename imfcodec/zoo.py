"""Where model weights come from: the shipped default, local safetensors files, or a seeded
random initialisation (for format tests). Weights are safetensors only, so loading never runs code;
the model config travels in the file's metadata, and a 16-byte hash of the weights goes into every
stream so a decoder refuses streams made with other weights."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import ModelMismatchError, WeightsError
from .fsutil import AtomicOutput

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
DEFAULT_MODEL = "imf-small-v2"
WEIGHTS_FORMAT = "imfcodec-weights/1"
RANDOM_PREFIX = "random:"


@dataclass(frozen=True)
class LoadedModel:
    """A ready model plus what identifies it in a stream."""

    model: torch.nn.Module
    name: str
    weights_hash: bytes
    source: str


def weights_hash(model: torch.nn.Module) -> bytes:
    """16-byte digest of the weights as float32, independent of the file's dtype or path."""
    h = hashlib.sha256()
    for key, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().to("cpu")
        t = t.float() if t.is_floating_point() else t
        h.update(key.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.contiguous().numpy().tobytes())
    return h.digest()[:16]


def save_weights(model: torch.nn.Module, path: str | os.PathLike, *, fp16: bool = True,
                 metadata: dict[str, str] | None = None) -> bytes:
    """Write ``model`` as safetensors (fp16 by default) with its config in the metadata.

    Written atomically; returns the weights hash a stream made with the *reloaded* model carries.
    """
    from safetensors.torch import save_file

    state = {}
    for k, v in model.state_dict().items():
        v = v.detach().to("cpu").contiguous()
        state[k] = v.half() if (fp16 and v.is_floating_point()) else v
    meta = {str(k): str(v) for k, v in (metadata or {}).items()}
    meta["format"] = WEIGHTS_FORMAT
    meta["config"] = json.dumps(model.config.to_dict(), sort_keys=True)
    meta["kind"] = getattr(model.config, "kind", "imf")
    path = Path(path)
    with AtomicOutput(path) as tmp:
        save_file(state, str(tmp), metadata=meta)
    return weights_hash(load_weights(path))


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The safetensors metadata of a weights file (config, training notes)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except FileNotFoundError:
        raise WeightsError(f"weights file not found: {path}") from None
    except Exception as e:  # safetensors raises its own error types for non-safetensors files
        raise WeightsError(f"{path} is not a safetensors weights file ({type(e).__name__})") from None


def load_weights(path: str | os.PathLike) -> torch.nn.Module:
    """Build the model described by the file's metadata and load its weights (no pickle)."""
    from safetensors.torch import load_file

    from .models import EnhancerConfig, IMFConfig, build_model

    meta = read_metadata(path)
    if meta.get("format") != WEIGHTS_FORMAT or "config" not in meta:
        raise WeightsError(f"{path} is safetensors but not imfcodec weights (no '{WEIGHTS_FORMAT}' config)")
    kinds = {"imf": IMFConfig, "enhancer": EnhancerConfig}
    kind = meta.get("kind", "imf")  # files from before the hybrid mode carry no kind: token models
    if kind not in kinds:
        raise WeightsError(f"{path}: unknown model kind {kind!r} in metadata")
    try:
        config = kinds[kind].from_dict(json.loads(meta["config"]))
    except Exception as e:
        raise WeightsError(f"{path}: bad model config in metadata ({e})") from None
    _check_shapes(path, config)
    model = build_model(config)
    state = load_file(str(path))
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        raise WeightsError(f"{path}: weights do not match config '{config.name}' ({first[-1].strip()[:200]})") from None
    if kind == "imf":
        from .entropy.params import load_prior  # token models only: the hybrid mode never loads the entropy coder

        try:
            load_prior(model, meta)  # the measured delta prior, which picks the entropy tables
        except ValueError as e:
            raise WeightsError(f"{path}: {e}") from None
    return model.eval()


def _check_shapes(path: str | os.PathLike, config) -> None:
    """Compare the file's tensor shapes with the config's on the meta device, so a config that asks
    for a huge model is refused before anything is allocated."""
    from safetensors import safe_open

    from .models import build_model

    try:
        with torch.device("meta"):
            expected = {k: tuple(v.shape) for k, v in build_model(config).state_dict().items()}
    except Exception as e:
        raise WeightsError(f"{path}: cannot build model '{config.name}' from its config ({e})") from None
    with safe_open(str(path), framework="pt") as f:
        found = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    if found != expected:
        diff = sorted(set(found.items()) ^ set(expected.items()))
        raise WeightsError(f"{path}: weights do not match config '{config.name}' "
                           f"({len(diff)} tensor(s) differ, first: {diff[0][0]})")


def shipped_weights_path(name: str) -> Path | None:
    """The packaged weights for config ``name``, if this build ships them."""
    p = WEIGHTS_DIR / f"{name}.safetensors"
    return p if p.is_file() else None


def random_model(name: str, seed: int = 0) -> torch.nn.Module:
    """A seeded random initialisation: reproducible, untrained; for format tests only."""
    from .models import create_model

    gen_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = create_model(name)
    finally:
        torch.random.set_rng_state(gen_state)
    return model.eval()


def load_model(spec: str | None = None) -> LoadedModel:
    """Resolve ``--model``: None (shipped default), a config name with shipped weights,
    a path to a .safetensors file, or ``random:NAME[:SEED]``."""
    from .models import list_models

    if spec is None:
        spec = DEFAULT_MODEL
    if spec.startswith(RANDOM_PREFIX):
        name, _, seed = spec[len(RANDOM_PREFIX):].partition(":")
        if name not in list_models():
            raise WeightsError(f"unknown model config '{name}' (known: {', '.join(list_models())})")
        try:
            seed_i = int(seed or 0)
        except ValueError:
            raise WeightsError(f"bad seed in '{spec}'") from None
        model = random_model(name, seed_i)
        return LoadedModel(model, name, weights_hash(model), spec)
    path = Path(spec)
    if path.suffix == ".safetensors" or path.exists():
        model = load_weights(path)
        return LoadedModel(model, model.config.name, weights_hash(model), str(path))
    if spec in list_models():
        shipped = shipped_weights_path(spec)
        if shipped is None:
            raise WeightsError(
                f"no trained weights are shipped for '{spec}' yet: pass --model PATH.safetensors "
                f"(train one with `imfcodec train`), or --model random:{spec} for an untrained model")
        model = load_weights(shipped)
        return LoadedModel(model, model.config.name, weights_hash(model), str(shipped))
    raise WeightsError(f"--model '{spec}' is neither a weights file nor a known config "
                       f"(known: {', '.join(list_models())})")


def spec_config(spec: str) -> tuple[str, str] | None:
    """(config name, kind) of what ``load_model(spec)`` would load, without loading any weights: from the
    registry for a config name or ``random:NAME``, from the file's metadata for a path; None where loading
    would fail (it says why). The modes' chooser and ``--kbps`` need only these."""
    from .models import list_models

    if spec.startswith(RANDOM_PREFIX):
        name = spec[len(RANDOM_PREFIX):].partition(":")[0]
    elif Path(spec).suffix == ".safetensors" or Path(spec).exists():
        try:
            meta = read_metadata(spec)
            return str(json.loads(meta["config"])["name"]), meta.get("kind", "imf")
        except (WeightsError, KeyError, TypeError, ValueError):
            return None
    else:
        name = spec
    kind = next((k for k in ("imf", "enhancer") if name in list_models(k)), None)
    return (name, kind) if kind is not None else None


def spec_kind(spec: str) -> str | None:
    """The config kind ("imf": a token model, "enhancer") ``spec`` names, or None (``spec_config``)."""
    found = spec_config(spec)
    return found[1] if found else None


def resolve_stream_model(name: str, digest: bytes, spec: str | None = None) -> LoadedModel:
    """Find the model a stream was made with: the one given, else the shipped weights or the
    seeded random init of that config, whichever has the stream's weights hash."""
    from .models import list_models

    if spec is not None:
        loaded = load_model(spec)
        check_stream_model(loaded, name, digest)
        return loaded
    if name not in list_models():
        raise ModelMismatchError(f"stream was made with unknown model '{name}'; pass --model PATH to its weights")
    candidates = []
    if shipped_weights_path(name) is not None:
        candidates.append(name)
    candidates.append(f"{RANDOM_PREFIX}{name}:0")
    for cand in candidates:
        loaded = load_model(cand)
        if loaded.weights_hash == digest:
            return loaded
    raise ModelMismatchError(
        f"stream was made with '{name}' weights {digest.hex()[:16]}, which this install does not have; "
        f"pass --model PATH to those weights")


def check_stream_model(loaded: LoadedModel, name: str, digest: bytes) -> None:
    """Refuse a model whose config name or weights hash differs from the stream's."""
    if loaded.name != name:
        raise ModelMismatchError(f"stream was made with model '{name}', not '{loaded.name}' ({loaded.source})")
    if loaded.weights_hash != digest:
        raise ModelMismatchError(
            f"stream was made with other '{name}' weights ({digest.hex()[:16]}), not {loaded.source} "
            f"({loaded.weights_hash.hex()[:16]})")
