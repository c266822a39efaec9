"""click helpers for commands that are also called as functions, ``main(argv) -> int``.

The trainer (``python -m imfcodec.train``, also run by ``imfcodec train``) and the benchmarks in a
source checkout (``python -m benchmarks.rd`` ...) are click commands like ``imfcodec``'s own, and keep the
``main(argv=None) -> int`` entry point that scripts and tests call. :func:`call` runs a command that way:
it returns the command's exit status instead of calling ``sys.exit``, and a usage error is one line,
``error: ...`` on stderr, with exit status 2.

:class:`GreedyOption` (with :class:`Command`) is an option followed by one or more values,
``--data A B C``, as argparse's ``nargs="+"`` was; click itself only has repeated options.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Collection, Sequence

import click

EXIT_USAGE = 2
PROGRESS_SECONDS = 10.0  # how often ProgressLines prints a line when stderr is not a terminal
CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"]}

# argparse's test for a negative number (a value, not an option, when no option looks like one)
_NEGATIVE_NUMBER = re.compile(r"^-\d+$|^-\d*\.\d+$")


def call(command: click.Command, argv: Sequence[str] | None, prog_name: str) -> int:
    """Run ``command`` on ``argv`` (default ``sys.argv[1:]``) and return its exit status.

    The command's callback returns the status (None counts as 0); ``--help`` returns 0; a click error
    prints ``error: MESSAGE`` on one line and returns its exit code (2 for usage errors); the project's own
    errors (``IMFError``: a bad input, a refused test folder, an unreadable clip) print one line and return 1.
    Any other exception, KeyboardInterrupt included, reaches the caller unchanged.
    """
    from .errors import IMFError

    args = sys.argv[1:] if argv is None else [str(a) for a in argv]
    try:
        with command.make_context(prog_name, args) as ctx:
            status = command.invoke(ctx)
    except click.exceptions.Exit as e:  # --help, or ctx.exit(code)
        return e.exit_code
    except click.ClickException as e:
        message = " ".join(line.strip() for line in e.format_message().splitlines() if line.strip())
        print(f"error: {message}", file=sys.stderr)
        return e.exit_code
    except IMFError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return int(status or 0)


class GreedyOption(click.Option):
    """``--opt A B C``: every following argument up to the next option is a value (argparse's
    ``nargs="+"``); ``--opt=A`` gives one value; a later ``--opt`` replaces an earlier one. The value is
    a tuple, ``()`` when the option is absent and has no default. Long names only; only works in a
    :class:`Command`."""

    def __init__(self, *args, **kwargs):
        kwargs["multiple"] = True
        super().__init__(*args, **kwargs)


class Command(click.Command):
    """A click command that understands :class:`GreedyOption`."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        names = {o for p in self.params if isinstance(p, GreedyOption) for o in p.opts if o.startswith("--")}
        return super().parse_args(ctx, expand_greedy(args, names) if names else args)


def _is_option(token: str) -> bool:
    return token.startswith("-") and token != "-" and not _NEGATIVE_NUMBER.match(token)


def expand_greedy(args: Sequence[str], names: Collection[str]) -> list[str]:
    """Rewrite ``--data A B`` as ``--data=A --data=B`` for each option in ``names``, so that click's repeated
    option collects them; only the last occurrence of an option counts. Arguments after ``--`` are
    left alone."""
    rest: list[str] = []
    groups: dict[str, list[str]] = {}
    i = 0
    while i < len(args):
        token = args[i]
        if token == "--":
            rest += args[i:]
            break
        name, eq, value = token.partition("=")
        if name not in names:
            rest.append(token)
            i += 1
            continue
        if eq:
            values, i = [value], i + 1
        else:
            end = i + 1
            while end < len(args) and not _is_option(args[end]):
                end += 1
            values, i = list(args[i + 1:end]), end
            if not values:
                raise click.BadOptionUsage(name, f"Option '{name}' requires at least one argument.")
        groups.pop(name, None)
        groups[name] = values
    return [f"{name}={v}" for name, values in groups.items() for v in values] + rest


class ProgressLines:
    """Frames done, on stderr: a tqdm bar on a terminal; otherwise (a log file, a pipe, CI) a plain
    line every ``seconds``, so a long encode is never silent. ``start(total)`` is the API's ``started``
    callback, the instance its ``progress`` callback; what the command line shows, and what the API's
    ``progress=True`` shows."""

    def __init__(self, desc: str, seconds: float | None = None) -> None:
        self.desc = desc
        self.seconds = PROGRESS_SECONDS if seconds is None else seconds
        self.total: int | None = None
        self.done = 0
        self.t0 = time.monotonic()
        self.last = self.t0
        self.bar = None
        self.tty = bool(getattr(sys.stderr, "isatty", lambda: False)())

    def start(self, total: int | None) -> None:
        self.total = total
        self.t0 = self.last = time.monotonic()
        if self.tty:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=self.desc, unit="frame", file=sys.stderr, leave=False)

    def __call__(self, n: int) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
            return
        now = time.monotonic()
        if not self.tty and now - self.last >= self.seconds:
            self.last = now
            elapsed = now - self.t0
            rate = self.done / elapsed if elapsed > 0 else 0.0
            of = f"/{self.total}" if self.total else ""
            left = ""
            if self.total and rate > 0 and self.total > self.done:
                left = f", about {_duration((self.total - self.done) / rate)} left"
            click.echo(f"{self.desc}: {self.done}{of} frames, {rate:.2f} frames/s, "
                       f"{_duration(elapsed)} elapsed{left}", err=True)

    def __enter__(self) -> "ProgressLines":
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.close()


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds // 60 % 60:02d} min"
