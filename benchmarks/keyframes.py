"""The encoder's key-frame policy on TRAINING clips: the scene-cut threshold and --refresh-below.

    python -m benchmarks.keyframes [--data DIR] [--frames 750] [--threshold 10] [--no-stats]
                                   [--encode CLIP_A CLIP_B] [--encode-frames 60] [--refine 0] [--hybrid]
                                   [--model NAME|PATH] [--enhancer NAME|PATH]
                                   [--refresh 14,16,18] [--refresh-frames 100] [--refresh-every 1]

Never point it at the test set: the threshold and the --refresh-below example are chosen here.

* Unless ``--no-stats``: every clip's frames (at most ``--frames``, at 256x256) through ``imfcodec.scenecut``: the scores
  of consecutive frames (and of frames two apart, as at half the frame rate) of each uncut clip, so the
  false cuts at ``--threshold``; and synthetic cuts, the last frame of one clip against the first of
  another for every ordered pair, so the detection rate, split by whether the two clips come from the
  same source (the name up to the first ``_``: one studio, one speaker).
* ``--encode A B``: ``--encode-frames`` frames of clip A then of clip B, coded for real with the shipped
  model (``--refine`` search steps; ``--hybrid``: also the hybrid mode with the shipped enhancer) with the
  detector at ``--threshold`` and off: key frames, kbit/s from the file and decoded PSNR before and after
  the cut.
* ``--refresh DB,...``: each clip's first ``--refresh-frames`` frames (every ``--refresh-every``-th clip)
  coded with ``--refresh-below DB`` for each value (the detector at ``--threshold``, ``--refine``): how
  many frames became key frames, and the decoded PSNR of a plain encode, to pick a value that keeps key
  frames rare on normal clips.
"""

from __future__ import annotations

import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import click
import numpy as np

from imfcodec.cliutil import CONTEXT_SETTINGS, Command, call

from .harness import FPS, TRAIN_DATA, find_clips, threads_option

SIZE = 256


def source(name: str) -> str:
    """What a clip's name says about where it comes from (the shared set's prefix: grid, liveportrait...)."""
    return name.split("_")[0]


def clip_paths(data: Path) -> list[Path]:
    """Every clip in ``data`` (raw .264 streams too: the trainer's ``find_videos`` skips them); never the
    test set."""
    return list(find_clips([data], option="--data", tunes=True).values())


def read(path: Path, frames: int, size: int = SIZE) -> list[np.ndarray]:
    from imfcodec.io import read_frames

    return list(read_frames(path, size, max_frames=frames))


def detector_stats(paths: list[Path], frames: int, threshold: float) -> None:
    """False cuts on the uncut clips and detection of synthetic cuts at ``threshold``."""
    from imfcodec.scenecut import cut_score, thumbnail

    t0 = time.perf_counter()
    thumbs = {p.name: np.stack([thumbnail(f) for f in read(p, frames)]) for p in paths}
    pairs_read = sum(len(t) for t in thumbs.values())
    print(f"{len(thumbs)} clips, {pairs_read} frames read in {time.perf_counter() - t0:.0f} s")
    for step, what in ((1, "consecutive frames"), (2, "frames two apart (half the frame rate)")):
        scores = {n: np.array([cut_score(t[i - step], t[i]) for i in range(step, len(t))]) for n, t in thumbs.items()}
        if not any(len(s) for s in scores.values()):
            print(f"uncut clips, {what}: too few frames (--frames)")
            continue
        every = np.concatenate([s for s in scores.values() if len(s)])
        false = {n: int((s >= threshold).sum()) for n, s in scores.items() if len(s) and (s >= threshold).any()}
        top = sorted(((s.max(), n) for n, s in scores.items() if len(s)), reverse=True)[:3]
        print(f"uncut clips, {what}: {len(every)} scores, median {np.median(every):.2f}, 99.9th percentile "
              f"{np.percentile(every, 99.9):.2f}, max {every.max():.2f}; highest: "
              + ", ".join(f"{n} {m:.2f}" for m, n in top))
        print(f"  false cuts at {threshold:g}: {sum(false.values())} frames in {len(false)} of {len(scores)} clips"
              + (f" ({', '.join(f'{n}: {k}' for n, k in false.items())})" if false else ""))
    names = sorted(thumbs)
    cuts = [(cut_score(thumbs[a][-1], thumbs[b][0]), source(a) == source(b)) for a in names for b in names if a != b]
    for label, sel in (("all", [c for c, _ in cuts]), ("different sources", [c for c, same in cuts if not same]),
                       ("same source", [c for c, same in cuts if same])):
        if not sel:
            continue
        sel = np.array(sel)
        print(f"synthetic cuts, {label}: {len(sel)}, detected at {threshold:g}: {(sel >= threshold).sum()} "
              f"({100 * (sel >= threshold).mean():.1f} %), lowest score {sel.min():.2f}, 1st percentile "
              f"{np.percentile(sel, 1):.2f}, median {np.median(sel):.2f}")


