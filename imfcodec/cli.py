"""Command line: parse, call the API, print. No codec logic lives here.

Every user error ends with a one-line ``error: ...`` on stderr and a non-zero exit;
``imfcodec --debug ...`` shows the traceback instead.
"""

from __future__ import annotations

import json
import os
import sys

# Spinning OpenMP workers make torch ~100x slower when another process shares the cores (measured on
# the 2-core build machine); passive waiting costs nothing measurable on an idle machine. Must be set
# before torch is imported; a user's own setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import click

from .errors import IMFError
from .settings import DEFAULT_PRESET, PRESETS, EncoderSettings

_ENCODER = EncoderSettings()  # the defaults --help shows and encode starts from (one definition)

EXIT_ERROR = 1
EXIT_INTERNAL = 3
EXIT_INTERRUPTED = 130  # what main() returns in-process; run() ends by the signal itself

_stopped_by: int | None = None  # the signal that interrupted this run (set by _interruptible's handler)


class _Group(click.Group):
    """Turns exceptions into one-line messages unless --debug was given."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except IMFError as e:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            click.echo(f"error: {e}", err=True)
            ctx.exit(EXIT_ERROR)
        except BrokenPipeError:  # `imfcodec info s.imf | head`: the reader left; not an error of ours
            sys.stderr.close()
            ctx.exit(0)
        except KeyboardInterrupt:
            click.echo("interrupted: no output was written", err=True)
            ctx.exit(EXIT_INTERRUPTED)
        except Exception as e:  # a bug, not a user error: still one line, with a hint
            if _stopped_by is not None:  # an interrupt that a library re-raised as another error
                click.echo("interrupted: no output was written", err=True)
                ctx.exit(EXIT_INTERRUPTED)
            if ctx.obj and ctx.obj.get("debug"):
                raise
            msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
            click.echo(f"internal error: {type(e).__name__}: {msg} (rerun with --debug for details)", err=True)
            ctx.exit(EXIT_INTERNAL)


def _progress(total: int | None, desc: str, unit: str = "frame"):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, disable=None, leave=False)


@click.group(cls=_Group)
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors.")
@click.version_option(package_name="imfcodec")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """imfcodec: a neural talking-head video codec (Implicit Motion Function)."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug


@main.command()
@click.argument("input", type=click.Path(dir_okay=False))
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Output stream (default: INPUT with .imf).")
@click.option("--model", "model", default=None,
              help="Config name with shipped weights, a .safetensors file, or random:NAME for an untrained model.")
@click.option("--quality", type=int, default=_ENCODER.quality, show_default=True,
              help="Token quality (higher = finer quantization).")
@click.option("--keyint", type=int, default=_ENCODER.keyint, show_default=True,
              help="Key frame every N frames (0 = one key frame).")
@click.option("--refresh-below", type=float, default=_ENCODER.refresh_below,
              help="Insert a key frame when the decoded frame's PSNR drops below this many dB.")
@click.option("--key-codec", default=_ENCODER.key_codec, show_default=True, help="Key-frame codec (see `imfcodec models`).")
@click.option("--key-quality", type=int, default=_ENCODER.key_quality,
              help="Key-frame quality (higher = better; default: the key-frame codec's own).")
@click.option("--chunk", type=int, default=_ENCODER.chunk, show_default=True,
              help="Frames per token packet (latency vs overhead).")
@click.option("--preset", type=click.Choice(list(PRESETS)), default=DEFAULT_PRESET, show_default=True,
              help="Encoder effort, same format: " + "; ".join(f"{k}: {p.describe()}" for k, p in PRESETS.items())
                   + " (shipped model, 256x256, 2 CPU cores).")
@click.option("--refine", "search_iters", type=int, default=None,
              help="Expert: token search steps per frame, overriding the preset's (0 = E_T's token; 1 runs 2 "
                   "steps, since the first never changes the token).")
