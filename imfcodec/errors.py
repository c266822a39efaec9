"""Error types. Every failure a user can cause is an ``IMFError`` with a one-line message,
so the CLI can print it without a traceback and exit non-zero."""

from __future__ import annotations


class IMFError(Exception):
    """Base class of every user-facing imfcodec failure; ``str(e)`` is one line."""


class InputError(IMFError):
    """Unreadable or unsupported input video, or invalid arguments."""


class ArgumentError(InputError, ValueError):
    """An argument's value is invalid (a usage error: the command line exits 2 for it). The message names
    the argument the way the Python API spells it, ``quality=``; the command line rewrites
    those names into its flags (``--quality``) through one table. Also a ``ValueError``, as Python's own
    bad-argument errors are."""


class BitstreamError(IMFError):
    """Anything wrong with an .imf stream."""


class CorruptStreamError(BitstreamError):
    """CRC mismatch, truncation, impossible lengths: the bytes are damaged. ``where`` is ``"header"`` when
    the signature or the header is damaged (nothing after it can be trusted: concealment cannot help), else
    None (a packet, or not known)."""

    where: str | None = None


class UnsupportedStreamError(BitstreamError):
    """A well-formed stream this build cannot decode (newer version, unknown key codec)."""


class ModelMismatchError(BitstreamError):
    """The stream was made by another model or by other weights than the ones loaded."""


class WeightsError(IMFError):
    """A weights file that is not safetensors, or whose config does not match."""


class OutputError(IMFError, OSError):
    """The output cannot be written: a read-only or full file system, no permission, a folder another
    process filled meanwhile, a reader that went away. Also an ``OSError`` (``.errno`` is set when the
    system gave one), so code that caught the plain ``OSError`` still does."""

    def __init__(self, message: str, errno: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno


class OutputExistsError(OutputError):
    """The output exists and replacing it was not allowed (``overwrite=False``, the command line's
    default ``-n``): nothing was read or written."""


class IMFWarning(UserWarning):
    """Something a user should know about an encode or decode that still goes ahead (an input cropped
    to a sliver of itself, say): ``warnings.warn`` in the API, a ``warning: ...`` line in the CLI."""
