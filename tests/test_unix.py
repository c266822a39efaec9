"""imfcodec as a Unix tool (issue 13, items 1, 2, 5, 6, 7): special files written in place, stdin/stdout
pipes, start-up without torch, OMP_WAIT_POLICY for every entry point, and one-line messages for a
damaged key frame, read-only or full disks, folder races, a missing output folder, progress in logs."""

from __future__ import annotations

import errno
import io
import json
import os
import pty
import resource
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from helpers import (
    N_FRAMES,
    TINY,
    cheap_clip,
    cli,
    communicate_no_hang,
    damaged,
    gradient,
    leftovers,
    no_hang,
    one_line_error,
    run_no_hang,
)
from imfcodec.api import iter_decoded

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}
CLI = [sys.executable, "-m", "imfcodec.cli"]
ROOT_USER = os.geteuid() == 0

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _frames_in_stream(data: bytes, tiny) -> int:
    return sum(len(f) for _, f in iter_decoded(data, model=tiny))


def _frames_in_video(data: bytes) -> int:
    with av.open(io.BytesIO(data)) as c:
        return sum(1 for _ in c.decode(video=0))


def _y4m(frames: list[np.ndarray]) -> bytes:
    buf = io.BytesIO()
    with av.open(buf, "w", format="yuv4mpegpipe") as c:
        s = c.add_stream("rawvideo", rate=25)
        s.width, s.height, s.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv444p"
        for i, rgb in enumerate(frames):
            f = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv444p")
            f.pts = i
            for p in s.encode(f):
                c.mux(p)
    return buf.getvalue()


# ------------------------------------------------------------------------------------------ special outputs


class _Drain:
    """A special file at ``path`` and a thread that reads everything written into it."""

    def __init__(self, kind: str, folder: Path) -> None:
        self.kind = kind
        self.data = b""
        self.path = folder / {"socket": "out.sock"}.get(kind, "out")
        if kind in ("fifo", "symlink to fifo"):
            fifo = folder / "fifo"
            os.mkfifo(fifo)
            if kind == "fifo":
                self.path = fifo
            else:
                self.path.symlink_to(fifo.name)
            self.thread = threading.Thread(target=self._read_fifo, args=(fifo,), daemon=True)
        elif kind == "socket":
            self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.server.bind(str(self.path))
            self.server.listen(1)
            self.thread = threading.Thread(target=self._read_socket, daemon=True)
        else:
            raise ValueError(kind)
        self.mode = os.stat(self.path).st_mode
        self.thread.start()

    def _read_fifo(self, fifo: Path) -> None:
        with open(fifo, "rb") as f:
            self.data = f.read()

    def _read_socket(self) -> None:
        conn, _ = self.server.accept()
        with conn:
            chunks = []
            while chunk := conn.recv(1 << 16):
                chunks.append(chunk)
        self.data = b"".join(chunks)

    def result(self) -> bytes:
        self.thread.join(timeout=60)
        assert not self.thread.is_alive(), f"the {self.kind} was never written"
        assert os.stat(self.path).st_mode == self.mode  # still a FIFO / a socket
        if self.kind == "symlink to fifo":
            assert os.path.islink(self.path)
        return self.data


@pytest.mark.parametrize("kind", ["fifo", "symlink to fifo", "socket"])
def test_special_outputs_are_written_in_place(kind, tmp_path, tiny, hevc_stream, sample_clip):
    """A FIFO, a symlink to one and a Unix socket get the stream (encode) or the video (decode) written
    into them as they are; none is replaced by a regular file (issue 13, item 1)."""
    work = tmp_path / "enc"
    work.mkdir()
    drain = _Drain(kind, work)
    r = cli("encode", sample_clip, "-o", drain.path, "--model", TINY, "--refine", 0, "--frames", 4)
    assert r.exit_code == 0, r.output
    assert _frames_in_stream(drain.result(), tiny) == 4
    assert leftovers(work) == []

    work = tmp_path / "dec"
    work.mkdir()
    drain = _Drain(kind, work)
    r = cli("decode", hevc_stream, "-o", drain.path)
    assert r.exit_code == 0, r.output
    data = drain.result()
    assert data.startswith(b"YUV4MPEG2 ") and _frames_in_video(data) == N_FRAMES  # y4m: the name says nothing
    assert leftovers(work) == []