@click.option("--frames", type=int, default=None, help="Encode at most N frames.")
def encode(input, output, model, quality, keyint, refresh_below, key_codec, key_quality, chunk, preset, search_iters,
           frames):
    """Encode a video file into an .imf stream."""
    from .api import check_input_size, encode_video
    from .io import probe_video

    _interruptible()

    settings = EncoderSettings.from_preset(
        preset, quality=quality, keyint=keyint, refresh_below=refresh_below, key_codec=key_codec,
        key_quality=key_quality, chunk=chunk, **({} if search_iters is None else {"search_iters": search_iters}),
    ).validated()
    if frames is not None and frames < 1:
        raise click.BadParameter("must be >= 1", param_hint="--frames")
    check_input_size(input)  # before probe_video decodes a frame
    total = probe_video(input).frames
    total = min(total, frames) if (total and frames) else (frames or total)
    with _progress(total, "encode") as bar:
        s = encode_video(input, output, model=model, settings=settings, max_frames=frames, progress=bar.update)
    click.echo(
        f"{s.output}: {s.frames} frames, {s.bytes} bytes, {s.kbps:.2f} kbit/s "
        f"(key {s.key_bytes} B, tokens {s.token_bytes} B, overhead {s.overhead_bytes} B), "
        f"{len(s.key_frames)} key frame(s), {s.fps:.1f} fps, model {s.model}")


def _limit_options(f):
    """--max-width/--max-height/--max-frames/--max-packet: the reader's Limits (FORMAT.md §5)."""
    from .bitstream import Limits

    d = Limits()
    for name, default, what in reversed((
            ("--max-width", d.max_width, "Refuse streams wider than this."),
            ("--max-height", d.max_height, "Refuse streams taller than this."),
            ("--max-frames", d.max_frames, "Refuse streams with more frames."),
            ("--max-packet", d.max_packet, "Refuse records with a larger payload (bytes)."))):
        f = click.option(name, type=click.IntRange(min=1), default=default, show_default=True, help=what)(f)
    return f


def _limits(max_width, max_height, max_frames, max_packet):
    from .bitstream import Limits

    return Limits(max_width=max_width, max_height=max_height, max_frames=max_frames, max_packet=max_packet)


def _ranges(frames: list[int], most: int = 20) -> str:
    """[3, 4, 5, 9] -> '3-5, 9' (the first ``most`` ranges, then how many more)."""
    spans: list[list[int]] = []
    for i in frames:
        if spans and i == spans[-1][1] + 1:
            spans[-1][1] = i
        else:
            spans.append([i, i])
    text = ", ".join(f"{a}-{b}" if b > a else str(a) for a, b in spans[:most])
    return text + (f", ... ({len(spans) - most} more ranges)" if len(spans) > most else "")


def _interruptible() -> None:
    """Make Ctrl-C and SIGTERM raise KeyboardInterrupt, remembering which signal it was, so that either
    one unwinds through the atomic outputs (leaving no partial file) and :func:`run` can end by it."""
    import signal
    import threading

    def handler(signum, frame):
        global _stopped_by
        _stopped_by = signum
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, handler)


def run() -> None:
    """The ``imfcodec`` program: :func:`main`, except that an interrupted run, once it has cleaned up and
    said so, ends the way interrupted Unix programs do: killed by the signal that stopped it (a shell
    reports 130 for Ctrl-C, 143 for SIGTERM, and a calling script's loop stops too). Ending explicitly
    also makes the status independent of the interpreter's exit path, which CI once saw end a run that
    had printed its message and returned 130 by SIGINT anyway."""
    import signal

    try:
        main()
    except SystemExit as e:
        if e.code != EXIT_INTERRUPTED:
            raise
        sig = _stopped_by or signal.SIGINT  # before _interruptible(), Python's own handler raised it
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
        os._exit(128 + sig)  # not reached: the signal's default action ends the process


@main.command()
@click.argument("input", type=click.Path(dir_okay=False))
@click.option("-o", "--output", type=click.Path(), help="Output .mp4, .y4m or DIR/ of PNGs (default: INPUT with .mp4).")
@click.option("--model", "model", default=None, help="Weights the stream was made with (default: found by its hash).")
@click.option("--conceal", is_flag=True,
              help="Keep going past damaged packets: repeat the last good frame until the next key frame, and "
                   "report which frames were concealed (without it a damaged stream is refused).")
