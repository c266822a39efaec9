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
from collections.abc import Collection, Sequence

import click

EXIT_USAGE = 2
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
