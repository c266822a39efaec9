"""The recurrent enhancer against a single-frame one on the trainer's held-out clips: quality, recovery, drift.

    python -m benchmarks.recurrent --enhancer runs/enh-rec/model.safetensors [--against enh-wide] [--val-clips 8]
        [--key-quality 16] [--drift-frames 10000] [--half-rate] [--out DIR]

1. Quality: the trainer's ``validate`` for both (6 frames of each held-out clip at each of the 12 operating points
   of its cache, key frame at ``--key-quality``; the recurrent enhancer runs through every frame before them, as
   the decoder does), per clip and per source (the clip name's prefix, ``MANIFEST.tsv``'s sources).
2. Recovery: on each held-out clip at one operating point (``--point``), the memory is replaced at frame
   ``--at`` by the upscaled base frame, what a ``b`` record leaves in it; the frames until every later frame (to
   ``--horizon``) is within 0.1 dB of the uninterrupted run. (After a lost packet the decoder enhances nothing until
   the next key frame, which resets the memory: ``tests/test_recurrent.py`` checks that it is back on the clean
   frames exactly there.)
3. Drift: the first held-out clip played forwards and backwards for ``--drift-frames`` frames, one key frame, at
   the same point. The single-frame enhancer has no state, so its PSNR on a frame does not depend on when it is
   shown: the recurrent one's PSNR minus the single-frame one's on the same frames, first 1,000 against last
   1,000, is the drift. The memory's size is checked to stay the same, and the peak RSS is reported.
4. Same streams (``--streams CLIP|DIR ...``, e.g. the test clips: measured, never tuned on): each clip encoded once at
   ``imfcodec encode``'s defaults with the single-frame enhancer (its guard), then decoded with each enhancer
   (``decode --enhancer``) and with none; mean PSNR of the decoded frames per clip (``--stream-frames`` each).
"""

from __future__ import annotations

from pathlib import Path
import resource
import sys

import click
import numpy as np

from imfcodec.cliutil import CONTEXT_SETTINGS, Command, call

from .harness import cache_path, data_option, held_out_clips, held_out_options, out_option, threads_option, \
    write_result

PROG = "python -m benchmarks.recurrent"


def _source(name: str) -> str:
    """A clip's source: its file name's prefix (``train/grid_sbia1a.mpg`` -> ``grid``)."""
    return name.rsplit("/", 1)[-1].split("_", 1)[0]


def _upscaled(small: np.ndarray, size: int):
    from imfcodec.models import upscale
    from imfcodec.train.hybrid import _t

    return upscale(_t(small), (size, size))


def _psnr(out, target: np.ndarray) -> np.ndarray:
    from imfcodec.codec import to_uint8
    from imfcodec.metrics import psnr

    return psnr(np.stack(to_uint8(out)), target, reduction="none")


def sequence_psnr(model, clip, point, key_quality: int, order: list[int], reset_at: int | None = None) -> np.ndarray:
    """PSNR of each frame of ``order`` (indices into the clip, after its key frame 0) enhanced in that order from
    one key frame; ``reset_at``: the memory becomes the upscaled base frame there (as after a ``b`` record)."""
    import torch

    from imfcodec.train.hybrid import _t

    size = clip.frames.shape[1]
    small = clip.bases[point]
    out = []
    with torch.inference_mode():
        state = model.prepare_key(_t(clip.keys[key_quality])[None], _upscaled(small[0][None], size))
        for n, i in enumerate(order):
            base = _upscaled(small[i][None], size)
            if reset_at is not None and n == reset_at:
                model.remember(state, base, base)
                out.append(_psnr(base, clip.frames[i][None])[0])
                continue
            out.append(_psnr(model.enhance(state, base), clip.frames[i][None])[0])
    return np.array(out)


def recovery_frames(clean: np.ndarray, reset: np.ndarray, at: int, tol: float = 0.1) -> int:
    """Frames after ``at`` until every later frame of ``reset`` is within ``tol`` dB of ``clean`` (0: at once)."""
    far = np.nonzero(np.abs(reset[at + 1:] - clean[at + 1:]) > tol)[0]
    return 0 if len(far) == 0 else int(far[-1]) + 1


