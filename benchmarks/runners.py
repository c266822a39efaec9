"""One benchmark job: every rate point of one codec on one clip, in a fresh worker process.

Order inside a job (see ``memory`` for why): load the reference frames, encode + decode every point
(decoded frames are parked in a temporary .npy so they do not pile up in memory), read the peak RSS,
and only then compute quality metrics and imfcodec's GFLOPs.

Codecs:

* anchors (``anchors.ANCHORS``): PyAV encode -> MP4 -> PyAV decode, at the point's frame-size scale
  (downscaled before the encoder, upscaled after the decoder; see ``anchors``).
* ``imfcodec``: ``imfcodec.api.encode_frames_to_file`` (the streaming encoder) on the very same reference
  frames, written to a real .imf file; decoded from that file with ``imfcodec.api.iter_decoded``. Its
  rate is the whole file.
* ``repeat``: the first frame coded by imfcodec's key-frame codec, decoded, shown for every frame;
  its rate is the key-frame bytes over the clip's duration.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import traceback
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from .anchors import ANCHORS, DEFAULT_EFFORT, DEFAULT_UPSCALE, encode_decode
from .memory import peak_rss_mb
from .quality import PerceptualSpec
from .speed import Stopwatch, decode_gflops, fps, set_threads


#: the hybrid mode, decoded with its enhancer and, from the same streams, without it (bicubic upscale of
#: the base layer): the difference is what the enhancer adds
HYBRID_CODECS = ("hybrid", "hybrid-bicubic")
MODEL_CODECS = ("imfcodec",) + HYBRID_CODECS  # rows carry the model (token model or enhancer) identity


@dataclass(frozen=True)
class Point:
    """One rate point: ``param`` is the codec's knob (CRF, token quality, key quality)."""

    name: str
    param: int
    key_quality: int | None = None
    refine: int = 0  # imfcodec only: encoder-side token refinement iterations
    scale: Fraction = Fraction(1)  # anchors only: coded frame size / working size
    upscale: str = DEFAULT_UPSCALE  # anchors only: filter back to the working size when scale < 1
    base_codec: str = "hevc"  # hybrid only: the base layer's codec
    intra_base: bool = False  # hybrid only: the key pictures in the base layer (format version 5)
    half_rate: bool = False  # hybrid only: the base layer codes every other frame (format version 6)


@dataclass
class Job:
    """Everything a worker needs; plain data so it pickles into a spawned process."""

    clip: str
    codec: str
    points: list[Point]
    ref_path: str
    fps_num: int
    fps_den: int
    stream_dir: str
    config: str
    size: int
    keyint: int = 0
    threads: int = 1
    model: str | None = None
    model_id: str = ""
    key_codec: str = "hevc"
    effort: str = DEFAULT_EFFORT  # anchors' and the hybrid base layer's encoder effort (--effort)
    perceptual: PerceptualSpec = field(default_factory=PerceptualSpec)


def _effort_suffix(job: Job) -> str:
    """Stream files of another --effort sit beside the default's without replacing them."""
    return "" if job.effort == DEFAULT_EFFORT else f"-{job.effort}"


@dataclass
class JobResult:
    clip: str
    codec: str
    rows: list[dict]
    errors: list[str]


def steady_kbps(nbytes: int, startup_bytes: int | None, frames: int, fps_: Fraction) -> float:
    """Rate of a long call: the bytes after start-up (parameter sets / header and the first key frame)
    over the duration of the frames after the first; NaN when unknown or for a one-frame clip."""
    if startup_bytes is None or frames < 2:
        return math.nan
    return _kbps(nbytes - startup_bytes, (frames - 1) / float(fps_))


def _kbps(nbytes: float, seconds: float) -> float:
    return nbytes * 8.0 / seconds / 1000.0 if seconds > 0 else math.nan


def _one_line(e: BaseException) -> str:
    msg = str(e).strip().splitlines()
    return f"{type(e).__name__}: {msg[0] if msg else ''}"


def run_job(job: Job) -> JobResult:
    """Run one job; never raises (errors come back as one-line messages per failed point)."""
    try:
        return _run(job)
    except BaseException as e:  # noqa: BLE001 - a worker must always report back
        tb = traceback.format_exc(limit=3).strip().splitlines()[-1]
        return JobResult(job.clip, job.codec, [], [f"{job.clip}/{job.codec}: {_one_line(e)} [{tb}]"])


