"""Export: calibrate a model's token statistics on clips and write it as safetensors.

``calibrate_and_export`` works on a copy, so the training model is never changed by an export.
"""

from __future__ import annotations

import copy
import json
import os
from typing import Any

import torch

from imfcodec.entropy.params import measure_prior, prior_metadata, set_prior
from imfcodec.train.data import Clips, resize_batch, to_float


@torch.no_grad()
def calibrate_tokens(model: torch.nn.Module, clips: Clips, resolution: int, device: torch.device,
                     batch: int = 16, max_frames: int | None = None) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Per-channel std of E_T tokens over the frames of ``clips`` (the first ``max_frames`` of
    each) and per-channel RMS of consecutive-frame token deltas (within clips), in token units.
    Returns (token_std, delta_std, frames); the statistics are entropy.params.measure_prior's."""
    was = model.training
    model.eval()
    toks = []
    for frames in clips.frames:
        frames = frames[:max_frames] if max_frames else frames
        ts = []
        for i in range(0, len(frames), batch):
            x = resize_batch(to_float(frames[i:i + batch]).to(device), resolution)
            ts.append(model.encode_token(x).float().cpu())
        toks.append(torch.cat(ts))
    model.train(was)
    token_std, delta_std = measure_prior(toks)
    return token_std, delta_std, int(sum(len(t) for t in toks))


def export_model(model: torch.nn.Module, path: str | os.PathLike, fp16: bool = True,
                 metadata: dict[str, Any] | None = None) -> bytes:
    """Write ``model`` as safetensors with its IMFConfig JSON (and ``metadata``) in the header.

    Non-string metadata values are JSON-encoded. The model's measured delta prior (if any) is also
    stored, as metadata ``delta_std`` (entropy.params.prior_metadata), unless already given.
    Returns the weights hash a stream made with the reloaded file carries.
    """
    from imfcodec.zoo import save_weights

    meta = {}
    for k, v in (metadata or {}).items():
        meta[str(k)] = v if isinstance(v, str) else json.dumps(v, sort_keys=True)
    meta = prior_metadata(model) | meta
    return save_weights(model, path, fp16=fp16, metadata=meta)


def calibrate_and_export(model: torch.nn.Module, clips: Clips, path: str | os.PathLike, *,
                         resolution: int, device: torch.device, fp16: bool = True,
                         metadata: dict[str, Any] | None = None,
                         calib_frames: int | None = None) -> dict[str, Any]:
    """Calibrate a *copy* of ``model`` (token_scale := token std, delta_std := delta RMS over
    ``clips``) and export it. The training model is left untouched."""
    m = copy.deepcopy(model).to(device).eval()
    token_std, delta_std, n = calibrate_tokens(m, clips, resolution, device, max_frames=calib_frames)
    m.token_scale.copy_(token_std.to(m.token_scale.device))
    set_prior(m, delta_std)  # export_model writes it to the metadata
    meta = dict(metadata or {})
    meta["calibration_frames"] = n
    meta["token_scale"] = [round(float(v), 7) for v in token_std.tolist()]
    whash = export_model(m.cpu(), path, fp16=fp16, metadata=meta)
    return {"path": str(path), "weights_hash": whash.hex(), "calibration_frames": n,
            "token_scale": token_std, "delta_std": delta_std}
