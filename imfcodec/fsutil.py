"""Atomic outputs: write into a hidden temporary sibling, rename it over the destination at the end.

Why: a failed or interrupted run must leave neither a half-written file (or a half-filled PNG
folder) at the name the user asked for nor the temporary itself. The temporary lives in the
destination's folder (same file system, so the rename is atomic) and is named
``.NAME.<random>.partial``, hidden and recognisable.

``mkstemp`` / ``mkdtemp`` create the temporary private (0600 / 0700), which is right while it is
being written; ``commit`` gives the output the mode a plainly created file or folder gets under the
process umask (0644 / 0755 under umask 022), so decoded videos and exported weights are not left
readable by their owner only. Nothing is fsynced (none of the writers this replaced did).

Only regular files and folders are handled: outputs that cannot be renamed over (a FIFO, a
device, stdout) would be another kind of output behind the same ``tmp`` / ``commit`` / ``discard``
surface.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

TEMP_SUFFIX = ".partial"


class AtomicOutput:
    """A hidden temporary sibling of ``path`` (a file, or a folder with ``directory=True``) that
    becomes ``path`` on ``commit()`` and disappears on ``discard()``.

    Created at construction (the destination's parent folders too). As a context manager it yields
    the temporary's path, commits when the block succeeds and discards on any exception, Ctrl-C
    included. Long-lived writers (``io.VideoWriter``) call ``commit`` / ``discard`` themselves.
    A folder destination may be replaced only while it is empty.
    """

    def __init__(self, path: str | os.PathLike, *, directory: bool = False) -> None:
        self.path = Path(path)
        self.directory = directory
        self.path.parent.mkdir(parents=True, exist_ok=True)
        prefix = f".{self.path.name}."
        if directory:
            self.tmp = Path(tempfile.mkdtemp(prefix=prefix, suffix=TEMP_SUFFIX, dir=self.path.parent))
        else:
            fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=TEMP_SUFFIX, dir=self.path.parent)
            os.close(fd)
            self.tmp = Path(tmp)
        self._done = False

    def commit(self) -> Path:
        """Give the temporary the usual mode and rename it into place; on failure remove it and
        leave ``path`` as it was. Returns ``path``."""
        if self._done:
            raise RuntimeError(f"atomic output {self.path} was already committed or discarded")
        try:
            os.chmod(self.tmp, (0o777 if self.directory else 0o666) & ~_umask())
            if self.directory:
                if self.path.is_dir():
                    self.path.rmdir()  # only an empty folder: rmdir refuses any other
                os.rename(self.tmp, self.path)
            else:
                os.replace(self.tmp, self.path)
        except BaseException:
            self.discard()
            raise
        self._done = True
        return self.path

    def discard(self) -> None:
        """Remove the temporary (idempotent; does nothing after a successful commit)."""
        if self._done:
            return
        self._done = True
        _remove(self.tmp)

    def __enter__(self) -> Path:
        return self.tmp

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.discard()


@contextlib.contextmanager
def scratch_file(beside: Path, suffix: str = ".spool") -> Iterator[Path]:
    """A private temporary file next to ``beside`` (named after it), always deleted at the end:
    room for intermediate bytes on the output's file system rather than in memory."""
    fd, tmp = tempfile.mkstemp(prefix=f"{beside.name}.", suffix=suffix, dir=beside.parent)
    try:
        os.close(fd)
        yield Path(tmp)
    finally:
        _remove(Path(tmp))


def _remove(tmp: Path) -> None:
    """Delete a temporary file or folder if it is still there."""
    if tmp.is_dir() and not tmp.is_symlink():
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass


def _umask() -> int:
    """The process umask (read by setting it, as POSIX offers no way to only read it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


__all__ = ["AtomicOutput", "scratch_file", "TEMP_SUFFIX"]