def _run(job: Job) -> JobResult:
    os.environ.setdefault("OMP_NUM_THREADS", str(job.threads))
    import av  # noqa: F401 - imported before the baseline so the baseline includes FFmpeg

    frames = np.load(job.ref_path)
    base_rss = peak_rss_mb()
    fps_ = Fraction(job.fps_num, job.fps_den)
    n = len(frames)
    duration = n / float(fps_)
    stream_dir = Path(job.stream_dir)
    stream_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{job.codec}-", dir=stream_dir))
    errors: list[str] = []
    done: list[tuple[Point, dict, Path]] = []
    extra: dict = {}
    try:
        if job.codec in ANCHORS:
            coded = _anchor_points(job, frames, fps_, tmp, errors)
        elif job.codec == "imfcodec":
            coded, extra = _imfcodec_points(job, frames, fps_, tmp, errors)
        elif job.codec in HYBRID_CODECS:
            coded, extra = _hybrid_points(job, frames, fps_, tmp, errors)
        elif job.codec == "repeat":
            coded = _repeat_points(job, frames, tmp, errors)
        else:
            raise ValueError(f"unknown codec {job.codec!r}")
        peak_rss = peak_rss_mb()
        done = coded
        gflops = decode_gflops(extra["model"]) if "model" in extra else math.nan
        rows = []
        for point, rec, dec_path in done:
            try:
                from .quality import measure

                q = measure(frames, np.load(dec_path), job.perceptual)
            except Exception as e:  # noqa: BLE001
                errors.append(f"{job.clip}/{job.codec}/{point.name}: metrics failed: {_one_line(e)}")
                continue
            row = {
                "clip": job.clip, "codec": job.codec, "point": point.name, "param": point.param,
                "key_quality": point.key_quality if point.key_quality is not None else "",
                "config": job.config, "model": job.model_id if job.codec in MODEL_CODECS else "",
                "size": job.size, "fps": float(fps_), "frames": n, "duration_s": duration,
                "kbps": _kbps(rec["bytes"], duration),
                "container_kbps": _kbps(rec["container_bytes"], duration),
                "key_kbps": _kbps(rec["key_bytes"], duration) if rec.get("key_bytes") is not None else math.nan,
                "token_kbps": _kbps(rec["token_bytes"], duration) if rec.get("token_bytes") is not None else math.nan,
                "base_kbps": _kbps(rec["base_bytes"], duration) if rec.get("base_bytes") is not None else math.nan,
                "bytes": rec["bytes"], "container_bytes": rec["container_bytes"], "key_frames": rec["key_frames"],
                "scale": float(point.scale), "coded_size": rec.get("coded_size", f"{job.size}x{job.size}"),
                "upscale": point.upscale if point.scale != 1 else "",
                "startup_bytes": rec.get("startup_bytes", ""),
                "steady_kbps": steady_kbps(rec["bytes"], rec.get("startup_bytes"), n, fps_),
                **q,
                "enc_fps": fps(n, rec["enc_seconds"]), "dec_fps": fps(n, rec["dec_seconds"]),
                "threads": job.threads, "peak_rss_mb": peak_rss, "base_rss_mb": base_rss,
                "gflops_per_frame": gflops,
                "encoder": rec["encoder"], "decoder": rec["decoder"], "stream": rec["stream"],
            }
            rows.append(row)
        return JobResult(job.clip, job.codec, rows, errors)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _rel(path: Path, job: Job) -> str:
    """Stream path relative to the output folder (``job.stream_dir`` is OUT/streams/CLIP)."""
    return str(Path("streams") / job.clip / path.name)


