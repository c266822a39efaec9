"""Rate-distortion, speed and memory benchmarks for imfcodec against conventional codecs.

Entry point: ``python -m benchmarks.rd --help`` (``benchmarks.rd.main(argv)``).

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
