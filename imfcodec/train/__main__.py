"""Command line: ``python -m imfcodec.train --config small-cpu [overrides]``.

Also the body of ``imfcodec train`` (the CLI calls :func:`main` with its arguments). A click command
(:data:`command`) like the rest of the CLI; :func:`main` returns the exit status instead of exiting.
Multi-GPU / multi-process: ``torchrun --nproc_per_node N -m imfcodec.train --config paper ...``.
"""

from __future__ import annotations

import json
import logging
import os
import sys

# Idle OpenMP threads sleep instead of spinning: on a shared 2-core machine spinning threads
# made a 2-thread step ~4x slower than a 1-thread one (measured). Only effective if torch has
# not been imported yet (``python -m imfcodec.train``); export it yourself otherwise.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import click

from imfcodec.cliutil import CONTEXT_SETTINGS, Command, GreedyOption, call
from imfcodec.errors import IMFError
from imfcodec.train.config import TrainConfig, list_configs, load_config


PROG = "python -m imfcodec.train"


class _Bool(click.ParamType):
    """1/true/yes/on or 0/false/no/off, any case (``--amp``, ``--progress``; alone they mean true)."""

    name = "bool"

    def convert(self, value, param, ctx):
        if isinstance(value, bool):
            return value
        if value.lower() in ("1", "true", "yes", "on"):
            return True
        if value.lower() in ("0", "false", "no", "off"):
            return False
        self.fail(f"not a boolean: {value}", param, ctx)


_DIRECT = ["model", "init_from", "resolution", "batch_size", "steps", "lr", "lambda_rate", "w_l1", "w_ms_ssim",
           "w_perceptual", "w_gan", "w_feat_match", "gan_start", "vgg_weights", "out", "device", "amp", "tf32",
           "ema", "val_every", "ckpt_every", "log_every", "max_minutes", "threads", "workers",
           "max_frames", "seed", "progress"]


def overrides_from_args(args: SimpleNamespace) -> dict[str, Any]:
    """Config overrides from the options of :data:`command` (as attributes of ``args``)."""
    ov: dict[str, Any] = {k: getattr(args, k) for k in _DIRECT if getattr(args, k) is not None}
    if args.data is not None:
        ov["data"] = list(args.data)
    if args.stages is not None:
        ov["stages"] = json.loads(args.stages)
    if args.cache_dir is not None:
        ov["cache_dir"] = None if args.cache_dir.lower() == "none" else args.cache_dir
    for item in args.set:
        key, sep, val = item.partition("=")
        if not sep:
            raise IMFError(f"--set wants KEY=JSON, got {item!r}")
        try:
            ov[key.strip()] = json.loads(val)
        except json.JSONDecodeError:
            ov[key.strip()] = val
    return ov


def resolve(args: SimpleNamespace) -> tuple[TrainConfig, str | None]:
    """Config + resume path from parsed arguments (checkpoint config when resuming without --config)."""
    from imfcodec.train.checkpoint import load_checkpoint

    ov = overrides_from_args(args)
    resume = args.resume
    base: TrainConfig | None = None
    if resume == "auto":
        out = Path(ov.get("out") or load_config(args.config or "small-cpu").out)
        resume = str(out / "last.pt") if (out / "last.pt").is_file() else None
    if args.export_only and not resume:
        out = Path(ov.get("out") or load_config(args.config or "small-cpu").out)
        resume = str(out / "last.pt")
    if resume and args.config is None:
        base = TrainConfig.from_dict(load_checkpoint(resume)["config"])
    if base is None:
        base = load_config(args.config or "small-cpu")
    return base.replace(**ov), resume


@click.command(
    "train", cls=Command, context_settings=CONTEXT_SETTINGS,
    help="Train an IMF codec model. Settings come from --config (a bundled name: "
    f"{', '.join(list_configs())}; or a JSON file); the options below override it.")
@click.option("--config", "-c", default=None, help="bundled config name or JSON file (default: small-cpu, "
              "or the checkpoint's own config with --resume)")
@click.option("--data", cls=GreedyOption, metavar="DIR [DIR ...]",
              help="video folder(s)/file(s); 'test' folders are refused")
@click.option("--model", default=None,
              help="model config name (imf-tiny, imf-small-v2, imf-base, imf-paper; see `imfcodec models`)")