def same_streams(paths: dict[str, "Path"], single, rec, frames: int, tmp) -> list[tuple[str, float, float, float]]:
    """Per clip: (name, PSNR with no enhancer, with ``single``, with ``rec``) of one stream made with ``single``."""
    from fractions import Fraction

    from imfcodec.api import encode_frames_to_file, iter_decoded
    from imfcodec.io import read_frames
    from imfcodec.metrics import psnr

    size = single.model.config.resolution
    rows = []
    for name, path in paths.items():
        src = np.stack(list(read_frames(path, size, frames)))
        stream = tmp / f"{name}.imf"
        encode_frames_to_file(src, stream, fps=Fraction(25), model=single)
        got = []
        for kw in ({"model": single, "enhance": False}, {"model": single}, {"enhancer": rec}):
            out = np.stack([f for _, fs in iter_decoded(stream, **kw) for f in fs])
            got.append(float(np.mean(psnr(out, src, reduction="none"))))
        rows.append((name, *got))
    return rows


def ping_pong(length: int, n: int) -> list[int]:
    """Frame indices 1, 2, .., length-1, length-2, .., 1, 2, .. (n of them): a long clip without cuts."""
    cycle = list(range(1, length)) + list(range(length - 2, 1, -1))
    return [cycle[i % len(cycle)] for i in range(n)]


@click.command("recurrent", cls=Command, context_settings=CONTEXT_SETTINGS, help=__doc__.splitlines()[0])
@click.option("--enhancer", required=True, help="the recurrent enhancer (name, .safetensors or random:NAME)")
@click.option("--against", default="enh-wide", show_default=True, help="the single-frame enhancer")
@data_option()
@held_out_options
@click.option("--key-quality", type=int, default=16, show_default=True)
@click.option("--point", default="vp9,2,6", show_default=True, help="operating point of the cache (codec,factor,q)")
@click.option("--at", type=int, default=20, show_default=True, help="recovery: frame of the b record")
@click.option("--horizon", type=int, default=60, show_default=True, help="recovery: frames followed after it (0: no recovery run)")
@click.option("--drift-frames", type=int, default=10000, show_default=True, help="0: no drift run")
@click.option("--skip-validate", is_flag=True, help="only recovery and drift")
@click.option("--streams", multiple=True, help="clips or folders for the same-streams table (repeatable)")
@click.option("--stream-frames", type=int, default=250, show_default=True)
@click.option("--half-rate", is_flag=True, help="sections 1-3 on half-rate sequences (every other frame, coded at "
              "half the frame rate: the trainer's --half-rate)")