def test_fifo_that_discards_like_dev_null(tmp_path, hevc_stream):
    """/dev/null behaviour through a FIFO: a reader that throws everything away; --format picks the
    container for a name that says nothing."""
    fifo = tmp_path / "null"
    os.mkfifo(fifo)
    got = []

    def discard():
        n = 0
        with open(fifo, "rb") as f:
            head = f.read(16)
            n += len(head)
            while chunk := f.read(1 << 16):
                n += len(chunk)
        got.append((head, n))

    t = threading.Thread(target=discard, daemon=True)
    t.start()
    r = cli("decode", hevc_stream, "-o", fifo, "--format", "mkv")
    t.join(timeout=60)
    assert r.exit_code == 0 and f"{fifo}: {N_FRAMES} frames" in r.stderr, r.output
    (head, n), = got
    assert head.startswith(b"\x1aE\xdf\xa3") and n > 100  # an EBML (matroska) header
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)


def _char_device(folder: Path, name: str, minor: int) -> Path:
    """A private copy of /dev/null (minor 3) or /dev/full (7) when we may make one (root), so that a
    regression cannot replace the machine's own; as a normal user the real one, which we cannot replace."""
    if ROOT_USER:
        path = folder / name
        try:
            os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, minor))
            return path
        except OSError:
            pytest.skip("root, but not allowed to make device nodes here")
    return Path(f"/dev/{name}")


