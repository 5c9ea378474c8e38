"""The canonical form and the hash chain: equal values hash alike in every spelling."""

from __future__ import annotations

import ipaddress
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from authz_service.audit.chain import (
    GENESIS,
    Chain,
    canonical_json,
    canonical_values,
    from_micros,
    micros,
    record_hash,
)
from authz_service.audit.columns import hashed_columns


def _decision(**fields: Any) -> dict[str, Any]:
    row: dict[str, Any] = {name: None for name, _ in hashed_columns("decision")}
    row.update(request_id="req-1", gateway_type="PLANT", decision="allow", roles=["a"],
               shadow_denials=[], decided_at=1_700_000_000_123_456)  # fmt: skip
    row.update(fields)
    return row


def test_timestamps_hash_alike_as_micros_datetimes_and_text() -> None:
    stamp = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    spellings = [micros(stamp), stamp, stamp.astimezone(timezone(timedelta(hours=5))),
                 stamp.isoformat(), stamp.replace(tzinfo=None)]  # fmt: skip
    hashes = {record_hash("decision", _decision(decided_at=s), "j", 1, GENESIS) for s in spellings}
    assert len(hashes) == 1
    assert from_micros(micros(stamp)) == stamp


def test_addresses_hash_alike_however_spelled() -> None:
    spellings = [
        "2001:db8::1",
        "2001:0db8:0000:0000:0000:0000:0000:0001",
        ipaddress.ip_address("2001:db8::1"),
        ipaddress.ip_interface("2001:db8::1/128"),
    ]
    assert len({canonical_values("decision", _decision(client_ip=s))[7] for s in spellings}) == 1
    v4 = canonical_values("decision", _decision(client_ip="10.0.0.1"))[7]
    mapped = canonical_values("decision", _decision(client_ip="::ffff:10.0.0.1"))[7]
    assert v4 != mapped, "an IPv4-mapped IPv6 address is another inet value"


@pytest.mark.parametrize(
    ("written", "returned"),
    [
        (100.0, 100),  # jsonb keeps numeric: 100.0 and 100 are one number
        (1e2, 100.0),
        (1e300, 10**300),  # jsonb prints it in full; json.loads makes it an int
        (1.5e20, 150000000000000000000),
        (0.1, 0.1),
        (-0.0, 0),  # numeric has no negative zero
        (1.2345678901234567e-5, 1.2345678901234567e-05),
    ],
)
def test_json_numbers_hash_as_jsonb_gives_them_back(written: float, returned: Any) -> None:
    assert canonical_json({"n": written}) == canonical_json({"n": returned})


def test_json_strings_and_numbers_stay_apart() -> None:
    assert canonical_json("1") != canonical_json(1)
    assert canonical_json({"a": "n:1"}) != canonical_json({"a": 1})
    assert canonical_json(True) != canonical_json(1)
    assert canonical_json(None) != canonical_json("null")


def test_json_key_order_does_not_matter() -> None:
    one = record_hash("decision", _decision(opa_decisions={"b": 1, "a": [1, {"y": 2, "x": 3}]}),
                      "j", 1, GENESIS)  # fmt: skip
    two = record_hash("decision", _decision(opa_decisions={"a": [1, {"x": 3, "y": 2}], "b": 1}),
                      "j", 1, GENESIS)  # fmt: skip
    assert one == two


@given(
    st.recursive(
        st.none()
        | st.booleans()
        | st.integers(-(2**63), 2**63 - 1)
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
        max_leaves=12,
    )
)
def test_json_survives_a_text_round_trip(value: Any) -> None:
    """What the stored jsonb text parses back to hashes as what was written."""
    assert canonical_json(json.loads(json.dumps(value))) == canonical_json(value)


def test_every_hashed_column_changes_the_hash() -> None:
    base = _decision()
    digest = record_hash("decision", base, "j", 1, GENESIS)
    changes = {"text": "x", "int": 7, "float": 1.5, "bool": True, "ts": 5, "inet": "10.1.1.1",
               "json": {"k": 1}, "text[]": ["z"]}  # fmt: skip
    for name, kind in hashed_columns("decision"):
        changed = dict(base, **{name: changes[kind]})
        assert record_hash("decision", changed, "j", 1, GENESIS) != digest, name
    assert record_hash("decision", base, "j", 2, GENESIS) != digest
    assert record_hash("decision", base, "k", 1, GENESIS) != digest
    assert record_hash("completion", base, "j", 1, GENESIS) != digest


def test_a_chain_links_each_record_to_the_one_before() -> None:
    chain = Chain("decision", "journal-a")
    first, second = _decision(request_id="r1"), _decision(request_id="r2")
    chain.link(first)
    chain.link(second)
    assert (first["journal_id"], first["journal_seq"], first["journal_prev_hash"]) == (
        "journal-a", 1, GENESIS,
    )  # fmt: skip
    assert (second["journal_seq"], second["journal_prev_hash"]) == (2, first["journal_hash"])
    assert second["journal_hash"] == record_hash("decision", second, "journal-a", 2,
                                                 first["journal_hash"])  # fmt: skip
    assert chain.last_hash == second["journal_hash"]