@click.option("--resolution", type=int, default=None, help="final training/validation resolution")
@click.option("--stages", default=None, help='curriculum as JSON, e.g. "[[0,128],[20000,256]]"; "[]" for none')
@click.option("--batch-size", type=int, default=None, help="global batch size (split over ranks)")
@click.option("--steps", type=int, default=None, help="total steps (a resumed run continues to this)")
@click.option("--lr", type=float, default=None)
@click.option("--lambda-rate", type=float, default=None, help="weight of the rate term (bits per frame)")
@click.option("--w-l1", type=float, default=None)
@click.option("--w-ms-ssim", type=float, default=None)
@click.option("--w-perceptual", type=float, default=None)
@click.option("--w-gan", type=float, default=None)
@click.option("--w-feat-match", type=float, default=None)
@click.option("--gan-start", type=int, default=None)
@click.option("--vgg-weights", default=None, help="local torchvision VGG19 weights (.safetensors or .pth)")
@click.option("--out", default=None, help="run folder (checkpoints, logs, exported weights)")
@click.option("--init-from", default=None, metavar="WEIGHTS",
              help="start a fresh run from a .safetensors weights file (tensors whose names and shapes match)")
@click.option("--resume", is_flag=False, flag_value="auto", default=None, metavar="[PATH]",
              help="continue from a checkpoint (no PATH: OUT/last.pt if it exists, else start fresh)")
@click.option("--device", default=None, help="auto | cpu | cuda | cuda:N")
@click.option("--amp", type=_Bool(), is_flag=False, flag_value=True, default=None, metavar="[BOOL]",
              help="mixed precision (CUDA only)")
@click.option("--tf32", type=_Bool(), is_flag=False, flag_value=True, default=None, metavar="[BOOL]",
              help="TF32 convolutions and matmuls on a GPU (faster, less exact; default off)")
@click.option("--ema", type=float, default=None, help="EMA decay of generator weights, e.g. 0.999 (0: off)")
@click.option("--val-every", type=int, default=None)
@click.option("--ckpt-every", type=int, default=None)
@click.option("--log-every", type=int, default=None)
@click.option("--max-minutes", type=float, default=None, help="stop cleanly (checkpoint + export) after M minutes")
@click.option("--threads", type=int, default=None, help="torch CPU threads")
@click.option("--workers", type=int, default=None, help="DataLoader workers (0: in-process)")
@click.option("--cache-dir", default=None, help="decoded-frame cache folder ('none' to disable)")
@click.option("--max-frames", type=int, default=None, help="frames per clip (first N)")
@click.option("--seed", type=int, default=None)
@click.option("--progress", type=_Bool(), is_flag=False, flag_value=True, default=None, metavar="[BOOL]",
              help="force the progress bar on/off")
@click.option("--set", multiple=True, metavar="KEY=JSON",
              help="override any config field, e.g. --set w_feat_match=1 --set max_distance=null")
@click.option("--export-only", is_flag=True, help="export OUT/last.pt (or --resume PATH) to safetensors and exit")
@click.option("--export-to", default=None, help="path of the exported .safetensors (default OUT/model.safetensors)")
@click.option("--print-config", is_flag=True, help="print the resolved config as JSON and exit")
def command(**params) -> int:
    args = SimpleNamespace(**params)
    args.data = list(args.data) or None  # a GreedyOption is () when absent
    args.set = list(args.set)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    try:
        cfg, resume = resolve(args)
        if args.print_config:
            print(json.dumps(cfg.to_dict(), indent=2))
            return 0
        from imfcodec.train.trainer import export_checkpoint, train

        if args.export_only:
            res = export_checkpoint(resume, args.export_to, config=cfg)
            print(json.dumps({k: v for k, v in res.items() if isinstance(v, (str, int, float))}, indent=2))
            return 0
        summary = train(cfg, resume=resume)
        if summary.get("rank", 0) == 0:
            print(json.dumps(summary, indent=2, default=str))
        return 0
    except IMFError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns a process exit code (0 ok, 1 user error, 2 usage error: one line on stderr)."""
    return call(command, argv, PROG)


if __name__ == "__main__":
    sys.exit(main())
