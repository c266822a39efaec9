"""Command line: parse, call the API, print. No codec logic lives here.

Every user error ends with a one-line ``error: ...`` on stderr and a non-zero exit (usage errors 2: an
unknown option, a bad option value, options that contradict each other; other errors 1, an existing output
among them; bugs 3); ``imfcodec --debug ...`` shows the traceback instead. The API's argument errors
(``errors.ArgumentError``) name its arguments (``quality=``); ``_FLAGS`` turns them into this command
line's options. ``-`` is standard input as an input and standard output as an output (a file named ``-``
is ``./-``). Summaries, warnings and progress go to stderr, so stdout carries only what was asked for.
Existing outputs are not replaced without ``-y`` (``--overwrite``; ``-n``, the default, refuses).
"""

from __future__ import annotations

import errno
import json
import math
import os
import re
import sys
import warnings

# OMP_WAIT_POLICY=PASSIVE is set by the package (imfcodec/__init__.py), which Python imports first.
# Nothing here imports torch at start-up: each command imports what it needs.

import click
from click.core import ParameterSource

from .devices import DEFAULT_DEVICE, DEVICE_HELP
from .errors import ArgumentError, IMFError, IMFWarning
from .settings import (BASE_CODECS, BASE_SCALES, DEFAULT_BASE_CODEC, DEFAULT_ENHANCER, DEFAULT_MODE, DEFAULT_PRESET,
                       MODES, PRESETS, EncoderSettings)

_ENCODER = EncoderSettings()  # the defaults --help shows and encode starts from (one definition)

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 3
EXIT_INTERRUPTED = 130  # what main() returns in-process; run() ends by the signal itself

_stopped_by: int | None = None  # the signal that interrupted this run (set by _interruptible's handler)
_in_place: str | None = None  # the output being written in place (stdout, a FIFO...), for messages

# OS errors a user's environment causes (a full or read-only disk, permissions, a vanished folder): one
# line and status 1 wherever they surface, rather than an "internal error"
_ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT, errno.EFBIG,
                       errno.EIO, errno.ENOTEMPTY, errno.EEXIST, errno.ENOENT, errno.ENOTDIR, errno.EISDIR,
                       errno.EMFILE, errno.ENFILE, errno.ENXIO, errno.EPIPE, errno.ECONNRESET, errno.EBUSY,
                       errno.ETXTBSY, errno.ENAMETOOLONG, errno.ELOOP}


# The API's argument names as this command line's options (one table: errors.ArgumentError's messages are
# translated through it). Longest first where one name ends another's.
_FLAGS = {
    "overwrite=True": "-y (--overwrite)", "guard=False": "--no-guard", "guard=": "--no-guard",
    "intra_base=True": "--intra-base", "intra_base=": "--intra-base", "lean=True": "--intra-base without --classic-framing",
    "lean=": "--classic-framing", "half_rate=True": "--half-rate", "half_rate=": "--half-rate",
    "enhance=False": "--no-enhance",
    "quality=": "--quality", "keyint=": "--keyint", "chunk=": "--chunk", "search_iters=": "--refine",
    "preset=": "--preset", "scenecut=": "--scenecut", "refresh_below=": "--refresh-below",
    "key_codec=": "--key-codec", "key_quality=": "--key-quality", "base_codec=": "--base-codec",
    "base_factor=": "--base-scale", "base_quality=": "--base-quality", "enhancer=": "--enhancer",
    "mode=": "--mode", "max_frames=": "--frames", "fps=": "--fps", "device=": "--device", "model=": "--model",
}
_FLAG_NAMES = re.compile("|".join(r"(?<![\w./\\-])" + re.escape(k) for k in _FLAGS))


def _as_flags(message: str) -> str:
    """An API message in this command line's words: ``quality= must be ...`` -> ``--quality must be ...``."""
    return _FLAG_NAMES.sub(lambda m: _FLAGS[m.group(0)], message)


def _interrupted_message() -> str:
    if _in_place:
        return f"interrupted: {_in_place} got what was written before"
    return "interrupted: no output was written"


