"""Rate-distortion benchmark: imfcodec against x264, x265, SVT-AV1, VP9 and "repeat the key frame".

    python -m benchmarks.rd --videos DIR --out DIR [--frames N] [--size 256] [--keyint N]
                            [--model SPEC] [--enhancer SPEC]
                            [--codecs imfcodec,hybrid,hybrid-bicubic,x264,x265,svtav1,vp9,repeat]
                            [--jobs N] [--threads N] [--quick] [--ladder CODEC=V,V,...] [--refine N]
                            [--scales 1,1/2,1/4] [--upscale bicubic|lanczos|bilinear]

Every conventional anchor runs at each frame-size scale of ``--scales`` (downscaled with area
filtering, coded, decoded, upscaled back; see ``benchmarks.anchors``), and the report compares
imfcodec with each anchor's convex hull over scales and with the hull of all anchors together.
``hybrid`` is imfcodec's hybrid mode (``--hybrid``: x265 base layer at 1/2 or 1/4 of the frame size plus
key frames, lifted by the enhancer) at the points of ``HYBRID_POINTS``; ``hybrid-bicubic`` decodes the same
streams without the enhancer (bicubic upscale of the base layer), which isolates what the enhancer adds.

Every codec sees the same input: each clip is decoded, centre-cropped and resized once
(``imfcodec.io.read_frames``) and cached losslessly as ``OUT/cache/CLIP-SIZEpx-Nf.npy``; that array is
the reference for every metric and the input of every encoder. Each (clip, codec) pair runs as one
job in a fresh process (see ``benchmarks.memory``); finished rows are appended to ``OUT/rd.csv`` as
jobs complete, and a re-run skips every (clip, codec, point, config, model) already there. Then
``OUT/summary.md`` and ``OUT/rd_*.png`` are rewritten from the rows of this run's plan.

Bitstreams are kept under ``OUT/streams/CLIP/`` (MP4 for anchors, .imf for imfcodec, the raw key-frame
payload for repeat) so every rate can be checked against a file size.
"""

from __future__ import annotations

import csv
import json
import math
import os
import platform
import sys
import time
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: see imfcodec/cli.py

import click  # noqa: E402
import numpy as np  # noqa: E402

from imfcodec.cliutil import CONTEXT_SETTINGS, Command, call  # noqa: E402
from imfcodec.fsutil import write_text  # noqa: E402
from imfcodec.baselayer import DEFAULT_EFFORT, EFFORTS  # noqa: E402
from imfcodec.settings import BASE_CODECS  # noqa: E402

from . import require_bench_extra  # noqa: E402
from .harness import BenchError, find_clips, out_option, threads_option  # noqa: F401 - re-exported
from .anchors import ANCHORS, DEFAULT_UPSCALE, UPSCALE_FILTERS, coded_size, parse_scale, scale_label
from .quality import METRICS, PerceptualSpec, perceptual_status, vmaf_status
from .runners import Job, JobResult, Point, run_job

CODECS = ("imfcodec", "hybrid", "hybrid-bicubic", "x264", "x265", "svtav1", "vp9", "repeat")
HYBRID_CODECS = ("hybrid", "hybrid-bicubic")
DEFAULT_FRAMES = 250  # JVET GFVC VoxCeleb sequences are 250 frames
# imfcodec operating points: token quality paired with a key-frame quality offset from the key
# codec's default (hevc: 21 = CRF 30), so rate and quality grow together along the ladder.
IMF_TOKEN_QUALITIES = (6, 9, 9, 12)  # index 1 = the encoder defaults (q9, hevc21)
KEY_OFFSETS = (-5, 0, 5, 10)
QUICK_INDEXES = (0, 2)  # --quick: the lowest point and the middle of each ladder
# the hybrid mode's operating points: (base frame-size factor, x265 base quality = 51 - CRF, key quality);
# a ladder entry may name another base codec first (vp9:4:8:11), or av1i for the key pictures in the AV1 base,
# and start with h: for a half-rate base (h:vp9:4:0:6, format version 6)
INTRA_LADDER_NAME = "av1i"
HALF_LADDER_NAME = "h"
HYBRID_POINTS = ((2, 5, 16), (2, 9, 16), (2, 13, 16), (2, 17, 16), (4, 13, 16), (4, 19, 16))

