"""What the hybrid mode's key frame is worth, on held-out TRAINING clips (never the test set).

    python -m benchmarks.key_value [--enhancer SPEC] [--data DIR] [--frames 200] [--sections LIST] [--out DIR]

Measurements behind the hybrid mode's rate split (benchmarks/results/*hybrid-vp9*/NOTES.md) and behind what
a memory of earlier frames can add (issue 23):

1. **Ablation.** The enhancer's gain over the bicubic base with the key image at each trained key quality,
   with the lossless source frame, and with *no detail*: the key image replaced by the upscaled base picture of
   the key frame itself (what the decoder would have without a key image). The difference is what the key
   frame's detail buys, per held-out clip (the trainer's split and its base-layer cache,
   ``imfcodec.train.hybrid``).
2. **A residual key frame.** The key image coded as it is today (HEVC key codec) against the same codec coding
   ``(source - upscaled base intra picture) / 2 + 128``, which a decoder would add back to the base picture it
   has anyway: bytes and key PSNR per key quality, per base codec, over the first frames of the held-out clips
   and every ``--stride``-th training clip. A cheaper key of the same quality is what a format change
   would buy.
3. **The enhancer with a residual key.** The same two kinds of key at each key quality, given to the enhancer
   at four of the trainer's base points, each over that point's own intra picture: whether the enhancer's
   gain survives a residual key (it was trained on direct keys) at the bytes it saves.
4. **How fresh the key is** (``freshness``). The key image taken a few frames before the measured frame (the
   source, lossless or coded), or the enhancer's own output there (what a memory of shown frames holds):
   how much of the gain is the key's *age*, and whether a memory of shown frames carries more than the key.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
import numpy as np

from imfcodec.cliutil import CONTEXT_SETTINGS, Command, call

from .harness import (cache_path, data_option, frames_option, held_out_clips, held_out_options, out_option,
                      threads_option, write_result)

RESIDUAL_BASES = (("vp9", 2, 8), ("vp9", 4, 8), ("hevc", 2, 9))
#: base points of the trainer's cache at which the enhancer is given residual keys (VP9 1/2 is where they save)
ENHANCED_BASES = (("vp9", 2, 6), ("vp9", 2, 12), ("vp9", 4, 8), ("hevc", 2, 9))
RESIDUAL_KEYS = (3, 6, 11, 16, 21)


def upscaled(small: np.ndarray, size: int) -> np.ndarray:
    """The decoder's bicubic upscale of one small uint8 picture, as uint8 [size,size,3]."""
    import torch

    from imfcodec.models import upscale
    from imfcodec.train.hybrid import _t

    with torch.inference_mode():
        up = upscale(_t(small)[None], (size, size))[0]
    return up.mul(255).round().clamp(0, 255).byte().permute(1, 2, 0).numpy()


def ablation(model, coded, size: int) -> list[dict]:
    """Per clip and key variant: mean enhanced and bicubic PSNR over 6 frames x every base point."""
    import torch

    from imfcodec.metrics import psnr
    from imfcodec.models import upscale
    from imfcodec.train.hybrid import BASE_POINTS, KEY_QUALITIES, _t

    rows = []
    with torch.inference_mode():
        for c in coded:
            idx = np.linspace(1, len(c.frames) - 1, 6).round().astype(int)
            variants = {f"key q{q}": c.keys[q] for q in KEY_QUALITIES} | {"lossless key": c.frames[0]}
            acc: dict[str, list[tuple[float, float]]] = {}
            for point in BASE_POINTS:
                small = c.bases[point]
                key_base = upscale(_t(small[0])[None], (size, size))
                base = upscale(_t(small[idx]), (size, size))
                bic = [psnr(upscaled(small[i], size), c.frames[i]) for i in idx]
                keys = {name: _t(k)[None] for name, k in variants.items()} | {"no key detail": key_base}
                for name, key in keys.items():
                    enh = _enhanced(model, key, key_base, base, c.frames[idx])
                    acc.setdefault(name, []).append((enh, float(np.mean(bic))))
            for name, v in acc.items():
                a = np.array(v)
                rows.append({"clip": c.name, "key": name, "enh": float(a[:, 0].mean()), "bicubic": float(a[:, 1].mean())})
    return rows


def _enhanced(model, key, key_base, base, targets: np.ndarray) -> float:
    """Mean PSNR of the enhancer's output (8-bit, as the decoder writes it) against ``targets``."""
    from imfcodec.metrics import psnr

    out = model.enhance(model.prepare_key(key, key_base), base)
    return psnr(targets, out.mul(255).round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy())