def encode_cut(a: Path, b: Path, frames: int, threshold: float, search_iters: int, model, enhancer) -> None:
    """A synthetic cut clip (A then B) coded with the detector on and off, by the token model ``model`` and,
    if given, the hybrid mode's ``enhancer`` (both ``zoo.LoadedModel``; frames at their resolution)."""
    from imfcodec.api import encode_frames_to_file, iter_decoded
    from imfcodec.settings import EncoderSettings
    from imfcodec.metrics import psnr

    size = int(model.model.config.resolution)
    first, second = read(a, frames, size), read(b, frames, size)
    src, cut = first + second, len(first)
    seconds = len(src) / FPS
    print(f"cut clip: {a.name} ({len(first)} frames) then {b.name} ({len(second)}), cut at frame {cut}, {FPS} fps")
    modes = [("token", model, dict(search_iters=search_iters))]
    if enhancer is not None:
        if int(enhancer.model.config.resolution) != size:
            raise click.ClickException(f"the enhancer codes {enhancer.model.config.resolution} px, the model {size}")
        modes.append(("hybrid", enhancer, dict(base_codec="hevc")))
    with tempfile.TemporaryDirectory() as tmp:
        for mode, loaded, kw in modes:
            for label, sc in ((f"--scenecut {threshold:g}", threshold), ("--no-scenecut", 0.0)):
                path = Path(tmp) / "c.imf"
                t0 = time.perf_counter()
                r = encode_frames_to_file(src, path, fps=Fraction(FPS), model=loaded, overwrite=True,
                                          settings=EncoderSettings(scenecut=sc, **kw))
                enc_s = time.perf_counter() - t0
                out = [f for _dec, o in iter_decoded(path, model=loaded) for f in o]
                p = [psnr(s, d) for d, s in zip(out, src)]
                print(f"  {mode:6s} {label:14s}: key frames {r.key_frames}, {r.bytes * 8 / seconds / 1000:.2f} kbit/s, "
                      f"PSNR before the cut {np.mean(p[:cut]):.2f} dB, after {np.mean(p[cut:]):.2f} dB "
                      f"(first 5 after: {np.mean(p[cut:cut + 5]):.2f}), encode {enc_s:.0f} s", flush=True)


def refresh_counts(paths: list[Path], frames: int, values: list[float], threshold: float, search_iters: int,
                   model) -> None:
    """Key frames that --refresh-below makes on normal clips, and the PSNR a plain encode decodes to, with
    the token model ``model`` (a ``zoo.LoadedModel``)."""
    from imfcodec.api import encode_frames_to_file, iter_decoded
    from imfcodec.settings import EncoderSettings
    from imfcodec.metrics import psnr

    keys = {v: 0 for v in values}
    clips_with = {v: 0 for v in values}
    per_frame, total = [], 0
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "r.imf"
        for p in paths:
            src = read(p, frames, int(model.model.config.resolution))
            total += len(src)
            encode_frames_to_file(src, path, fps=Fraction(FPS), model=model, overwrite=True,
                                  settings=EncoderSettings(scenecut=threshold, search_iters=search_iters))
            decoded = [f for _dec, o in iter_decoded(path, model=model) for f in o]
            per_frame += [psnr(s, d) for d, s in zip(decoded[1:], src[1:])]
            for v in values:
                r = encode_frames_to_file(src, path, fps=Fraction(FPS), model=model, overwrite=True, settings=EncoderSettings(
                    scenecut=threshold, search_iters=search_iters, refresh_below=v))
                keys[v] += len(r.key_frames) - 1
                clips_with[v] += len(r.key_frames) > 1
            print(f"  {p.name}: done [{time.perf_counter() - t0:.0f} s]", flush=True)
    per_frame = np.array(per_frame)
    print(f"plain encode, {len(paths)} clips, {total} frames: decoded PSNR of the frames after the key frame: "
          f"median {np.median(per_frame):.2f} dB, 1st percentile {np.percentile(per_frame, 1):.2f}, "
          f"5th {np.percentile(per_frame, 5):.2f}, min {per_frame.min():.2f}")
    for v in values:
        print(f"  --refresh-below {v:g}: {keys[v]} extra key frames in {total} frames ({100 * keys[v] / total:.2f} %), "
              f"in {clips_with[v]} of {len(paths)} clips; a plain decode has {100 * (per_frame < v).mean():.2f} % "
              f"of its frames below {v:g} dB")