COLUMNS = [
    "clip", "codec", "point", "param", "key_quality", "config", "model", "size", "fps", "frames",
    "duration_s", "kbps", "container_kbps", "key_kbps", "token_kbps", "base_kbps", "bytes", "container_bytes",
    "key_frames", "scale", "coded_size", "upscale", "startup_bytes", "steady_kbps", "psnr", "psnr_y", "ssim",
    "ms_ssim", "ms_ssim_scales", "vmaf", "lpips", "dists",
    "enc_fps", "dec_fps", "threads", "peak_rss_mb", "base_rss_mb", "gflops_per_frame", "encoder",
    "decoder", "stream",
]
KEY = ("clip", "codec", "point", "config", "model")


# ------------------------------------------------------------------------------------ arguments


PROG = "python -m benchmarks.rd"


@click.command("rd", cls=Command, context_settings=CONTEXT_SETTINGS,
               help="Rate-distortion, speed and memory benchmark of imfcodec against conventional codecs.")
@click.option("--videos", multiple=True, required=True, metavar="PATH",
              help="folder of clips, or one clip (repeatable)")
@out_option("rd.csv, summary.md, rd_*.png, streams/, cache/", required=True)
@click.option("--frames", type=int, default=DEFAULT_FRAMES,
              help=f"frames per clip, from the start (default {DEFAULT_FRAMES}; 0 = whole clip)")
@click.option("--size", type=int, default=None,
              help="square frame size (default: the imfcodec model's resolution, else 256)")
@click.option("--keyint", type=int, default=0, help="key-frame interval for every codec (0 = one per clip)")
@click.option("--model", default=None, help="imfcodec model: config name, .safetensors, or random:NAME")
@click.option("--enhancer", default=None,
              help="hybrid mode's enhancer: config name with shipped weights, .safetensors, or random:NAME "
                   "(default: the shipped enh-wide)")
@click.option("--codecs", default=",".join(CODECS), help=f"comma-separated subset of {','.join(CODECS)}")
@click.option("--anchor", default="x265", help="BD-rate anchor codec (default x265)")
@click.option("--key-codec", default="hevc", help="imfcodec's key-frame codec (also used by 'repeat')")
@click.option("--effort", type=click.Choice(EFFORTS), default=DEFAULT_EFFORT,
              help="every conventional encoder's speed setting of that name (the anchors' and the hybrid base "
                   "layer's, as `--preset` is in the hybrid mode); rows go to their own config "
                   "(default: medium)")
@click.option("--jobs", type=int, default=1, help="(clip, codec) jobs run in parallel (default 1)")
@threads_option(1, "threads per codec and per torch (1: each job measures one core)")
@click.option("--quick", is_flag=True, help="2 rate points per codec (for tests and smoke runs)")
@click.option("--ladder", multiple=True, metavar="CODEC=V,V,...",
              help="override a ladder: x265=51,45,39,33 ; imfcodec=Q:KQ,Q:KQ ; repeat=KQ,KQ")
@click.option("--refine", type=int, default=None, metavar="N",
              help="imfcodec: token refinement steps at every point (default: the encoder's, 4; "
                   "point names end in -rN unless N is 0)")
@click.option("--scales", default="1,1/2,1/4", metavar="S,S,...",
              help="frame-size scales every anchor runs at (default 1,1/2,1/4; area downscaling)")
@click.option("--upscale", default=DEFAULT_UPSCALE, type=click.Choice(sorted(UPSCALE_FILTERS)),
              help=f"filter that brings scaled anchors back to the working size (default {DEFAULT_UPSCALE})")
@click.option("--clips", default=None, help="comma-separated clip names (file stems) to keep")
@click.option("--report-all", is_flag=True,
              help="report every row of rd.csv for these clips and this config (e.g. imfcodec points of "
                   "other --refine or --ladder runs), not only this run's plan")
@click.option("--no-vmaf", is_flag=True, help="skip VMAF (the slowest metric)")
@click.option("--vmaf-subsample", type=int, default=1, metavar="N",
              help="VMAF on every N-th frame only (like libvmaf --subsample; default 1 = all)")
@click.option("--lpips-weights", default=None, metavar="PATH",
              help="local torchvision AlexNet ImageNet weights; enables LPIPS (needs the lpips package)")
@click.option("--dists-weights", default=None, metavar="PATH",
              help="local torchvision VGG16 ImageNet weights; enables DISTS (needs DISTS_pytorch)")
def command(**params) -> int:
    require_bench_extra()
    return run(SimpleNamespace(**params))


