"""How imfcodec.models is laid out (issue 21): the default (hybrid) mode runs its enhancer without importing
the token model, the entropy coder or CompressAI, flush-to-zero is still on before its first tensor op,
and the names that moved out of ``imfcodec.models.imf`` are still importable from there."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

TOKEN_MODE_MODULES = ("imfcodec.models.imf", "imfcodec.models.discriminator", "imfcodec.entropy",
                      "imfcodec.token_search", "imfcodec.modes.token", "imfcodec.codec", "compressai")

# In a fresh process: import the hybrid mode, load a tiny random enhancer and the shipped one (from its weights
# file, the path `imfcodec encode` takes), run the tiny one on a key frame and two base frames with 2 intra-op
# threads (started after the imports), and print what was imported and whether a denormal times one is zero
# in every thread. ``ENCODE`` adds a short hybrid encode and decode through the mode's own entry points.
_HYBRID_RUN = """
import json, sys
import imfcodec.modes.hybrid as hybrid
from imfcodec.models import upscale
import torch

torch.set_num_threads(2)
loaded = hybrid.load_enhancer("random:enh-tiny")
key = torch.rand(1, 3, 64, 64)
base = upscale(torch.nn.functional.avg_pool2d(key, 2), (64, 64))
with torch.inference_mode():
    out = loaded.model.enhance(loaded.model.prepare_key(key, base), base.expand(2, -1, -1, -1))
frames = int(out.shape[0])
shipped = hybrid.load_enhancer(None)
if ENCODE:
    from fractions import Fraction
    import numpy as np
    from imfcodec.settings import EncoderSettings
    settings = EncoderSettings(half_rate=False)  # (the mode's decoder alone: no frames between to show)
    enc = hybrid.open_encoder(loaded, Fraction(25), settings)
    rng = np.random.default_rng(0)
    packets = [p for _ in range(3) for p in enc.encode(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))]
    packets += enc.flush()
    dec = hybrid.open_decoder(loaded, enc.header)
    frames = len([f for p in packets for f in dec.decode(p)])
from imfcodec.models import kernels
x = torch.full((1 << 20,), 1e-40)
print(json.dumps({"frames": frames, "shipped": shipped.name, "ftz": kernels.FLUSH_DENORMALS,
                  "denormals_left": int((x * 1.0).count_nonzero()),
                  "modules": sorted(m for m in sys.modules if m.startswith(("imfcodec", "compressai")))}))
"""


def _run_hybrid(encode: bool) -> None:
    code = f"ENCODE = {encode}\n{_HYBRID_RUN}"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["frames"] == (3 if encode else 2) and got["shipped"]
    assert "imfcodec.models.enhancer" in got["modules"] and "imfcodec.models.kernels" in got["modules"]
    if got["ftz"]:  # the CPU supports flush-to-zero: it was set before torch started its worker threads
        assert got["denormals_left"] == 0
    assert "subnormal" not in out.stderr  # numpy's finfo warning under flush-to-zero is avoided
    loaded = [m for m in got["modules"] if m.startswith(TOKEN_MODE_MODULES)]
    assert loaded == [], f"the hybrid mode imported {loaded}"


def test_the_hybrid_mode_runs_its_enhancer_without_the_token_model_and_with_flush_to_zero():
    _run_hybrid(encode=False)


def test_a_hybrid_encode_and_decode_runs_without_the_token_model():
    _run_hybrid(encode=True)


def test_light_imports_of_the_models_package():
    """``from imfcodec.models import upscale, create_model`` and the registry's listing stay light; asking for
    ``IMF`` imports the token model then."""
    code = ("import sys; from imfcodec.models import upscale, create_model, list_models; "
            "names = (list_models('imf'), list_models('enhancer')); create_model('enh-tiny'); "
            "before = 'imfcodec.models.imf' in sys.modules or 'imfcodec.models.discriminator' in sys.modules; "
            "from imfcodec.models import IMF, Discriminator; "
            "print(before, names, 'imfcodec.models.imf' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ("False (['imf-base', 'imf-paper', 'imf-small', 'imf-small-v2', 'imf-tiny'], "
                                  "['enh-rec', 'enh-small', 'enh-tiny', 'enh-tiny-rec', 'enh-wide']) True")


def test_the_moved_names_are_still_importable_from_imf():
    import imfcodec.models as models
    from imfcodec.models import alignment, config, kernels
    from imfcodec.models import imf

    for name in ("Alignment", "sincos_2d", "cell_coords", "inv_softplus", "WINDOW_TILE", "FULL_BLOCK"):
        assert getattr(imf, name) is getattr(alignment, name)
    for name in ("KERNELS", "default_kernels", "flush_denormals", "FLUSH_DENORMALS"):
        assert getattr(imf, name) is getattr(kernels, name)
    for name in ("IMFConfig", "NUM_SCALES", "FINEST_FACTOR", "COARSEST_FACTOR", "COARSE_PIXEL_SCALE",
                 "COARSE_PIXEL_FACTOR"):
        assert getattr(imf, name) is getattr(config, name)
    assert models.EnhancerConfig is config.EnhancerConfig and models.IMFConfig is imf.IMFConfig
    assert set(models.__all__) <= set(dir(models))
    for name in models.__all__:
        assert getattr(models, name) is not None