class _Group(click.Group):
    """Turns exceptions into one-line messages unless --debug was given."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        """click's ``main``, with usage errors (an unknown command or option) on one line:
        ``error: ...`` and status 2, as the benchmarks and the trainer do (``cliutil.call``)."""
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            status = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.ClickException as e:
            message = " ".join(line.strip() for line in e.format_message().splitlines() if line.strip())
            click.echo(f"error: {message}", err=True)
            sys.exit(e.exit_code)
        except click.exceptions.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(1)
        sys.exit(status if isinstance(status, int) else 0)

    def invoke(self, ctx: click.Context):
        try:
            with warnings.catch_warnings():
                warnings.showwarning = _show_warning
                warnings.simplefilter("always", IMFWarning)
                return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except IMFError as e:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            usage = isinstance(e, ArgumentError)  # a bad option value: a usage error, as click's own
            click.echo(f"error: {_as_flags(str(e))}", err=True)
            if getattr(e, "errno", None) == errno.EPIPE:
                _quiet_stdout()
            ctx.exit(EXIT_USAGE if usage else EXIT_ERROR)
        except BrokenPipeError:  # `imfcodec info s.imf | head`: the reader left; not an error of ours
            _quiet_stdout()
            ctx.exit(0)
        except KeyboardInterrupt:
            click.echo(_interrupted_message(), err=True)
            ctx.exit(EXIT_INTERRUPTED)
        except Exception as e:
            if _stopped_by is not None:  # an interrupt that a library re-raised as another error
                click.echo(_interrupted_message(), err=True)
                ctx.exit(EXIT_INTERRUPTED)
            if ctx.obj and ctx.obj.get("debug"):
                raise
            if isinstance(e, OSError) and e.errno in _ENVIRONMENT_ERRNOS:  # not a bug: the system said no
                where = f": {e.filename}" if e.filename else ""
                click.echo(f"error: {e.strerror or _first_line(e)}{where}", err=True)
                ctx.exit(EXIT_ERROR)
            # a bug, not a user error: still one line, with a hint
            click.echo(f"internal error: {type(e).__name__}: {_first_line(e)} (rerun with --debug for details)",
                       err=True)
            ctx.exit(EXIT_INTERNAL)


_python_showwarning = warnings.showwarning


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """The library's own warnings (``errors.IMFWarning``) as one ``warning: ...`` line on stderr, in this
    command line's words; any other warning as Python shows it."""
    if issubclass(category, IMFWarning):
        click.echo(f"warning: {_as_flags(str(message))}", err=True)
    else:
        _python_showwarning(message, category, filename, lineno, file, line)


def _first_line(e: BaseException) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else ""


def _quiet_stdout() -> None:
    """The reader of stdout left: send what is still buffered nowhere, so the interpreter's exit does
    not complain about the pipe."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass


PROGRESS_SECONDS = 10.0  # how often a progress line is printed when stderr is not a terminal


def _Progress(desc: str):
    """Frames done, on stderr (``cliutil.ProgressLines``), a line every ``PROGRESS_SECONDS`` off a terminal."""
    from .cliutil import ProgressLines

    return ProgressLines(desc, PROGRESS_SECONDS)


def _summary(text: str) -> None:
    """The one-line result: on stderr, like progress and warnings, so stdout is only ever the output
    itself (``-o -``) or nothing."""
    click.echo(text, err=True)


def _overwrite_option(f):
    """-y/--overwrite and -n/--no-overwrite (the default), as FFmpeg's -y and -n."""
    return click.option("-y/-n", "--overwrite/--no-overwrite", "overwrite", default=False, show_default=True,
                        help="Replace an existing output (-y), or refuse to (-n, the default). Outputs written "
                             "in place (stdout, a FIFO, a device) are never refused.")(f)


def _kbps(ctx, param, value):
    """--kbps: a positive, finite rate (a usage error otherwise, before any input is read)."""
    if value is not None and not (math.isfinite(value) and value > 0):
        raise click.BadParameter(f"must be a rate in kbit/s above 0, got {value:g}")
    return value


def _note_output(output: str | None, default_in_place: bool) -> str | None:
    """Remember (for the interrupt message) whether the output is written in place; returns its name."""
    from .fsutil import in_place

    global _in_place
    if output is None:
        _in_place = "stdout" if default_in_place else None
    else:
        kind = in_place(output)
        _in_place = ("stdout" if kind == "stdout" else output) if kind else None
    return _in_place


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
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="Output stream (default: INPUT with .imf; stdout when INPUT is -). - is stdout; a FIFO, "
                   "a device or a socket is written in place.")
@click.option("--mode", type=click.Choice(MODES), default=None,
              help=f"hybrid: a low-resolution conventional base layer lifted by an enhancer; token: 32-float "
                   f"tokens synthesised by the IMF model [default: {DEFAULT_MODE}; token when --model is given].")
@click.option("--model", "model", default=None,
              help="Token mode: config name with shipped weights, a .safetensors file, or random:NAME for an "
                   "untrained model (selects the token mode).")
@click.option("--quality", type=int, default=_ENCODER.quality, show_default=True,
              help="Token mode: token quality (higher = finer quantization).")
@click.option("--keyint", type=int, default=_ENCODER.keyint, show_default=True,
              help="Key frame every N frames (0 = one key frame).")
@click.option("--scenecut", type=float, default=_ENCODER.scenecut, show_default=True,
              help="Scene-cut threshold: a key frame where a frame's luma thumbnail differs from the previous "
                   "frame's by this percent of the range on average (0 = off; how the default was chosen: "
                   "benchmarks/results/2026-11-28-keyframes-train/NOTES.md).")
