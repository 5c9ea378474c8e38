"""Journal segment framing: round trips, torn tails, corrupt frames, foreign files."""

from __future__ import annotations

import struct

import pytest

from authz_service.audit.framing import (
    FRAME_HEADER,
    RECORD_COLUMNS,
    SEGMENT_MAGIC,
    UnreadableRecordError,
    decode_record,
    encode_frame,
    encode_record,
    read_frames,
    segment_name,
    segment_number,
)


def _segment(*payloads: bytes) -> bytes:
    return SEGMENT_MAGIC + b"".join(encode_frame(p) for p in payloads)


def test_frames_round_trip_with_their_end_offsets() -> None:
    data = _segment(b'{"a":1}', b'{"b":2}')
    frames = read_frames(data, 0)
    assert [p for _, p in frames.payloads] == [b'{"a":1}', b'{"b":2}']
    assert frames.payloads[-1][0] == frames.end == len(data)
    assert (frames.incomplete, frames.damage, frames.unreadable) == (0, [], False)
    first_end = frames.payloads[0][0]
    again = read_frames(data[first_end:], first_end)  # resume after the first frame
    assert [p for _, p in again.payloads] == [b'{"b":2}']
    assert again.end == len(data)


def test_a_frame_cut_short_is_reported_not_read() -> None:
    """A torn tail (or one being written): reading stops before it, saying how much is there."""
    whole = _segment(b"first", b"second")
    for cut in range(1, len(encode_frame(b"second"))):
        frames = read_frames(whole[:-cut], 0)
        assert [p for _, p in frames.payloads] == [b"first"]
        assert frames.incomplete == len(encode_frame(b"second")) - cut
        assert not frames.damage


def test_a_frame_failing_its_checksum_is_skipped_and_the_rest_is_read() -> None:
    data = bytearray(_segment(b"good-1", b"flipped", b"good-2"))
    data[len(SEGMENT_MAGIC) + len(encode_frame(b"good-1")) + FRAME_HEADER.size] ^= 0xFF
    frames = read_frames(bytes(data), 0)
    assert [p for _, p in frames.payloads] == [b"good-1", b"good-2"]
    (damage,) = frames.damage
    assert damage.reason == "checksum mismatch"
    assert damage.offset == len(SEGMENT_MAGIC) + len(encode_frame(b"good-1"))


def test_zeros_after_a_crash_end_the_readable_part() -> None:
    """Blocks allocated but never written read as zeros: length 0 is never a real frame."""
    data = _segment(b"kept") + b"\0" * 64
    frames = read_frames(data, 0)
    assert [p for _, p in frames.payloads] == [b"kept"]
    assert frames.unreadable
    assert frames.damage[0].reason == "bad frame length 0"
    assert frames.damage[0].length == 64


def test_an_impossible_length_ends_the_readable_part() -> None:
    data = _segment(b"kept") + struct.pack("<II", 1 << 30, 0) + b"x" * 10
    frames = read_frames(data, 0)
    assert frames.unreadable
    assert [p for _, p in frames.payloads] == [b"kept"]


def test_a_file_that_is_not_a_segment_is_unreadable() -> None:
    frames = read_frames(b"hello world, no magic here", 0)
    assert frames.unreadable
    assert "magic" in frames.damage[0].reason
    assert read_frames(SEGMENT_MAGIC[:3], 0).incomplete == 3  # still being created


def test_limit_reads_that_many_frames() -> None:
    frames = read_frames(_segment(b"1", b"2", b"3"), 0, limit=2)
    assert [p for _, p in frames.payloads] == [b"1", b"2"]


def test_segment_names_sort_and_parse() -> None:
    assert segment_name(7) == "0000000007.journal"
    assert segment_number(segment_name(12)) == 12
    assert segment_number("writer.lock") is None
    assert segment_number("x.journal") is None


def test_records_are_positional_arrays_that_decode_back() -> None:
    row = {name: None for name in RECORD_COLUMNS} | {"request_id": "r1", "roles": ["a"],
                                                     "opa_decisions": {"k": 1}}  # fmt: skip
    payload = encode_record({**row, "not_a_column": "dropped"})
    assert payload.startswith(b"[1,")
    assert decode_record(payload) == row


@pytest.mark.parametrize(
    "payload", [b"[2, 1, 2]", b'{"request_id": "r1"}', b"[1, 2, 3]", b"[1, ", b"[]"]
)
def test_a_record_of_an_unknown_layout_is_refused(payload: bytes) -> None:
    with pytest.raises(UnreadableRecordError):
        decode_record(payload)