def _direct_keys(codec, frames0: list[np.ndarray], size: int) -> dict[tuple[int, int], tuple[bytes, np.ndarray]]:
    """Each first frame coded directly at every RESIDUAL_KEYS quality, once: (bytes, decoded) by (index,
    quality). It does not depend on the base point, so the studies below share it across points."""
    out = {}
    for i, f0 in enumerate(frames0):
        for kq in RESIDUAL_KEYS:
            data = codec.encode(f0, kq)
            out[i, kq] = data, codec.decode(data, size, size)
    return out


def _residual(codec, f0: np.ndarray, up: np.ndarray, quality: int, size: int) -> tuple[bytes, np.ndarray]:
    """The key image coded as ``(f0 - up) / 2 + 128`` and rebuilt over ``up`` (uint8 [size,size,3])."""
    up = up.astype(np.float64)
    res = np.clip((f0.astype(np.float64) - up) / 2 + 128, 0, 255).round().astype(np.uint8)
    data = codec.encode(res, quality)
    rec = np.clip(up + (codec.decode(data, size, size).astype(np.float64) - 128) * 2, 0, 255).round()
    return data, rec.astype(np.uint8)


def residual_enhanced(model, coded, size: int) -> list[dict]:
    """What the enhancer makes of a residual key: per base point of ENHANCED_BASES (the trainer codes them) and
    key quality, the key's bytes and PSNR and the enhancer's gain over bicubic, with the key coded directly
    (as today) and as a residual over that point's own upscaled intra picture (mean over clips, 6 frames
    each). The enhancer was trained on direct keys only."""
    import torch

    from imfcodec.keyframe import get_keyframe_codec
    from imfcodec.metrics import psnr
    from imfcodec.models import upscale
    from imfcodec.train.hybrid import BASE_POINTS, _t

    codec = get_keyframe_codec("hevc")
    direct = _direct_keys(codec, [c.frames[0] for c in coded], size)
    rows = []
    with torch.inference_mode():
        for point in [p for p in ENHANCED_BASES if p in BASE_POINTS]:
            acc: dict[tuple[str, int], list[tuple[float, float, float, float]]] = {}
            for ci, c in enumerate(coded):
                idx = np.linspace(1, len(c.frames) - 1, 6).round().astype(int)
                small = c.bases[point]
                key_base = upscale(_t(small[0])[None], (size, size))
                base = upscale(_t(small[idx]), (size, size))
                bic = float(np.mean([psnr(upscaled(small[i], size), c.frames[i]) for i in idx]))
                up = upscaled(small[0], size)
                for kq in RESIDUAL_KEYS:
                    res_data, res_key = _residual(codec, c.frames[0], up, kq, size)
                    for kind, data, key in (("direct", *direct[ci, kq]), ("residual", res_data, res_key)):
                        enh = _enhanced(model, _t(key)[None], key_base, base, c.frames[idx])
                        acc.setdefault((kind, kq), []).append((len(data), psnr(key, c.frames[0]), enh - bic,
                                                               float(Path(c.name).stem.startswith("grid"))))
            for (kind, kq), v in sorted(acc.items()):
                a = np.array(v)
                moving = a[a[:, 3] == 0]
                rows.append({"base": f"{point[0]} 1/{point[1]} q{point[2]}", "key": kind, "key_quality": kq,
                             "bytes": a[:, 0].mean(), "key_psnr": a[:, 1].mean(), "gain": a[:, 2].mean(),
                             "gain_moving": moving[:, 2].mean() if len(moving) else float("nan")})
    return rows


def residual_keys(frames0: list[np.ndarray], size: int) -> list[dict]:
    """Per base point and key quality: mean bytes and PSNR of the key coded directly and as a residual."""
    from imfcodec.baselayer import code_clip
    from imfcodec.keyframe import get_keyframe_codec
    from imfcodec.metrics import psnr

    codec = get_keyframe_codec("hevc")
    direct = _direct_keys(codec, frames0, size)
    rows = []
    for base_codec, factor, quality in RESIDUAL_BASES:
        acc: dict[int, list[tuple[int, float, int, float]]] = {}
        for i, f0 in enumerate(frames0):
            up = upscaled(code_clip(f0[None], base_codec, factor, quality)[1][0], size)
            for kq in RESIDUAL_KEYS:
                data, decoded = direct[i, kq]
                coded, rec = _residual(codec, f0, up, kq, size)
                acc.setdefault(kq, []).append((len(data), psnr(decoded, f0), len(coded), psnr(rec, f0)))
        for kq, v in acc.items():
            a = np.array(v, dtype=np.float64)
            rows.append({"base": f"{base_codec} 1/{factor} q{quality}", "key_quality": kq,
                         "direct_bytes": a[:, 0].mean(), "direct_psnr": a[:, 1].mean(),
                         "residual_bytes": a[:, 2].mean(), "residual_psnr": a[:, 3].mean()})
    return rows