@click.option("--no-scenecut", is_flag=True, help="No key frames at scene cuts (same as --scenecut 0).")
@click.option("--refresh-below", type=float, default=_ENCODER.refresh_below,
              help="Insert a key frame when the decoded frame's PSNR drops below this many dB (token mode; a value "
                   "that suits the shipped model: README).")
@click.option("--key-codec", default=_ENCODER.key_codec, show_default=True, help="Key-frame codec (see `imfcodec models`).")
@click.option("--key-quality", type=int, default=_ENCODER.key_quality,
              help="Key-frame quality (higher = better; default: the key-frame codec's own, hevc 21; hevc 16 in the "
                   "hybrid mode).")
@click.option("--chunk", type=int, default=_ENCODER.chunk, show_default=True,
              help="Frames per token packet, or per base packet in the hybrid mode (latency vs overhead).")
@click.option("--preset", type=click.Choice(list(PRESETS)), default=DEFAULT_PRESET, show_default=True,
              help="Encoder effort, same format. Token mode: "
                   + "; ".join(f"{k}: {p.what}" for k, p in PRESETS.items())
                   + ". Hybrid mode: the base encoder's speed setting of the same name (x265's presets; "
                   + "; ".join(f"{k}: {p.base}" for k, p in PRESETS.items()) + "). Measured speeds (frames/s) "
                   "and rates: "
                   "benchmarks/results/model_speed.md and benchmarks/results/2026-11-28-base-presets-heldout-train/.")
@click.option("--refine", "search_iters", type=int, default=None,
              help="Token mode, expert: token search steps per frame, overriding the preset's (0 = E_T's token; "
                   "1 runs 2 steps, since the first never changes the token).")
@click.option("--frames", type=int, default=None, help="Encode at most N frames.")
@click.option("--hybrid", is_flag=True, help="Same as --mode hybrid (the default mode).")
@click.option("--base-codec", type=click.Choice(BASE_CODECS), default=None,
              help=f"Hybrid: base-layer codec [default: {DEFAULT_BASE_CODEC}].")
@click.option("--base-scale", type=click.Choice(["1", "1/2", "1/4"]), default=None,
              help=f"Hybrid: base-layer frame size [default: 1/{_ENCODER.base_factor}].")
@click.option("--base-quality", type=int, default=None,
              help="Hybrid: base-layer quality (higher = better; default: the base codec's own: vp9 8, hevc 13, av1 13).")
@click.option("--enhancer", default=None,
              help=f"Hybrid: enhancer name with shipped weights, a .safetensors file, or random:NAME "
                   f"[default: {DEFAULT_ENHANCER}].")
@click.option("--no-guard", is_flag=True,
              help="Hybrid: never switch the enhancer off. By default the encoder decodes what it sends and marks "
                   "the packets whose pictures the enhancer would make worse; without the guard it runs no network "
                   "and encodes several times faster.")
@click.option("--intra-base/--separate-key", "intra_base", default=None,
              help="Hybrid: code the key pictures in the base layer at full size, one intra picture per key frame "
                   "(format version 5), or as a separate key image (--key-codec). [default: in the base layer "
                   "where the base codec can: av1 at 1/2]")
@click.option("--classic-framing", is_flag=True,
              help="Hybrid: frame the base packets as format versions 2-4 do (for decoders older than version 5; "
                   "about 0.4 kbit/s more at 25 fps), with a separate key image.")
@click.option("--half-rate/--full-rate", "half_rate", default=None,
              help="Hybrid: code every other frame only, the decoder showing the mean of its neighbours between "
                   "them (format version 6), or every frame. [default: half-rate, but with --intra-base or "
                   "--classic-framing]")
@click.option("--kbps", type=float, default=None, callback=_kbps,
              help="Target rate: the hybrid mode at the operating point (base size and quality, key quality) "
                   "that gave the best quality within this rate on training clips; options given explicitly win.")
@click.option("--kbps-compare/--kbps-table", "kbps_compare", default=True,
              help="--kbps on a file: also land the target with half- and full-rate bases at 1/2 and 1/4 size and "
                   "keep the one whose decoded frames are best (the encoder decodes each: slower), or take the "
                   "table's choice alone. [default: --kbps-compare]")
@click.option("--device", default=DEFAULT_DEVICE, show_default=True,
              help=f"Where the encoder's network runs (token mode: E_T and the token search; hybrid mode: the "
                   f"guard's enhancer): "
                   f"{DEVICE_HELP}. The stream decodes on any device.")
@click.option("--live", is_flag=True,
              help="A live call over a link of --link-kbps: every frame's bytes leave the link within --max-delay of "
                   "its capture (hybrid, chunk 1, key frames sized to the link; imfcodec/live.py).")
@click.option("--link-kbps", type=click.FloatRange(1, 100_000), default=None,
              help="--live: the link's capacity in kbit/s.")
@click.option("--max-delay", type=click.FloatRange(50, 10_000), default=None,
              help="--live: the delay bound in ms, capture to the last byte through the link, propagation not "
                   "included [default: 600].")
