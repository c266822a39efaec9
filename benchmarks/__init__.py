"""Rate-distortion, speed and memory benchmarks for imfcodec against conventional codecs.

Run from a source checkout (the benchmarks are not part of the installed package), with the ``bench``
extra installed (``pip install -e '.[bench]'``: pandas, matplotlib, bjontegaard, vmaf-torch).
Entry point: ``python -m benchmarks.rd --help`` (``benchmarks.rd.main(argv)``); also ``benchmarks.gain``,
``benchmarks.strips``, ``benchmarks.model_speed``, ``benchmarks.long_input``, ``benchmarks.pipe``,
``benchmarks.hybrid_table`` and ``benchmarks.keyframes``. Each is a click command
with a ``main(argv=None) -> int`` function (``imfcodec.cliutil.call``).

Modules:

* ``rd``       -- command line, reference cache, job planning, rd.csv, orchestration.
* ``anchors``  -- x264 / x265 / SVT-AV1 / VP9 in low-delay settings through PyAV, rates from packet bytes.
* ``runners``  -- one (clip, codec) job: encode + decode every rate point, then measure quality.
* ``quality``  -- quality of decoded frames (imfcodec.metrics, VMAF via vmaf-torch, optional LPIPS/DISTS).
* ``report``   -- BD-rate (bjontegaard, pchip), summary.md and the RD plots.
* ``speed``    -- timing helpers and imfcodec's decoder GFLOPs.
* ``memory``   -- peak-RSS measurement (one fresh process per job).

Nothing here is imported by the ``imfcodec`` package itself, so the codec never depends on it.
"""

BENCH_EXTRA = ("pandas", "matplotlib", "bjontegaard")  # the `bench` extra in pyproject.toml, less vmaf-torch (optional)


def require_bench_extra() -> None:
    """Refuse to run, with a one-line error (exit status 1), when the ``bench`` extra is not installed."""
    from importlib.util import find_spec

    import click

    missing = [name for name in BENCH_EXTRA if find_spec(name) is None]
    if missing:
        raise click.ClickException(f"the benchmarks need {', '.join(missing)}, which are not installed: "
                                   f"pip install -e '.[bench]'")
