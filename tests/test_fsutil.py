"""imfcodec.fsutil: atomic outputs get the mode of a plainly created file, and an error leaves
neither a temporary nor a changed destination behind."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from imfcodec.fsutil import AtomicOutput, scratch_file


@pytest.fixture(params=[0o022, 0o077], ids=["umask022", "umask077"])
def umask(request) -> Iterator[int]:
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_file_mode_follows_umask(tmp_path: Path, umask: int) -> None:
    plain = tmp_path / "plain.bin"
    plain.write_bytes(b"x")
    with AtomicOutput(tmp_path / "out.bin") as tmp:
        assert mode(tmp) == 0o600  # private while being written
        tmp.write_bytes(b"data")
    assert (tmp_path / "out.bin").read_bytes() == b"data"
    assert mode(tmp_path / "out.bin") == mode(plain) == 0o666 & ~umask
    assert entries(tmp_path) == ["out.bin", "plain.bin"]


def test_folder_mode_follows_umask(tmp_path: Path, umask: int) -> None:
    (tmp_path / "plain").mkdir()
    with AtomicOutput(tmp_path / "frames", directory=True) as tmp:
        (tmp / "frame_000000.png").write_bytes(b"png")
    assert mode(tmp_path / "frames") == mode(tmp_path / "plain") == 0o777 & ~umask
    assert entries(tmp_path / "frames") == ["frame_000000.png"]
    assert entries(tmp_path) == ["frames", "plain"]


def test_parent_folders_are_made(tmp_path: Path) -> None:
    with AtomicOutput(tmp_path / "a" / "b" / "out.bin") as tmp:
        tmp.write_bytes(b"1")
    assert (tmp_path / "a" / "b" / "out.bin").read_bytes() == b"1"


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
@pytest.mark.parametrize("existing", [False, True])
def test_error_in_block_removes_temp_and_keeps_destination(tmp_path: Path, error: type, existing: bool) -> None:
    out = tmp_path / "out.bin"
    if existing:
        out.write_bytes(b"old")
    with pytest.raises(error):
        with AtomicOutput(out) as tmp:
            tmp.write_bytes(b"half")
            raise error("stop")
    assert entries(tmp_path) == (["out.bin"] if existing else [])
    if existing:
        assert out.read_bytes() == b"old"


@pytest.mark.parametrize("existing", [False, True])
def test_error_in_folder_block_removes_temp_and_keeps_destination(tmp_path: Path, existing: bool) -> None:
    out = tmp_path / "frames"
    if existing:
        out.mkdir()  # an empty folder may be replaced, but only on success
    with pytest.raises(RuntimeError):
        with AtomicOutput(out, directory=True) as tmp:
            (tmp / "frame_000000.png").write_bytes(b"png")
            raise RuntimeError("stop")
    assert entries(tmp_path) == (["frames"] if existing else [])
    if existing:
        assert entries(out) == []


def test_failed_commit_removes_temp_and_keeps_destination(tmp_path: Path) -> None:
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("keep")
    with pytest.raises(OSError):  # a file cannot replace a folder
        with AtomicOutput(busy) as tmp:
            tmp.write_bytes(b"data")
    with pytest.raises(OSError):  # a folder replaces only an empty folder
        with AtomicOutput(busy, directory=True) as tmp:
            (tmp / "frame_000000.png").write_bytes(b"png")
    assert entries(tmp_path) == ["busy"] and entries(busy) == ["keep.txt"]


def test_commit_and_discard_by_hand(tmp_path: Path) -> None:
    """The long-lived form (io.VideoWriter): discard is idempotent and a no-op after commit."""
    kept = AtomicOutput(tmp_path / "kept.bin")
    kept.tmp.write_bytes(b"1")
    assert kept.commit() == tmp_path / "kept.bin"
    kept.discard()
    with pytest.raises(RuntimeError):
        kept.commit()
    dropped = AtomicOutput(tmp_path / "dropped", directory=True)
    (dropped.tmp / "x").write_bytes(b"1")
    dropped.discard()
    dropped.discard()
    assert entries(tmp_path) == ["kept.bin"]


def test_scratch_file_is_always_removed(tmp_path: Path) -> None:
    beside = tmp_path / ".out.imf.partial"
    with scratch_file(beside) as spool:
        assert spool.parent == tmp_path and spool.name.startswith(beside.name)
        spool.write_bytes(b"spool")
    assert entries(tmp_path) == []
    with pytest.raises(RuntimeError):
        with scratch_file(beside) as spool:
            spool.write_bytes(b"spool")
            raise RuntimeError("stop")
    assert entries(tmp_path) == []


@pytest.mark.parametrize("name", ["clip.y4m", "frames/"])
def test_decoded_video_mode(tmp_path: Path, name: str) -> None:
    """What the issue was about: decoded videos (files and PNG folders) readable like any other file."""
    from imfcodec.io import VideoWriter

    old = os.umask(0o022)
    try:
        with VideoWriter(str(tmp_path / name), 25, 16, 16) as w:
            w.write(np.zeros((16, 16, 3), np.uint8))
    finally:
        os.umask(old)
    out = tmp_path / name.rstrip("/")
    assert mode(out) == (0o755 if out.is_dir() else 0o644)
    assert entries(tmp_path) == [out.name]


def test_exported_weights_mode(tmp_path: Path) -> None:
    from imfcodec.models import create_model
    from imfcodec.zoo import save_weights

    old = os.umask(0o022)
    try:
        save_weights(create_model("imf-tiny"), tmp_path / "m.safetensors")
    finally:
        os.umask(old)
    assert mode(tmp_path / "m.safetensors") == 0o644
    assert entries(tmp_path) == ["m.safetensors"]
