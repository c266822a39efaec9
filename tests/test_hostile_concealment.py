"""Hostile input, concealment (issue #5, theme 2): the resynchronising reader behind ``--conceal`` and
the decoder that repeats the last good frame over damage, in the token and the default (hybrid) mode."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest

from helpers import N_FRAMES, cli, damaged, decode_all, join, leftovers, no_hang, one_line_error, split
from imfcodec.api import iter_decoded
from imfcodec.bitstream import MAGIC, Damage, ResyncReader, read_stream
from imfcodec.errors import CorruptStreamError, InputError

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _resync(data: bytes) -> tuple[list, ResyncReader]:
    r = ResyncReader(io.BytesIO(data))
    return list(r), r


# per mode: the stream the tests damage, and its record layout (keyint 4: key packets at frames 0 and 4).
# token: K0 T1-2 T3 K4 T5-6 T7 (HOSTILE_BASES["hevc"]); hybrid: K0 B0 B1 B2 B3 K4 B4 .. B7 (HYBRID)
LAYOUT = {"token": "HKTTKTTE", "hybrid": "HKBBBBKBBBBE"}
FIRST_NON_KEY = {"token": 2, "hybrid": 3}  # the record holding frame 1: T1-2, B1
RESYNC = {"token": "png", "hybrid": "hevc"}  # the streams the resync tests damage


def test_resync_reader(mode):
    """The resynchronising read behind --conceal: exact on intact streams, skips exactly the damage."""
    data = mode.streams[RESYNC[mode.name]]
    _, packets = read_stream(data)
    items, r = _resync(data)
    assert [p for _, p in items] == packets and r.end == packets[-1] and r.trailing == 0

    recs = split(data)
    at, size = len(join(recs[:3], version=mode.version)), len(join(recs[3:4])) - len(MAGIC) - 1
    items, r = _resync(damaged(data, 3))  # one record with a stale CRC: skipped, by exactly its bytes
    damage = [i for i in items if isinstance(i, Damage)]
    assert len(damage) == 1 and (damage[0].offset, damage[0].length) == (at, size)
    assert "CRC mismatch" in damage[0].reason
    assert [p for i in items if not isinstance(i, Damage) for p in i[1:]] == packets[:2] + packets[3:]

    items, r = _resync(data[:at] + b"K\x05garbageT" + data[at:])  # garbage between records
    damage = [i for i in items if isinstance(i, Damage)]
    assert [(d.offset, d.length) for d in damage] == [(at, 10)] and r.end is not None

    items, r = _resync(data[:at + 5])  # truncated: no END
    assert r.end is None and isinstance(items[-1], Damage) and items[-1].offset == at

    items, r = _resync(data + b"xyz")
    assert r.end is not None and r.trailing == 3

    with pytest.raises(CorruptStreamError):  # the header must be intact
        ResyncReader(io.BytesIO(damaged(data, 0)))
    rfd, wfd = os.pipe()  # a pipe cannot be rescanned
    with os.fdopen(wfd, "wb") as f:
        f.write(data)
    with os.fdopen(rfd, "rb") as f, pytest.raises(InputError, match="seekable"):
        ResyncReader(f)


class _CountingFile(io.BytesIO):
    """Counts the bytes read from it: the work a scan does."""

    read_bytes = 0

    def read(self, n=-1):
        data = super().read(n)
        self.read_bytes += len(data)
        return data


def test_resync_work_is_bounded(streams):
    """A file full of plausible record starts (each claiming 256 KiB) costs bounded CRC work: what
    ResyncReader reads stays within its budget of 16 x file size + 64 MiB (plus one record, and the
    scan windows), not the 64 GiB the candidates claim."""
    header = join(split(streams["png"])[:1])
    hostile = header + b"K\x80\x80\x10" * (1 << 18)  # 1 MiB of candidates
    f = _CountingFile(hostile)
    with no_hang("resynchronising over 1 MiB of record candidates"):
        r = ResyncReader(f)
        items = list(r)
    assert r.end is None and len(items) == 1 and items[0].length == len(hostile) - len(header)
    budget = 16 * len(hostile) + (64 << 20)
    assert f.read_bytes <= budget + (256 << 10) + 2 * len(hostile), f.read_bytes


def test_concealment_repeats_the_last_good_frame_until_the_next_key(mode):
    data, tiny, v = mode.stream, mode.model, mode.version
    recs = split(data)
    assert bytes(r[0] for r in recs).decode() == LAYOUT[mode.name]
    clean = [f for _, fs in iter_decoded(data, model=tiny) for f in fs]
    key4 = LAYOUT[mode.name].index("K", 2)

    # damaged packet of frame 1: 1-3 concealed (3 chains from the lost tokens or base unit), back at key 4
    bad = damaged(data, FIRST_NON_KEY[mode.name])
    assert decode_all(bad, tiny)[0] == "refused"
    frames, dec = [], None
    for dec, fs in iter_decoded(bad, model=tiny, conceal=True):
        frames += fs
    assert len(frames) == N_FRAMES and dec.report.concealed == [1, 2, 3]
    record = "base" if mode.hybrid else "token"
    assert f"CRC mismatch in the {record} record" in dec.report.damage[0]
    for i in (1, 2, 3):
        assert np.array_equal(frames[i], clean[0])  # the last good frame, repeated
    for i in (0, 4, 5, 6, 7):
        assert np.array_equal(frames[i], clean[i])

    # damaged key packet: its frame and the packets that chain from it, up to the end
    outcome, n, report = decode_all(damaged(data, key4), tiny, conceal=True)
    assert (outcome, n, report.concealed) == ("ok", N_FRAMES, [4, 5, 6, 7])

    # damaged first key packet: nothing to repeat yet (mid-grey) until key 4
    frames = [f for _, fs in iter_decoded(damaged(data, 1), model=tiny, conceal=True) for f in fs]
    assert len(frames) == N_FRAMES and (frames[0] == 128).all() and np.array_equal(frames[4], clean[4])

    # damaged header: nothing can be decoded, even with concealment
    assert decode_all(damaged(data, 0), tiny, conceal=True)[0] == "refused"

    # truncated inside the last packet: what arrived is decoded, the truncation reported
    cut = data[:len(join(recs[:-2], version=v)) + 5]
    outcome, n, report = decode_all(cut, tiny, conceal=True)
    assert (outcome, n, report.truncated) == ("ok", 7, True)  # all but the last frame arrived


def test_concealment_resyncs_over_inserted_and_deleted_bytes(mode):
    data = mode.streams[RESYNC[mode.name]]
    recs = split(data)
    at = len(join(recs[:3], version=mode.version)) + 2
    for bad in (data[:at] + b"\x00" * 37 + data[at:], data[:at] + data[at + 11:]):
        outcome, n, report = decode_all(bad, mode.model, conceal=True)
        assert outcome == "ok" and n == N_FRAMES and report.concealed, report


def test_cli_conceal(mode, tmp_path):
    bad = tmp_path / "bad.imf"
    bad.write_bytes(damaged(mode.stream, FIRST_NON_KEY[mode.name]))
    out = tmp_path / "frames/"
    record = "base" if mode.hybrid else "token"
    one_line_error(cli("decode", bad, "-o", out), f"CRC mismatch in the {record} record", "--conceal")
    assert not (tmp_path / "frames").exists() and leftovers(tmp_path) == []
    r = cli("decode", bad, "-o", out, "--conceal")
    assert r.exit_code == 0, r.output
    assert "8 frames" in r.stderr and "3 frame(s) concealed: 1-3" in r.stderr and "Traceback" not in r.output
    assert len(list((tmp_path / "frames").glob("*.png"))) == N_FRAMES
