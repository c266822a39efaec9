#!/usr/bin/env python3
"""Coverage-guided fuzzing of imfcodec with atheris (libFuzzer). See tests/fuzz/README.md.

    pip install -e '.[fuzz]'
    python tests/fuzz/fuzz_decode.py --minutes 10                  # the stream decoder
    python tests/fuzz/fuzz_decode.py --minutes 10 --target encode  # the encoder's input path
    python tests/fuzz/fuzz_decode.py --minutes 10 --mode token     # the token mode (default: hybrid)

``--mode`` picks the network and the seeds: ``hybrid`` (the default mode: base layer + key frame + the
seeded ``random:enh-tiny`` enhancer, format version 2) or ``token`` (the seeded ``random:imf-tiny`` model,
version 1).
Target ``decode``: every input is decoded as an .imf stream twice, strict and with concealment
(``imfcodec.api.iter_decoded``), with the seeded network the seeds were made with.
Target ``encode``: every input is written to a file and encoded (``imfcodec.api.encode_video``, at most
3 frames, png key frames, in that mode). Either may succeed or raise ``IMFError`` with a one-line message; anything
else (another exception, a crash, a hang over ``--timeout`` s, memory over ``--rss-mb``) is a finding,
saved by libFuzzer as ``crash-*`` / ``timeout-*`` / ``oom-*`` in ``--artifacts``.

Half of the decode mutations are structure-aware (``custom_mutator``): a record's payload is mutated and
its CRC recomputed, or records are dropped, duplicated, swapped or retyped, so that mutations get past
the CRC check to the parsers, the entropy decoder and the key-frame decoders; the other half are
libFuzzer's byte-level mutations (which the CRC mostly catches, as it should).

Unlike the CLI, the trainer and the benchmarks (click), this harness parses its options with argparse:
``parse_known_args`` hands every argument it does not know (``-runs=40``, ``-jobs=2`` ...) to libFuzzer
through ``atheris.Setup``, which owns the rest of argv.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # helpers.write_video for the encode corpus

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch (see imfcodec/cli.py)

import atheris  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402,F401  (imported before instrumentation: only imfcodec is instrumented)

with atheris.instrument_imports(include=["imfcodec"]):
    import imfcodec.bitstream  # noqa: F401  (everything the targets reach, so it is all instrumented)
    import imfcodec.codec  # noqa: F401
    import imfcodec.baselayer  # noqa: F401
    import imfcodec.entropy  # noqa: F401
    import imfcodec.hybrid  # noqa: F401
    import imfcodec.io  # noqa: F401
    import imfcodec.keyframe  # noqa: F401
    import imfcodec.models  # noqa: F401
    from imfcodec.api import encode_video, iter_decoded
    from imfcodec.bitstream import MAGIC, VERSION
    from imfcodec.bitstream.format import encode_varint, record_crc
    from imfcodec.codec import EncoderSettings
    from imfcodec.errors import IMFError
    from imfcodec.zoo import load_model

# per mode: the seeded network, and the encoder settings of the seeds and of the encode target
MODES = {
    "token": ("random:imf-tiny", dict(key_codec="png", search_iters=0)),
    "hybrid": ("random:enh-tiny", dict(key_codec="png", base_codec="vp9")),
}
# decode seeds per mode: (key codec, keyint, chunk, base codec); the base codec is ignored in the token mode
SEEDS = (("hevc", 3, 2, "vp9"), ("png", 2, 1, "hevc"), ("webp", 0, 3, "av1"), ("av1", 4, 2, "vp9"))
MODE = "hybrid"
MODEL = None
TYPES = (0x4B, 0x54, 0x42, 0x45)  # K T B E
_TMP = None


# ---------------------------------------------------------------------------------------- targets

def test_decode(data: bytes) -> None:
    for conceal in (False, True):
        try:
            for _dec, frames in iter_decoded(data, model=MODEL, conceal=conceal):
                for f in frames:
                    if f.dtype != np.uint8 or f.shape != (64, 64, 3):
                        raise AssertionError(f"decoder returned a {f.dtype} {f.shape} frame")
        except IMFError as e:
            if "\n" in str(e) or not str(e):
                raise AssertionError(f"error message is not one line: {e!r}") from e


def test_encode(data: bytes) -> None:
    src = Path(_TMP) / "input"
    out = Path(_TMP) / "out.imf"
    src.write_bytes(data)
    try:
        encode_video(src, out, model=MODEL, max_frames=3, settings=EncoderSettings(**MODES[MODE][1]))
    except IMFError as e:
        if "\n" in str(e) or not str(e):
            raise AssertionError(f"error message is not one line: {e!r}") from e
        if out.exists():
            raise AssertionError("a failed encode left its output behind")
    left = [p.name for p in Path(_TMP).iterdir() if p.name.startswith(".")]
    if left:
        raise AssertionError(f"temporary files left behind: {left}")
    out.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------- mutator

def split_records(data: bytes) -> tuple[list[list], bytes]:
    """Lenient record split (no CRC check): ([[type, payload], ...], unparsed tail)."""
    recs, pos = [], len(MAGIC) + 1
    while pos < len(data):
        t, n, shift, i = data[pos], 0, 0, pos + 1
        while i < len(data) and i - pos <= 10:
            n |= (data[i] & 0x7F) << shift
            shift += 7
            i += 1
            if not data[i - 1] & 0x80:
                break
        else:
            break
        if i + n + 4 > len(data):
            break
        recs.append([t, data[i:i + n]])
        pos = i + n + 4
    return recs, data[pos:]


def join_records(recs: list[list], tail: bytes = b"") -> bytes:
    out = bytearray(MAGIC + bytes((VERSION,)))
    for t, payload in recs:
        length = encode_varint(len(payload))
        out += bytes((t,)) + length + payload + record_crc(t, length, payload).to_bytes(4, "little")
    return bytes(out) + tail


def custom_mutator(data: bytes, max_size: int, seed: int) -> bytes:
    rng = random.Random(seed)
    if rng.random() < 0.5 or not data.startswith(MAGIC):
        return atheris.Mutate(data, max_size)
    recs, tail = split_records(data)
    if not recs:
        return atheris.Mutate(data, max_size)
    i = rng.randrange(len(recs))
    op = rng.random()
    if op < 0.6:  # mutate one payload, keep its CRC valid
        payload = recs[i][1]
        recs[i][1] = atheris.Mutate(payload, max(16, 2 * len(payload)))
    elif op < 0.7:
        del recs[i]
    elif op < 0.8:
        recs.insert(i, list(recs[i]))
    elif op < 0.9:
        recs[i][0] = rng.choice(TYPES)
    else:
        j = rng.randrange(len(recs))
        recs[i], recs[j] = recs[j], recs[i]
    return join_records(recs, tail if rng.random() < 0.9 else b"")[:max_size]


# ---------------------------------------------------------------------------------------- seeds

def seed_corpus(corpus: Path, target: str) -> int:
    """Fill an empty corpus: the conformance streams (decode) plus a few small ones made in ``MODE``."""
    corpus.mkdir(parents=True, exist_ok=True)
    if any(corpus.iterdir()):
        return 0
    from imfcodec.io import make_sample

    n = 0
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        clip = make_sample(tmp / "clip.mp4", frames=5, size=64, fps=25)
        if target == "decode":
            for p in sorted((ROOT / "bitstreams" / "conformance").glob("*.imf")):
                (corpus / p.name).write_bytes(p.read_bytes())
                n += 1
            for codec, keyint, chunk, base in SEEDS:
                out = tmp / f"{codec}.imf"
                kw = dict(key_codec=codec, keyint=keyint, chunk=chunk)
                if MODE == "hybrid":
                    kw["base_codec"] = base
                encode_video(clip, out, model=MODEL, settings=EncoderSettings(**kw))
                (corpus / f"seed-{MODE}-{codec}.imf").write_bytes(out.read_bytes())
                n += 1
        else:
            from helpers import write_video  # tests/helpers.py, the test suite's clip maker

            frames = [np.full((48, 64, 3), 40 * i, np.uint8) for i in range(3)]
            for name, codec, pix in (("a.mp4", "libx264", "yuv420p"), ("a.mkv", "ffv1", "yuv420p"),
                                     ("a.y4m", "rawvideo", "yuv420p")):
                write_video(tmp / name, frames, codec, pix)
                (corpus / name).write_bytes((tmp / name).read_bytes())
                n += 1
            (corpus / "clip.mp4").write_bytes(clip.read_bytes())
            n += 1
    return n


def main() -> None:
    global MODE, MODEL, _TMP
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=1.0, help="how long to fuzz")
    ap.add_argument("--target", choices=["decode", "encode"], default="decode")
    ap.add_argument("--mode", choices=sorted(MODES), default=MODE, help="the codec mode (network and seeds)")
    ap.add_argument("--corpus", type=Path, help="working corpus (default tests/fuzz/corpus-TARGET-MODE)")
    ap.add_argument("--artifacts", type=Path, default=HERE / "artifacts", help="where findings are saved")
    ap.add_argument("--timeout", type=int, default=10, help="seconds per input before it counts as a hang")
    ap.add_argument("--rss-mb", type=int, default=4096, help="memory limit (libFuzzer -rss_limit_mb)")
    ap.add_argument("--max-len", type=int, default=65536)
    args, extra = ap.parse_known_args()

    torch.set_num_threads(1)
    MODE = args.mode
    MODEL = load_model(MODES[MODE][0])
    corpus = args.corpus or HERE / f"corpus-{args.target}-{MODE}"
    print(f"seeded {seed_corpus(corpus, args.target)} inputs into {corpus}", flush=True)
    args.artifacts.mkdir(parents=True, exist_ok=True)
    _TMP = tempfile.mkdtemp(prefix="imf-fuzz-")
    libfuzzer = [sys.argv[0], str(corpus), f"-max_total_time={int(args.minutes * 60)}",
                 f"-timeout={args.timeout}", f"-rss_limit_mb={args.rss_mb}", f"-max_len={args.max_len}",
                 f"-artifact_prefix={args.artifacts}{os.sep}", "-print_final_stats=1", *extra]
    if args.target == "decode":
        atheris.Setup(libfuzzer, test_decode, custom_mutator=custom_mutator)
    else:
        atheris.Setup(libfuzzer, test_encode)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