#: how many frames back the key of the freshness study is taken (0: the frame itself, an upper bound)
FRESH_DISTANCES = (0, 1, 2, 5, 25)
#: a cheap fresh key's quality (hevc q6: about a third of q16's bytes)
FRESH_LOW = 6


def freshness(model, coded, size: int, key_quality: int = 16) -> list[dict]:
    """What a *recent* key would be worth (issue 23: an enhancer that remembers): per clip, the enhancer's
    gain over bicubic with the key image taken d frames before the measured one (each with its own base
    picture as the key's base): the lossless source (``FRESH_DISTANCES``), the source coded at ``key_quality``
    and at ``FRESH_LOW`` 2 frames back (a fresh key), and the enhancer's own output 1 or 2 frames back (made
    with today's key: what a memory of shown frames holds on a full- or half-rate stream), beside today's key
    (the first frame at ``key_quality``). 6 frames per clip from frame 25 on (a shorter clip: the distances
    that fit), every base point of the trainer."""
    import torch

    from imfcodec.keyframe import get_keyframe_codec
    from imfcodec.metrics import psnr
    from imfcodec.models import upscale
    from imfcodec.train.hybrid import BASE_POINTS, _t

    codec = get_keyframe_codec("hevc")
    rows = []
    with torch.inference_mode():
        for c in coded:
            dists = [d for d in FRESH_DISTANCES if d <= max(2, len(c.frames) - 2)]  # (a short clip: the near ones)
            if len(c.frames) < 3:
                continue
            idx = np.linspace(max(dists), len(c.frames) - 1, 6).round().astype(int)
            fresh = {q: _t(np.stack([codec.decode(codec.encode(c.frames[t - 2], q), size, size) for t in idx]))
                     for q in sorted({key_quality, FRESH_LOW})}
            today = _t(c.keys[key_quality])[None].expand(len(idx), -1, -1, -1)
            acc: dict[str, list[float]] = {}
            for point in BASE_POINTS:
                small = c.bases[point]

                def up(ts) -> torch.Tensor:
                    return upscale(_t(small[np.asarray(ts)]), (size, size))

                base, first_base = up(idx), up([0] * len(idx))
                bic = float(np.mean([psnr(upscaled(small[t], size), c.frames[t]) for t in idx]))
                keys = {f"first frame q{key_quality} (today)": (today, first_base)}
                keys |= {f"source t-{d}": (_t(c.frames[idx - d]), up(idx - d)) for d in dists}
                keys |= {f"source t-2 q{q}": (k, up(idx - 2)) for q, k in fresh.items()}
                state = model.prepare_key(today, first_base)
                for d in (1, 2):
                    shown = model.enhance(state, up(idx - d)).clamp(0, 1).mul(255).round().div(255)
                    keys[f"enhanced t-{d}"] = (shown, up(idx - d))
                for name, (key, key_base) in keys.items():
                    enh = _enhanced(model, key, key_base, base, c.frames[idx])
                    acc.setdefault(name, []).append(enh - bic)
            rows += [{"clip": c.name, "key": k, "gain": float(np.mean(v))} for k, v in acc.items()]
    return rows


def freshness_markdown(rows: list[dict]) -> list[str]:
    """The freshness study as a table: gain over bicubic per key and clip, the mean, and the mean of the
    moving (non-GRID) clips."""
    clips = list(dict.fromkeys(r["clip"] for r in rows))
    moving = [c for c in clips if not Path(c).stem.startswith("grid")]
    lines = ["", "## How fresh the key is (gain over bicubic, dB; mean over the trainer's base points)", "",
             "The key image taken d frames before the measured frame, over its own base picture. `enhanced t-d`: "
             "the enhancer's own output d frames back, made with today's key.", "",
             "| key | " + " | ".join(Path(c).stem[:16] for c in clips) + " | mean | moving |",
             "|---|" + "---|" * (len(clips) + 2)]
    for k in dict.fromkeys(r["key"] for r in rows):
        g = {r["clip"]: r["gain"] for r in rows if r["key"] == k}
        cells = " | ".join(f"{g[c]:+.2f}" if c in g else "-" for c in clips)
        mov = np.mean([g[c] for c in moving if c in g]) if any(c in g for c in moving) else float("nan")
        lines.append(f"| {k} | {cells} | {np.mean(list(g.values())):+.2f} | {mov:+.2f} |")
    return lines