@_limit_options
def decode(input, output, model, conceal, max_width, max_height, max_frames, max_packet):
    """Decode an .imf stream (recognised by its magic, whatever the extension)."""
    from .api import decode_stream, stream_header
    from .errors import CorruptStreamError

    _interruptible()
    limits = _limits(max_width, max_height, max_frames, max_packet)
    header = stream_header(input, limits)
    try:
        with _progress(header.frames or None, "decode") as bar:
            s = decode_stream(input, output, model=model, progress=bar.update, limits=limits, conceal=conceal)
    except CorruptStreamError as e:
        raise CorruptStreamError(f"{e}; nothing was written (--conceal decodes past damaged packets)") from e
    click.echo(f"{s.output}: {s.frames} frames, {len(s.key_frames)} key frame(s), {s.fps:.1f} fps")
    if s.concealed or s.damage_count or s.truncated:
        click.echo(f"warning: {len(s.concealed)} frame(s) concealed: {_ranges(s.concealed) or 'none'}", err=True)
        for why in s.damage[:10]:
            click.echo(f"  skipped: {why}", err=True)
        if s.damage_count > 10:
            click.echo(f"  ... and {s.damage_count - 10} more damaged stretch(es)", err=True)
        if s.truncated:
            click.echo(f"  the stream is truncated (no END packet): it ends after frame {s.frames - 1}", err=True)


@main.command()
@click.argument("input", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@_limit_options
def info(input, as_json, max_width, max_height, max_frames, max_packet):
    """Show a stream's header and per-packet sizes."""
    from .api import stream_info

    d = stream_info(input, _limits(max_width, max_height, max_frames, max_packet))
    if as_json:
        click.echo(json.dumps(d, indent=2))
        return
    click.echo(f"{input}: imfcodec stream, model {d['model']} (weights {d['weights_hash'][:16]})")
    click.echo(f"  {d['width']}x{d['height']} @ {d['fps_rational']} fps, {d['frames']} frames, {d['duration_s']:.2f} s")
    click.echo(f"  key frames: {d['key_codec']} q{d['key_quality']} at {d['key_frames']}; tokens q{d['quality']}, "
               f"chunk {d['chunk']}, dim {d['token_dim']}")
    click.echo(f"  {d['bytes']} bytes = {d['kbps']:.2f} kbit/s: key {d['key_bytes']} B ({d['key_kbps']:.2f} kbit/s), "
               f"tokens {d['token_bytes']} B ({d['token_kbps']:.2f} kbit/s), overhead {d['overhead_bytes']} B")
    for p in d["packets"]:
        if p["type"] == "key":
            click.echo(f"  frame {p['frame']:6d}  key     {p['packet_bytes']:7d} B")
        else:
            click.echo(f"  frame {p['frame']:6d}  tokens  {p['packet_bytes']:7d} B  ({p['count']} frames)")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def models(as_json):
    """List model configs (parameters, GFLOPs per decoded frame) and key-frame codecs."""
    from .keyframe import list_keyframe_codecs
    from .models import count_parameters, create_model, decode_gflops, list_models
    from .zoo import DEFAULT_MODEL, shipped_weights_path

    rows = []
    for name in list_models():
        m = create_model(name)
        rows.append({"name": name, "resolution": m.config.resolution, "token_dim": m.config.token_dim,
                     "params": count_parameters(m), "decode_gflops": decode_gflops(m),
                     "weights": "shipped" if shipped_weights_path(name) else "none",
                     "default": name == DEFAULT_MODEL})
    if as_json:
        click.echo(json.dumps({"models": rows, "key_codecs": list_keyframe_codecs()}, indent=2))
        return
    click.echo(f"{'model':<14}{'res':>6}{'dim':>5}{'params':>12}{'GFLOPs/frame':>14}  weights")
    for r in rows:
        mark = " (default)" if r["default"] else ""
        click.echo(f"{r['name']:<14}{r['resolution']:>6}{r['token_dim']:>5}{r['params']:>12,}"
                   f"{r['decode_gflops']:>14.2f}  {r['weights']}{mark}")
    click.echo(f"key-frame codecs: {', '.join(list_keyframe_codecs())}")


@main.command()
@click.argument("output", type=click.Path(dir_okay=False))
@click.option("--frames", type=int, default=50, show_default=True)
@click.option("--size", type=int, default=256, show_default=True)
@click.option("--fps", type=int, default=25, show_default=True)
def sample(output, frames, size, fps):
    """Write a short demo clip (the astronaut portrait with simulated head motion)."""
    from .io import make_sample

    if frames < 1 or size < 16 or fps < 1:
        raise click.BadParameter("frames >= 1, size >= 16 and fps >= 1 are required")
    make_sample(output, frames=frames, size=size, fps=fps)
    click.echo(f"{output}: {frames} frames, {size}x{size} @ {fps} fps")


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []})
@click.pass_context
def train(ctx):
    """Train a model (same options as `python -m imfcodec.train --help`)."""
    from .train import main as train_main

    sys.exit(train_main(list(ctx.args)) or 0)


if __name__ == "__main__":  # pragma: no cover
    run()
