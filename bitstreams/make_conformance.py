"""Regenerate the conformance streams and their expected decodes.

Run only when the format changes on purpose (and bump the version):
    python bitstreams/make_conformance.py [NAME ...]
(names: regenerate only those streams and keep the others' files and expected values, so adding a stream
cannot change the committed ones). Each stream is made by the reference encoder from the deterministic
demo clip with the seeded ``random:imf-tiny`` model (so the test needs no weights file). Expected values: a
SHA-256 of the decoded token integers (must match exactly), SHA-256 of each decoded key frame (standard
decoders are bit-exact), and a 16x16 thumbnail per frame (synthesised frames may differ by float rounding
between machines).

Hybrid streams (format version 2) use ``random:enh-tiny``: instead of the tokens, a SHA-256 of the decoded
base-layer pictures (bit-exact by the base codec's specification, like the key frames); the output frames
(bicubic upscale, then the enhancer: float code, like token synthesis) are held to their thumbnails.

Guarded streams (format version 4, the enhancer switch) use the shipped ``enh-wide``: an untrained enhancer
returns the bicubic base exactly, so only a trained one can be worse than it. ``guard_clip`` is the demo
clip's face followed by moving colour bars (a scene cut, so a key frame): the encoder keeps the enhancer on
for the face and switches it off for the bars (a ``b`` record), and a decoder must show those frames as the
upscaled base pictures. When ``enh-wide``'s weights change, regenerate this stream (its header names the
weights' hash): ``python bitstreams/make_conformance.py enh-wide-vp9-guard-bars``.

Timed streams (format version 3) are coded from the demo clip's frames written at irregular times
(``TIMES``, ``timed_clip``): their expected values add the time base and every frame's duration, which a
decoder must reproduce exactly.
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
OUT = HERE / "conformance"
MODEL = "random:imf-tiny"

STREAMS = {
    # quality spelled out everywhere: these streams must not change when the encoder default does
    "tiny-hevc-single-key-chunk1": dict(keyint=0, chunk=1, key_codec="hevc", quality=6),
    "tiny-av1-keyint5-chunk3": dict(keyint=5, chunk=3, key_codec="av1", quality=9),
    "tiny-webp-keyint4-chunk5": dict(keyint=4, chunk=5, key_codec="webp", quality=3),
    "tiny-png-refresh": dict(keyint=0, chunk=2, key_codec="png", refresh_below=12.0, quality=6),
}
HYBRID_MODEL = "random:enh-tiny"
TIMED_STREAMS = {
    # the token mode with per-frame timing: one timing record after the header, then K0, T1-3, ..., T10-11
    "tiny-png-vfr-chunk3": dict(keyint=0, chunk=3, key_codec="png", quality=6),
}
#: the timed clip's frame times in ms, and its last frame's duration: gaps of 40 (25 fps), 20, 100, a frame
#: of 1001/30 ms rounded, and a last frame held for 600 ms; 1.5 s in all
TIMES = ([0, 40, 80, 100, 200, 233, 267, 300, 340, 500, 540, 900], 600)


def default_point(**fields) -> dict:
    """The default mode's point as stream settings: ``EncoderSettings()`` resolved (the one definition,
    imfcodec.settings), in the order the expected file lists them; ``fields`` override."""
    from imfcodec.settings import EncoderSettings

    d = EncoderSettings().validated()
    point = dict(base_codec=d.base_codec, base_factor=d.base_factor, base_quality=d.base_quality, keyint=d.keyint,
                 chunk=d.chunk, intra_base=d.intra_base, lean=d.lean)
    if not d.intra_base:
        point.update(key_codec=d.key_codec, key_quality=d.key_quality)
    return {**point, **fields}


HYBRID_STREAMS = {
    # 12 frames, key frames 0 and 6: a base-layer GOP restarts in the middle; 3 frames per base packet
    "tiny-hybrid-hevc-half-keyint6": dict(base_codec="hevc", base_factor=2, base_quality=13, keyint=6,
                                          key_codec="hevc", key_quality=21, chunk=3, guard=False, lean=False),
    # the default point of its time (version 2: VP9 base, HEVC key), key frames 0 and 6
    "tiny-hybrid-vp9-half-keyint6": dict(base_codec="vp9", base_factor=2, base_quality=8, keyint=6, key_codec="hevc",
                                         key_quality=16, chunk=5, guard=False, lean=False),
    # the third base codec: one key frame, 2 frames per base packet
    "tiny-hybrid-av1-half-chunk2": dict(base_codec="av1", base_factor=2, base_quality=13, keyint=0,
                                        key_codec="hevc", key_quality=16, chunk=2, guard=False, lean=False,
                                        intra_base=False),
    # version 5, lean records with unit sizes (a VP9 base, a separate key image): K, B, C records
    "tiny-hybrid-vp9-lean-keyint4": dict(base_codec="vp9", base_factor=2, base_quality=8, keyint=4,
                                         key_codec="hevc", key_quality=16, chunk=3, guard=False, lean=True,
                                         half_rate=False),
    # version 5, the key pictures in the AV1 base layer (one intra picture per key frame): I, B, C records,
    # AV1 units without sizes; key frames 0 and 6
    "tiny-hybrid-av1-intra-keyint6": dict(base_codec="av1", base_factor=2, base_quality=13, keyint=6, chunk=4,
                                          guard=False, lean=True, intra_base=True),
    # version 6, a half-rate base: the 12 frames' even ones coded (6), key frames 0 and 6 (coded 0 and 3), the
    # frames between shown as means (a copy before the key at 6 and after the last)
    "tiny-hybrid-vp9-halfrate-keyint6": dict(base_codec="vp9", base_factor=2, base_quality=8, keyint=6,
                                             key_codec="hevc", key_quality=16, chunk=2, guard=False, lean=True,
                                             half_rate=True),
}
# the enhancer switch (version 4): the default point with its guard, coded from ``guard_clip``
GUARD_MODEL = "enh-wide"
GUARD_STREAMS = {
    "enh-wide-vp9-guard-bars": dict(base_codec="vp9", base_factor=2, base_quality=8, keyint=0, key_codec="hevc",
                                    key_quality=16, chunk=5, guard=True, lean=False),
    # version 5 with the switch: the key pictures in the AV1 base, lean records ('i', 'b', 'c' where it is off)
    "enh-wide-av1-intra-guard-bars": dict(base_codec="av1", base_factor=2, base_quality=13, keyint=0, chunk=5,
                                          guard=True, lean=True, intra_base=True),
}


def thumbnail(frame: np.ndarray, n: int = 16) -> np.ndarray:
    """Mean-pool to n x n x 3 (float): tolerant of rounding, sensitive to any real change."""
    h, w, _ = frame.shape
    return frame.reshape(n, h // n, n, w // n, 3).astype(np.float64).mean(axis=(1, 3))


def timed_clip(path: Path, frames: int = 12, size: int = 64) -> Path:
    """The demo clip's first frames at the irregular ``TIMES`` (mkv, millisecond time base), reproducibly."""
    from fractions import Fraction

    from imfcodec.io import VideoWriter, sample_frames

    pts, last = TIMES
    durations = [b - a for a, b in zip(pts, pts[1:])] + [last]
    with VideoWriter(path, 25, size, size, reproducible=True, time_base=Fraction(1, 1000)) as w:
        for rgb, p, d in zip(sample_frames(frames, size, 25), pts, durations):
            w.write(rgb, p, d)
    return path