@_overwrite_option
def encode(input, output, mode, model, quality, keyint, scenecut, no_scenecut, refresh_below, key_codec, key_quality,
           chunk, preset, search_iters, frames, hybrid, base_codec, base_scale, base_quality, enhancer, no_guard,
           intra_base, classic_framing, half_rate, kbps, kbps_compare, device, live, link_kbps, max_delay, overwrite):
    """Encode a video (a file, or - for stdin: nut, matroska, mpegts, y4m...) into an .imf stream."""
    from .api import encode_video
    from .modes import get_mode

    _interruptible()
    if frames is not None and frames < 1:
        raise click.BadParameter("must be >= 1", param_hint="--frames")
    device = _device(device)

    if no_scenecut:
        if click.get_current_context().get_parameter_source("scenecut") is not ParameterSource.DEFAULT:
            raise click.UsageError("--no-scenecut and --scenecut N contradict each other (--scenecut 0 is off)")
        scenecut = 0.0
    source = click.get_current_context().get_parameter_source
    link = _live_link(live, link_kbps, max_delay, source)
    if kbps is None and source("kbps_compare") is not ParameterSource.DEFAULT:
        raise click.UsageError("--kbps-compare and --kbps-table go with --kbps")
    mode = _mode(mode, {"--hybrid": hybrid, "--kbps": kbps is not None, "--base-codec": base_codec is not None,
                        "--base-scale": base_scale is not None, "--base-quality": base_quality is not None,
                        "--enhancer": enhancer is not None, "--model": model is not None, "--no-guard": no_guard,
                        "--intra-base": intra_base is not None, "--classic-framing": classic_framing,
                        "--half-rate": half_rate is not None,
                        "--quality": source("quality") is not ParameterSource.DEFAULT,
                        "--refine": search_iters is not None})
    settings = EncoderSettings.from_preset(
        preset, mode=mode, quality=quality, keyint=keyint, scenecut=scenecut, refresh_below=refresh_below,
        key_codec=key_codec, key_quality=key_quality, chunk=chunk,
        **({} if search_iters is None else {"search_iters": search_iters}), base_codec=base_codec,
        base_factor=BASE_SCALES[base_scale] if base_scale else _ENCODER.base_factor, base_quality=base_quality,
        enhancer=enhancer, **({"guard": False} if no_guard else {}), intra_base=intra_base,
        **({"lean": False} if classic_framing else {}), half_rate=half_rate,
    ).validated()
    if kbps is not None:  # after the settings: its measuring passes encode with them
        from .api import default_output
        from .fsutil import as_path, check_overwrite

        check_overwrite(as_path(output) if output is not None else default_output(input, ".imf"), overwrite)
        settings, kbps_fits, kbps_why, loaded = _rate_control(input, kbps, frames, settings, base_codec, base_scale,
                                                              base_quality, key_quality, half_rate, kbps_compare)
        model = loaded or model  # the enhancer its passes loaded: the encode uses it, not a second copy
    streamed = _note_output(output, input == "-")
    with _Progress("encode") as bar:
        s = encode_video(input, output, model=model, settings=settings, max_frames=frames, progress=bar,
                         started=bar.start, device=device, overwrite=overwrite, live=link)
    m = get_mode(settings.mode)  # a mode's other bytes are its own: the other mode's count is 0
    _summary(f"{s.output}: {s.frames} frames, {s.bytes} bytes, {s.kbps:.2f} kbit/s{_target(kbps, s.kbps)} "
             f"(key {s.key_bytes} B, {m.payload} {s.base_bytes + s.token_bytes} B, overhead {s.overhead_bytes} B), "
             f"{len(s.key_frames)} key frame(s){f' ({len(s.scene_cuts)} at scene cuts)' if s.scene_cuts else ''}, "
             + (f"enhancer off for {s.unenhanced_frames} frame(s) where it would hurt, " if s.unenhanced_frames else "")
             + f"{s.fps:.1f} fps, {m.network_label} {s.model}")
    if s.live is not None:
        worst = max(s.live.sender_delays_ms(), default=0.0)
        _summary(f"live: {link.kbps:g} kbit/s link, every frame's bytes through it within {worst:.0f} ms of capture "
                 f"(bound {link.max_delay_ms:g} ms, at the input's rate), {len(s.live.skipped)} frame(s) skipped, "
                 f"key quality {', '.join(map(str, s.live.key_qualities))} ({link.reserve_ms:g} ms kept for coding)")
    if s.timing == "lost":
        click.echo(f"warning: the input's frames are not at a constant rate, but a stream written to "
                   f"{streamed or 'a pipe'} is started before that is known: it plays them at the input's "
                   f"nominal rate (encode to a file to keep their times)", err=True)
    if kbps is not None and abs(s.kbps / kbps - 1) > RATE_TOLERANCE and (s.kbps > kbps or kbps_why):
        why = kbps_why or ("no operating point reaches it, the lowest was used" if not kbps_fits else
                           "the operating point was chosen on training clips, and this input takes more bits at it")
        above = s.kbps > kbps
        click.echo(f"warning: --kbps {kbps:g} {'cannot be met' if not kbps_fits else 'was exceeded'}: the stream "
                   f"is {s.kbps:.2f} kbit/s, {abs(s.kbps / kbps - 1) * 100:.0f} % {'above' if above else 'below'} "
                   f"({s.bytes} bytes over {s.duration_s:.2f} s); {why}", err=True)


