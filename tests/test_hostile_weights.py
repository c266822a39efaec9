"""Hostile input, weights (issue #5, theme 6): only safetensors with our metadata load, training
checkpoints load without running code, and a config cannot make us allocate a huge model."""

from __future__ import annotations

import os
import pickle
import struct

import pytest
import torch

from helpers import cli, fast_video, gradient, one_line_error
from imfcodec.errors import InputError, WeightsError

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_only_safetensors_weights(tmp_path, tiny, hevc_stream):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    cases = {
        "evil.safetensors": pickle.dumps(Evil()),
        "evil.pt": pickle.dumps(Evil()),
        "text.safetensors": b"hello",
        "empty.safetensors": b"",
        "huge_header.safetensors": struct.pack("<Q", 2**62) + b"{}",
    }
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(2)}, str(tmp_path / "foreign.safetensors"))  # not ours: no config
    save_file({"x": torch.zeros(2)}, str(tmp_path / "mismatch.safetensors"),
              metadata={"format": "imfcodec-weights/1", "config": tiny.model.config.to_json()})
    save_file({"x": torch.zeros(2)}, str(tmp_path / "badconfig.safetensors"),
              metadata={"format": "imfcodec-weights/1", "config": '{"resolution": 33}'})
    for name, blob in cases.items():
        (tmp_path / name).write_bytes(blob)
    src = fast_video(tmp_path / "c.mp4", [gradient(64, 64)], "libx264", "yuv420p")
    for name in [*cases, "foreign.safetensors", "mismatch.safetensors", "badconfig.safetensors"]:
        r = cli("encode", src, "-o", tmp_path / "o.imf", "--model", tmp_path / name)
        one_line_error(r)
        r = cli("decode", hevc_stream, "-o", tmp_path / "o.y4m", "--model", tmp_path / name)
        one_line_error(r)
    assert not marker.exists()  # nothing was unpickled
    with pytest.raises(WeightsError, match="do not match"):
        from imfcodec.zoo import load_weights

        load_weights(tmp_path / "mismatch.safetensors")


def test_checkpoints_load_without_running_code(tmp_path):
    """--resume PATH uses torch.load(weights_only=True): a pickled payload is refused, one line."""
    from imfcodec.train.__main__ import main as train_main
    from imfcodec.train.trainer import load_checkpoint

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    evil = tmp_path / "evil.pt"
    torch.save({"format": "imfcodec-train/1", "e": Evil()}, str(evil))
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    for path in (evil, junk):
        with pytest.raises(InputError, match="not a loadable imfcodec training checkpoint"):
            load_checkpoint(path)
        assert train_main(["--resume", str(path), "--out", str(tmp_path / "run")]) == 1
    assert not marker.exists()


def test_weights_whose_config_asks_for_a_huge_model_are_refused_before_allocating(tmp_path):
    """Shapes are checked on the meta device first: a lying config cannot make us allocate terabytes."""
    import json as _json

    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from imfcodec.errors import WeightsError
    from imfcodec.zoo import load_weights, random_model, save_weights

    good = tmp_path / "t.safetensors"
    save_weights(random_model("imf-tiny"), good)
    with safe_open(str(good), "pt") as f:
        meta = dict(f.metadata())
    cfg = _json.loads(meta["config"])
    cfg["imfd_widths"] = [200000] + list(cfg["imfd_widths"][1:])
    meta["config"] = _json.dumps(cfg)
    bad = tmp_path / "huge.safetensors"
    save_file(load_file(str(good)), str(bad), metadata=meta)
    with pytest.raises(WeightsError, match="do not match"):
        load_weights(bad)