def _split(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def parse_ladders(items: Sequence[str]) -> dict[str, list[str]]:
    out = {}
    for item in items:
        codec, sep, values = item.partition("=")
        if not sep or codec.strip() not in CODECS or not _split(values):
            raise BenchError(f"--ladder must look like CODEC=V,V,... with CODEC in {','.join(CODECS)}: {item!r}")
        out[codec.strip()] = _split(values)
    return out


def parse_scales(text: str) -> list[Fraction]:
    """``--scales``: distinct scales, largest first."""
    try:
        scales = [parse_scale(t) for t in _split(text)]
    except ValueError as e:
        raise BenchError(f"--scales: {e}") from None
    if not scales:
        raise BenchError("--scales: give at least one scale, e.g. 1,1/2,1/4")
    return sorted(set(scales), reverse=True)


def anchor_point_name(param: str, value: int, scale: Fraction, upscale: str = DEFAULT_UPSCALE) -> str:
    """``crf51`` at full size (the names of earlier runs), ``crf51-x0.5`` at half size,
    ``crf51-x0.5-lanczos`` with another upscaling filter."""
    if scale == 1:
        return f"{param}{value}"
    name = f"{param}{value}-x{float(scale):g}"
    return name if upscale == DEFAULT_UPSCALE else f"{name}-{upscale}"


def plan_points(codec: str, *, quick: bool, ladder: list[str] | None, key_codec: str,
                refine: int = 0, scales: Sequence[Fraction] = (Fraction(1),),
                upscale: str = DEFAULT_UPSCALE) -> list[Point]:
    """The rate points of one codec, lowest rate first within each scale (``refine``: imfcodec's
    --refine N; ``scales``: the anchors' frame-size scales)."""
    def pick(seq):
        seq = list(seq)
        return [seq[i] for i in QUICK_INDEXES if i < len(seq)] if quick and ladder is None else seq

    if codec in ANCHORS:
        spec = ANCHORS[codec]
        values = [int(v) for v in ladder] if ladder else list(spec.ladder)
        return [Point(anchor_point_name(spec.param, v, s, upscale), v, scale=Fraction(s), upscale=upscale)
                for s in scales for v in pick(values)]
    from imfcodec.keyframe import get_keyframe_codec

    kc = get_keyframe_codec(key_codec)
    lo, hi = kc.quality_range
    keys = [min(hi, max(lo, kc.default_quality + o)) for o in KEY_OFFSETS]
    if codec == "repeat":
        values = [int(v) for v in ladder] if ladder else list(dict.fromkeys(keys))
        return [Point(f"{key_codec}{v}", v, v) for v in pick(values)]
    if codec == "imfcodec":
        if ladder:
            pairs = []
            for v in ladder:
                q, sep, kq = v.partition(":")
                if not sep:
                    raise BenchError(f"imfcodec ladder entries are TOKEN_QUALITY:KEY_QUALITY, got {v!r}")
                pairs.append((int(q), int(kq)))
        else:
            pairs = list(zip(IMF_TOKEN_QUALITIES, keys))
        suffix = f"-r{refine}" if refine else ""
        return [Point(f"q{q}-{key_codec}{kq}{suffix}", q, kq, refine) for q, kq in pick(pairs)]
    if codec in HYBRID_CODECS:
        points = []
        for v in ladder or [":".join(map(str, t)) for t in HYBRID_POINTS]:
            parts = v.split(":")
            half = bool(parts) and parts[0] == HALF_LADDER_NAME
            if half:
                parts.pop(0)
            # av1i: the AV1 base carrying the key pictures (format version 5; the key quality is unused: 0)
            intra = bool(parts) and parts[0] == INTRA_LADDER_NAME
            base = "av1" if intra else parts.pop(0) if parts and parts[0] in BASE_CODECS else "hevc"
            if intra:
                parts.pop(0)
            if len(parts) != 3 or not all(p.isdigit() for p in parts) or parts[0] not in ("1", "2", "4"):
                raise BenchError(f"hybrid ladder entries are [BASE_CODEC:]FACTOR:BASE_QUALITY:KEY_QUALITY with "
                                 f"FACTOR 1, 2 or 4 and BASE_CODEC one of {', '.join(BASE_CODECS)}, got {v!r}")
            f, q, kq = (int(p) for p in parts)
            prefix = ("h-" if half else "") + ("" if base == "hevc" else f"{base}-")  # hevc: earlier runs' names
            if intra:
                points.append(Point(f"{'h-' if half else ''}av1i-x{f}-b{q}", q, None, scale=Fraction(1, f),
                                    base_codec=base, intra_base=True, half_rate=half))
                continue
            points.append(Point(f"{prefix}x{f}-b{q}-{key_codec}{kq}", q, kq, scale=Fraction(1, f), base_codec=base,
                                half_rate=half))
        return pick(points)
    raise BenchError(f"unknown codec {codec!r} (known: {','.join(CODECS)})")


# ------------------------------------------------------------------------------------ references


def prepare_reference(name: str, src: Path, size: int, frames: int, cache: Path) -> tuple[Path, Fraction, int, bool]:
    """Decode, crop and resize a clip once; cache it losslessly as .npy.

    Returns (path, fps, frames, fps_assumed): raw elementary streams carry no frame rate, and
    imfcodec.io assumes 25 fps for them; the summary says so because rates depend on it.
    """
    from imfcodec.fsutil import AtomicOutput
    from imfcodec.io import probe_video, read_frames

    tag = f"{name}-{size}px-{frames or 'all'}f"
    npy, meta_path = cache / f"{tag}.npy", cache / f"{tag}.json"
    st = src.stat()
    ident = {"source": str(src.resolve()), "source_bytes": st.st_size, "source_mtime": int(st.st_mtime),
             "size": size, "max_frames": frames}
    if npy.is_file() and meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        if all(meta.get(k) == v for k, v in ident.items()):
            return (npy, Fraction(meta["fps_num"], meta["fps_den"]), int(meta["frames"]),
                    bool(meta.get("fps_assumed")))
    info = probe_video(src)
    arr = np.stack(list(read_frames(src, size, max_frames=frames or None)))
    with AtomicOutput(npy) as tmp, open(tmp, "wb") as f:
        np.save(f, arr)
    fps = Fraction(info.fps)
    meta = {**ident, "fps_num": fps.numerator, "fps_den": fps.denominator, "frames": int(len(arr)),
            "fps_assumed": bool(getattr(info, "fps_assumed", False)), "reader": "imfcodec.io.read_frames"}
    write_text(meta_path, json.dumps(meta, indent=1))
    return npy, fps, len(arr), meta["fps_assumed"]


# ------------------------------------------------------------------------------------ rd.csv


def read_rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def append_rows(path: Path, rows: Sequence[dict]) -> None:
    """Append rows (header written when the file is new); flushed so an interrupted run keeps them."""
    if not rows:
        return
    new = not path.is_file() or path.stat().st_size == 0
    if not new:
        with open(path, newline="") as f:
            header = next(csv.reader(f), [])
        if header != COLUMNS:  # an older run's columns: rewrite its rows under today's header first
            from imfcodec.fsutil import AtomicOutput

            old = read_rows(path)
            with AtomicOutput(path) as tmp, open(tmp, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore", restval="")
                w.writeheader()
                w.writerows(old)
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore", restval="")
        if new:
            w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) and math.isfinite(v) else
                            "" if isinstance(v, float) else v) for k, v in r.items()})
        f.flush()
        os.fsync(f.fileno())