def guard_clip(path: Path, face: int = 5, bars: int = 5, size: int = 256) -> Path:
    """The demo clip's first ``face`` frames, then ``bars`` frames of colour bars moving 3 px a frame."""
    from imfcodec.io import VideoWriter, sample_frames

    colours = np.array([[255, 255, 255], [255, 255, 0], [0, 255, 255], [0, 255, 0], [255, 0, 255], [255, 0, 0],
                        [0, 0, 255], [0, 0, 0]], np.uint8)
    with VideoWriter(path, 25, size, size, reproducible=True) as w:
        for rgb in sample_frames(face, size, 25):
            w.write(rgb)
        for t in range(bars):
            x = ((np.arange(size) + 3 * t) % size) * 8 // size
            w.write(np.ascontiguousarray(np.broadcast_to(colours[x][None], (size, size, 3))))
    return path


def describe(path: Path, model: str | None = None) -> dict:
    """Decode ``path`` and summarise what a conforming decoder must produce: the exact integers it decodes
    (tokens, or a hybrid stream's base-layer pictures), the key frames, thumbnails of every frame, and (version
    3) the time base and every frame's duration."""
    from imfcodec.api import iter_decoded, stream_header
    from imfcodec.bitstream import TimingPacket, read_stream
    from imfcodec.bitstream.format import shown_frame

    header = stream_header(path)
    hybrid = header.hybrid
    exact, key_sha, thumbs, frames = hashlib.sha256(), {}, [], 0
    hashed = None  # the last batch of base pictures hashed (a half-rate stream's last shown frame brings none)
    for dec, out in iter_decoded(path, model=model or (HYBRID_MODEL if hybrid else MODEL)):
        if not out:
            continue
        parts = dec.last_bases if hybrid else [dec.last_tokens.astype("<i4")]
        if parts is not hashed:
            for part in parts:
                exact.update(part.tobytes())
            hashed = parts
        keys = {shown_frame(header, k) for k in dec.report.key_frames}  # (a half-rate stream's frame i: 2i)
        for f in out:
            if frames in keys:
                key_sha[str(frames)] = hashlib.sha256(f.tobytes()).hexdigest()
            thumbs.append(np.round(thumbnail(f), 3).tolist())
            frames += 1
    timing = {}
    if header.timed:
        durations = [d for p in read_stream(path)[1] if isinstance(p, TimingPacket) for d in p.durations]
        timing = {"time_base": f"{header.time_num}/{header.time_den}", "durations": durations}
    return {
        "frames": frames,
        **timing,
        "file_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "base_frames_sha256" if hybrid else "tokens_sha256": exact.hexdigest(),
        "key_frames_sha256": key_sha,
        "thumbnails": thumbs,
        "frame_tolerance": 1.0,
    }