@threads_option()
@out_option("recurrent.md")
def command(enhancer, against, data, val_clips, cache_dir, key_quality, point, at, horizon, drift_frames,
            skip_validate, streams, stream_frames, threads, out, half_rate):
    import torch

    from imfcodec.modes.hybrid import is_recurrent, load_enhancer
    from imfcodec.train.hybrid import BASE_POINTS, code_stream, validate

    torch.set_num_threads(threads)
    rec, single = load_enhancer(enhancer), load_enhancer(against)
    if not is_recurrent(rec.model) or is_recurrent(single.model):
        raise click.UsageError("--enhancer must be a recurrent enhancer and --against a single-frame one")
    codec, factor, q = point.split(",")
    point = (codec, int(factor), int(q))
    if point not in BASE_POINTS:
        raise click.UsageError(f"--point {point} is not one of the cache's: {BASE_POINTS}")
    size = rec.model.config.resolution
    models = {"rec": rec.model.eval(), "single": single.model.eval()}
    lines = [f"# {rec.name}@{rec.weights_hash.hex()[:16]} against {single.name}@{single.weights_hash.hex()[:16]}", ""]
    coded = []
    if not skip_validate or horizon > 0 or drift_frames > 0:  # sections 1-3 run on the held-out clips
        _, clips = held_out_clips(data, val_clips, size, 200, cache_dir)
        coded = [code_stream(n, f, cache_path(cache_dir), half_rate) for n, f in zip(clips.names, clips.frames)]
        lines += [f"Held-out training clips ({len(coded)}, `--val-clips {val_clips}`): {', '.join(clips.names)}.", ""]
    if half_rate and coded:
        lines += ["Half-rate (`--half-rate`): sections 1-3 run on every other frame, coded at half the frame rate, "
                  "as the default stream codes them (frame numbers count those frames).", ""]
    if not skip_validate:
        v = {k: validate(m, coded, key_quality=key_quality) for k, m in models.items()}
        lines += [f"## Quality (the trainer's validate, key quality {key_quality})", "",
                  f"| | {single.name} | {rec.name} | change |", "|---|---|---|---|",
                  f"| all clips, PSNR | {v['single']['psnr_enh']:.2f} dB | {v['rec']['psnr_enh']:.2f} dB | "
                  f"**{v['rec']['psnr_enh'] - v['single']['psnr_enh']:+.2f}** |",
                  f"| gain over bicubic ({v['single']['psnr_base']:.2f} dB) | {v['single']['gain']:+.2f} | "
                  f"{v['rec']['gain']:+.2f} | |"]
        by_source: dict[str, list[float]] = {}
        for c in coded:
            d = v["rec"][f"clip/{c.name}"] - v["single"][f"clip/{c.name}"]
            by_source.setdefault(_source(c.name), []).append(d)
            lines.append(f"| {c.name} | {v['single'][f'clip/{c.name}']:+.2f} | {v['rec'][f'clip/{c.name}']:+.2f} | "
                         f"{d:+.2f} |")
        lines += ["", "Per source (mean change over its held-out clips): " +
                  ", ".join(f"{s} {np.mean(d):+.2f}" for s, d in sorted(by_source.items())), ""]
    if horizon > 0:  # recovery after a b record
        rows = []
        for c in coded:
            n = min(len(c.frames) - 1, at + horizon + 1)
            order = list(range(1, n + 1))
            clean = sequence_psnr(models["rec"], c, point, key_quality, order)
            reset = sequence_psnr(models["rec"], c, point, key_quality, order, reset_at=at - 1)  # order[at-1] = at
            rows.append((c.name, recovery_frames(clean, reset, at - 1), float(np.mean(reset[at:] - clean[at:]))))
        lines += [f"## Recovery after a `b` record at frame {at} ({'/'.join(map(str, point))}, key quality {key_quality})",
                  "", "Frames after it until every later frame is within 0.1 dB of the uninterrupted decode (to frame "
                  f"{at + horizon}), and the mean change over those frames:", "",
                  "| clip | frames | mean change |", "|---|---|---|",
                  *(f"| {n} | {f} | {d:+.3f} dB |" for n, f, d in rows),
                  f"| **most** | **{max(r[1] for r in rows)}** | |", ""]
    if drift_frames:
        c = coded[0]
        order = ping_pong(len(c.frames), drift_frames)
        cycle = sorted(set(order))
        flat = sequence_psnr(models["single"], c, point, key_quality, cycle)
        single_of = dict(zip(cycle, flat))
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        p = sequence_psnr(models["rec"], c, point, key_quality, order)
        d = p - np.array([single_of[i] for i in order])
        k = min(1000, len(d) // 2)
        lines += [f"## Drift: {c.name} forwards and backwards, {len(order)} frames, one key frame", "",
                  f"{rec.name} minus {single.name} on the same frames: first {k} {d[:k].mean():+.3f} dB, last {k} "
                  f"{d[-k:].mean():+.3f} dB (change **{d[-k:].mean() - d[:k].mean():+.3f} dB**); PSNR first {k} "
                  f"{p[:k].mean():.2f}, last {k} {p[-k:].mean():.2f} dB. Peak RSS {rss0 / 1024:.0f} MiB before the run, "
                  f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB after.", ""]
    if streams:
        import tempfile
        from pathlib import Path

        from .harness import find_clips

        with tempfile.TemporaryDirectory() as tmp:
            rows = same_streams(find_clips(streams, option="--streams"), single, rec, stream_frames, Path(tmp))
        a = np.array([r[1:] for r in rows])
        lines += [f"## Same streams: {len(rows)} clips at `imfcodec encode`'s defaults made with {single.name}, "
                  f"decoded three ways (first {stream_frames} frames)", "",
                  f"| clip | no enhancer | {single.name} | {rec.name} | change |", "|---|---|---|---|---|",
                  *(f"| {n} | {b:.2f} | {w:.2f} | {r:.2f} | {r - w:+.2f} |" for n, b, w, r in rows),
                  f"| **mean** | {a[:, 0].mean():.2f} | {a[:, 1].mean():.2f} | {a[:, 2].mean():.2f} | "
                  f"**{a[:, 2].mean() - a[:, 1].mean():+.2f}** |", ""]
    text = "\n".join(lines)
    print(text)
    write_result(out, "recurrent.md", text)
    return 0


def main(argv=None) -> int:
    return call(command, argv, PROG)


if __name__ == "__main__":
    sys.exit(main())
