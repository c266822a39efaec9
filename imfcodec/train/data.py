"""Training data: video clips decoded once into an in-memory uint8 frame cache, split by clip
into train / held-out validation, and sampled as (reference, current) frame pairs.

Why this shape:

* Decoding video is the slowest part of a CPU training step, so every clip is decoded exactly
  once (at the largest resolution the run needs) and kept in memory as ``uint8 [T,H,W,3]``.
  With ``cache_dir`` the decoded arrays are also saved as ``.npy`` files keyed by path, file
  size, mtime, size and max_frames, so the next run starts in seconds.
* The split is by clip (never by frame: neighbouring frames are near-duplicates) and
  deterministic: clips are ordered by a hash of their file name and the first ``val_clips``
  become validation. Adding clips to a folder only moves a clip into validation if its hash
  sorts first.
* A folder named ``test`` is refused outright, and ``test`` sub-folders are skipped: test clips
  are for the final evaluation only.
* Sampling is a pure function of (seed, rank, sample index): a batch for step ``s`` is the same
  whether the run was interrupted or not (exact resume) and whether DataLoader workers are used,
  and each DDP rank draws its own samples (the DistributedSampler equivalent).
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, Sampler

from imfcodec.errors import InputError
from imfcodec.fsutil import AtomicOutput

log = logging.getLogger("imfcodec.train")

VIDEO_SUFFIXES = frozenset(
    ".mp4 .m4v .mov .mkv .webm .avi .mpg .mpeg .ts .mts .flv .wmv .y4m .ogv .3gp .gif".split()
)
FORBIDDEN_DIR = "test"
CACHE_VERSION = "1"


# ---------------------------------------------------------------------------- finding clips


def find_videos(paths: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
    """Video files under ``paths`` (files or folders, searched recursively), sorted.

    Refuses a path whose last component is ``test``; skips ``test`` sub-folders of a folder.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    found: list[Path] = []
    for p in paths:
        path = Path(p).expanduser()
        if path.name == FORBIDDEN_DIR or path.resolve().name == FORBIDDEN_DIR:
            raise InputError(f"refusing to train on '{p}': folders named 'test' are held out for evaluation")
        if path.is_file():
            found.append(path)
        elif path.is_dir():
            for f in sorted(path.rglob("*")):
                rel = f.relative_to(path).parts
                if FORBIDDEN_DIR in rel[:-1]:
                    continue
                if f.is_file() and f.suffix.lower() in VIDEO_SUFFIXES and not f.name.startswith("."):
                    found.append(f)
        else:
            raise InputError(f"training data path not found: {p}")
    unique = sorted({f.resolve(): f for f in found}.values(), key=lambda f: str(f))
    if not unique:
        raise InputError(f"no video files found in {', '.join(str(p) for p in paths)}")
    return unique


def clip_id(path: Path) -> str:
    """A readable, unique-enough clip name: parent folder + file name."""
    return f"{path.parent.name}/{path.name}"


def split_clips(paths: Sequence[Path], val_clips: int = 5) -> tuple[list[Path], list[Path]]:
    """Deterministic split by clip: order by sha1 of the file name, first ``val_clips`` are
    validation. At least one clip always stays in training; a single clip is used for both
    (logged), so tiny experiments still run."""
    order = sorted(paths, key=lambda p: (hashlib.sha1(p.name.encode()).hexdigest(), str(p)))
    n_val = max(0, min(val_clips, len(order) - 1))
    val, train = order[:n_val], order[n_val:]
    if val_clips > 0 and not val:
        log.warning("only one clip: validating on the training clip")
        val = list(train)
    return sorted(train, key=str), sorted(val, key=str)


# ---------------------------------------------------------------------------- the frame cache


def _cache_key(path: Path, size: int, max_frames: int | None) -> str:
    st = path.stat()
    ident = f"{CACHE_VERSION}|{path.resolve()}|{st.st_size}|{int(st.st_mtime)}|{size}|{max_frames}"
    return hashlib.sha1(ident.encode()).hexdigest()[:16]


def decode_clip(path: Path, size: int, max_frames: int | None) -> np.ndarray:
    """All frames (up to ``max_frames``) of one video as uint8 [T,size,size,3] via imfcodec.io."""
    from imfcodec.io import read_frames

    frames = list(read_frames(path, size, max_frames))
    if not frames:
        raise InputError(f"no frames decoded from {path}")
    return np.stack(frames).astype(np.uint8, copy=False)