#: the options --live chooses itself (a usage error with it)
_LIVE_CONFLICTS = ("kbps", "chunk", "base_codec", "base_scale", "base_quality", "key_codec", "key_quality", "keyint",
                   "no_guard", "mode", "model", "quality", "search_iters", "refresh_below", "half_rate")


def _live_link(live: bool, link_kbps: float | None, max_delay: float | None, source):
    """--live, --link-kbps, --max-delay: the ``LiveLink``, or None without --live; one-line usage errors for a
    half-given live mode or an option that the live mode chooses itself."""
    from .live import DEFAULT_MAX_DELAY_MS, LiveLink

    if not live:
        for name, value in (("--link-kbps", link_kbps), ("--max-delay", max_delay)):
            if value is not None:
                raise click.UsageError(f"{name} needs --live")
        return None
    if link_kbps is None:
        raise click.UsageError("--live needs --link-kbps (the link's capacity in kbit/s)")
    for name in _LIVE_CONFLICTS:
        if source(name) not in (ParameterSource.DEFAULT, None):
            raise click.UsageError(f"--{name.replace('_', '-')} cannot be used with --live, which chooses it itself "
                                   f"(imfcodec/live.py)")
    return LiveLink(link_kbps, DEFAULT_MAX_DELAY_MS if max_delay is None else max_delay)


RATE_TOLERANCE = 0.05  # --kbps: a stream more than this much above the request is reported


def _device(name: str) -> str:
    """--device resolved before any input is read: ``cuda`` without a GPU is refused in one line,
    ``auto`` without one says so in one line and runs on the CPU (``devices.resolve_device``)."""
    from .devices import check_device, resolve_device
    from .errors import InputError

    try:
        check_device(name)
    except InputError:
        raise click.BadParameter(f"{name!r} is not one of {DEVICE_HELP}", param_hint="--device") from None
    return resolve_device(name, note=lambda message: click.echo(message, err=True))


def _rate_control(input, kbps, frames, settings, base_codec, base_scale, base_quality, key_quality, half_rate=None,
                  compare=True):
    """--kbps: ``settings`` at the operating point for ``kbps``, where the user did not give it (the options given
    win). A file: the enhancer's operating-point table chooses the base codec, size and key quality, and
    measuring passes of the real encoder the base quality whose whole-file rate is closest to ``kbps``
    (``ratecontrol.closed_loop``), and with ``compare`` the other kinds of base landed too and compared by the frames
    the decoder shows (``ratecontrol.compare_families``); each pass and the result are said on stderr. A pipe (its length unknown): the
    table's point, whose rate is an estimate. Returns (settings, whether a point fits, why the target cannot be
    reached or None, the enhancer the passes loaded or None)."""
    from dataclasses import replace

    from .errors import InputError
    from .modes.hybrid import enhancer_name, load_enhancer
    from .ratecontrol import (TOLERANCE, Family, FileMeter, choose, closed_loop, compare_families, family_of,
                              input_duration, load_table, within)

    if settings.key_codec != "hevc":
        raise InputError("--kbps uses a table measured with hevc key frames: "
                         "drop --key-codec, or give the operating point yourself")
    points = load_table(enhancer_name(settings.enhancer))
    factor = BASE_SCALES[base_scale] if base_scale else None

    def at(family: Family, bq: int):
        return family.settings(settings, bq).validated()

    def say(line: str) -> None:
        click.echo(f"rate control: {line}", err=True)

    # a pipe is read once, by the encoder: its duration is not known up front
    duration = None if input == "-" else input_duration(input, frames)
    piped = not os.path.isfile(input)  # standard input, a FIFO: read once, by the encoder
    if piped or base_quality is not None:  # the table's point (with the user's base quality)
        point, expected, fits = choose(points, kbps, duration, base_codec)
        fam = family_of(point, factor, key_quality)
        if half_rate is not None:  # the user's --half-rate / --full-rate wins over the point's
            fam = replace(fam, half_rate=half_rate)
        bq = point.base_quality if base_quality is None else base_quality
        span = f"{duration:.1f} s" if duration else "an assumed 10 s"
        say(f"{kbps:g} kbit/s -> {fam.describe(bq)}: about {expected:.1f} kbit/s "
            f"over {span} on training clips"
            + ("; the rate is the table's estimate, not a guarantee (a pipe's length is unknown)" if piped
               else " (--base-quality given: no measuring passes)"))
        if not fits:
            click.echo(f"warning: no measured operating point fits {kbps:g} kbit/s for {span}; using the lowest",
                       err=True)
        return at(fam, bq), fits, None, None

    loaded = load_enhancer(settings.enhancer)
    meter = FileMeter(input, settings, loaded, max_frames=frames)
    count = 0

    def rate(family, quality: int) -> float:
        nonlocal count
        r = meter(family, quality)
        count += 1
        say(f"pass {count}: {family.describe(quality)} -> {r:.2f} kbit/s")
        return r

    from .keyframe import get_keyframe_codec

    args = dict(base_codec=base_codec, base_factor=factor, key_quality=key_quality,
                key_range=get_keyframe_codec(settings.key_codec).quality_range, half_rate=half_rate)
    if compare:
        best, searches, compared = compare_families(points, kbps, duration, rate, meter.quality, **args)
        for c in compared:
            m = c.measured
            say(f"compared: {m.family.describe(m.base_quality)}: {m.kbps:.2f} kbit/s, {c.psnr:.2f} dB decoded"
                f"{' <- kept' if m == best else ''}")
    else:
        best, searches = closed_loop(points, kbps, duration, rate, **args)
    fam = best.family
    miss = best.kbps / kbps - 1
    ok = within(best.kbps, kbps)
    say(f"target {kbps:g} kbit/s -> {fam.describe(best.base_quality)}: {best.kbps:.2f} kbit/s over {meter.duration_s:.1f} s ({miss:+.1%}, "
        f"{'within' if ok else 'NOT within'} +-{TOLERANCE:.0%}; {count} pass{'es' if count > 1 else ''}, {meter.seconds:.1f} s)")
    why = None
    if not ok:  # said after the encode, with the file's real rate
        reach = {s.reach for s in searches}
        why = ("even the lowest base quality of the table's cheapest points, with the cheapest key, is above it"
               if reach == {"over"}
               else "even the highest base quality of the table's richest points is below it" if reach == {"under"}
               else "no base quality lands closer (its rate steps are coarse here)")
    return at(fam, best.base_quality), ok, why, loaded


