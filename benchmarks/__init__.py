"""Rate-distortion, speed and memory benchmarks for imfcodec against conventional codecs.

Run from a source checkout (the benchmarks are not part of the installed package), with the ``bench``
extra installed (``pip install -e '.[bench]'``: pandas, matplotlib, bjontegaard, vmaf-torch). Every entry
point of :data:`ENTRY_POINTS` is a click command, ``python -m benchmarks.NAME --help``, with a
``main(argv=None) -> int`` function (``imfcodec.cliutil.call``); they share ``benchmarks.harness`` (where the
clips are, the common options, ``--out`` as a results folder).

Library modules:

* ``harness``  -- the data path, finding and loading clips, the shared options and defaults, results folders.
* ``anchors``  -- x264 / x265 / SVT-AV1 / VP9 in low-delay settings through PyAV, rates from packet bytes.
* ``runners``  -- one (clip, codec) job of ``rd``: encode + decode every rate point, then measure quality.
* ``quality``  -- quality of decoded frames (imfcodec.metrics, VMAF via vmaf-torch, optional LPIPS/DISTS).
* ``report``   -- BD-rate (bjontegaard, pchip), summary.md and the RD plots.
* ``hull``     -- the conventional anchors' convex hulls over frame sizes.
* ``speed``    -- timing helpers and imfcodec's decoder GFLOPs.
* ``memory``   -- also an entry point: ``rd`` runs each job in a fresh process through it (peak RSS).

Nothing here is imported by the ``imfcodec`` package itself, so the codec never depends on it.
"""

#: every ``python -m benchmarks.NAME`` entry point, with what it measures (benchmarks/README.md: how to run each)
ENTRY_POINTS = {
    "rd": "rate-distortion of imfcodec against x264/x265/SVT-AV1/VP9 and repeat-the-key (test clips)",
    "gain": "per-clip table of one imfcodec point against repeat-key, x265 and the hull, from rd.csv",
    "strips": "picture strips of an rd results folder",
    "hybrid_table": "the hybrid mode's operating-point table behind --kbps (held-out training clips)",
    "kbps_compare": "--kbps-compare against the table's choice: decoded PSNR at the same target, per clip",
    "key_value": "what the hybrid key frame is worth; residual keys; how fresh a key pays (held-out training clips)",
    "key_refresh": "a refreshed key (a full-size stream of every N-th frame) against the base at the same rate",
    "base_presets": "the hybrid --preset: base-encoder effort against BD-rate and speed (held-out training clips)",
    "enhancer_sweep": "enhancer variants trained alike and compared (held-out training clips)",
    "recurrent": "the recurrent enhancer against a single-frame one: quality, recovery, drift (held-out training clips)",
    "keyframes": "the scene-cut threshold and --refresh-below (training clips)",
    "model_speed": "network and codec speed per config, per stage and per preset, beside x265",
    "memory": "peak RSS and imported modules of imfcodec decode/info in fresh processes",
    "long_input": "peak memory against input length (1,000 vs 10,000 frames)",
    "pipe": "first-frame latency and memory of imfcodec encode - | imfcodec decode -",
    "rate_control": "--kbps: the table's estimate against the closed loop's measured rate, per clip and target",
    "live": "live calls through a shaped link: latency, freezes, PSNR shown, loss recovery, against live anchors",
    "livecall": "the two ends of a live call over UDP (sender in real time, receiver that times each frame)",
    "livelink": "the link shaper between them: capacity, propagation delay, random and burst loss, jitter",
}

BENCH_EXTRA = ("pandas", "matplotlib", "bjontegaard")  # the `bench` extra in pyproject.toml, less vmaf-torch (optional)


def require_bench_extra() -> None:
    """Refuse to run, with a one-line error (exit status 1), when the ``bench`` extra is not installed."""
    from importlib.util import find_spec

    import click

    missing = [name for name in BENCH_EXTRA if find_spec(name) is None]
    if missing:
        raise click.ClickException(f"the benchmarks need {', '.join(missing)}, which are not installed: "
                                   f"pip install -e '.[bench]'")