def markdown(abl: list[dict], res: list[dict], info: dict, enh: list[dict] | None = None,
             fresh: list[dict] | None = None) -> str:
    """The report; a section whose rows are empty (not run, ``--sections``) is left out."""
    lines = ["# What the key frame is worth (held-out training clips)", "",
             f"enhancer {info['enhancer']}; clips: {', '.join(info['clips'])}"
             + (f"; residual keys over the first frames of {info['residual_clips']} training clips" if res else "")]
    if abl:
        lines += ["", "## The enhancer's gain over bicubic per key variant (dB; mean over the trainer's base points)",
                  ""]
        clips = list(dict.fromkeys(r["clip"] for r in abl))
        keys = list(dict.fromkeys(r["key"] for r in abl))
        lines += ["| key | " + " | ".join(Path(c).stem for c in clips) + " | mean |",
                  "|---|" + "---|" * (len(clips) + 1)]
        for k in keys:
            g = [next(r["enh"] - r["bicubic"] for r in abl if r["clip"] == c and r["key"] == k) for c in clips]
            lines.append(f"| {k} | " + " | ".join(f"{x:+.2f}" for x in g) + f" | {np.mean(g):+.2f} |")
    if res:
        lines += ["", "## Key image coded directly or as a residual over the upscaled base intra picture (hevc key "
                  "codec)", "", "| base | key quality | direct bytes | direct PSNR | residual bytes | residual PSNR |",
                  "|---|---|---|---|---|---|"]
        for r in res:
            lines.append(f"| {r['base']} | {r['key_quality']} | {r['direct_bytes']:.0f} | {r['direct_psnr']:.2f} | "
                         f"{r['residual_bytes']:.0f} | {r['residual_psnr']:.2f} |")
    if enh:
        lines += ["", "## The enhancer with a residual key (held-out clips; trained on direct keys only)", "",
                  "Key coded directly or as a residual over the base point's own upscaled intra picture; gain = "
                  "enhanced minus bicubic PSNR, 6 frames per clip.", "",
                  "| base | key | key quality | key bytes | key PSNR | gain | gain, moving clips |",
                  "|---|---|---|---|---|---|---|"]
        for r in enh:
            lines.append(f"| {r['base']} | {r['key']} | {r['key_quality']} | {r['bytes']:.0f} | {r['key_psnr']:.2f} | "
                         f"{r['gain']:+.2f} | {r['gain_moving']:+.2f} |")
    if fresh:
        lines += freshness_markdown(fresh)
    return "\n".join(lines) + "\n"


SECTIONS = ("ablation", "residual", "enhanced", "freshness")


@click.command("key_value", cls=Command, context_settings=CONTEXT_SETTINGS, help=__doc__.splitlines()[0])
@click.option("--enhancer", default=None, help="enhancer (default: the shipped enh-wide)")
@data_option()
@frames_option()
@held_out_options
@click.option("--stride", type=int, default=8, show_default=True,
              help="residual keys: also every N-th training clip's first frame")
@click.option("--sections", default=",".join(SECTIONS), show_default=True,
              help="which studies to run, comma-separated: " + ", ".join(SECTIONS))
@threads_option()
@out_option("key_value.md")
def command(enhancer, data, frames, val_clips, stride, sections, cache_dir, threads, out):
    import torch

    from imfcodec.modes.hybrid import load_enhancer
    from imfcodec.train.data import load_clips
    from imfcodec.train.hybrid import code_clip

    run = set(sections.split(","))
    if not run or run - set(SECTIONS):
        raise click.BadParameter(f"{sections!r}: a comma-separated list of {', '.join(SECTIONS)}",
                                 param_hint="--sections")
    torch.set_num_threads(threads)
    loaded = load_enhancer(enhancer)
    model = loaded.model.eval()
    size = model.config.resolution
    train, clips = held_out_clips(data, val_clips, size, frames, cache_dir)
    cache = cache_path(cache_dir)
    coded = [code_clip(n, f, cache) for n, f in zip(clips.names, clips.frames)]
    abl = ablation(model, coded, size) if "ablation" in run else []
    res, n_res = [], 0
    if "residual" in run:
        # the first frame is all it needs (2: the loader's minimum)
        extra = load_clips(train[::max(1, stride)], size, 2, cache)
        res = residual_keys([f[0] for f in clips.frames] + [f[0] for f in extra.frames], size)
        n_res = len(clips) + len(extra)
    enh = residual_enhanced(model, coded, size) if "enhanced" in run else []
    fresh = freshness(model, coded, size) if "freshness" in run else []
    text = markdown(abl, res, {"enhancer": f"{loaded.name}@{loaded.weights_hash.hex()[:16]}",
                               "clips": clips.names, "residual_clips": n_res}, enh, fresh)
    print(text, end="")
    write_result(out, "key_value.md", text)
    return 0


def main(argv=None) -> int:
    # a bad enhancer, a test folder or an unreadable clip: one line on stderr (cliutil.call)
    return call(command, argv, "python -m benchmarks.key_value")


if __name__ == "__main__":
    sys.exit(main())
