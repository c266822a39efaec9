"""Where the codec's time goes: named stages for ``benchmarks/model_speed.py``.

The encoders and decoders mark their stages with ``with stage("name"):``. Outside a ``StageClock`` (always,
except in a benchmark) ``stage`` returns one shared do-nothing context: a global read and a call per stage
and nothing else, so the codec pays nothing measurable and behaves the same. Inside one, each stage adds
its *own* time (self time: a stage nested in another pauses the outer one), so the stages of a run add up
to the time spent inside any of them and nothing is counted twice. The clock reads whatever ``now``
returns: wall seconds by default, or e.g. a FLOP counter's running total, which gives FLOPs per stage
from the same regions. Pure Python: the codec's light commands import it.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

_NULL = nullcontext()
_active: StageClock | None = None


def stage(name: str) -> AbstractContextManager:
    """A region of the stage ``name`` in the active clock; a shared no-op when none is active."""
    return _NULL if _active is None else _Region(_active, name)


def active() -> StageClock | None:
    """The clock now collecting, if any (for hooks that add stages from outside the package)."""
    return _active


class StageClock:
    """Collects the self time (or self count, see ``now``) of every stage entered while it is active."""

    def __init__(self, now: Callable[[], float] = time.perf_counter) -> None:
        self.now = now
        self.totals: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._stack: list[list] = []  # [name, start of its current self-time span]

    def __enter__(self) -> StageClock:
        global _active
        if _active is not None:
            raise RuntimeError("a StageClock is already active")
        _active = self
        return self

    def __exit__(self, *exc) -> None:
        global _active
        _active = None
        self._stack.clear()

    @property
    def current(self) -> str | None:
        """The innermost open stage."""
        return self._stack[-1][0] if self._stack else None

    def push(self, name: str) -> None:
        now = self.now()
        if self._stack:
            top = self._stack[-1]
            self.totals[top[0]] += now - top[1]
        self._stack.append([name, now])
        self.calls[name] += 1

    def pop(self) -> None:
        now = self.now()
        name, start = self._stack.pop()
        self.totals[name] += now - start
        if self._stack:
            self._stack[-1][1] = now


class _Region:
    __slots__ = ("clock", "name")

    def __init__(self, clock: StageClock, name: str) -> None:
        self.clock, self.name = clock, name

    def __enter__(self) -> None:
        self.clock.push(self.name)

    def __exit__(self, *exc) -> None:
        self.clock.pop()