def test_character_devices(tmp_path, tiny, hevc_stream, sample_clip):
    null = _char_device(tmp_path, "null", 3)
    r = cli("encode", sample_clip, "-o", null, "--model", TINY, "--refine", 0, "--frames", 3)
    assert r.exit_code == 0, r.output
    r = cli("decode", hevc_stream, "-o", null)
    assert r.exit_code == 0, r.output
    assert stat.S_ISCHR(os.stat(null).st_mode)
    full = _char_device(tmp_path, "full", 7)  # every write: ENOSPC, as on a full disk
    for args in (("encode", sample_clip, "-o", full, "--model", TINY, "--refine", 0), ("decode", hevc_stream, "-o", full)):
        one_line_error(cli(*args), f"cannot write {full}: No space left on device")
        assert stat.S_ISCHR(os.stat(full).st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == (["full", "null"] if ROOT_USER else [])


@pytest.mark.parametrize("dangling", [False, True])
def test_symlink_to_a_file_stays_a_symlink(dangling, tmp_path, tiny, sample_clip):
    """The file it points to is replaced atomically (and gets the umask's mode); the link stays."""
    target = tmp_path / "data" / "real.imf"
    target.parent.mkdir()
    if not dangling:
        target.write_bytes(b"old")
        target.chmod(0o600)
    link = tmp_path / "link.imf"
    link.symlink_to(Path("data") / "real.imf")
    old = os.umask(0o022)
    try:
        r = cli("encode", sample_clip, "-o", link, "--model", TINY, "--refine", 0, "--frames", 3, "-y")
    finally:
        os.umask(old)
    assert r.exit_code == 0, r.output
    assert link.is_symlink() and os.readlink(link) == os.path.join("data", "real.imf")
    assert _frames_in_stream(target.read_bytes(), tiny) == 3
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert leftovers(tmp_path) == [] and leftovers(target.parent) == []


# ------------------------------------------------------------------------------------------ stdin / stdout


def test_stdin_and_stdout_in_process(tmp_path, tiny):
    """`encode -` reads stdin and writes stdout by default (the summary goes to stderr then); `decode -`
    and `info -` read a stream from stdin."""
    frames = [gradient(64, 64, s) for s in range(5)]
    r = cli_input(_y4m(frames), "encode", "-", "--model", TINY, "--refine", 0)
    assert r.exit_code == 0, r.stderr
    stream = r.stdout_bytes
    assert _frames_in_stream(stream, tiny) == 5 and "stdout: 5 frames" in r.stderr
    r = cli_input(stream, "info", "-", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["frames"] == 5
    assert json.loads(r.stdout)["bytes"] == len(stream)
    r = cli_input(stream, "decode", "-", "--format", "mkv")
    assert r.exit_code == 0, r.stderr
    assert r.stdout_bytes.startswith(b"\x1aE\xdf\xa3") and _frames_in_video(r.stdout_bytes) == 5
    r = cli_input(stream, "decode", "-", "-o", tmp_path / "d.y4m")
    assert r.exit_code == 0 and _frames_in_video((tmp_path / "d.y4m").read_bytes()) == 5
    one_line_error(cli_input(b"", "encode", "-", "--model", TINY), "stdin")
    one_line_error(cli_input(b"not a stream", "decode", "-"), "not an imfcodec stream")
    one_line_error(cli_input(stream, "decode", "-", "-o", "-", "--format", "png"), "PNG frames need a folder")


def test_timing_through_pipes(tmp_path, tiny):
    """A stream written to stdout starts before the input's timing is known: it keeps the constant rate and
    says so. A timed stream read from stdin keeps its times in an mkv on stdout; y4m gets the average rate."""
    from helpers import timed_clip, video_times

    ms = Fraction(1, 1000)
    src = timed_clip(tmp_path / "vfr.mkv", [0, 40, 60, 200, 210, 400], ms, 100)
    r = cli_input(src.read_bytes(), "encode", "-", "-o", "-", "--model", TINY, "--refine", 0)
    assert r.exit_code == 0, r.stderr
    assert r.stdout_bytes[8] == 1 and "warning: the input's frames are not at a constant rate" in r.stderr
    stream = tmp_path / "s.imf"
    r = cli("encode", src, "-o", stream, "--model", TINY, "--refine", 0)
    assert r.exit_code == 0 and stream.read_bytes()[8] == 3 and "warning" not in r.output
    r = cli_input(stream.read_bytes(), "info", "-")
    assert r.exit_code == 0 and "6 frames, 0.50 s, per-frame timing (time base 1/1000 s, 12/1 fps on average)" in r.stdout
    r = cli_input(stream.read_bytes(), "decode", "-", "--format", "mkv")
    assert r.exit_code == 0, r.stderr
    (tmp_path / "d.mkv").write_bytes(r.stdout_bytes)
    assert video_times(tmp_path / "d.mkv")[:2] == video_times(src)[:2]
    r = cli_input(stream.read_bytes(), "decode", "-", "-o", "-")
    assert r.exit_code == 0 and r.stdout_bytes.startswith(b"YUV4MPEG2 W64 H64 F12:1")
    assert "note: the stream times each frame, which y4m" in r.stderr and _frames_in_video(r.stdout_bytes) == 6


def cli_input(data: bytes, *args):
    from click.testing import CliRunner

    from imfcodec.cli import main

    return CliRunner().invoke(main, [str(a) for a in args], input=data, catch_exceptions=False)


def _nut_writer(sink, frames: list[np.ndarray], gate: int, gate_open: threading.Event, fmt: str, waited: list):
    """PyAV writes ``frames`` into ``sink`` as nut (rawvideo) or matroska (ffv1); after ``gate`` frames it
    waits for ``gate_open`` (the first decoded frame) before writing the rest."""
    try:
        options = {"cluster_time_limit": "0"} if fmt == "matroska" else {}
        with av.open(sink, "w", format=fmt, options=options) as c:
            s = c.add_stream("rawvideo" if fmt == "nut" else "ffv1", rate=25)
            s.width, s.height, s.pix_fmt = 64, 64, "yuv420p"
            for i, rgb in enumerate(frames):
                if i == gate:
                    waited.append(gate_open.wait(240))
                f = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
                f.pts = i
                for p in s.encode(f):
                    c.mux(p)
            for p in s.encode():
                c.mux(p)
    finally:
        sink.close()


@pytest.mark.parametrize("fmt, gate, names", [("nut", 40, ("-", "-")), ("matroska", 30, ("/dev/stdin", "/dev/stdout"))])
def test_pipes_end_to_end_frame_by_frame(fmt, gate, names, tmp_path):
    """`PyAV | imfcodec encode - -o - | imfcodec decode - -o - | PyAV`: every frame arrives, and the first
    decoded frame comes out while the source is still holding back the rest of its frames, so the whole
    chain streams. (The demuxers read about 20 frames of a nut or matroska pipe to learn its frame rate
    before they hand out the first: hence the gate after 30-40 frames.)"""
    n = gate + 10
    frames = [np.roll(gradient(64, 64), 2 * i, axis=1) for i in range(n)]
    enc = subprocess.Popen(CLI + ["encode", names[0], "-o", names[1], "--model", TINY, "--refine", "0", "--chunk", "1"],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV, bufsize=0)
    dec = subprocess.Popen(CLI + ["decode", names[0], "-o", names[1]], stdin=enc.stdout, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, env=ENV, bufsize=0)
    enc.stdout.close()
    first, waited, decoded = threading.Event(), [], []
    writer = threading.Thread(target=_nut_writer, args=(enc.stdin, frames, gate, first, fmt, waited), daemon=True)
    writer.start()
    try:
        with no_hang("reading the decoder's output"), av.open(dec.stdout, "r") as c:
            for f in c.decode(video=0):
                decoded.append(f.to_ndarray(format="rgb24"))
                first.set()
    finally:
        first.set()
        writer.join(timeout=60)
        enc.stdin = None  # closed by the writer
        _, enc_err = communicate_no_hang(enc)
        _, dec_err = communicate_no_hang(dec)
    assert enc.returncode == 0 and dec.returncode == 0, (enc_err, dec_err)
    assert waited == [True], "no frame came out before the input ended: the pipe does not stream"
    assert len(decoded) == n and decoded[0].shape == (64, 64, 3)
    assert f"stdout: {n} frames" in enc_err.decode() and f"stdout: {n} frames" in dec_err.decode()


def test_terminal_and_closed_pipe(tmp_path, hevc_stream):
    """Binary data is not written to a terminal; a reader that leaves early is one line, status 1."""
    main, secondary = pty.openpty()
    try:
        r = run_no_hang(CLI + ["decode", str(hevc_stream), "-o", "-"], stdout=secondary, stderr=subprocess.PIPE, env=ENV)
    finally:
        os.close(secondary)
        os.close(main)
    assert r.returncode == 1 and r.stderr.decode().strip().startswith("error: refusing to write binary data to a terminal")
    p = subprocess.Popen(CLI + ["decode", str(hevc_stream), "-o", "-"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env=ENV)
    p.stdout.read(100)
    p.stdout.close()
    _, err = communicate_no_hang(p)
    assert p.returncode == 1, err
    assert err.decode().strip() == "error: cannot write stdout: the reader closed the pipe"


def test_interrupted_stream_output(tmp_path):
    """Ctrl-C on an in-place output: it keeps what it got (as with FFmpeg), the message says so, the FIFO
    stays a FIFO."""
    src = cheap_clip(tmp_path / "long.mp4", 3000)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    got = []

    def read():
        with open(fifo, "rb") as f:
            got.append(f.read(9))
            while chunk := f.read(1 << 16):
                got.append(chunk)

    t = threading.Thread(target=read, daemon=True)
    t.start()
    proc = subprocess.Popen(CLI + ["encode", str(src), "-o", str(fifo), "--model", TINY, "--key-codec", "png",
                                   "--refine", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV, text=True)
    deadline = time.monotonic() + 120
    while not got:
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = communicate_no_hang(proc)
    t.join(timeout=60)
    assert proc.returncode == -signal.SIGINT, err
    assert err.strip().splitlines()[-1] == f"interrupted: {fifo} got what was written before", err
    assert got[0] == b"\x8bIMF\r\n\x1a\n\x01" and stat.S_ISFIFO(os.stat(fifo).st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fifo", "long.mp4"]


# ------------------------------------------------------------------------------------------ messages


def test_damaged_key_frame_under_conceal(streams, tmp_path):
    """A stream whose only key frame is damaged is refused (nothing written, not even to stdout), not
    turned into a grey clip; a damaged key frame with a key frame after it is explained range by range."""
    only = tmp_path / "only.imf"
    only.write_bytes(damaged(streams["webp"], 1))  # keyint 0: one key frame
    for out in ("o.mp4", "-"):
        r = cli("decode", only, "-o", tmp_path / out if out != "-" else out, "--conceal")
        one_line_error(r, f"none of its {N_FRAMES} frames could be decoded", "nothing was written")
        assert r.stdout_bytes == b""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["only.imf"]

    data = streams["hevc"]  # keyint 4: K0 T1-2 T3 K4 T5-6 T7
    for record, expected in ((1, "frames 0-3: grey, no frame before them could be decoded; the stream is usable "
                                 "from the key frame at 4"),
                             (4, "frames 4-7: repeat frame 3; the stream is unusable to its end (no later key "
                                 "frame decoded)")):
        bad = tmp_path / f"bad{record}.imf"
        bad.write_bytes(damaged(data, record))
        r = cli("decode", bad, "-o", tmp_path / f"bad{record}/", "--conceal")
        assert r.exit_code == 0, r.output
        assert expected in r.stderr, r.stderr
        assert len(list((tmp_path / f"bad{record}").glob("*.png"))) == N_FRAMES


def test_read_only_and_full_disks_are_one_line(tmp_path, tiny, hevc_stream, sample_clip, monkeypatch):
    """What the system refuses (a read-only file system when the temporary is made, a full disk while
    writing) is one line with status 1 and leaves nothing behind."""
    import imfcodec.api
    import imfcodec.fsutil

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    with monkeypatch.context() as m:
        m.setattr(imfcodec.fsutil.tempfile, "mkstemp", read_only)
        m.setattr(imfcodec.fsutil.tempfile, "mkdtemp", read_only)
        one_line_error(cli("encode", sample_clip, "-o", tmp_path / "o.imf", "--model", TINY, "--refine", 0),
                       f"cannot write {tmp_path / 'o.imf'}: Read-only file system")
        for out in ("o.mp4", "frames/"):
            one_line_error(cli("decode", hevc_stream, "-o", tmp_path / out), "Read-only file system")

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr(imfcodec.api.shutil, "copyfileobj", full)
        one_line_error(cli("encode", sample_clip, "-o", tmp_path / "o.imf", "--model", TINY, "--refine", 0),
                       f"cannot write {tmp_path / 'o.imf'}: No space left on device")
    assert list(tmp_path.iterdir()) == []


def test_file_size_limit_is_one_line(tmp_path, sample_clip):
    """A real write failure in a fresh process: a file-size limit (EFBIG, like a quota) while the stream
    is written; one line, status 1, no temporary left."""
    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (200, 200))

    r = run_no_hang(CLI + ["encode", str(sample_clip), "-o", "o.imf", "--model", TINY, "--refine", "0",
                           "--key-codec", "png"], cwd=tmp_path, env=ENV, capture_output=True, text=True,
                    preexec_fn=limit)
    assert r.returncode == 1, r.stderr
    assert r.stderr.strip() == "error: cannot write o.imf: File too large"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(ROOT_USER, reason="root writes into read-only folders")
def test_read_only_folder(tmp_path, sample_clip, hevc_stream):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        one_line_error(cli("encode", sample_clip, "-o", folder / "o.imf", "--model", TINY), "Permission denied")
        one_line_error(cli("decode", hevc_stream, "-o", folder / "o.mp4"), "Permission denied")
    finally:
        folder.chmod(0o755)
    assert list(folder.iterdir()) == []


def test_png_folder_filled_meanwhile(tmp_path, hevc_stream, monkeypatch):
    """Two decodes into one PNG folder: the one that finishes second finds the folder filled, says so in
    one line and leaves the other's frames alone."""
    from imfcodec.fsutil import AtomicOutput

    commit = AtomicOutput.commit

    def other_run_first(self):
        self.dest.mkdir(exist_ok=True)
        (self.dest / "frame_000000.png").write_bytes(b"the other run's frame")
        return commit(self)

    monkeypatch.setattr(AtomicOutput, "commit", other_run_first)
    out = tmp_path / "frames"
    one_line_error(cli("decode", hevc_stream, "-o", f"{out}/"), f"output folder {out} was filled by another process")
    assert [p.name for p in out.iterdir()] == ["frame_000000.png"] and leftovers(tmp_path) == []


def test_missing_output_folder_is_refused_by_both_commands(tmp_path, hevc_stream, sample_clip):
    """One policy: neither encode nor decode creates folders (a mistyped path is an error, not a tree)."""
    missing = tmp_path / "a" / "b" / "c"
    one_line_error(cli("encode", sample_clip, "-o", missing / "o.imf", "--model", TINY),
                   f"output folder does not exist: {missing}")
    for out in ("o.mp4", "frames/"):
        one_line_error(cli("decode", hevc_stream, "-o", missing / out), "output folder does not exist")
    assert list(tmp_path.iterdir()) == []


def test_progress_lines_when_stderr_is_not_a_terminal(sample_clip, tmp_path, monkeypatch):
    import imfcodec.cli

    monkeypatch.setattr(imfcodec.cli, "PROGRESS_SECONDS", 0.0)
    r = cli("encode", sample_clip, "-o", tmp_path / "s.imf", "--model", TINY, "--refine", 0, "--frames", 5)
    assert r.exit_code == 0, r.output
    lines = [line for line in r.stderr.splitlines() if line.startswith("encode: ")]
    assert [line.split(",")[0] for line in lines] == [f"encode: {i}/5 frames" for i in range(1, 6)], r.stderr
    r = cli("decode", tmp_path / "s.imf", "-o", tmp_path / "d.y4m")
    assert "decode: 5/5 frames" in r.stderr, r.stderr


def test_usage_errors_are_one_line():
    r = cli("bench", "--help")
    assert r.exit_code == 2 and r.stderr.strip() == "error: No such command 'bench'.", r.output
    r = cli("decode", "--format", "gif", "x.imf")
    assert r.exit_code == 2 and r.stderr.strip().startswith("error: Invalid value for '--format'")
    assert "\n" not in r.stderr.strip()


# ------------------------------------------------------------------------------------------ start-up


def test_light_commands_do_not_import_torch(tiny_stream):
    """`imfcodec --help`, `info` and `models` answer without importing torch (the start-up that cost
    2-9 s); timings are in the README, not asserted here."""
    code = (
        "import sys\n"
        "from imfcodec.cli import main\n"
        f"for args in (['--help'], ['info', {str(tiny_stream)!r}], ['models', '--json']):\n"
        "    main(args, standalone_mode=False)\n"
        "print('TORCH' if 'torch' in sys.modules else 'NO TORCH', file=sys.stderr)\n"
    )
    r = run_no_hang([sys.executable, "-c", code], env=ENV, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stderr.strip().splitlines()[-1] == "NO TORCH"
    assert '"imf-tiny"' in r.stdout and "imfcodec stream" in r.stdout


HEAVY_MODULES = ("triton", "torch._dynamo", "torch.utils.flop_counter", "sympy")


@pytest.mark.slow
def test_codec_path_never_imports_compiler_modules(tmp_path, sample_clip):
    """encode (with the token search), decode and info, token and hybrid mode, from weights files (so the
    loader's meta-device shape check runs): none imports triton, torch._dynamo, torch.utils.flop_counter
    or sympy, which took 230 MB of a decoder's 880 MB (issue 12, item 4; README, Memory)."""
    from imfcodec.zoo import load_model, save_weights

    tok, enh = tmp_path / "tok.safetensors", tmp_path / "enh.safetensors"
    save_weights(load_model(TINY).model, tok)
    save_weights(load_model("random:enh-tiny").model, enh)
    runs = [["encode", str(sample_clip), "-o", "t.imf", "--model", str(tok), "--refine", "2", "--frames", "6"],
            ["decode", "t.imf", "-o", "t.y4m", "--model", str(tok)], ["info", "t.imf"],
            ["encode", str(sample_clip), "-o", "h.imf", "--hybrid", "--enhancer", str(enh), "--frames", "6"],
            ["decode", "h.imf", "-o", "h.y4m", "--model", str(enh), "--device", "auto"]]
    code = (
        "import json, sys\n"
        "from imfcodec.cli import main\n"
        f"for args in {runs!r}:\n"
        "    assert main(args, standalone_mode=False) in (0, None), args\n"
        f"print(json.dumps(sorted(m for m in {HEAVY_MODULES!r} if m in sys.modules)), file=sys.stderr)\n"
    )
    r = run_no_hang([sys.executable, "-c", code], env=ENV, capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stderr.strip().splitlines()[-1]) == []
    assert (tmp_path / "t.y4m").stat().st_size and (tmp_path / "h.y4m").stat().st_size


@pytest.mark.parametrize("user, expected", [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_omp_wait_policy_for_every_entry_point(user, expected):
    """`import imfcodec` sets OMP_WAIT_POLICY=PASSIVE before torch is loaded; the user's own value wins."""
    env = {k: v for k, v in ENV.items() if k != "OMP_WAIT_POLICY"}
    if user:
        env["OMP_WAIT_POLICY"] = user
    code = "import os, sys, imfcodec; assert 'torch' not in sys.modules; print(os.environ['OMP_WAIT_POLICY'])"
    r = run_no_hang([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == expected, r.stderr


def test_model_table_is_fresh_and_right(monkeypatch, tmp_path):
    """`imfcodec models` prints the shipped table while its key matches the sources it was measured
    from; it measures again when they changed. Stale after a change to models/, keyframe/ or zoo.py:
    run `python -m imfcodec.model_table`."""
    from imfcodec import model_table
    from imfcodec.models import count_parameters, create_model, decode_gflops

    shipped = json.loads(model_table.TABLE.read_text())
    assert shipped["key"] == model_table.source_key(), \
        "imfcodec/model_table.json is stale: run `python -m imfcodec.model_table` and commit it"
    tiny = next(r for r in shipped["models"] if r["name"] == "imf-tiny")
    m = create_model("imf-tiny")
    assert tiny["params"] == count_parameters(m)
    assert tiny["decode_gflops"] == pytest.approx(decode_gflops(m), rel=1e-6)

    stale = tmp_path / "table.json"
    stale.write_text(json.dumps({**shipped, "key": "0" * 64}))
    monkeypatch.setattr(model_table, "TABLE", stale)
    monkeypatch.setattr(model_table, "measure", lambda: {"key": "new", "models": [], "default": "", "key_codecs": ["x"]})
    assert model_table.rows() == ([], ["x"])
