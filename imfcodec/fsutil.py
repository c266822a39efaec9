"""Outputs: atomic for regular files and folders, in place for pipes, devices and sockets; ``-`` for the
standard streams.

Atomic outputs: write into a hidden temporary sibling, rename it over the destination at the end.

Why: a failed or interrupted run must leave neither a half-written file (or a half-filled PNG
folder) at the name the user asked for nor the temporary itself. The temporary lives in the
destination's folder (same file system, so the rename is atomic) and is named
``.NAME.<pid>@<host>.<random>.partial`` (a spool file beside it ``...spool``), hidden and recognisable.
A run killed outright (SIGKILL, a power cut) cannot remove its temporaries; the next output made in
that folder does (``sweep_stale``), but only those of this host whose process is gone and that are
older than ``STALE_SECONDS``: a live run's temporaries are never touched.

Existing outputs are replaced only when the caller says so (``check_overwrite``): the API's
``overwrite=`` and the command line's ``-y``. ``as_path`` keeps a file named ``-`` reachable (``./-``).

``mkstemp`` / ``mkdtemp`` create the temporary private (0600 / 0700), which is right while it is
being written; ``commit`` gives the output the mode a plainly created file or folder gets under the
process umask (0644 / 0755 under umask 022), so decoded videos and exported weights are not left
readable by their owner only. Nothing is fsynced (none of the writers this replaced did).

A symlink to a regular file (or a dangling one) keeps being a symlink: the temporary is made next to
the file it points to and renamed over that file.

Outputs that cannot be renamed over are written in place, as FFmpeg does (``InPlaceOutput``): ``-``
(standard output), a FIFO, a character or block device (``/dev/null``, ``/dev/full``), a Unix socket
(connected to), and a symlink to any of them; ``/dev/stdout``, ``/dev/fd/N`` and ``/proc/self/fd/N`` are
the descriptor itself. Such an output is a stream: what was written before an error or a Ctrl-C stays
written. ``open_output`` picks the kind; ``in_place`` says which one a path gets.

Failures to create, write or rename an output are ``errors.OutputError`` (one line, also an OSError).
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import re
import shutil
import socket
import stat
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from .errors import InputError, OutputError, OutputExistsError

TEMP_SUFFIX = ".partial"
SPOOL_SUFFIX = ".spool"
STALE_SECONDS = 300  # a dead run's temporary is removed once it is this old (see sweep_stale)
STDIO = "-"  #: the name of standard input (as an input) or standard output (as an output)


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
        # a symlink stays a symlink: what it points to is replaced (and the temporary made beside that)
        self.dest = Path(os.path.realpath(self.path)) if os.path.islink(self.path) else self.path
        prefix = f".{self.dest.name}.{_owner()}."
        try:
            self.dest.parent.mkdir(parents=True, exist_ok=True)
            sweep_stale(self.dest.parent)
            if directory:
                self.tmp = Path(tempfile.mkdtemp(prefix=prefix, suffix=TEMP_SUFFIX, dir=self.dest.parent))
            else:
                fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=TEMP_SUFFIX, dir=self.dest.parent)
                os.close(fd)
                self.tmp = Path(tmp)
        except OSError as e:
            raise write_error(self.path, e) from e
        self._done = False

    def commit(self) -> Path:
        """Give the temporary the usual mode and rename it into place; on failure remove it and
        leave ``path`` as it was. Returns ``path``."""
        if self._done:
            raise RuntimeError(f"atomic output {self.path} was already committed or discarded")
        try:
            os.chmod(self.tmp, (0o777 if self.directory else 0o666) & ~_umask())
            if self.directory:
                if self.dest.is_dir():
                    self.dest.rmdir()  # only an empty folder: rmdir refuses any other
                os.rename(self.tmp, self.dest)
            else:
                os.replace(self.tmp, self.dest)
        except BaseException as e:
            self.discard()
            if isinstance(e, OSError) and not isinstance(e, OutputError):
                raise self._commit_error(e) from e
            raise
        self._done = True
        return self.path

    def _commit_error(self, e: OSError) -> OutputError:
        if self.directory and e.errno in (errno.ENOTEMPTY, errno.EEXIST):
            return OutputError(f"output folder {self.path} was filled by another process meanwhile; "
                               f"nothing was written", e.errno)
        if not self.directory and e.errno == errno.EISDIR:
            return OutputError(f"output path is a folder: {self.path}; nothing was written", e.errno)
        return write_error(self.path, e)

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


class InPlaceOutput:
    """An output that is written as it is (not renamed into place): standard output, a FIFO, a device,
    a Unix socket or a symlink to one of them; made by ``open_output``.

    ``file`` is a binary file object to write to (writes reach the descriptor unbuffered, or are
    flushed by the caller: see ``flush``); ``name`` names it in messages (``stdout`` for ``-``).
    ``commit`` flushes and closes it (standard output is flushed, not closed); ``discard`` closes it,
    which cannot take back what was written. Errors are ``OutputError``.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        raw = os.fspath(path)
        self.path = Path(raw)
        fd = _descriptor(raw)
        self._close = True
        try:
            if fd == 1 and sys.stdout is not None and hasattr(sys.stdout, "buffer"):
                self.name = "stdout"
                if sys.stdout.isatty():
                    raise OutputError("refusing to write binary data to a terminal: redirect the output "
                                      "(> FILE or | PROGRAM) or give -o FILE")
                self.file: BinaryIO = sys.stdout.buffer  # what click's test runner captures, too
                self._close = False
            elif fd is not None:
                self.name = raw
                self.file = io.FileIO(os.dup(fd), "wb")
            elif stat.S_ISSOCK(os.stat(raw).st_mode):
                self.name = raw
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    sock.connect(raw)
                except OSError:
                    sock.close()
                    raise
                self.file = io.FileIO(sock.detach(), "wb")
            else:  # a FIFO (opening blocks until a reader comes, as for any writer) or a device
                self.name = raw
                self.file = io.FileIO(os.open(raw, os.O_WRONLY | getattr(os, "O_CLOEXEC", 0)), "wb")
        except OutputError:
            raise
        except OSError as e:
            raise write_error(raw, e) from e
        self.seekable = _seekable(self.file)
        self._done = False

    def flush(self) -> None:
        """Push what was written to the reader (the standard output is buffered)."""
        try:
            self.file.flush()
        except OSError as e:
            raise write_error(self.name, e) from e

    def commit(self) -> Path:
        if self._done:
            raise RuntimeError(f"output {self.name} was already committed or discarded")
        self._done = True
        try:
            self.file.flush()
        except OSError as e:
            self._close_file()
            raise write_error(self.name, e) from e
        self._close_file()
        return self.path

    def discard(self) -> None:
        """Stop writing (idempotent). What was written stays written."""
        if self._done:
            return
        self._done = True
        try:
            self.file.flush()
        except (OSError, ValueError):
            pass
        self._close_file()

    def _close_file(self) -> None:
        if self._close:
            try:
                self.file.close()
            except OSError:
                pass

    def __enter__(self) -> BinaryIO:
        return self.file

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.discard()


