"""Rate control of the hybrid mode: ``imfcodec encode --kbps R`` picks the operating point (base-layer codec,
size and quality, key-frame quality) that gave the best quality within R on training clips.

Why a table and not a loop: the base layer's rate at a given quality depends on the clip, but the *order*
of the operating points by quality per bit does much less, and a table measured once on held-out training
clips (``benchmarks/hybrid_table.py``; never the test clips) gives one number -> one point with no extra
encoding passes, which is what a live encoder needs. The table ships beside the enhancer's weights
(``imfcodec/weights/NAME-points.json``) because the quality an operating point gives depends on the enhancer.

A point's rate for a clip of ``d`` seconds is its steady rate plus its start-up bytes (header, key image, the
base layer's first intra picture) spread over ``d``: short clips pay the key frame over few seconds.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from .errors import InputError

DEFAULT_DURATION_S = 10.0  # what --kbps assumes when the input's duration is unknown (a pipe)


@dataclass(frozen=True)
class OperatingPoint:
    """One measured hybrid operating point (means over the table's clips)."""

    base_factor: int
    base_quality: int
    key_quality: int
    steady_kbps: float  # base layer and framing after the first frame, per second at the clips' frame rate
    startup_bytes: float  # signature, header, the key packet and the first base access unit
    psnr: float  # enhanced, dB
    psnr_bicubic: float  # the same streams without the enhancer, dB
    base_codec: str = "hevc"  # tables measured before VP9 bases existed name none: x265

    def kbps(self, duration_s: float) -> float:
        """Expected whole-file rate for a clip of ``duration_s`` seconds with one key frame."""
        return self.steady_kbps + self.startup_bytes * 8 / max(duration_s, 1e-3) / 1000


def table_path(enhancer_name: str) -> Path:
    from .zoo import WEIGHTS_DIR

    return WEIGHTS_DIR / f"{enhancer_name}-points.json"


def load_table(enhancer_name: str) -> list[OperatingPoint]:
    """The shipped table of ``enhancer_name``; InputError if there is none."""
    path = table_path(enhancer_name)
    if not path.is_file():
        raise InputError(f"--kbps needs the operating-point table of the enhancer '{enhancer_name}' "
                         f"({path.name}), which this install does not have; give --base-scale, "
                         f"--base-quality and --key-quality instead")
    data = json.loads(path.read_text())
    return [OperatingPoint(**p) for p in data["points"]]


def save_table(points: list[OperatingPoint], path: Path, info: dict) -> None:
    from .fsutil import AtomicOutput

    with AtomicOutput(path) as tmp:
        Path(tmp).write_text(json.dumps({**info, "points": [asdict(p) for p in points]}, indent=1) + "\n")


def choose(points: list[OperatingPoint], kbps: float, duration_s: float | None = None,
           base_codec: str | None = None) -> tuple[OperatingPoint, float, bool]:
    """(point, its expected rate, whether it fits): the best-quality point whose expected rate is within
    ``kbps`` (among ``base_codec``'s points when given); when none fits, the lowest-rate point (``fits``
    False, for the caller to say so)."""
    if base_codec is not None:
        points = [p for p in points if p.base_codec == base_codec]
        if not points:
            raise InputError(f"the operating-point table has no {base_codec} base-layer points: drop --base-codec, "
                             f"or give --base-scale and --base-quality yourself")
    if not points:
        raise InputError("the operating-point table is empty")
    if not kbps > 0:
        raise InputError(f"--kbps must be > 0, got {kbps}")
    d = DEFAULT_DURATION_S if duration_s is None or duration_s <= 0 else duration_s
    fitting = [p for p in points if p.kbps(d) <= kbps]
    if fitting:
        best = max(fitting, key=lambda p: (p.psnr, -p.kbps(d)))
        return best, best.kbps(d), True
    low = min(points, key=lambda p: p.kbps(d))
    return low, low.kbps(d), False