def _anchor_points(job: Job, frames: np.ndarray, fps_: Fraction, tmp: Path, errors: list[str]):
    spec = ANCHORS[job.codec]
    out = []
    for point in job.points:
        mp4 = Path(job.stream_dir) / f"{job.codec}_{point.name}{_effort_suffix(job)}.mp4"
        try:
            r = encode_decode(spec, point.param, frames, fps_, keyint=job.keyint, threads=job.threads,
                              mp4_path=mp4, scale=point.scale, upscale=point.upscale, effort=job.effort)
        except Exception as e:  # noqa: BLE001
            errors.append(f"{job.clip}/{job.codec}/{point.name}: {_one_line(e)}")
            continue
        dec_path = tmp / f"{point.name}.npy"
        np.save(dec_path, r.decoded)
        out.append((point, {"bytes": r.es_bytes, "container_bytes": r.container_bytes, "key_bytes": None,
                            "key_frames": r.key_frames, "enc_seconds": r.enc_seconds,
                            "dec_seconds": r.dec_seconds, "encoder": spec.encoder, "decoder": r.decoder,
                            "stream": _rel(mp4, job), "startup_bytes": r.startup_bytes,
                            "coded_size": f"{r.coded_width}x{r.coded_height}"}, dec_path))
        del r
    return out


def _repeat_points(job: Job, frames: np.ndarray, tmp: Path, errors: list[str]):
    from imfcodec.keyframe import get_keyframe_codec

    codec = get_keyframe_codec(job.key_codec)
    h, w = frames.shape[1:3]
    out = []
    for point in job.points:
        try:
            enc, dec = Stopwatch(), Stopwatch()
            with enc:
                data = codec.encode(frames[0], int(point.param))
            with dec:
                image = codec.decode(data, w, h)
                decoded = np.broadcast_to(image, frames.shape)
        except Exception as e:  # noqa: BLE001
            errors.append(f"{job.clip}/{job.codec}/{point.name}: {_one_line(e)}")
            continue
        path = Path(job.stream_dir) / f"repeat_{point.name}.{job.key_codec}"
        path.write_bytes(data)
        dec_path = tmp / f"{point.name}.npy"
        np.save(dec_path, decoded)
        out.append((point, {"bytes": len(data), "container_bytes": len(data), "key_bytes": len(data),
                            "startup_bytes": len(data),
                            "key_frames": 1, "enc_seconds": enc.seconds, "dec_seconds": dec.seconds,
                            "encoder": f"imfcodec key-frame codec '{job.key_codec}'",
                            "decoder": f"imfcodec key-frame codec '{job.key_codec}'",
                            "stream": _rel(path, job)}, dec_path))
    return out


def _code_and_decode(frames: np.ndarray, path: Path, loaded, fps_: Fraction, settings, enhance: bool = True):
    """Encode ``frames`` to ``path`` and decode the file back: (EncodedStream, decoded frames, encode and
    decode stopwatches). The decoded frames must be exactly as many as the encoded ones."""
    from imfcodec.api import encode_frames_to_file, iter_decoded

    enc_sw, dec_sw = Stopwatch(), Stopwatch()
    with enc_sw:
        coded = encode_frames_to_file(frames, path, model=loaded, fps=fps_, settings=settings, overwrite=True)
    decoded = np.empty_like(frames)
    count = 0
    with dec_sw:
        for _dec, chunk in iter_decoded(path, model=loaded, enhance=enhance):
            for fr in chunk:
                if count >= len(frames):
                    raise RuntimeError("decoder returned more frames than were encoded")
                decoded[count] = fr
                count += 1
    if count != len(frames):
        raise RuntimeError(f"decoded {count} frames, encoded {len(frames)}")
    return coded, decoded, enc_sw, dec_sw


def hybrid_startup_bytes(path: Path) -> int:
    """A hybrid stream's start-up: signature, header, the first key picture (a key packet, or the first unit of a
    version 5 intra base packet), and the first base access unit (the base layer's intra picture; none when the
    key picture is that) with its size byte and the first base packet's record framing."""
    from imfcodec.bitstream import iter_packet_records, read_stream

    records = list(iter_packet_records(path))
    _h, packets = read_stream(path.read_bytes())
    first = next(p for p in packets if hasattr(p, "units"))
    base_rec = next(r for r in records if r.type in "BbCcIi")
    if first.key:  # one intra picture: the key picture is the base packet's first unit
        framing = base_rec.total_len - len(first.data)
        return base_rec.offset + first.key_bytes + framing
    first_key = next(r for r in records if r.type == "K")
    framing = base_rec.total_len - len(first.data) - first.count  # record bytes beyond units and size bytes
    return first_key.offset + first_key.total_len + len(first.units[0]) + 1 + framing