_FD_PATH = re.compile(r"^/(?:dev/fd|proc/self/fd)/(\d+)$")
_STD_PATHS = {"/dev/stdin": 0, "/dev/stdout": 1, "/dev/stderr": 2}


def _descriptor(raw: str) -> int | None:
    """The file descriptor a name stands for: ``-`` is 1, ``/dev/stdout`` 1, ``/dev/fd/N`` N; else None."""
    if raw == STDIO:
        return 1
    if raw in _STD_PATHS:
        return _STD_PATHS[raw]
    m = _FD_PATH.match(raw)
    return int(m.group(1)) if m else None


def _seekable(f) -> bool:
    try:
        return bool(f.seekable())
    except (AttributeError, OSError, ValueError):
        return False


def in_place(path: str | os.PathLike) -> str | None:
    """What kind of in-place output ``path`` is, or None when it is written atomically (a regular file,
    a folder, a path that does not exist yet, or a symlink to one of these).

    ``'stdout'`` for ``-`` (and ``/dev/stdout``), ``'descriptor'`` for ``/dev/fd/N``; for an existing
    path, following symlinks: ``'fifo'``, ``'character device'``, ``'block device'``, ``'socket'``."""
    raw = os.fspath(path)
    fd = _descriptor(raw)
    if fd is not None:
        return "stdout" if fd == 1 else "descriptor"
    try:
        mode = os.stat(raw).st_mode
    except (OSError, ValueError):
        return None  # a new path, a dangling symlink, or one that cannot be looked at: the atomic path reports it
    for test, kind in ((stat.S_ISFIFO, "fifo"), (stat.S_ISCHR, "character device"),
                       (stat.S_ISBLK, "block device"), (stat.S_ISSOCK, "socket")):
        if test(mode):
            return kind
    return None


def open_output(path: str | os.PathLike, *, directory: bool = False) -> AtomicOutput | InPlaceOutput:
    """The right output for ``path``: ``InPlaceOutput`` when ``in_place(path)`` says so (a folder
    cannot be one: OutputError), else ``AtomicOutput``."""
    if in_place(path):
        if directory:
            raise OutputError(f"cannot write a folder of frames to {_name(path)}")
        return InPlaceOutput(path)
    return AtomicOutput(path, directory=directory)


def stdin_reader() -> BinaryIO:
    """Standard input as a binary file whose ``read(n)`` returns what has arrived (at most ``n`` bytes)
    rather than waiting for all ``n``: a streaming reader sees each piece as soon as it is written."""
    stdin = sys.stdin
    buffer = getattr(stdin, "buffer", None)
    if stdin is None or buffer is None:
        raise InputError("there is no standard input to read from")
    raw = getattr(buffer, "raw", None)
    if isinstance(raw, io.FileIO):  # nothing in imfcodec reads through sys.stdin's buffer before this
        return io.FileIO(raw.fileno(), "rb", closefd=False)
    return buffer  # not a descriptor (click's test runner): its read(n) returns what it has