def main(argv: list[str] | None = None) -> int:
    from imfcodec.api import encode_video
    from imfcodec.codec import EncoderSettings
    from imfcodec.io import make_sample

    argv = sys.argv[1:] if argv is None else argv
    every = {**{n: (MODEL, kw) for n, kw in STREAMS.items()},
             **{n: (HYBRID_MODEL, kw) for n, kw in HYBRID_STREAMS.items()},
             **{n: (MODEL, kw) for n, kw in TIMED_STREAMS.items()},
             **{n: (GUARD_MODEL, kw) for n, kw in GUARD_STREAMS.items()}}
    unknown = sorted(set(argv) - set(every))
    if unknown:
        print(f"unknown stream(s): {', '.join(unknown)} (known: {', '.join(every)})", file=sys.stderr)
        return 2
    OUT.mkdir(exist_ok=True)
    exp_path = OUT / "expected.json"
    expected = json.loads(exp_path.read_text()) if (argv and exp_path.exists()) else {}
    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "sample.mp4"
        make_sample(clip, frames=12, size=64, fps=25)
        timed = timed_clip(Path(tmp) / "timed.mkv")
        guarded = guard_clip(Path(tmp) / "guard.mp4")
        for name, (model, kw) in every.items():
            if argv and name not in argv:
                continue
            path = OUT / f"{name}.imf"
            source = timed if name in TIMED_STREAMS else guarded if name in GUARD_STREAMS else clip
            encode_video(source, path, model=model, settings=EncoderSettings(**kw), overwrite=True)
            expected[name] = {"settings": kw, **({"model": model} if model != MODEL else {}), **describe(path, model)}
            print(f"{path.name}: {path.stat().st_size} bytes, {expected[name]['frames']} frames")
    exp_path.write_text(json.dumps(expected, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
