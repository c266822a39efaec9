"""The hybrid mode's enhancer sweep on held-out TRAINING clips (never the test set): width, and tokens on/off.

    python -m benchmarks.enhancer_sweep run VARIANT [--steps N] [--threads 1] [--init-from W] [--root runs/enh-sweep]
    python -m benchmarks.enhancer_sweep report [--root runs/enh-sweep] [--table T] [--out DIR]

Each variant is a run of the enhancer trainer (``imfcodec.train.hybrid``, its split, base-layer cache,
loss, EMA and validation) in ``ROOT/VARIANT``, so two variants differ only in what the variant names:

* ``small`` / ``wide``: ``enh-small`` and ``enh-wide`` (2.1x the FLOPs) from scratch, same steps and seed:
  what width buys.
* ``small-ft`` / ``tokens-ft``: both start from the same enhancer weights (``--init-from``) and train the
  same steps; ``tokens-ft`` also sees, per frame, the picture the *token mode* decodes for it (the shipped
  IMF model, the key frame at the validation's key quality, quality 9, E_T's tokens), as an extra input
  to the fusion whose weights start at zero. The difference is what the tokens' information adds to the
  enhancer, and the token stream's real rate on the same clips is what it costs.

``report`` puts the validations side by side (mean, moving clips, near-still GRID clips), with GFLOPs,
and converts the token rate into what the same bits buy in the base layer: the hybrid table's best
quality at rate R + token rate minus at R (the ``--kbps`` table ``enh-small-points.json``, also measured on
held-out training clips), in the steady state and for a 10 s clip.
"""

from __future__ import annotations

import functools
import hashlib
import json
import sys
from fractions import Fraction
from pathlib import Path

import click
import numpy as np

from imfcodec.cliutil import CONTEXT_SETTINGS, Command, call
from imfcodec.fsutil import write_text
from imfcodec.settings import DEFAULT_ENHANCER

from .harness import (CACHE_DIR, FPS, TRAIN_DATA, data_option, out_option, refuse_test, threads_option,
                      write_result)

VARIANTS = ("small", "wide", "small-ft", "tokens-ft")
SIDE_VERSION = "imf-side/1"
SIDE_MODEL = "imf-small-v2"
SIDE_QUALITY = 9
SIDE_KEY_QUALITY = 16  # the trainer's validation key quality


