"""Journal segment format: a magic header, then frames of length, CRC32 and an orjson payload.

A reader stops at a frame it cannot trust. An incomplete frame at the end is either still being
written (the writer is alive and the segment is its last) or a torn tail (the writer died
mid-write); the caller knows which. A frame whose checksum fails is skipped when its length is
plausible; a header that makes no sense (length 0, or past the limit) ends what can be read of
the segment, because nothing after it can be found again reliably.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field
from typing import Any

import orjson

from authz_service.audit.columns import CHAIN_COLUMNS, DECISION, KEY, SHARED

SEGMENT_MAGIC = b"GWAUDJ1\n"
SEGMENT_SUFFIX = ".journal"
FRAME_HEADER = struct.Struct("<II")  # payload length, CRC32 of the payload
MAX_PAYLOAD = 1 << 20  # a decision row is a few hundred bytes; 1 MiB means a broken header


def segment_name(number: int) -> str:
    return f"{number:010d}{SEGMENT_SUFFIX}"


def segment_number(name: str) -> int | None:
    stem = name.removesuffix(SEGMENT_SUFFIX)
    if stem == name or not stem.isdigit():
        return None
    return int(stem)


def encode_frame(payload: bytes) -> bytes:
    return FRAME_HEADER.pack(len(payload), zlib.crc32(payload)) + payload


# A record is a JSON array: the layout's version, then the values in this order. An array
# is several times cheaper to decode than an object (no key strings per record).
RECORD_LAYOUT = 1
RECORD_COLUMNS = (
    *(name for name, _ in KEY + SHARED + DECISION), *CHAIN_COLUMNS["decision"],
)  # fmt: skip


class UnreadableRecordError(ValueError):
    """A frame whose payload is not a record of a known layout."""


def encode_record(row: dict[str, Any]) -> bytes:
    get = row.get
    return orjson.dumps([RECORD_LAYOUT, *map(get, RECORD_COLUMNS)])


def decode_record(payload: bytes) -> dict[str, Any]:
    try:
        values = orjson.loads(payload)
    except orjson.JSONDecodeError as error:
        raise UnreadableRecordError(f"not JSON: {error}") from error
    if type(values) is not list or not values or values[0] != RECORD_LAYOUT:
        raise UnreadableRecordError("not a journal record of a known layout")
    if len(values) != len(RECORD_COLUMNS) + 1:
        raise UnreadableRecordError(f"{len(values) - 1} values for {len(RECORD_COLUMNS)}")
    return dict(zip(RECORD_COLUMNS, values[1:], strict=True))


@dataclass(frozen=True, slots=True)
class Damage:
    """A part of a segment that could not be read: where, how many bytes, and why."""

    offset: int
    length: int
    reason: str


@dataclass(slots=True)
class Frames:
    """The complete, checked frames from a start offset, and where reading stopped."""

    payloads: list[tuple[int, bytes]] = field(default_factory=list)  # (end offset, payload)
    end: int = 0  # offset after the last frame read or skipped
    damage: list[Damage] = field(default_factory=list)
    incomplete: int = 0  # bytes of a frame cut short at `end` (in progress, or torn)
    unreadable: bool = False  # a header that cannot be trusted: nothing after `end` is usable


def read_frames(data: bytes, start: int = 0, limit: int | None = None) -> Frames:
    """Frames of a segment read from file offset `start` (`data` holds the bytes from there
    on), at most `limit` of them; every offset reported is the file's."""
    result = Frames(end=start)
    at, size = 0, len(data)
    if start == 0:
        if size < len(SEGMENT_MAGIC):
            result.incomplete = size
            return result
        if data[: len(SEGMENT_MAGIC)] != SEGMENT_MAGIC:
            result.damage.append(Damage(0, size, "not a journal segment (bad magic)"))
            result.unreadable = True
            return result
        at = len(SEGMENT_MAGIC)
        result.end = at
    while limit is None or len(result.payloads) < limit:
        if at == size:
            break
        if size - at < FRAME_HEADER.size:
            result.incomplete = size - at
            break
        length, checksum = FRAME_HEADER.unpack_from(data, at)
        if length == 0 or length > MAX_PAYLOAD:
            reason = f"bad frame length {length}"
            result.damage.append(Damage(start + at, size - at, reason))
            result.unreadable = True
            break
        stop = at + FRAME_HEADER.size + length
        if stop > size:
            result.incomplete = size - at
            break
        payload = data[at + FRAME_HEADER.size : stop]
        if zlib.crc32(payload) != checksum:
            result.damage.append(Damage(start + at, stop - at, "checksum mismatch"))
        else:
            result.payloads.append((start + stop, payload))
        at = stop
        result.end = start + at
    return result
