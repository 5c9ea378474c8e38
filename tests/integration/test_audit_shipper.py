"""The shipper on real PostgreSQL: one row per request per hop, halves joined, exactly once."""

from __future__ import annotations

from ipaddress import ip_address
from pathlib import Path
from typing import Any

import psycopg
import pytest

from authz_service.audit.chain import Chain
from authz_service.audit.envoy_log import completion_of
from authz_service.audit.framing import (
    SEGMENT_MAGIC,
    decode_record,
    encode_frame,
    encode_record,
    segment_name,
)
from authz_service.shipper import metrics
from authz_service.shipper.join import Pair
from authz_service.shipper.model import Item, Position, SourceKey
from authz_service.shipper.store import Store
from devstack import PostgresService
from devstack.provision import Provisioned
from tests.integration._audit_db import provisioned_database, superuser_dsn
from tests.integration._shipping import (
    decision,
    envoy_line,
    findings,
    journal,
    manifest,
    rows,
    ship_all,
    shipper,
)


@pytest.fixture
def database(postgres: PostgresService) -> Provisioned:
    return provisioned_database(postgres, "ship")


def _log(tmp_path: Path, *lines: bytes) -> tuple[Path, Path]:
    path = tmp_path / "logs" / "plant.log"
    path.parent.mkdir(exist_ok=True)
    with path.open("ab") as log:
        log.write(b"".join(lines))
    return path, manifest(tmp_path, {"plant": path})


async def test_a_decision_and_its_completion_become_one_row(
    tmp_path: Path, database: Provisioned
) -> None:
    opened = await journal(tmp_path / "j", [decision("r1", user_id="alice")])
    _, listing = _log(tmp_path, envoy_line("r1", status_code=201))
    merged = metrics.ROWS.labels(half="merged")._value.get()
    await ship_all(shipper(database.shipper_dsn, tmp_path / "j", listing, hold_seconds=30))
    await opened.close()
    (row,) = rows(database.reader_dsn)
    assert (row["request_id"], row["decision"], row["user_id"]) == ("r1", "allow", "alice")
    assert (row["status_code"], row["authz_status_code"], row["total_duration_ms"]) == (
        201,
        200,
        1.5,
    )
    assert row["journal_seq"] == row["access_log_seq"] == 1
    assert (row["decision_differs"], row["completion_differs"]) == (None, None)
    assert metrics.ROWS.labels(half="merged")._value.get() == merged + 1, "one INSERT, no UPDATE"
    assert await findings(database.reader_dsn) == []


async def test_a_completion_first_is_completed_by_its_decision_later(
    tmp_path: Path, database: Provisioned
) -> None:
    """Envoy's line alone (its decision on another host, say); the decision fills the row and
    keeps its own view of the shared facts aside, so both halves still verify."""
    _, listing = _log(tmp_path, envoy_line("r2", user_agent="envoy-saw/1", status_code=403))
    await ship_all(shipper(database.shipper_dsn, tmp_path / "j", listing))
    (alone,) = rows(database.reader_dsn)
    assert (alone["decision"], alone["user_agent"], alone["roles"]) == (None, "envoy-saw/1", None)
    late = decision("r2", decision="deny", status_code=403, user_agent="authz-saw/1", roles=["a"])
    opened = await journal(tmp_path / "j", [late])
    await ship_all(shipper(database.shipper_dsn, tmp_path / "j", listing))
    await opened.close()
    (row,) = rows(database.reader_dsn)
    assert (row["decision"], row["status_code"], row["roles"]) == ("deny", 403, ["a"])
    assert row["user_agent"] == "envoy-saw/1", "the first half's facts stay"
    assert row["decision_differs"] == {"user_agent": ["authz-saw/1"]}
    assert await findings(database.reader_dsn) == []


