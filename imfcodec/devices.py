"""``--device``: where the networks of an encode or a decode run (``cpu``, ``cuda``, ``cuda:N``, ``auto``).

Only the networks move: E_T, the token search and the decoder's synthesis (the enhancer in the hybrid
mode). Everything that feeds the entropy coder stays on the CPU and in integers, so a stream coded on a
GPU decodes to the same tokens on a CPU and the other way round: ``entropy.quantize`` rounds a token in
float64 on the CPU, the stream carries the integers, the scale indexes come from the model's stored
buffers in float64 on the CPU (``entropy.params``), and the rANS coder, key-frame codecs and base layers
are CPU code. Frames differ between devices by float rounding only, and TF32 is switched off on a GPU
so that stays small (CONTRIBUTING, "Devices"); the trainers make the same choice explicitly (their
``tf32`` setting, off unless asked for).

``cuda`` with no usable GPU is refused (one line): a user who asks for the GPU should learn that it is not
there, not get a CPU run they did not ask for. ``auto`` takes the GPU when there is one and the CPU
otherwise (the command line says so in one line). Light: ``check_device`` and ``resolve_device("cpu")``
do not import torch, so ``decode`` still refuses a file that is not a stream before loading torch.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from .errors import InputError

DEFAULT_DEVICE = "cpu"
DEVICE_HELP = "cpu (default), cuda, cuda:N, or auto (cuda when a GPU is available, else cpu)"
_DEVICE = re.compile(r"cpu|auto|cuda(:\d{1,3})?")


def check_device(name: str | None) -> str:
    """The device name, checked (``None`` is the default); InputError for anything else."""
    name = DEFAULT_DEVICE if name is None else str(name).strip().lower()
    if not _DEVICE.fullmatch(name):
        raise InputError(f"--device must be {DEVICE_HELP}; got {name!r}")
    return name


def resolve_device(name: str | None = None, note: Callable[[str], None] | None = None, *,
                   local_rank: int = 0, tf32: bool = False) -> str:
    """The torch device to run on, as a string (``"cpu"``, ``"cuda:0"``): ``auto`` falls back to the CPU
    (``note`` gets a one-line message), ``cuda`` without a GPU raises InputError. The one place a device
    name becomes a device, for the codec and the trainers alike: ``cuda`` and ``auto`` take GPU
    ``local_rank`` (a data-parallel rank's own GPU; 0 outside ``torchrun``), and on a GPU TF32 is set to
    ``tf32`` for convolutions and matmuls both (off by default: see below)."""
    name = check_device(name)
    if name == "cpu":
        return "cpu"
    import torch

    if not torch.cuda.is_available():
        if name == "auto":
            if note is not None:
                note(f"note: --device auto: {_no_gpu_reason(torch)}; running on the CPU")
            return "cpu"
        raise InputError(f"--device {name}: {_no_gpu_reason(torch)}; use --device cpu (or auto)")
    index = int(name.split(":")[1]) if ":" in name else int(local_rank)
    count = torch.cuda.device_count()
    if index >= count:
        raise InputError(f"--device {name}: this machine has {count} CUDA device(s), cuda:0..cuda:{count - 1}")
    # full float32 unless asked: TF32 convolutions and matmuls round to 10 bits of mantissa, enough to
    # move a decoded pixel by more than the conformance tolerance (1 level of 255) from the CPU's
    torch.backends.cudnn.allow_tf32 = bool(tf32)
    torch.backends.cuda.matmul.allow_tf32 = bool(tf32)
    return f"cuda:{index}"


def _no_gpu_reason(torch) -> str:
    if torch.version.cuda is None:
        return f"this torch ({torch.__version__}) is a CPU-only build"
    return f"no CUDA GPU is available (torch {torch.__version__} found no device or driver)"


def model_device(model) -> "torch.device":  # noqa: F821 - torch is not imported at module level
    """Where a model's tensors are (the CPU for a model without any)."""
    import torch

    for t in model.buffers():
        return t.device
    for t in model.parameters():
        return t.device
    return torch.device("cpu")