def _target(kbps: float | None, result: float) -> str:
    """The encode summary's note of the --kbps target (the stream does not store it)."""
    return "" if kbps is None else f" (target {kbps:g} kbit/s, {result / kbps - 1:+.1%})"


# the options only one mode takes, in the order they are checked: the mode they belong to, and what is said
# when they are given in the other mode
_MODE_OPTIONS = {
    "--hybrid": ("hybrid", "--hybrid is the hybrid mode's, not the token mode's (drop --mode token)"),
    "--kbps": ("hybrid", "--kbps is the hybrid mode's, not the token mode's (drop --mode token)"),
    **{name: ("hybrid", f"{name} is a hybrid-mode option (the token mode was chosen by --mode token or --model)")
       for name in ("--base-codec", "--base-scale", "--base-quality", "--enhancer", "--no-guard", "--intra-base",
                    "--classic-framing", "--half-rate")},
    "--model": ("token", "--model names a token model (the token mode, --mode token); "
                         "the hybrid mode's network is --enhancer"),
    **{name: ("token", f"{name} is a token-mode option: add --mode token (the default mode is hybrid), or drop {name}")
       for name in ("--quality", "--refine")},
}
# the options that choose a mode when --mode is not given, first match wins
_CHOOSING = ("--hybrid", "--kbps", "--model")


def _mode(mode: str | None, given: dict[str, bool]) -> str:
    """The encoding mode: --mode, else the mode of the first of --hybrid, --kbps (hybrid) and --model (token)
    given, else DEFAULT_MODE. Options of the other mode are refused in one line (a usage error) rather than
    ignored."""
    if mode is None:
        mode = next((_MODE_OPTIONS[o][0] for o in _CHOOSING if given[o]), DEFAULT_MODE)
    for option, (owner, message) in _MODE_OPTIONS.items():
        if given[option] and owner != mode:
            raise click.UsageError(message)
    return mode


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


def _spans(frames: list[int]) -> list[list[int]]:
    """[3, 4, 5, 9] -> [[3, 5], [9, 9]]"""
    spans: list[list[int]] = []
    for i in frames:
        if spans and i == spans[-1][1] + 1:
            spans[-1][1] = i
        else:
            spans.append([i, i])
    return spans


def _ranges(frames: list[int], most: int = 20) -> str:
    """[3, 4, 5, 9] -> '3-5, 9' (the first ``most`` ranges, then how many more)."""
    spans = _spans(frames)
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
@click.option("-o", "--output", type=click.Path(),
              help="Output .mp4, .mkv, .y4m or DIR/ of PNGs (default: INPUT with .mp4; stdout when INPUT is -). "
                   "- is stdout (y4m unless --format); a FIFO or a device is written in place.")
