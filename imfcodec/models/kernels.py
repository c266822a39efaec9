"""How the networks run on this process: the kernel choice and flush-to-zero, shared by both networks.

Both the token model (``imf.IMF``) and the hybrid mode's enhancer (``enhancer.Enhancer``) run the same
attention kernels (``alignment.Alignment``) and both suffer from denormal attention probabilities, so
these process-wide settings live here, apart from either network: importing the enhancer must not
import the token model. ``imfcodec.models`` imports this module before anything else.
"""

from __future__ import annotations

import os

import torch

from imfcodec.errors import InputError

# Decoder kernels (``IMF.kernels``, ``Enhancer.kernels``): "fast" (the default) or "reference". Same model, same weights, same
# maths; the fast kernels only reorder the work (see "Kernels" in ``alignment.Alignment``) and agree with the reference to float
# rounding, far inside the 1-level tolerance of decoded frames (tests/test_models.py checks both ways,
# gradients included). "reference" is the plain eager code the model was written and trained with, kept as
# the portable reference and the fallback: ``IMFCODEC_KERNELS=reference`` selects it for a whole process.
KERNELS = ("fast", "reference")


def default_kernels() -> str:
    name = os.environ.get("IMFCODEC_KERNELS", "fast").strip().lower() or "fast"
    if name not in KERNELS:
        raise InputError(f"IMFCODEC_KERNELS must be one of {', '.join(KERNELS)}, got {name!r}")
    return name


def flush_denormals() -> bool:
    """Flush denormal floats to zero (FTZ/DAZ) for this process; returns whether the CPU supports it.

    Called once when this module is imported, which ``imfcodec.models`` does first, so importing any model
    module (the token model, the enhancer, the registry) sets it before any entry point (CLI,
    ``imfcodec.api``, either mode's encoder/decoder, training, the benchmarks) has run a tensor op, because
    the flag is per thread: torch's intra-op worker threads copy it from the main thread when they are created, at the
    first parallel op, and never look at it again. Attention probabilities far from the query underflow
    to denormals (1.2 % of them at R/8 with the shipped weights), which costs some CPUs several times the
    time of a normal multiply (issue 12 measured 1.3-1.4x on ``decode_frame`` at 1 thread); the AMD Zen 5
    build machine has no such penalty and shows no difference. Values below 1.2e-38 change no decoded
    pixel (tests/test_conformance.py, streams of both modes byte-identical).
    """
    import numpy as np

    for t in (np.float16, np.float32, np.float64):  # numpy caches these; made under DAZ, they would warn
        np.finfo(t)
    return bool(torch.set_flush_denormal(True))


FLUSH_DENORMALS = flush_denormals()