def load_clip(path: Path, size: int, max_frames: int | None, cache_dir: str | os.PathLike | None) -> np.ndarray:
    """One clip from the .npy cache if present, else decoded (and cached, atomically)."""
    if cache_dir is None:
        return decode_clip(path, size, max_frames)
    cache = Path(cache_dir).expanduser()
    file = cache / f"{path.stem[:40]}-{_cache_key(path, size, max_frames)}.npy"
    if file.is_file():
        try:
            arr = np.load(file)
            if arr.dtype == np.uint8 and arr.ndim == 4 and arr.shape[1:] == (size, size, 3):
                return arr
        except (OSError, ValueError):
            pass
        log.warning("ignoring unreadable cache file %s", file)
    arr = decode_clip(path, size, max_frames)
    with AtomicOutput(file) as tmp, open(tmp, "wb") as f:
        np.save(f, arr)
    return arr


@dataclass
class Clips:
    """Decoded clips: names and uint8 [T,H,W,3] arrays (same H = W for all)."""

    names: list[str]
    frames: list[np.ndarray]

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def num_frames(self) -> int:
        return int(sum(len(f) for f in self.frames))

    @property
    def nbytes(self) -> int:
        return int(sum(f.nbytes for f in self.frames))


def load_clips(paths: Sequence[Path], size: int, max_frames: int | None = None,
               cache_dir: str | os.PathLike | None = None, min_frames: int = 2) -> Clips:
    """Decode (or load from cache) every clip; clips with fewer than ``min_frames`` frames or
    that cannot be read are skipped with a warning."""
    names, frames = [], []
    t0 = time.perf_counter()
    for p in paths:
        try:
            arr = load_clip(Path(p), size, max_frames, cache_dir)
        except InputError as e:
            log.warning("skipping %s: %s", p, e)
            continue
        if len(arr) < min_frames:
            log.warning("skipping %s: only %d frame(s)", p, len(arr))
            continue
        names.append(clip_id(Path(p)))
        frames.append(arr)
    clips = Clips(names, frames)
    log.info("loaded %d clips, %d frames, %.0f MiB in %.1f s", len(clips), clips.num_frames,
             clips.nbytes / 2**20, time.perf_counter() - t0)
    return clips


# ---------------------------------------------------------------------------- pair sampling


def to_float(frames: np.ndarray) -> torch.Tensor:
    """uint8 [...,H,W,3] -> float [...,3,H,W] in [0, 1]."""
    t = torch.from_numpy(np.ascontiguousarray(frames))
    return t.movedim(-1, -3).float().div_(255.0)


def resize_batch(x: torch.Tensor, size: int) -> torch.Tensor:
    """Resize [B,3,H,W] to size x size (area averaging when shrinking: exact for 2x)."""
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    mode = "area" if size < x.shape[-1] else "bilinear"
    kwargs = {} if mode == "area" else {"align_corners": False}
    return F.interpolate(x, size=(size, size), mode=mode, **kwargs)


class PairDataset(Dataset):
    """Map-style dataset of (reference, current) frame pairs from the same clip.

    Item ``i`` is drawn from a generator seeded with (seed, rank, i), so indices are just sample
    numbers: sample ``step * batch + k`` is the same on every run. Clips are chosen in proportion
    to their frame counts (uniform over frames); the current frame is within ``max_distance``
    frames of the reference (None: anywhere in the clip) and differs from it when possible.
    Augmentations, identical for both frames of a pair: horizontal flip, colour jitter
    (brightness, contrast, saturation each scaled by a factor in [1 - j, 1 + j]), and a random zoom
    (crop a window 1/s of the side, s in [1, 1 + zoom], at a random place, resized back): the motion
    between the two frames is kept while the framing changes, so memorising where things are in
    each training clip pays less than learning to move them.
    Returns float tensors [3,H,W] in [0, 1].
    """

    def __init__(self, clips: Clips, *, max_distance: int | None = None, flip: bool = True,
                 color_jitter: float = 0.0, zoom: float = 0.0, seed: int = 0, rank: int = 0) -> None:
        if len(clips) == 0:
            raise InputError("no training clips with at least 2 frames")
        self.clips = clips
        self.max_distance = max_distance
        self.flip = flip
        self.color_jitter = float(color_jitter)
        if not 0.0 <= zoom <= 3.0:
            raise InputError(f"zoom must be in [0, 3], got {zoom}")
        self.zoom = float(zoom)
        self.seed = int(seed)
        self.rank = int(rank)
        counts = np.array([len(f) for f in clips.frames], dtype=np.float64)
        self._cum = np.cumsum(counts / counts.sum())
        self._cum[-1] = 1.0

    def __len__(self) -> int:  # effectively infinite; sampled by index through StepSampler
        return 2**62

    def pair_indices(self, index: int) -> tuple[int, int, int, np.random.Generator]:
        rng = np.random.default_rng([self.seed, self.rank, int(index)])
        c = int(np.searchsorted(self._cum, rng.random(), side="right"))
        c = min(c, len(self.clips) - 1)
        n = len(self.clips.frames[c])
        r = int(rng.integers(n))
        d = n - 1 if self.max_distance is None else max(1, min(self.max_distance, n - 1))
        lo, hi = max(0, r - d), min(n - 1, r + d)
        cands = hi - lo  # frames in [lo, hi] other than r
        k = int(rng.integers(cands)) if cands > 0 else 0
        cur = lo + k + (1 if lo + k >= r else 0) if cands > 0 else r
        return c, r, cur, rng

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        c, r, cur, rng = self.pair_indices(index)
        frames = self.clips.frames[c]
        x = to_float(np.stack([frames[r], frames[cur]]))  # [2,3,H,W]
        if self.flip and rng.random() < 0.5:
            x = x.flip(-1)
        if self.color_jitter > 0:
            x = jitter(x, rng, self.color_jitter)
        if self.zoom > 0:
            x = zoom_crop(x, rng, self.zoom)
        return x[0], x[1]


