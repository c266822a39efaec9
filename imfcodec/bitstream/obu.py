"""Where one AV1 temporal unit ends in a run of them: the split that lets a version 5 stream store AV1 base
units without a size each (FORMAT.md §3.7).

Why this is not a demuxer: AV1's low-overhead bitstream format already gives every OBU its size
(``obu_has_size_field``), and the base layer's encoder puts exactly one ``OBU_FRAME`` in each temporal unit
(after a sequence header at a key frame). So a run of units splits after each ``OBU_FRAME``; nothing inside an
OBU is read, and the units go whole to the AV1 decoder (dav1d), which validates them. What is checked here is
only what the split relies on, with every size compared with the bytes there are.
"""

from __future__ import annotations

OBU_SEQUENCE_HEADER = 1
OBU_TEMPORAL_DELIMITER = 2
OBU_METADATA = 5
OBU_FRAME = 6
OBU_PADDING = 15
#: the OBU types a unit may hold before its frame (AV1 spec §5.3.1); a temporal delimiter is never stored
BEFORE_FRAME = (OBU_SEQUENCE_HEADER, OBU_METADATA, OBU_PADDING)


def _leb128(data: bytes, i: int) -> tuple[int, int] | None:
    """(value, next index) of the leb128 at ``data[i]`` (AV1 §4.10.5: at most 8 bytes), or None if it runs
    past the data or is longer."""
    value = 0
    for k in range(8):
        if i + k >= len(data):
            return None
        b = data[i + k]
        value |= (b & 0x7F) << (7 * k)
        if not b & 0x80:
            return value, i + k + 1
    return None


def _obus(data: bytes):
    """(type, end index) of each OBU of ``data`` in turn; raises ValueError with the reason when an OBU header
    is malformed (forbidden bit set, no size field) or a size runs past the data."""
    i = 0
    while i < len(data):
        head = data[i]
        if head & 0x80:
            raise ValueError(f"OBU at byte {i}: forbidden bit set")
        if not head & 0x02:
            raise ValueError(f"OBU at byte {i} has no size field")
        start = i + 1 + ((head >> 2) & 1)  # an extension byte follows when obu_extension_flag is set
        size = _leb128(data, start)
        if size is None:
            raise ValueError(f"OBU at byte {i}: its size runs past the data")
        end = size[1] + size[0]
        if end > len(data):
            raise ValueError(f"OBU at byte {i} declares {size[0]} bytes, only {len(data) - size[1]} remain")
        yield (head >> 3) & 0x0F, end
        i = end


def split_units(data: bytes, count: int) -> list[bytes]:
    """``data`` cut into ``count`` temporal units, each ending with its ``OBU_FRAME``; ValueError (with the
    reason) when the data is not exactly that: another OBU type, a unit without a frame, too many or too few."""
    units: list[bytes] = []
    start = 0
    for obu_type, end in _obus(data):
        if len(units) == count:
            raise ValueError(f"more than {count} frames")
        if obu_type == OBU_FRAME:
            units.append(data[start:end])
            start = end
        elif obu_type not in BEFORE_FRAME:
            raise ValueError(f"an OBU of type {obu_type} (a unit holds a sequence header, metadata or padding, "
                             f"then one OBU_FRAME)")
    if start != len(data) or len(units) != count:
        raise ValueError(f"{len(units)} complete frames where {count} were expected")
    return units


def unit_problem(unit: bytes) -> str | None:
    """Why ``unit`` (one temporal unit without its temporal delimiter) cannot be stored without its size, or
    None: the writer's check that ``split_units`` gives it back."""
    try:
        return None if split_units(bytes(unit), 1) == [bytes(unit)] else "it does not split back to itself"
    except ValueError as e:
        return str(e)