def row_key(row: dict) -> tuple:
    return tuple(str(row.get(k, "")) for k in KEY)


# ------------------------------------------------------------------------------------ main


def _model_identity(spec: str | None, enhancer: bool = False) -> tuple[int, str]:
    """(resolution, 'name@hash') of the imfcodec model (or the hybrid mode's enhancer), loaded once in
    the parent."""
    from imfcodec.zoo import load_model

    if enhancer:
        from imfcodec.modes.hybrid import load_enhancer

        loaded = load_enhancer(spec)
    else:
        loaded = load_model(spec)
    return int(loaded.model.config.resolution), f"{loaded.name}@{loaded.weights_hash.hex()[:16]}"


def run(args: SimpleNamespace) -> int:
    """The benchmark, from the options of :data:`command` (as attributes of ``args``)."""
    from tqdm import tqdm

    codecs = _split(args.codecs)
    bad = [c for c in codecs if c not in CODECS]
    if bad or not codecs:
        raise BenchError(f"--codecs: unknown {', '.join(bad) or '(none)'} (known: {','.join(CODECS)})")
    if args.refine is None:
        from imfcodec.codec import DEFAULT_SEARCH_ITERS

        args.refine = DEFAULT_SEARCH_ITERS
    if args.frames < 0 or args.keyint < 0 or args.jobs < 1 or args.threads < 1 or args.refine < 0:
        raise BenchError("--frames, --keyint and --refine must be >= 0, --jobs and --threads >= 1")
    ladders = parse_ladders(args.ladder)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    clips = find_clips(args.videos, _split(args.clips) if args.clips else None)

    model_id = enhancer_id = ""
    size = args.size
    for wanted_codecs, is_enh in ((("imfcodec",), False), (HYBRID_CODECS, True)):
        if not set(wanted_codecs) & set(codecs):
            continue
        resolution, ident = _model_identity(args.enhancer if is_enh else args.model, is_enh)
        if is_enh:
            enhancer_id = ident
        else:
            model_id = ident
        if size is None:
            size = resolution
        elif size != resolution:
            raise BenchError(f"--size {size} but the {'enhancer' if is_enh else 'imfcodec model'} codes "
                             f"{resolution}x{resolution}; drop --size or pick a model of that resolution")
    size = size or 256
    config = f"{size}px-{args.frames or 'all'}f-keyint{args.keyint}" + ("" if args.effort == DEFAULT_EFFORT else
                                                                       f"-{args.effort}")
    perceptual = PerceptualSpec(vmaf=not args.no_vmaf, vmaf_subsample=max(1, args.vmaf_subsample),
                                lpips_weights=args.lpips_weights,
                                dists_weights=args.dists_weights)
    anchor_scales = parse_scales(args.scales)
    for s in anchor_scales:
        try:
            coded_size(size, size, s)
        except ValueError as e:
            raise BenchError(f"--scales: {e}") from None
    points = {c: plan_points(c, quick=args.quick, ladder=ladders.get(c), key_codec=args.key_codec,
                             refine=args.refine, scales=anchor_scales, upscale=args.upscale) for c in codecs}

    print(f"benchmark: {len(clips)} clip(s) x {len(codecs)} codec(s) at {size}x{size}, {config}", flush=True)
    refs = {}
    errors: list[str] = []
    for name, src in tqdm(clips.items(), desc="references", unit="clip", disable=None, file=sys.stderr):
        try:
            refs[name] = prepare_reference(name, src, size, args.frames, out / "cache")
        except Exception as e:  # an unreadable clip must not stop the others
            errors.append(f"{name}: cannot read {src}: {e}")
            print(f"error: {errors[-1]}", file=sys.stderr)

    csv_path = out / "rd.csv"
    done = {row_key(r) for r in read_rows(csv_path)}
    planned: set[tuple] = set()
    jobs: list[Job] = []
    skipped = 0
    for name, (npy, fps, _n, _assumed) in refs.items():
        for codec in codecs:
            mid = model_id if codec == "imfcodec" else enhancer_id if codec in HYBRID_CODECS else ""
            todo = []
            for pt in points[codec]:
                key = (name, codec, pt.name, config, mid)
                planned.add(key)
                if key in done:
                    skipped += 1
                else:
                    todo.append(pt)
            if todo:
                jobs.append(Job(clip=name, codec=codec, points=todo, ref_path=str(npy), fps_num=fps.numerator,
                                fps_den=fps.denominator, stream_dir=str(out / "streams" / name), config=config,
                                size=size, keyint=args.keyint, threads=args.threads,
                                model=args.enhancer if codec in HYBRID_CODECS else args.model,
                                model_id=mid, key_codec=args.key_codec, effort=args.effort, perceptual=perceptual))
    total = sum(len(j.points) for j in jobs)
    print(f"{total} point(s) to run in {len(jobs)} job(s); {skipped} already in {csv_path}", flush=True)

    t0 = time.perf_counter()
    if jobs:
        from concurrent.futures import as_completed

        from .memory import job_executor

        with job_executor(args.jobs) as pool, tqdm(total=total, desc="rd points", unit="pt", disable=None,
                                                   file=sys.stderr) as bar:
            futures = {pool.submit(run_job, j): j for j in jobs}
            for fut in as_completed(futures):
                j = futures[fut]
                try:
                    res: JobResult = fut.result()
                except Exception as e:  # the worker process itself died
                    res = JobResult(j.clip, j.codec, [], [f"{j.clip}/{j.codec}: worker failed: {e}"])
                append_rows(csv_path, res.rows)
                for e in res.errors:
                    print(f"error: {e}", file=sys.stderr)
                errors += res.errors
                bar.update(len(j.points))
    elapsed = time.perf_counter() - t0

    import pandas as pd

    def wanted(r: dict) -> bool:
        if row_key(r) in planned:
            return True
        return bool(args.report_all and r.get("clip") in refs and r.get("config") == config
                    and r.get("codec") in codecs and (r.get("codec") != "imfcodec" or r.get("model") == model_id)
                    and (r.get("codec") not in HYBRID_CODECS or r.get("model") == enhancer_id))

    rows = [r for r in read_rows(csv_path) if wanted(r)]
    if not rows:
        print("no results to report", file=sys.stderr)
        return 1
    df = pd.DataFrame(rows)
    for c in df.columns:
        if c not in ("clip", "codec", "point", "config", "model", "encoder", "decoder", "stream", "coded_size",
                     "upscale"):
            df[c] = pd.to_numeric(df[c], errors="coerce")
    df["codec"] = pd.Categorical(df.codec, [c for c in CODECS if c in set(df.codec)], ordered=True)
    df = df.sort_values(["clip", "codec", "kbps"])
    df["codec"] = df.codec.astype(str)

    _, vmaf_line = vmaf_status(perceptual.vmaf, perceptual.vmaf_subsample)
    notices = [vmaf_line] + [line for _, line in perceptual_status(perceptual).values()]
    scales = sorted({int(s) for s in df.ms_ssim_scales.dropna()})
    if scales and scales != [5]:
        notices.append(f"MS-SSIM: {'/'.join(map(str, scales))} scale(s) at {size}px (5 need > 160 px): "
                       f"not comparable with published 5-scale values")
    assumed = sorted(n for n, ref in refs.items() if ref[3] and n in set(df["clip"]))
    if assumed:
        notices.append(f"frame rate: {', '.join(assumed)} carry no frame rate (raw streams); 25 fps assumed for rates")
    notices.append("PSNR/SSIM/MS-SSIM: imfcodec.metrics (scikit-image, pytorch-msssim), mean of per-frame values "
                   "on the decoded RGB frames; PSNR Y on BT.601 luma; identical frames capped at 100 dB")
    run_info = {
        "clips": f"{df['clip'].nunique()} ({', '.join(sorted(df['clip'].unique()))})",
        "frames": f"{args.frames or 'all'} per clip (actual: {int(df.frames.min())}-{int(df.frames.max())})",
        "size": f"{size}x{size} RGB, centre-cropped and resized once by imfcodec.io.read_frames",
        "key frames": "one per clip" if args.keyint == 0 else f"every {args.keyint} frames",
        "imfcodec model": model_id or "(not run)",
        "hybrid enhancer": enhancer_id or "(not run)",
        "key-frame codec": args.key_codec,
        "anchors": "; ".join(ANCHORS[c].description for c in codecs if c in ANCHORS) or "(none)",
        "encoder effort": (args.effort if args.effort == DEFAULT_EFFORT else
                           f"{args.effort}: every anchor's and the hybrid base layer's speed setting of that name "
                           f"(benchmarks.anchors, imfcodec.baselayer.EFFORTS), not the descriptions' medium"),
        "anchor frame sizes": (", ".join(f"{scale_label(s)} ({coded_size(size, size, s)[0]}px)" for s in anchor_scales)
                               + f"; area downscaling, {args.upscale} upscaling to {size}x{size} (swscale)"),
        "threads": f"{args.threads} per codec; jobs in parallel: {args.jobs}"
                   + (" (speeds measured under contention)" if args.jobs > 1 else ""),
        "machine": (f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}, "
                    f"Python {platform.python_version()}"),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    summary, lines = write_summary(df, out, run_info, notices, errors, args.anchor)
    print("\n".join(notices))
    print("\n".join(lines))
    print(f"\nwrote {csv_path}, {summary} and plots in {out} ({elapsed:.0f} s)")
    if errors:
        print(f"{len(errors)} error(s); see {summary}", file=sys.stderr)
        return 1
    return 0


def write_summary(df, out: Path, run_info, notices, errors, anchor):
    from .report import write_report
    from .strips import write_strips

    try:
        strips = write_strips(df, out)
    except Exception as e:  # noqa: BLE001 - pictures are a courtesy; the numbers must still be written
        strips = []
        errors = list(errors) + [f"picture strips failed: {type(e).__name__}: {e}"]
    return write_report(df, out, run_info=run_info, notices=notices, errors=errors, metrics=METRICS,
                        anchor=anchor, strips=strips)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point for ``python -m benchmarks.rd``; returns the exit status (2: a usage error, 1: the run
    failed; one line on stderr)."""
    try:
        return call(command, argv, PROG)
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished rows are kept in rd.csv", file=sys.stderr)
        return 130
    except Exception as e:
        from imfcodec.errors import IMFError

        if isinstance(e, IMFError):
            print(f"error: {e}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