async def test_awkward_values_hash_alike_from_what_postgresql_returns(
    tmp_path: Path, database: Provisioned
) -> None:
    awkward = decision(
        "r3-ünï",
        client_ip="2001:0db8:0000::0001",
        user_agent="🚀 " + "x" * 70_000,
        opa_decisions={
            "big": 1e300,
            "whole": 100.0,
            "neg0": -0.0,
            "tiny": 1.2345678901234567e-5,
            "int": 2**62,
            "s": "n:1",
            "nested": [{"b": 2, "a": [None, True]}],
            "sep": "\u2028",
            "uni": "é",
        },
        authz_latency_ms=0.1 + 0.2,
        roles=["ádmin", "r\u00e9le"],
        shadow_denials=["policy:x"],
        budget_used=2**62,
        trial_mode=False,
    )
    opened = await journal(tmp_path / "j", [awkward])
    line = envoy_line("r3-ünï", client_ip="::ffff:10.1.2.3", path="/ünï/%20", duration_us=1,
                      response_bytes=2**40)  # fmt: skip
    _, listing = _log(tmp_path, line)
    await ship_all(shipper(database.shipper_dsn, tmp_path / "j", listing, hold_seconds=30))
    await opened.close()
    (row,) = rows(database.reader_dsn)
    assert row["opa_decisions"]["big"] == 10**300, "jsonb gave the number back in full"
    differs = row["completion_differs"]  # Envoy's view where the decision's is stored
    assert set(differs) == {"client_ip", "path", "user_agent"}
    assert ip_address(differs["client_ip"][0]) == ip_address("::ffff:10.1.2.3")
    assert (differs["path"], differs["user_agent"]) == (["/ünï/%20"], ["test/1"])
    assert await findings(database.reader_dsn) == []


async def test_a_reread_after_a_crash_writes_nothing_twice(
    tmp_path: Path, database: Provisioned, postgres: PostgresService
) -> None:
    """Rows written but offsets lost (a crash between them cannot happen: one transaction);
    forcing a full re-read still gives each row once."""
    opened = await journal(tmp_path / "j", [decision(f"r4-{i}") for i in range(20)])
    _, listing = _log(tmp_path, *(envoy_line(f"r4-{i}") for i in range(0, 20, 2)))
    await ship_all(shipper(database.shipper_dsn, tmp_path / "j", listing, hold_seconds=30))
    before = rows(database.reader_dsn)
    with psycopg.connect(superuser_dsn(postgres, database)) as conn:
        conn.execute("DELETE FROM gateway_audit_ship_state")
    await ship_all(shipper(database.shipper_dsn, tmp_path / "j", listing, hold_seconds=30))
    await opened.close()
    after = rows(database.reader_dsn)
    assert [r["id"] for r in after] == [r["id"] for r in before]
    assert after == before
    assert await findings(database.reader_dsn) == []


def _halves_alone(request_id: str) -> tuple[Pair, Pair]:
    """A decision released alone (its hold ran out) and its late completion, each a pair
    (each request on chains of its own, so that several never share a chain position)."""
    journal_id, log_id = f"j-{request_id}", f"log-{request_id}"
    row = decision(request_id)
    Chain("decision", journal_id).link(row)
    line = completion_of(envoy_line(request_id, status_code=201).strip(), 0)
    Chain("completion", log_id).link(line)
    made = Item(SourceKey("journal", journal_id), Position(1, 1), 1, row["journal_hash"],
                "decision", row)  # fmt: skip
    seen = Item(SourceKey("access_log", log_id), Position(0, 1), 1, line["access_log_hash"],
                "completion", line)  # fmt: skip
    return Pair(made, None), Pair(None, seen)


@pytest.mark.parametrize("completion_first", [False, True], ids=["decision-first", "line-first"])
async def test_both_halves_of_one_key_in_one_batch_make_one_whole_row(
    database: Provisioned, completion_first: bool
) -> None:
    """A batch holding a key twice (a decision whose hold ran out and its late completion, read
    before the decision was written) keeps both halves: neither is dropped with the other."""
    alone, late = _halves_alone("r7")
    store = Store(database.shipper_dsn, timeout=30)
    try:
        assert await store.write([late, alone] if completion_first else [alone, late], []) == 0
    finally:
        await store.close()
    (row,) = rows(database.reader_dsn)
    assert (row["decision"], row["authz_status_code"]) == ("allow", 200), "the decision half"
    assert (row["status_code"], row["access_log_seq"]) == (201, 1), "the completion half"
    assert row["journal_seq"] == 1


