"""zoo: telling a network's name and kind without loading it; loading and checking by hash."""

from __future__ import annotations

import pytest

from imfcodec.errors import ModelMismatchError, WeightsError
from imfcodec.zoo import (check_stream_model, load_model, random_model, save_weights, spec_config, spec_kind,
                          weights_hash)


def test_spec_config_without_loading(tmp_path):
    assert spec_config("random:imf-tiny:3") == ("imf-tiny", "imf")
    assert spec_config("enh-tiny") == ("enh-tiny", "enhancer")
    assert spec_kind("no-such-model") is None and spec_kind(str(tmp_path / "missing.safetensors")) is None
    path = tmp_path / "e.safetensors"
    save_weights(random_model("enh-tiny"), path)
    assert spec_config(str(path)) == ("enh-tiny", "enhancer")
    (tmp_path / "junk.safetensors").write_bytes(b"not safetensors")
    assert spec_kind(str(tmp_path / "junk.safetensors")) is None


def test_saved_weights_reload_with_the_hash_streams_carry(tmp_path):
    model = random_model("imf-tiny", seed=1)
    path = tmp_path / "t.safetensors"
    digest = save_weights(model, path)
    loaded = load_model(str(path))
    assert loaded.weights_hash == digest == weights_hash(loaded.model) and loaded.name == "imf-tiny"
    assert load_model("random:imf-tiny:1").weights_hash != load_model("random:imf-tiny:2").weights_hash
    check_stream_model(loaded, "imf-tiny", digest)
    with pytest.raises(ModelMismatchError, match="other 'imf-tiny' weights"):
        check_stream_model(loaded, "imf-tiny", b"\0" * 16)
    with pytest.raises(ModelMismatchError, match="not 'imf-tiny'"):
        check_stream_model(loaded, "enh-tiny", digest)


def test_bad_specs_are_refused():
    with pytest.raises(WeightsError, match="neither a weights file nor a known config"):
        load_model("no-such-model")
    with pytest.raises(WeightsError, match="bad seed"):
        load_model("random:imf-tiny:x")