@click.option("--format", "fmt", type=click.Choice(["y4m", "mkv", "mp4", "png"]), default=None,
              help="Output format, whatever the output's name (png: a folder of frames).")
@click.option("--model", "model", default=None, help="Weights the stream was made with (default: found by its hash).")
@click.option("--conceal", is_flag=True,
              help="Keep going past damaged packets: repeat the last good frame until the next key frame, and "
                   "report which frames were concealed (without it a damaged stream is refused). Needs a file, "
                   "not a pipe.")
@click.option("--no-enhance", is_flag=True,
              help="Hybrid streams: output the bicubic upscale of the base layer instead of the enhanced frames "
                   "(key frames unchanged), to see what the enhancer adds.")
@click.option("--enhancer", default=None,
              help="Hybrid streams: decode with this enhancer instead of the stream's own (a name with shipped "
                   "weights, a .safetensors file, or random:NAME): the same bytes decode with any enhancer of "
                   "the stream's size, e.g. enh-rec (recurrent) or enh-wide.")
@click.option("--device", default=DEFAULT_DEVICE, show_default=True,
              help=f"Where the decoder's networks run: {DEVICE_HELP}. Entropy decoding is the same on all.")
@_limit_options
@_overwrite_option
def decode(input, output, fmt, model, conceal, max_width, max_height, max_frames, max_packet, no_enhance, enhancer,
           device, overwrite):
    """Decode an .imf stream (a file, or - for stdin; recognised by its magic, whatever the extension)."""
    from .api import decode_stream
    from .errors import CorruptStreamError

    _interruptible()
    device = _device(device)
    limits = _limits(max_width, max_height, max_frames, max_packet)
    streamed = _note_output(output, input == "-")
    try:
        with _Progress("decode") as bar:
            s = decode_stream(input, output, model=model, progress=bar, started=bar.start, limits=limits,
                              conceal=conceal, format=fmt, enhance=not no_enhance, device=device,
                              overwrite=overwrite, enhancer=enhancer)
    except CorruptStreamError as e:
        written = (f"the frames before it went to {streamed}" if streamed else "nothing was written")
        hint = "" if conceal or e.where == "header" else " (--conceal decodes past damaged packets)"
        raise CorruptStreamError(f"{e}; {written}{hint}") from e
    _summary(f"{s.output}: {s.frames} frames, {s.duration_s:.2f} s, "
                                   f"{len(s.key_frames)} key frame(s), {s.fps:.1f} fps")
    if s.timing == "averaged":
        click.echo("note: the stream times each frame, which y4m and PNG frames cannot say: its frames are at "
                   "its average rate (same duration); decode to .mkv or .mp4 to keep their times", err=True)
    if s.concealed or s.damage_count or s.truncated:
        click.echo(f"warning: {len(s.concealed)} frame(s) concealed: {_ranges(s.concealed) or 'none'}", err=True)
        for line in _concealment(s.concealed, s.key_frames)[:5]:
            click.echo(f"  {line}", err=True)
        for why in s.damage[:10]:
            click.echo(f"  skipped: {why}", err=True)
        if s.damage_count > 10:
            click.echo(f"  ... and {s.damage_count - 10} more damaged stretch(es)", err=True)
        if s.truncated:
            click.echo(f"  the stream is truncated (no END packet): it ends after frame {s.frames - 1}", err=True)


def _concealment(concealed: list[int], key_frames: list[int]) -> list[str]:
    """What each concealed range means for a viewer: a concealed range ends at a key frame that decoded
    (the stream is usable again from there) or at the end of the stream."""
    keys = set(key_frames)
    lines = []
    for first, last in _spans(concealed):
        span = f"frames {first}-{last}" if last > first else f"frame {first}"
        again = last + 1 in keys
        if first == 0:
            lines.append(f"{span}: grey, no frame before {'them' if last > first else 'it'} could be decoded; "
                         + (f"the stream is usable from the key frame at {last + 1}" if again
                            else "the stream is unusable until a key frame that never came"))
        else:
            lines.append(f"{span}: repeat frame {first - 1}; "
                         + (f"the stream is usable again from the key frame at {last + 1}" if again
                            else "the stream is unusable to its end (no later key frame decoded)"))
    return lines