async def test_a_batch_of_new_rows_and_late_halves_completes_only_the_late_ones(
    database: Provisioned,
) -> None:
    """The fills run over the whole batch when one row was already there: the rows this
    batch inserted keep exactly what it staged (the write-once trigger refuses any change)."""
    old_decision, old_completion = _halves_alone("r8-old")
    new_decision, new_completion = _halves_alone("r8-new")
    store = Store(database.shipper_dsn, timeout=30)
    try:
        assert await store.write([old_decision], []) == 0
        whole = Pair(new_decision.decision, new_completion.completion)
        assert await store.write([whole, old_completion], []) == 0
    finally:
        await store.close()
    by_id = {row["request_id"]: row for row in rows(database.reader_dsn)}
    assert set(by_id) == {"r8-old", "r8-new"}
    for row in by_id.values():
        assert (row["decision"], row["status_code"]) == ("allow", 201)
        assert (row["decision_differs"], row["completion_differs"]) == (None, None)


def _dead_journal(root: Path, name: str, rows: list[dict[str, Any]]) -> None:
    """A journal whose writer is gone, written frame by frame as given."""
    directory = root / name
    directory.mkdir(parents=True)
    frames = b"".join(encode_frame(encode_record(row)) for row in rows)
    (directory / segment_name(1)).write_bytes(SEGMENT_MAGIC + frames)


async def test_a_row_postgresql_refuses_is_kept_and_the_batch_goes_on(
    tmp_path: Path, database: Provisioned
) -> None:
    """Two records claiming one place in the chain: the second is refused by the unique
    (journal, seq) index, kept whole in gateway_audit_rejected; the others are written."""
    chain = Chain("decision", "copied-journal")
    first, second = decision("r5-a"), decision("r5-b")
    chain.link(first)
    chain.link(second)
    twin = decision("r5-c")
    Chain("decision", "copied-journal", 1, first["journal_hash"]).link(twin)  # seq 2 again
    _dead_journal(tmp_path / "j", "copied-journal", [first, second, twin])
    rejected = metrics.ERRORS.labels(kind="rejected")._value.get()
    await ship_all(shipper(database.shipper_dsn, tmp_path / "j"))
    assert {r["request_id"] for r in rows(database.reader_dsn)} == {"r5-a", "r5-b"}
    assert metrics.ERRORS.labels(kind="rejected")._value.get() == rejected + 1
    with psycopg.connect(database.reader_dsn) as conn:
        kept = conn.execute("SELECT chain_kind, chain_id, seq, payload FROM "
                            "gateway_audit_rejected").fetchall()  # fmt: skip
    assert [(k, c, s) for k, c, s, _ in kept] == [("decision", "copied-journal", 2)]
    assert decode_record(kept[0][3])["request_id"] == "r5-c", "kept whole, readable"
    assert await findings(database.reader_dsn) == []


async def test_a_torn_tail_of_a_dead_writer_is_skipped_counted_and_the_journal_removed(
    tmp_path: Path, database: Provisioned
) -> None:
    opened = await journal(tmp_path / "j", [decision(f"r6-{i}") for i in range(5)])
    await opened.close()
    segment = next(opened.directory.glob("*.journal"))
    with segment.open("ab") as torn:  # the writer died inside a write
        torn.write(encode_frame(b'{"request_id": "r6-lost"}')[:-7])
    damaged = metrics.DAMAGED.labels(source="journal", reason="torn tail")._value.get()
    await ship_all(shipper(database.shipper_dsn, tmp_path / "j"))
    assert {r["request_id"] for r in rows(database.reader_dsn)} == {f"r6-{i}" for i in range(5)}
    assert metrics.DAMAGED.labels(source="journal", reason="torn tail")._value.get() == damaged + 1
    assert not opened.directory.exists(), "a finished journal is removed once shipped"
    with psycopg.connect(database.reader_dsn) as conn:
        state = conn.execute("SELECT seq, finished FROM gateway_audit_ship_state").fetchone()
    assert state == (5, True)
    assert await findings(database.reader_dsn) == []