def token_side(cache_dir: Path | None):
    """A function CodedClip -> the token mode's decoded frames [T,R,R,3] (cached beside the base layers),
    recording the token stream's rate of each clip in the function's ``rates`` dict."""
    from imfcodec.api import encode_frames_to_file, iter_decoded
    from imfcodec.settings import EncoderSettings
    from imfcodec.zoo import load_model

    loaded = load_model(SIDE_MODEL)
    settings = EncoderSettings(quality=SIDE_QUALITY, key_codec="hevc", key_quality=SIDE_KEY_QUALITY,
                               search_iters=0, scenecut=0, keyint=0)
    rates: dict[str, dict] = {}

    def side(clip) -> np.ndarray:
        h = hashlib.sha1(f"{SIDE_VERSION}|{SIDE_MODEL}|{loaded.weights_hash.hex()}|{SIDE_QUALITY}|"
                         f"{SIDE_KEY_QUALITY}|{clip.frames.shape}".encode())
        h.update(clip.frames[:: max(1, len(clip.frames) // 8)].tobytes())
        file = cache_dir / f"side-{clip.name[:40]}-{h.hexdigest()[:16]}.npz" if cache_dir else None
        if file is not None and file.is_file():
            with np.load(file) as z:
                rates[clip.name] = json.loads(str(z["rate"]))
                return z["frames"]
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            stream = Path(tmp) / "s.imf"
            enc = encode_frames_to_file(list(clip.frames), stream, fps=Fraction(FPS), model=loaded,
                                        settings=settings)
            frames = np.stack([f for _, fs in iter_decoded(stream, model=loaded) for f in fs])
        seconds = len(clip.frames) / FPS
        rate = {"token_kbps": enc.token_bytes * 8 / seconds / 1000, "total_kbps": enc.bytes * 8 / seconds / 1000,
                "frames": len(clip.frames)}
        rates[clip.name] = rate
        if file is not None:
            from imfcodec.fsutil import AtomicOutput

            with AtomicOutput(file) as tmp_file, open(tmp_file, "wb") as fh:
                np.savez(fh, frames=frames, rate=json.dumps(rate))
        return frames

    side.rates = rates
    return side


def side_model(name: str = "enh-small"):
    """An enhancer that also takes the token mode's picture: ``side - base`` as 4x4 patches, extra input
    channels of ``fuse_in`` (zero at the start when initialised from a plain enhancer by the trainer)."""
    import torch.nn.functional as F
    from torch import nn

    from imfcodec.models import create_model
    from imfcodec.models.enhancer import FINE, Enhancer

    class SideEnhancer(Enhancer):
        def __init__(self, config) -> None:
            super().__init__(config)
            old = self.fuse_in
            self.fuse_in = nn.Conv2d(old.in_channels + 3 * FINE * FINE, old.out_channels, 1)

        def enhance(self, state, base, side=None):
            if side is None:
                raise ValueError("this enhancer needs the side picture")
            return super().enhance(state, base, extra=[F.pixel_unshuffle(side - base, FINE)])

        def forward(self, key, key_base, base, side=None):
            return self.enhance(self.prepare_key(key, key_base), base, side)

    return SideEnhancer(create_model(name).config)


def run(variant: str, root: Path, steps: int, threads: int, init_from: str | None, cache_dir: str,
        max_minutes: float | None, data: list[str] | None = None) -> dict:
    from imfcodec.train.hybrid import train

    if variant not in VARIANTS:
        raise click.BadParameter(f"variant must be one of {', '.join(VARIANTS)}")
    if variant.endswith("-ft") and not init_from:
        raise click.BadParameter(f"{variant} needs --init-from (the same weights for both -ft variants)")
    out = root / variant
    kw = dict(steps=steps, threads=threads, cache_dir=cache_dir, val_every=max(100, steps // 3),
              max_minutes=max_minutes, init_from=init_from if variant.endswith("-ft") else None)
    side = None
    if variant == "wide":
        kw["model_name"] = "enh-wide"
    elif variant == "tokens-ft":
        side = token_side(None if cache_dir == "none" else Path(cache_dir))
        kw["model"], kw["side"] = side_model(), side
    if variant.endswith("-ft"):
        kw["lr"] = 2e-4  # a fine-tune: both -ft variants alike
    data = list(data or (str(TRAIN_DATA),))
    refuse_test(data)
    v = train(data, out, **kw)
    info = {"variant": variant, "steps": steps, "init_from": kw["init_from"], "val": v}
    if side is not None:
        info["token_rates"] = side.rates
    write_text(out / "sweep.json", json.dumps(info, indent=1))
    return info


def _grid(name: str) -> bool:
    return Path(name).stem.startswith("grid")


def hull_gain(points, extra_kbps: float, duration_s: float | None) -> float:
    """What ``extra_kbps`` buys when spent on the base layer and key frame instead: mean over the table's
    points of (best PSNR within rate + extra) - (best PSNR within rate), rates of a ``duration_s`` clip
    (None: the steady state, the key frame paid once)."""
    rate = (lambda p: p.steady_kbps) if duration_s is None else (lambda p: p.kbps(duration_s))  # noqa: E731
    pts = sorted((rate(p), p.psnr) for p in points)
    best = lambda r: max((q for k, q in pts if k <= r + 1e-9), default=float("nan"))  # noqa: E731
    top = pts[-1][0]  # past the table's top rate nothing is measured: those points are left out
    return float(np.mean([best(k + extra_kbps) - best(k) for k, _ in pts if k + extra_kbps <= top]))


@functools.lru_cache(maxsize=None)
def _cost(name: str) -> tuple[float, int]:
    """(decode GFLOPs per frame, parameters) of a registered model, counted once."""
    from imfcodec.models import create_model
    from imfcodec.models.registry import count_parameters, decode_gflops

    m = create_model(name)
    return decode_gflops(m), count_parameters(m)


def report(root: Path, table: str) -> str:
    rows = {}
    for v in VARIANTS:
        f = root / v / "sweep.json"
        if f.is_file():
            rows[v] = json.loads(f.read_text())
    if not rows:
        from imfcodec.errors import InputError

        raise InputError(f"no finished sweep variant in {root} (ROOT/VARIANT/sweep.json)")
    lines = ["# Enhancer sweep (held-out training clips; key quality 16; mean over the trainer's base points)", "",
             "| variant | steps | from | decoder GFLOPs/frame | params | val PSNR | gain over bicubic | moving clips | GRID clips |",
             "|---|---|---|---|---|---|---|---|---|"]
    for v, r in rows.items():
        val = r["val"]
        clips = {k[5:]: x for k, x in val.items() if k.startswith("clip/")}
        mov = [x for k, x in clips.items() if not _grid(k)]
        grid = [x for k, x in clips.items() if _grid(k)]
        g, n = _cost("enh-wide" if v == "wide" else "enh-small")
        if v == "tokens-ft":  # the decoder also runs the token model for the side picture
            g, n = g + _cost(SIDE_MODEL)[0], n + _cost(SIDE_MODEL)[1]
        frm = "scratch" if not r["init_from"] else Path(r["init_from"]).name
        lines.append(f"| {v} | {r['steps']} | {frm} | {g:.2f} | {n / 1e6:.2f} M | "
                     f"{val['psnr_enh']:.2f} | {val['gain']:+.2f} | {np.mean(mov):+.2f} | {np.mean(grid):+.2f} |")
    if "tokens-ft" in rows:
        rates = rows["tokens-ft"].get("token_rates", {})
        val_clips = [k[5:] for k in rows["tokens-ft"]["val"] if k.startswith("clip/")]
        held = [rates[c]["token_kbps"] for c in val_clips if c in rates]
        all_r = [r["token_kbps"] for r in rates.values()]
        tok = float(np.mean(held)) if held else float("nan")
        lines += ["", f"Token stream (imf-small-v2, quality {SIDE_QUALITY}, E_T's tokens, {FPS} fps): "
                  f"{tok:.2f} kbit/s on the held-out clips (mean), {np.mean(all_r):.2f} over all {len(all_r)} clips."]
        from imfcodec.ratecontrol import load_table

        points = load_table(table)
        lines.append(f"The same rate spent on the base layer and key frame instead (the `--kbps` table of "
                     f"`{table}`, held-out training clips: best point within R + {tok:.2f} kbit/s minus best "
                     f"within R, mean over its points up to its top rate minus the token rate): {hull_gain(points, tok, None):+.2f} dB in "
                     f"the steady state, {hull_gain(points, tok, 10.0):+.2f} dB for a 10 s clip.")
        if "small-ft" in rows:
            a, b = rows["small-ft"]["val"], rows["tokens-ft"]["val"]
            lines.append(f"Tokens on minus off, same start and steps: {b['psnr_enh'] - a['psnr_enh']:+.2f} dB "
                         "(per clip: " + ", ".join(
                             f"{Path(k[5:]).stem[:14]} {b[k] - a[k]:+.2f}" for k in a if k.startswith("clip/")) + ").")
    return "\n".join(lines) + "\n"


@click.group(context_settings=CONTEXT_SETTINGS, help=__doc__.splitlines()[0])
def command():
    pass


@command.command("run", cls=Command)
@click.argument("variant")
@click.option("--root", type=click.Path(path_type=Path), default=Path("runs/enh-sweep"), show_default=True)
@click.option("--steps", type=int, default=1500, show_default=True)
@threads_option(1, "the trainer's torch threads")
@click.option("--init-from", default=None, help="enhancer weights both -ft variants start from")
@click.option("--cache-dir", default=CACHE_DIR, show_default=True)
@click.option("--max-minutes", type=float, default=None)
@data_option()
def run_command(variant, root, steps, threads, init_from, cache_dir, max_minutes, data):
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    run(variant, root, steps, threads, init_from, cache_dir, max_minutes, list(data))
    return 0


@command.command("report", cls=Command)
@click.option("--root", type=click.Path(path_type=Path), default=Path("runs/enh-sweep"), show_default=True)
@click.option("--table", default=DEFAULT_ENHANCER, show_default=True,
              help="the enhancer whose --kbps table prices the tokens (the stop-14 report used enh-small's)")
@out_option("enhancer_sweep.md")
def report_command(root, table, out):
    text = report(root, table)
    print(text, end="")
    write_result(out, "enhancer_sweep.md", text)
    return 0


def main(argv=None) -> int:
    return call(command, argv, "python -m benchmarks.enhancer_sweep")


if __name__ == "__main__":
    sys.exit(main())