def zoom_crop(x: torch.Tensor, rng: np.random.Generator, zoom: float) -> torch.Tensor:
    """One random crop for all images in ``x`` [N,3,H,W]: side 1/s of the frame, s uniform in
    [1, 1 + zoom], anywhere inside it, resized back to H x W (bilinear, antialiased)."""
    h, w = x.shape[-2:]
    s = 1.0 + zoom * float(rng.random())
    ch, cw = max(1, round(h / s)), max(1, round(w / s))
    top = int(rng.integers(h - ch + 1))
    left = int(rng.integers(w - cw + 1))
    crop = x[..., top:top + ch, left:left + cw]
    if (ch, cw) == (h, w):
        return crop
    return F.interpolate(crop, size=(h, w), mode="bilinear", align_corners=False, antialias=True).clamp_(0.0, 1.0)


_GRAY = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)


def jitter(x: torch.Tensor, rng: np.random.Generator, amount: float) -> torch.Tensor:
    """Mild colour jitter with one set of factors for all images in ``x`` [N,3,H,W]: brightness,
    contrast, saturation, each a factor in [1 - amount, 1 + amount], applied as torchvision's
    adjust_* do (blend with black, the mean grey level, the greyscale image; clamped to [0, 1]).
    Written out because importing torchvision.transforms costs seconds per worker."""
    b, c, s = (1.0 + amount * (2.0 * rng.random(3) - 1.0)).tolist()
    x = (x * b).clamp_(0.0, 1.0)
    gray = (x * _GRAY).sum(1, keepdim=True)
    mean = gray.mean(dim=(1, 2, 3), keepdim=True)
    x = (c * x + (1.0 - c) * mean).clamp_(0.0, 1.0)
    gray = (x * _GRAY).sum(1, keepdim=True)
    return (s * x + (1.0 - s) * gray).clamp_(0.0, 1.0)


class StepSampler(Sampler[int]):
    """Infinite sample indices ``start, start+1, ...``: with a PairDataset this makes batch k of
    a resumed run identical to batch k of an uninterrupted one."""

    def __init__(self, start: int = 0) -> None:
        self.start = int(start)

    def __iter__(self) -> Iterator[int]:
        i = self.start
        while True:
            yield i
            i += 1

    def __len__(self) -> int:
        return 2**62


def make_loader(dataset: PairDataset, batch_size: int, start_step: int = 0, workers: int = 0,
                pin_memory: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless iterator of (x_ref, x_cur) batches starting at ``start_step``."""
    from torch.utils.data import DataLoader

    if workers <= 0:
        def gen() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
            i = start_step * batch_size
            while True:
                items = [dataset[i + k] for k in range(batch_size)]
                i += batch_size
                yield torch.stack([a for a, _ in items]), torch.stack([b for _, b in items])
        return gen()
    loader = DataLoader(dataset, batch_size=batch_size, sampler=StepSampler(start_step * batch_size),
                        num_workers=workers, pin_memory=pin_memory, persistent_workers=True,
                        prefetch_factor=4)
    return iter(loader)


# ---------------------------------------------------------------------------- validation set


@dataclass
class ValSet:
    """Fixed validation pairs: per held-out clip, its first frame as the reference (as the codec
    uses a key frame) and ``per_clip`` current frames spread over the clip."""

    names: list[str]
    refs: list[torch.Tensor]  # per clip [1,3,H,W]
    curs: list[torch.Tensor]  # per clip [n,3,H,W]
    frame_ids: list[list[int]]


def make_valset(clips: Clips, per_clip: int = 8) -> ValSet:
    refs, curs, ids = [], [], []
    for frames in clips.frames:
        n = len(frames)
        k = min(per_clip, n - 1)
        idx = sorted({int(round(v)) for v in np.linspace(1, n - 1, k)}) if k > 0 else [0]
        refs.append(to_float(frames[:1]))
        curs.append(to_float(frames[idx]))
        ids.append(idx)
    return ValSet(list(clips.names), refs, curs, ids)