@click.command("keyframes", cls=Command, context_settings=CONTEXT_SETTINGS, help=__doc__.splitlines()[0])
@click.option("--data", type=click.Path(path_type=Path, file_okay=False, exists=True),
              default=TRAIN_DATA, show_default=True, help="a folder of training clips (not test)")
@click.option("--frames", type=click.IntRange(min=2), default=750, show_default=True,
              help="frames per clip for the detector's statistics")
@click.option("--threshold", type=click.FloatRange(min=0, max=100), default=None,
              help="scene-cut threshold [default: imfcodec's default]")
@click.option("--encode", "encode", nargs=2, default=None, help="two clip names in --data: a synthetic cut to code")
@click.option("--encode-frames", type=click.IntRange(min=1), default=60, show_default=True)
@click.option("--refine", "search_iters", type=click.IntRange(min=0), default=0, show_default=True,
              help="token search steps for the encodes")
@click.option("--hybrid", is_flag=True, help="--encode also in the hybrid mode")
@click.option("--model", default=None, help="token model for the encodes [default: the shipped one]")
@click.option("--enhancer", default=None, help="enhancer for --hybrid [default: the shipped one]")
@click.option("--refresh", default=None, help="comma-separated --refresh-below values to count key frames for")
@click.option("--refresh-frames", type=click.IntRange(min=2), default=100, show_default=True)
@click.option("--refresh-every", type=click.IntRange(min=1), default=1, show_default=True,
              help="use every N-th clip for --refresh")
@click.option("--stats/--no-stats", default=True, show_default=True,
              help="the detector's statistics over every clip (false cuts, synthetic cuts)")
@threads_option()
def command(data, frames, threshold, stats, encode, encode_frames, search_iters, hybrid, model, enhancer, refresh,
            refresh_frames, refresh_every, threads):
    import torch

    from imfcodec.settings import DEFAULT_SCENECUT

    torch.set_num_threads(threads)
    threshold = DEFAULT_SCENECUT if threshold is None else threshold
    paths = clip_paths(data)
    values = []
    if refresh:
        try:
            values = [float(v) for v in refresh.split(",")]
        except ValueError:
            raise click.BadParameter(f"expected comma-separated dB values, got {refresh!r}",
                                     param_hint="--refresh") from None
    if encode:
        missing = [n for n in encode if not (data / n).is_file()]
        if missing:
            raise click.BadParameter(f"not a clip in {data}: {missing[0]}", param_hint="--encode")
    if stats:
        detector_stats(paths, frames, threshold)
    if encode or values:
        from imfcodec.modes.hybrid import load_enhancer
        from imfcodec.zoo import load_model

        loaded = load_model(model)
        if encode:
            enh = load_enhancer(enhancer) if hybrid else None
            encode_cut(data / encode[0], data / encode[1], encode_frames, threshold, search_iters, loaded, enh)
        if values:
            refresh_counts(paths[::refresh_every], refresh_frames, values, threshold, search_iters, loaded)
    return 0


def main(argv=None) -> int:
    # a test folder or an unreadable clip: one line on stderr (cliutil.call)
    return call(command, argv, "python -m benchmarks.keyframes")


if __name__ == "__main__":
    sys.exit(main())
