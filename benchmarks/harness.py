"""What every benchmark script shares: where the clips are, how they are found and loaded, the common
options and where results go.

* **Data.** The shared clips live beside the repository (``../shared/data/talking-heads`` from its root),
  so the default ``--data`` is resolved from this file, not from the working directory: a script run from
  anywhere finds the same clips. ``TRAIN_DATA`` is what scripts that *tune* something (a threshold, a
  table, an ablation) read; ``TEST_DATA`` is for ``benchmarks.rd`` only, and a folder named ``test`` is
  refused wherever a script tunes (:func:`refuse_test`).
* **Finding clips.** :func:`find_clips`: video files of a folder (raw elementary streams included) or
  named files, by name; :func:`held_out_clips`: the enhancer trainer's own split (``imfcodec.train.data``),
  so "held-out training clips" means the same clips in the trainer's validation and in every benchmark.
* **``--out``** is a results folder everywhere: a script writes its files there under fixed names (said
  in its help), creating the folder. A file name (``x.md``) is refused rather than made into a folder.
* **Defaults**: ``THREADS`` torch threads and ``FRAMES`` frames per held-out clip, unless a script says
  why it differs; ``CACHE_DIR``: the trainers' decoded-clip cache, shared with them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import click

from imfcodec.cliutil import GreedyOption

REPO = Path(__file__).resolve().parents[1]
DATA_ROOT = REPO.parent / "shared" / "data" / "talking-heads"
TRAIN_DATA = DATA_ROOT / "train"
TEST_DATA = DATA_ROOT / "test"
#: the trainers' default cache of decoded clips and base layers (relative to the working directory, as theirs)
CACHE_DIR = "runs/frame-cache"
VAL_CLIPS = 5  # the trainer's held-out clips
THREADS = 2
FRAMES = 200  # frames per held-out clip
FPS = 25  # the rate the trainers code clips at; rates of held-out measurements are per 25 fps

VIDEO_SUFFIXES = {".mp4", ".mkv", ".mov", ".avi", ".webm", ".mpg", ".mpeg", ".m4v", ".y4m", ".264", ".h264",
                  ".265", ".h265", ".hevc", ".ivf", ".obu", ".flv", ".ts"}
#: what a results file is called, so that ``--out table.md`` is refused instead of becoming a folder
_FILE_SUFFIXES = {".md", ".json", ".csv", ".txt", ".png"}
FORBIDDEN = "test"


class BenchError(click.UsageError):
    """A user error in a benchmark's arguments: one line, ``error: ...``, exit status 2."""


# ------------------------------------------------------------------------------------ clips


def refuse_test(paths: Sequence[str | Path], what: str = "what this script tunes") -> None:
    """Refuse a path named ``test`` (the test set is for the final evaluation only)."""
    from imfcodec.errors import InputError

    for p in paths:
        path = Path(p).expanduser()
        if FORBIDDEN in (path.name, path.resolve().name):
            raise InputError(f"{p} is the test set: {what} is chosen on training clips")


def find_clips(paths: Sequence[str | Path], keep: Sequence[str] | None = None, *, option: str = "--videos",
               tunes: bool = False) -> dict[str, Path]:
    """Clip name (file stem, made unique) -> path, sorted by name: the video files of each folder (not
    recursive; hidden files skipped) and each named file. ``keep``: only these names; ``tunes``: refuse
    the test set. ``option`` names the option in errors."""
    if tunes:
        refuse_test(paths)
    files: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            files += sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in VIDEO_SUFFIXES
                            and not f.name.startswith("."))
        elif p.is_file():
            files.append(p)
        else:
            raise BenchError(f"{option} {raw}: no such file or folder")
    clips: dict[str, Path] = {}
    for f in files:
        name = f.stem if f.stem not in clips else f.name.replace(".", "_")
        clips[name] = f
    if keep:
        missing = [k for k in keep if k not in clips]
        if missing:
            raise BenchError(f"--clips: not found: {', '.join(missing)} (have: {', '.join(sorted(clips))})")
        clips = {k: clips[k] for k in keep}
    if not clips:
        raise BenchError(f"no video clips found in {option}")
    return dict(sorted(clips.items()))


def cache_path(cache_dir: str | None) -> Path | None:
    """``--cache-dir`` as a path; ``none`` (or nothing) turns the cache off."""
    return None if cache_dir in (None, "none") else Path(cache_dir)


def held_out_clips(data: Sequence[str | Path], val_clips: int, size: int, frames: int | None,
                   cache_dir: str | None):
    """The enhancer trainer's split of ``data``: (its training clips' paths, the held-out clips decoded at
    ``size`` px, at most ``frames`` frames each, as ``imfcodec.train.data.Clips``). Never the test set."""
    from imfcodec.train.data import find_videos, load_clips, split_clips

    refuse_test(data)
    train, held_out = split_clips(find_videos(list(data)), val_clips)
    return train, load_clips(held_out, size, frames, cache_path(cache_dir))


# ------------------------------------------------------------------------------------ options


def data_option(help: str = "training clips (files or folders; a folder named test is refused)"):
    return click.option("--data", cls=GreedyOption, default=(str(TRAIN_DATA),), show_default=True,
                        metavar="PATH [PATH ...]", help=help)


def held_out_options(f):
    """``--val-clips`` and ``--cache-dir``: which clips the trainer held out, and its cache."""
    f = click.option("--cache-dir", default=CACHE_DIR, show_default=True,
                     help="decoded-clip cache shared with the trainers ('none': off)")(f)
    return click.option("--val-clips", type=int, default=VAL_CLIPS, show_default=True,
                        help="the trainer's held-out clips")(f)


def threads_option(default: int = THREADS, help: str = "torch threads"):
    return click.option("--threads", type=click.IntRange(min=1), default=default, show_default=True, help=help)


def frames_option(default: int = FRAMES, help: str = "frames per clip (at most)"):
    return click.option("--frames", type=int, default=default, show_default=True, help=help)


class ResultsFolder(click.Path):
    """A results folder: refuses a name that looks like a file (``--out table.md``)."""

    def __init__(self) -> None:
        super().__init__(file_okay=False, path_type=Path)

    def convert(self, value, param, ctx):
        path = super().convert(value, param, ctx)
        if path.suffix.lower() in _FILE_SUFFIXES and not path.is_dir():
            self.fail(f"{value!r}: --out is a results folder (the file names are fixed), not a file", param, ctx)
        return path


def out_option(*files: str, required: bool = False, default: Path | None = None, help: str | None = None):
    """``--out DIR``: the results folder the script writes ``files`` into."""
    text = help or f"results folder: writes {', '.join(files)} there (created if missing)"
    return click.option("--out", type=ResultsFolder(), required=required, default=default,
                        show_default=default is not None, metavar="DIR", help=text)


def write_result(out: Path | None, name: str, text: str) -> Path | None:
    """Write ``text`` to ``out/name`` (atomically; the folder is created) and return the path; nothing
    without ``--out``."""
    from imfcodec.fsutil import write_text

    if out is None:
        return None
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / name, text)
    return out / name


def write_json(path: Path | None, settings: dict, **results) -> None:
    """``--json FILE``: the run's settings (paths as strings) and its results, one JSON document; nothing
    without a path."""
    import json

    from imfcodec.fsutil import write_text

    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in settings.items()}
    write_text(path, json.dumps({"settings": settings, **results}, indent=1) + "\n")