@main.command()
@click.argument("input", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@_limit_options
def info(input, as_json, max_width, max_height, max_frames, max_packet):
    """Show a stream's header and per-packet sizes (- reads stdin)."""
    from .api import stream_info
    from .modes import for_stream_name

    d = stream_info(input, _limits(max_width, max_height, max_frames, max_packet))
    if as_json:
        click.echo(json.dumps(d, indent=2))
        return
    m = for_stream_name(d["mode"])
    click.echo(f"{'stdin' if input == '-' else input}: imfcodec stream (version {d['version']}, {m.name} mode), "
               f"{m.network_label} {d['model']} (weights {d['weights_hash'][:16]})")
    if d["timing"] == "constant":
        timing = f"constant rate {d['shown_fps']:g} fps" if d["half_rate"] else f"constant rate {d['fps_rational']} fps"
    else:
        timing = f"per-frame timing (time base {d['time_base']} s, {d['fps_rational']} fps on average)"
    click.echo(f"  {d['width']}x{d['height']}, {d['frames']} frames, {d['duration_s']:.2f} s, {timing}")
    if d["half_rate"]:
        click.echo(f"  half-rate base: {d['coded_frames']} of the {d['frames']} frames coded, at {d['fps_rational']} "
                   f"fps; shown at {d['shown_fps']:g} fps, each followed by the mean of it and the next")
    keys = (f"in the {d['base_codec']} base layer" if d["intra_base"]
            else f"{d['key_codec']} q{d['key_quality']}")
    click.echo(f"  key frames: {keys} at {d['key_frames']}; "
               + m.stream_line.format(**d))
    click.echo(f"  {d['bytes']} bytes = {d['kbps']:.2f} kbit/s: key {d['key_bytes']} B ({d['key_kbps']:.2f} kbit/s), "
               f"base {d['base_bytes']} B ({d['base_kbps']:.2f} kbit/s), "
               f"tokens {d['token_bytes']} B ({d['token_kbps']:.2f} kbit/s), "
               + (f"timing {d['timing_bytes']} B, " if d["timing_bytes"] else "")
               + f"framing {d['overhead_bytes']} B ({d['overhead_kbps']:.2f} kbit/s; the records' "
               f"{d['record_framing_kbps']:.2f} kbit/s, signature, header and END {d['header_end_bytes']} B)")
    if d["enhancer_switch"]:
        of = f"the {d['coded_frames']} coded frames" if d["half_rate"] else f"{d['frames']} frames"
        click.echo(f"  enhancer switch: off for {d['unenhanced_frames']} of {of} (the encoder found "
                   f"it would hurt there)" if d["unenhanced_frames"] else "  enhancer switch: on for every frame")
    for p in d["packets"]:
        if p["type"] == "key":
            click.echo(f"  frame {p['frame']:6d}  key     {p['packet_bytes']:7d} B")
        elif p["type"] == "base":
            off = "" if p["enhance"] else "  (enhancer off)"
            key = f"  (key picture {p['key_bytes']} B)" if p["key"] else ""
            click.echo(f"  frame {p['frame']:6d}  base    {p['packet_bytes']:7d} B{key}{off}")
        elif p["type"] == "timing":
            click.echo(f"  frame {p['frame']:6d}  timing  {p['packet_bytes']:7d} B  ({p['count']} frames)")
        else:
            click.echo(f"  frame {p['frame']:6d}  tokens  {p['packet_bytes']:7d} B  ({p['count']} frames)")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def models(as_json):
    """List model configs (parameters, GFLOPs per decoded frame) and key-frame codecs."""
    from .model_table import rows as model_rows

    rows, key_codecs = model_rows()  # measured once and shipped (imfcodec/model_table.py): no torch here
    if as_json:
        click.echo(json.dumps({"models": rows, "key_codecs": key_codecs}, indent=2))
        return
    click.echo(f"{'model':<14}{'res':>6}{'dim':>5}{'params':>12}{'GFLOPs/frame':>14}  weights")
    for r in rows:
        mark = (" (default: hybrid mode)" if r["name"] == DEFAULT_ENHANCER
                else " (default: token mode)" if r["default"] else "")
        click.echo(f"{r['name']:<14}{r['resolution']:>6}{r['token_dim']:>5}{r['params']:>12,}"
                   f"{r['decode_gflops']:>14.2f}  {r['weights']}{mark}")
    click.echo(f"key-frame codecs: {', '.join(key_codecs)}")


@main.command()
@click.argument("output", type=click.Path(dir_okay=False))
@click.option("--frames", type=int, default=50, show_default=True)
@click.option("--size", type=int, default=256, show_default=True)
@click.option("--fps", type=int, default=25, show_default=True)
@_overwrite_option
def sample(output, frames, size, fps, overwrite):
    """Write a short demo clip (the astronaut portrait with simulated head motion)."""
    from .fsutil import as_path, check_overwrite
    from .io import make_sample

    if frames < 1 or size < 16 or fps < 1:
        raise click.BadParameter("frames >= 1, size >= 16 and fps >= 1 are required")
    check_overwrite(as_path(output), overwrite)
    make_sample(as_path(output), frames=frames, size=size, fps=fps)
    _summary(f"{output}: {frames} frames, {size}x{size} @ {fps} fps")


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []})
@click.pass_context
def train(ctx):
    """Train a model (same options as `python -m imfcodec.train --help`)."""
    from .train import main as train_main

    sys.exit(train_main(list(ctx.args)) or 0)


if __name__ == "__main__":  # pragma: no cover
    run()
