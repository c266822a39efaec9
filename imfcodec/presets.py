"""The encoder's named efforts (``--preset``; ``benchmarks.rd --effort``) and what each encoder does at each.

One table and one set of encoder option builders, used by the token search (``search_iters``), the hybrid
mode's base layer (``imfcodec.baselayer``) and the benchmarks' conventional anchors (``benchmarks.anchors``),
so a name means the same encoder settings everywhere. Every effort codes the same format; only the encoder's
work (and so its bytes and speed) differs.

Measured figures (speeds, quality and rate per effort) live with the measurements, not here, because they
change with every retrained network and machine: ``benchmarks/results/model_speed.md`` (token-mode encoding
speed), ``benchmarks/results/2026-11-28-presets-heldout-train/`` (token search steps) and
``benchmarks/results/2026-11-28-base-presets-heldout-train/`` (base-layer efforts), summed up in the README.

Pure Python (no torch, numpy or PyAV), so the CLI can show the names in ``--help`` without loading a codec.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import InputError


@dataclass(frozen=True)
class Preset:
    """One named effort. Token mode: ``search_iters``, how hard the encoder searches for each frame's token
    (``imfcodec.token_search``). Hybrid mode and anchors: each conventional encoder's own speed setting of the
    same name (x264/x265: their preset of that name; ``vp9``: deadline and cpu-used; ``svtav1``: its preset)."""

    search_iters: int  # token search: Adam steps through the decoder per frame (--refine)
    what: str  # the token mode's effort in words (``--help``)
    vp9: tuple[str, int]  # libvpx-vp9 (deadline, cpu-used)
    svtav1: int  # libsvtav1 preset (0 slowest .. 13 fastest)
    fps: float | None = None  # no longer set: measured speeds are in benchmarks/results/model_speed.md

    @property
    def base(self) -> str:
        """What the default base codec (VP9) does at this effort, for ``--help``."""
        deadline, cpu_used = self.vp9
        return f"VP9 {deadline} cpu-used {cpu_used}"

    def describe(self) -> str:
        """The token mode's effort in words, for ``--help``."""
        return self.what


# One home for the presets. The x264/x265 preset of each is its own name.
PRESETS: dict[str, Preset] = {
    "ultrafast": Preset(0, "E_T's token, no search (real time)", ("realtime", 8), 12),
    "fast": Preset(3, "token search, 3 steps", ("good", 4), 10),
    "medium": Preset(4, "token search, 4 steps", ("good", 2), 8),
    "slow": Preset(8, "token search, 8 steps", ("good", 1), 6),
    "veryslow": Preset(16, "token search, 16 steps", ("good", 0), 4),
}
DEFAULT_PRESET = "medium"
EFFORTS = tuple(PRESETS)  # the names, fastest first
# (the base layer and the benchmarks call the same names "efforts"; DEFAULT_EFFORT is DEFAULT_PRESET)
DEFAULT_EFFORT = DEFAULT_PRESET
VP9_EFFORT = {name: p.vp9 for name, p in PRESETS.items()}
SVTAV1_EFFORT = {name: p.svtav1 for name, p in PRESETS.items()}


def effort_preset(effort: str) -> Preset:
    """The preset called ``effort``; InputError naming the known efforts otherwise."""
    if not isinstance(effort, str) or effort not in PRESETS:
        raise InputError(f"encoder effort must be one of {', '.join(EFFORTS)}, got {effort!r}")
    return PRESETS[effort]


# ------------------------------------------------------------------------------------------ option builders
# Each returns the PyAV encoder options of one encoder at a CRF, a thread count and an effort, for one of two
# uses that differ in how key frames are placed:
#   gop=None: a low-delay *stream* (the base layer): no automatic key frames (the caller forces one where the
#             stream has a key packet), the parameter sets in band with every key frame, one packet per frame;
#   gop=N:    an *anchor file* (benchmarks): a key frame every N frames, parameter sets out of band, no
#             B-frames or alt-ref frames but the encoder's own rate-control lookahead.
# The dicts (keys, order, values) are what the conformance streams and published anchors were made with.

def x264_options(crf: int, threads: int, effort: str = DEFAULT_EFFORT, gop: int | None = None) -> dict[str, str]:
    """libx264 (anchors only: the base layer has no H.264 codec, so ``gop`` is required)."""
    effort_preset(effort)
    if gop is None:
        raise ValueError("x264 options exist only for anchor files (give gop)")
    return {"preset": effort, "crf": str(crf), "threads": str(threads),
            "x264-params": f"bframes=0:keyint={gop}:min-keyint={gop}:scenecut=0"}


def x265_options(crf: int, threads: int, effort: str = DEFAULT_EFFORT, gop: int | None = None) -> dict[str, str]:
    """libx265: the stream form adds tune zerolatency (no lookahead), forced IDR and in-band headers."""
    effort_preset(effort)
    if gop is None:
        params = f"keyint=-1:scenecut=0:open-gop=0:repeat-headers=1:info=0:log-level=error:pools={threads}"
        return {"crf": str(crf), "preset": effort, "tune": "zerolatency", "forced-idr": "1", "x265-params": params}
    return {"preset": effort, "crf": str(crf),
            "x265-params": (f"bframes=0:keyint={gop}:min-keyint={gop}:scenecut=0:open-gop=0:info=0:"
                            f"log-level=error:pools={threads}:frame-threads={threads}")}


def vp9_options(crf: int, threads: int, effort: str = DEFAULT_EFFORT, gop: int | None = None) -> dict[str, str]:
    """libvpx-vp9, constant quality (b=0). lag-in-frames=0 and auto-alt-ref=0: no hidden alt-ref frames, so
    exactly one shown frame per packet. The stream form never places a key frame itself (g: 1,000,000)."""
    deadline, cpu_used = effort_preset(effort).vp9
    options = {"crf": str(crf), "b": "0", "deadline": deadline, "cpu-used": str(cpu_used), "lag-in-frames": "0",
               "auto-alt-ref": "0", "row-mt": "1", "threads": str(threads)}
    if gop is None:
        return {**options, "g": "1000000"}
    return {**options, "keyint_min": str(gop)}


def svtav1_options(crf: int, threads: int, effort: str = DEFAULT_EFFORT, gop: int | None = None) -> dict[str, str]:
    """libsvtav1 with pred-struct=1, its low-delay prediction structure (no reordering), no scene detection."""
    preset = str(effort_preset(effort).svtav1)
    if gop is None:
        return {"crf": str(crf), "preset": preset, "svtav1-params": f"pred-struct=1:scd=0:keyint=-1:lp={threads}"}
    return {"preset": preset, "crf": str(crf), "svtav1-params": f"pred-struct=1:keyint={gop}:scd=0:lp={threads}"}