def check_output_folder(path: str | os.PathLike) -> None:
    """Refuse (InputError) an output whose folder does not exist, naming the folder: neither encode nor
    decode creates folders, so a mistyped path fails instead of growing a directory tree."""
    if in_place(path):
        return
    raw = os.fspath(path)
    parent = Path(os.path.realpath(raw)).parent if os.path.islink(raw) else Path(raw).absolute().parent
    if not parent.is_dir():
        shown = Path(raw).parent
        raise InputError(f"output folder does not exist: {shown if str(shown) != '.' else parent} "
                         f"(create it first)")


def _name(path: str | os.PathLike) -> str:
    return "stdout" if os.fspath(path) == STDIO else os.fspath(path)


_PLAIN = {
    errno.EPIPE: "the reader closed the pipe",
    errno.ECONNRESET: "the reader closed the connection",
}


def write_error(path: str | os.PathLike, e: OSError) -> OutputError:
    """One line for an OSError met while creating or writing ``path``."""
    if isinstance(e, OutputError):
        return e
    why = _PLAIN.get(e.errno) or e.strerror or str(e) or type(e).__name__
    return OutputError(f"cannot write {_name(path)}: {why}", e.errno)


@contextlib.contextmanager
def scratch_file(beside: Path, suffix: str = SPOOL_SUFFIX) -> Iterator[Path]:
    """A private temporary file next to ``beside`` (named after it, with this run's owner tag, so that
    ``sweep_stale`` can tell it from a live run's), always deleted at the end: room for intermediate
    bytes on the output's file system rather than in memory."""
    name = beside.name if beside.name.startswith(".") else "." + beside.name
    fd, tmp = tempfile.mkstemp(prefix=f"{name}.{_owner()}.", suffix=suffix, dir=beside.parent)
    try:
        os.close(fd)
        yield Path(tmp)
    finally:
        _remove(Path(tmp))


def as_path(path: str | os.PathLike) -> Path:
    """``path`` as a Path that still means what the string meant: ``Path('./-')`` is ``Path('-')``, which
    would then be taken for standard output, so a ``-`` reached another way (``./-``, ``.//-``) becomes
    the absolute path of the file named ``-``."""
    raw = os.fspath(path)
    p = Path(raw)
    if os.fspath(p) == STDIO and raw != STDIO:
        return Path(os.path.abspath(raw))
    return p


def check_overwrite(path: str | os.PathLike, overwrite: bool, flag: str = "overwrite=True") -> None:
    """Refuse (OutputExistsError) to replace an existing output unless ``overwrite``. In-place outputs
    (standard output, a FIFO, ``/dev/null``) are written, not replaced, and an empty folder holds nothing
    to lose: both pass. ``flag`` is what the message says allows it (the CLI's ``-y``)."""
    if overwrite or in_place(path):
        return
    p = Path(path)
    if not os.path.exists(p):  # a dangling symlink's target does not exist either: nothing to lose
        return
    if p.is_dir():  # an empty folder holds nothing to lose; the writers refuse a full one in any case
        return
    raise OutputExistsError(f"output exists: {os.fspath(path)}; {flag} replaces it", errno.EEXIST)


_OWNER = re.compile(r"\.(\d+)@([0-9a-f]{8})\.[^/]*(?:" + re.escape(TEMP_SUFFIX) + "|" + re.escape(SPOOL_SUFFIX) + ")$")


def _host_tag() -> str:
    import hashlib

    return hashlib.sha1(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:8]


def _owner() -> str:
    """``<pid>@<host>``: which process made a temporary, in its name (the host as a short hash)."""
    return f"{os.getpid()}@{_host_tag()}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True  # someone else's process, or cannot tell: alive, to be safe
    return True


def sweep_stale(folder: str | os.PathLike, max_age: float = STALE_SECONDS) -> list[Path]:
    """Remove the hidden temporaries (``.partial``, ``.spool``) that killed runs left in ``folder``; returns
    what was removed. Only a temporary named by this module (``NAME.<pid>@<host>.``) qualifies, only when
    it was made on this host, its process no longer exists and it was last changed more than ``max_age``
    seconds ago; anything else, a live run's temporaries above all, is left alone. Never raises."""
    import time

    removed: list[Path] = []
    host, now = _host_tag(), time.time()
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        m = _OWNER.search(entry.name)
        if not entry.name.startswith(".") or m is None or m.group(2) != host:
            continue
        try:
            pid = int(m.group(1))
            if pid == os.getpid() or _alive(pid) or now - entry.stat(follow_symlinks=False).st_mtime < max_age:
                continue
            _remove(Path(entry.path))
            removed.append(Path(entry.path))
        except (OSError, ValueError):
            continue
    return removed


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write a small text file (a report, a table) atomically: the old file or the whole new one."""
    with AtomicOutput(path) as tmp:
        Path(tmp).write_text(text)


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


__all__ = ["AtomicOutput", "InPlaceOutput", "open_output", "in_place", "stdin_reader", "check_output_folder",
           "write_error", "scratch_file", "write_text", "STDIO", "TEMP_SUFFIX", "SPOOL_SUFFIX", "as_path",
           "check_overwrite", "sweep_stale", "STALE_SECONDS"]
