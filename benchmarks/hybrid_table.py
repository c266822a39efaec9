"""Measure the hybrid mode's operating points on held-out TRAINING clips: the table behind ``--kbps``.

    python -m benchmarks.hybrid_table [--enhancer SPEC] [--data DIR] [--frames 200] [--stride 4]
                                      [--out imfcodec/weights]

For every (base codec, base factor, base quality, key quality) of the grid and every held-out clip of the trainer's
split (``imfcodec.train.data.split_clips``: never a clip the enhancer trained on, never the test set), the
clip is encoded for real (``api.encode_frames_to_file``) and its bytes split into start-up (signature,
header, key packet, the first base access unit with its share of the packet's framing) and the rest. The
decoded frames are scored with and without the enhancer: the bicubic base on every frame, the enhancer on
every ``--stride``-th frame after the key frame (each enhanced frame depends only on the key frame and its
own base picture, so a subset is an unbiased sample of what the decoder outputs). The means over clips
go into the JSON table that ``imfcodec.ratecontrol`` reads, ``OUT/ENHANCER-points.json`` (by default
next to the enhancer's weights, where ``imfcodec.ratecontrol.table_path`` finds it).
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import click
import numpy as np

from imfcodec.cliutil import CONTEXT_SETTINGS, Command, call

from .harness import (FPS, data_option, frames_option, held_out_clips, held_out_options, out_option,
                      threads_option)

# x265: the base layer at 1/2 dominates 1/4 at every rate on the training clips' bicubic table (x2 b5 5.4
# kbit/s 23.5 dB against x4 b9 5.0 kbit/s 22.8 dB), so 1/4 keeps two points; above 25 kbit/s nothing competes.
# VP9 (CRF = 63 - quality) cannot go below about 7 kbit/s at 1/2 (CRF 63), so its low rates come from 1/4.
# av1-intra: the AV1 base carrying the key pictures itself (format version 5; one intra picture per key frame), so
# it has no key quality of its own (its key's quality follows the base quality: one key "quality" 0 in the table).
# vp9-half, hevc-half: a half-rate base (format version 6: every other frame coded, the decoder shows the mean of
# its neighbours between them), where the base codec's floor of bytes per frame is most of the rate.
GRID = {"hevc": {2: (1, 5, 9, 13, 17, 21), 4: (9, 13)}, "vp9": {2: (0, 4, 8, 12, 16, 24), 4: (0, 4, 8, 12, 16)},
        "av1-intra": {2: (0, 2, 5, 8, 11, 14, 18, 23, 28)}, "av1-intra-quarter": {4: (0, 6, 12)},
        "vp9-half": {2: (0, 4, 8, 16), 4: (0, 8, 16, 24)}, "hevc-half": {4: (0, 9)},
        "vp9-half-high": {2: (12, 24, 32)}}
GRID_KEYS = (6, 11, 16, 21)
# grid names of the intra-base routes, and their base codec (at 1/4 the key pictures are coded at 1/2)
INTRA = {"av1-intra": "av1", "av1-intra-quarter": "av1"}
HALF = {"vp9-half": "vp9", "hevc-half": "hevc", "vp9-half-high": "vp9"}  # half-rate routes and their base codec
# key qualities of the routes that do not take GRID_KEYS: the intra-base routes have none of their own (0); the
# half-rate points' low rates do not pay for the dearest keys, vp9-half-high's (15-40 kbit/s) not for the cheapest
ROUTE_KEYS = {**{c: (0,) for c in INTRA}, "vp9-half": (6, 11), "hevc-half": (6, 11), "vp9-half-high": (11, 16)}
QUICK_GRID, QUICK_KEYS = {"hevc": {2: (9,)}, "vp9": {4: (8,)}}, (16,)


def measure_point(frames: np.ndarray, loaded, codec: str, factor: int, bq: int, kq: int, stride: int,
                  tmp: Path) -> dict:
    """One clip at one operating point: rates from the real file, PSNR with and without the enhancer."""
    import torch

    from imfcodec.api import encode_frames_to_file, iter_decoded
    from imfcodec.modes.common import to_tensor, to_uint8
    from imfcodec.settings import EncoderSettings
    from imfcodec.metrics import psnr

    from .runners import hybrid_startup_bytes
    from imfcodec.models import upscale

    intra = codec in INTRA
    if intra:
        settings = EncoderSettings(base_codec=INTRA[codec], base_factor=factor, base_quality=bq, intra_base=True)
    else:
        settings = EncoderSettings(base_codec=HALF.get(codec, codec), base_factor=factor, base_quality=bq,
                                   key_codec="hevc", key_quality=kq, intra_base=False, half_rate=codec in HALF)
    if codec in HALF:
        return _measure_half(frames, loaded, settings, tmp)
    path = tmp / "p.imf"
    coded = encode_frames_to_file(frames, path, model=loaded, fps=Fraction(25), settings=settings,
                                  overwrite=True)
    startup = hybrid_startup_bytes(path)
    n = len(frames)
    smalls, key_image = [], None
    bicubic = []
    for dec, out in iter_decoded(path, model=loaded, enhance=False):
        if out:
            smalls += dec.last_bases
            bicubic += out
    key_image = bicubic[0]
    size = frames.shape[1]
    model = loaded.model
    with torch.inference_mode():
        key = to_tensor(key_image)
        if intra:  # the decoder's stand-in for the key's base picture
            from imfcodec.modes.hybrid import key_base

            side = smalls[1].shape[0] if n > 1 else size // factor
            state = model.prepare_key(key, key_base(key, (side, side), (size, size)))
        else:
            state = model.prepare_key(key, upscale(to_tensor(smalls[0]), (size, size)))
        idx = list(range(1, n, stride))
        enhanced = []
        for i in range(0, len(idx), 8):
            ups = upscale(torch.cat([to_tensor(smalls[j]) for j in idx[i:i + 8]]), (size, size))
            enhanced += to_uint8(model.enhance(state, ups))
    return {"bytes": coded.bytes, "startup_bytes": startup,
            "steady_kbps": (coded.bytes - startup) * 8 / ((n - 1) / 25) / 1000,
            "psnr_bicubic": psnr(frames[1:], np.stack(bicubic[1:])),
            "psnr_bicubic_sub": psnr(frames[idx], np.stack([bicubic[j] for j in idx])),
            "psnr_sub": psnr(frames[idx], np.stack(enhanced))}


def _measure_half(frames: np.ndarray, loaded, settings, tmp: Path) -> dict:
    """``measure_point`` for a half-rate point: every coded frame enhanced (the frames between are means of two
    enhanced ones, so a subset is not enough), PSNR over all frames after the key as the decoder shows them."""
    from imfcodec.api import encode_frames_to_file, iter_decoded
    from imfcodec.metrics import psnr

    from .runners import hybrid_startup_bytes

    path = tmp / "p.imf"
    coded = encode_frames_to_file(frames, path, model=loaded, fps=Fraction(25), settings=settings.validated(),
                                  overwrite=True)
    startup = hybrid_startup_bytes(path)
    n = len(frames)
    shown = {e: np.stack([f for _, out in iter_decoded(path, model=loaded, enhance=e) for f in out])
             for e in (False, True)}
    bicubic = psnr(frames[1:], shown[False][1:])
    return {"bytes": coded.bytes, "startup_bytes": startup,
            "steady_kbps": (coded.bytes - startup) * 8 / ((n - 1) / 25) / 1000,
            "psnr_bicubic": bicubic, "psnr_bicubic_sub": bicubic, "psnr_sub": psnr(frames[1:], shown[True][1:])}


@click.command("hybrid_table", cls=Command, context_settings=CONTEXT_SETTINGS, help=__doc__.splitlines()[0])
@click.option("--enhancer", default=None, help="enhancer (default: the shipped enh-wide)")
@data_option()
@frames_option()
@click.option("--stride", type=int, default=4, show_default=True, help="enhance every N-th frame")
@held_out_options
@out_option(help="results folder: writes ENHANCER-points.json there [default: next to the enhancer's weights]")
@threads_option()
@click.option("--quick", is_flag=True, help="two points only (a smoke test)")
@click.option("--base-codecs", default=",".join(GRID), show_default=True, help="base-layer codecs of the grid")
@click.option("--merge", is_flag=True, help="keep the existing table's points of the codecs not measured now")
def command(enhancer, data, frames, stride, val_clips, cache_dir, out, threads, quick, base_codecs, merge):
    import torch

    from imfcodec.errors import InputError
    from imfcodec.modes.hybrid import load_enhancer
    from imfcodec.ratecontrol import DEFAULT_DURATION_S, OperatingPoint, save_table, table_path

    codecs = [c.strip() for c in base_codecs.split(",") if c.strip()]
    if not codecs or any(c not in GRID for c in codecs):
        raise InputError(f"--base-codecs: one or more of {', '.join(GRID)}, got {base_codecs!r}")
    torch.set_num_threads(threads)
    loaded = load_enhancer(enhancer)
    size = loaded.model.config.resolution
    _train, clips = held_out_clips(data, val_clips, size, frames, cache_dir)
    rows = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        grid = [(c, f, q, k) for c, factors in (QUICK_GRID if quick else GRID).items() if c in codecs
                for f, qualities in factors.items() for q in qualities
                for k in ((0,) if c in INTRA else QUICK_KEYS if quick else ROUTE_KEYS.get(c, GRID_KEYS))]
        for codec, factor, bq, kq in grid:
            per = [measure_point(f, loaded, codec, factor, bq, kq, stride, Path(tmp)) for f in clips.frames]
            mean = {k: float(np.mean([p[k] for p in per])) for k in per[0]}
            # the enhancer's gain measured on the subset, applied to the all-frame bicubic mean
            psnr = mean["psnr_bicubic"] + mean["psnr_sub"] - mean["psnr_bicubic_sub"]
            rows.append(OperatingPoint(factor, bq, kq, round(mean["steady_kbps"], 3),
                                       round(mean["startup_bytes"], 1), round(psnr, 3),
                                       round(mean["psnr_bicubic"], 3), INTRA.get(codec, HALF.get(codec, codec)),
                                       codec in INTRA, codec in HALF))
            p = rows[-1]
            print(f"{codec} x{factor} b{bq} k{kq}: {p.kbps(DEFAULT_DURATION_S):6.2f} kbit/s at 10 s "
                  f"(steady {p.steady_kbps:.2f}, start-up {p.startup_bytes:.0f} B)  {p.psnr:.2f} dB "
                  f"(bicubic {p.psnr_bicubic:.2f}, {p.psnr - p.psnr_bicubic:+.2f})  "
                  f"[{time.perf_counter() - t0:.0f} s]", flush=True)
    path = table_path(loaded.name)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        path = out / path.name
    info = {"enhancer": f"{loaded.name}@{loaded.weights_hash.hex()[:16]}",
            "clips": clips.names, "frames": frames, "fps": FPS, "stride": stride,
            "measured_by": "python -m benchmarks.hybrid_table"}
    old = path if path.is_file() else table_path(loaded.name)  # the table being added to
    if merge and old.is_file():
        from imfcodec.ratecontrol import OperatingPoint as Point

        def key(p: Point) -> tuple:
            return p.base_codec, p.intra_base, p.half_rate, p.base_factor, p.base_quality, p.key_quality

        measured = {key(p) for p in rows}
        kept = json.loads(old.read_text())
        rows = [p for p in map(lambda d: Point(**d), kept["points"]) if key(p) not in measured] + rows
        # the kept points' provenance stays (their clips, notes); the new points' clips are named apart
        info = {**{k: v for k, v in kept.items() if k != "points"},
                f"clips_{'_'.join(codecs).replace('-', '_')}": clips.names,
                "merged": f"{', '.join(codecs)} measured by python -m benchmarks.hybrid_table --merge; the other "
                          f"points kept from {old.name} ({kept.get('enhancer')}, {kept.get('frames')} frames)"}
    save_table(rows, path, info)
    print(f"wrote {path} ({len(rows)} points)")
    return 0


def main(argv=None) -> int:
    # a bad enhancer, a test folder or an unreadable clip: one line on stderr (cliutil.call)
    return call(command, argv, "python -m benchmarks.hybrid_table")


if __name__ == "__main__":
    sys.exit(main())