def _imfcodec_points(job: Job, frames: np.ndarray, fps_: Fraction, tmp: Path, errors: list[str]):
    import torch  # noqa: F401 - part of the codec's footprint

    from imfcodec.bitstream import iter_packet_records
    from imfcodec.settings import EncoderSettings
    from imfcodec.zoo import load_model

    set_threads(job.threads)
    loaded = load_model(job.model)
    out = []
    for point in job.points:
        path = Path(job.stream_dir) / f"imfcodec_{point.name}.imf"
        try:
            # scenecut=0: the anchors run without scene-cut key frames (anchors.py), so imfcodec does too
            settings = EncoderSettings(quality=int(point.param), keyint=job.keyint, key_codec=job.key_codec,
                                       key_quality=point.key_quality, search_iters=point.refine, scenecut=0)
            coded, decoded, enc_sw, dec_sw = _code_and_decode(frames, path, loaded, fps_, settings)
        except Exception as e:  # noqa: BLE001
            errors.append(f"{job.clip}/{job.codec}/{point.name}: {_one_line(e)}")
            continue
        # start-up = signature, header and the first key packet, as laid out in the file
        first_key = next(r for r in iter_packet_records(path) if r.type == "K")
        dec_path = tmp / f"{point.name}.npy"
        np.save(dec_path, decoded)
        out.append((point, {"bytes": coded.bytes, "container_bytes": coded.bytes, "key_bytes": coded.key_image_bytes,
                            "startup_bytes": first_key.offset + first_key.total_len,
                            "token_bytes": coded.token_bytes, "key_frames": len(coded.key_frames),
                            "enc_seconds": enc_sw.seconds, "dec_seconds": dec_sw.seconds,
                            "encoder": f"imfcodec {loaded.name}", "decoder": f"imfcodec {loaded.name}",
                            "stream": _rel(path, job)}, dec_path))
    return out, ({"model": loaded.model} if out else {})


def _hybrid_points(job: Job, frames: np.ndarray, fps_: Fraction, tmp: Path, errors: list[str]):
    """The hybrid mode at ``point.scale`` (1/factor), base quality ``point.param``, key quality
    ``point.key_quality``; ``hybrid-bicubic`` decodes the same streams without the enhancer."""
    import torch  # noqa: F401 - part of the codec's footprint

    from imfcodec.baselayer import base_size
    from imfcodec.settings import EncoderSettings
    from imfcodec.modes.hybrid import load_enhancer

    set_threads(job.threads)
    loaded = load_enhancer(job.model)
    enhance = job.codec == "hybrid"
    out = []
    for point in job.points:
        path = Path(job.stream_dir) / f"{job.codec}_{point.name}{_effort_suffix(job)}.imf"
        try:
            settings = EncoderSettings(base_codec=point.base_codec, base_factor=int(1 / point.scale),
                                       base_quality=int(point.param), keyint=job.keyint, key_codec=job.key_codec,
                                       key_quality=None if point.intra_base else point.key_quality,
                                       intra_base=point.intra_base, scenecut=0,  # as the anchors (above)
                                       preset=job.effort, half_rate=point.half_rate)
            coded, decoded, enc_sw, dec_sw = _code_and_decode(frames, path, loaded, fps_, settings, enhance)
        except Exception as e:  # noqa: BLE001
            errors.append(f"{job.clip}/{job.codec}/{point.name}: {_one_line(e)}")
            continue
        side = base_size(frames.shape[1], settings.base_factor)
        dec_path = tmp / f"{point.name}.npy"
        np.save(dec_path, decoded)
        name = f"imfcodec {loaded.name}" + ("" if enhance else " (bicubic, no enhancer)")
        out.append((point, {"bytes": coded.bytes, "container_bytes": coded.bytes,
                            "key_bytes": coded.key_image_bytes, "base_bytes": coded.base_bytes,
                            "token_bytes": 0, "startup_bytes": hybrid_startup_bytes(path),
                            "key_frames": len(coded.key_frames), "coded_size": f"{side}x{side}",
                            "enc_seconds": enc_sw.seconds, "dec_seconds": dec_sw.seconds,
                            "encoder": f"imfcodec --hybrid ({settings.base_codec} base, "
                                       + ("key in the base)" if point.intra_base else f"{job.key_codec} key)"),
                            "decoder": name,
                            "stream": _rel(path, job)}, dec_path))
    return out, ({"model": loaded.model} if out and enhance else {})
