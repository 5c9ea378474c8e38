"""`python -m authz_service audit verify` finds edited, deleted and inserted rows, by name."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from authz_service.audit.chain import record_hash
from devstack import PostgresService
from devstack.provision import Provisioned
from tests.integration._audit_db import REPO_ROOT, provisioned_database, superuser_dsn
from tests.integration._shipping import decision, envoy_line, journal, manifest, rows, ship_all
from tests.integration._shipping import shipper as make_shipper

ROWS = 12


@pytest.fixture
async def shipped(tmp_path: Path, postgres: PostgresService) -> Provisioned:
    """A dozen requests shipped: decisions from a journal, completions from an access log."""
    database = provisioned_database(postgres, "verify")
    opened = await journal(tmp_path / "j", [decision(f"v-{i}") for i in range(ROWS)])
    log = tmp_path / "plant.log"
    log.write_bytes(b"".join(envoy_line(f"v-{i}") for i in range(ROWS)))
    listing = manifest(tmp_path, {"plant": log})
    await ship_all(make_shipper(database.shipper_dsn, tmp_path / "j", listing, hold_seconds=30))
    await opened.close()
    assert len(rows(database.reader_dsn)) == ROWS
    return database


def _verify(database: Provisioned) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "AUTHZ_VERIFY_DATABASE_URL": database.reader_dsn}
    return subprocess.run(
        [sys.executable, "-m", "authz_service", "audit", "verify"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def _tamper(postgres: PostgresService, database: Provisioned, *statements: str) -> None:
    """As the superuser, triggers off: what only someone above every role could do."""
    with psycopg.connect(superuser_dsn(postgres, database)) as conn:
        conn.execute("SET session_replication_role = replica")
        for statement in statements:
            conn.execute(statement)


def _row_id(database: Provisioned, request_id: str) -> int:
    (row,) = rows(database.reader_dsn, f"request_id = '{request_id}'")
    return int(row["id"])


def test_an_untouched_trail_verifies(shipped: Provisioned) -> None:
    done = _verify(shipped)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout == ""
    assert f"{ROWS} decisions in 1 journals, {ROWS} completions in 1" in done.stderr


def test_an_edited_row_is_named(shipped: Provisioned, postgres: PostgresService) -> None:
    """The 0007 attack done by hand: a deny would become an allow with another user."""
    edited = _row_id(shipped, "v-3")
    _tamper(postgres, shipped, "UPDATE gateway_audit_logs SET user_id = 'admin' "
            "WHERE request_id = 'v-3'")  # fmt: skip
    done = _verify(shipped)
    assert done.returncode == 1
    assert done.stdout.splitlines() == [
        f"edited: row id={edited} (request_id='v-3', gateway_type='PLANT'): decision chain "
        f"{_journal_id(shipped)!r} seq 4"
    ]


def _journal_id(database: Provisioned) -> str:
    return str(rows(database.reader_dsn, "request_id = 'v-0'")[0]["journal_id"])


def test_a_deleted_row_is_named(shipped: Provisioned, postgres: PostgresService) -> None:
    journal_id = _journal_id(shipped)
    _tamper(postgres, shipped, "DELETE FROM gateway_audit_logs WHERE request_id = 'v-6'")
    done = _verify(shipped)
    assert done.returncode == 1
    lines = done.stdout.splitlines()
    assert f"deleted: decision chain {journal_id!r} seq 7 missing" in lines
    assert any(line.startswith("deleted: completion chain ") and line.endswith(" seq 7 missing")
               for line in lines), lines  # fmt: skip
    assert len(lines) == 2


def test_an_inserted_row_is_named(shipped: Provisioned, postgres: PostgresService) -> None:
    """A forged row: outside any chain, or claiming a place the shipper never wrote."""
    journal_id = _journal_id(shipped)
    _tamper(
        postgres, shipped,
        "INSERT INTO gateway_audit_logs (request_id, gateway_type, decision, user_id) "
        "VALUES ('forged-1', 'PLANT', 'allow', 'admin')",
        "INSERT INTO gateway_audit_logs (request_id, gateway_type, decision, journal_id, "
        f"journal_seq, journal_prev_hash, journal_hash) VALUES ('forged-2', 'PLANT', 'allow', "
        f"'{journal_id}', {ROWS + 1}, 'x', 'y')",
    )  # fmt: skip
    done = _verify(shipped)
    assert done.returncode == 1
    lines = done.stdout.splitlines()
    forged = _row_id(shipped, "forged-1")
    assert (f"inserted: row id={forged} (request_id='forged-1', gateway_type='PLANT'): "
            "a decision outside any chain") in lines  # fmt: skip
    assert (f"inserted: decision chain {journal_id!r} has seq up to {ROWS + 1}, the shipper "
            f"wrote up to {ROWS}") in lines  # fmt: skip
    second = _row_id(shipped, "forged-2")
    assert any(line.startswith(f"edited: row id={second} ") for line in lines), lines


def test_a_replaced_row_breaks_the_link_to_its_successor(
    shipped: Provisioned, postgres: PostgresService
) -> None:
    """Replaced by a row with a hash of its own that fits its predecessor: the successor's
    link names it."""
    (target,) = rows(shipped.reader_dsn, "request_id = 'v-8'")
    forged = {**target, "user_id": "admin"}
    digest = record_hash("decision", forged, target["journal_id"], 9, target["journal_prev_hash"])
    _tamper(postgres, shipped, f"UPDATE gateway_audit_logs SET user_id = 'admin', "
            f"journal_hash = '{digest}' WHERE request_id = 'v-8'")  # fmt: skip
    done = _verify(shipped)
    assert done.returncode == 1
    assert done.stdout.splitlines() == [
        f"inserted: row id={target['id']} (request_id='v-8', gateway_type='PLANT'): decision "
        f"chain {target['journal_id']!r} seq 9 replaces the record seq 10 follows"
    ]


def test_verify_without_its_setting_names_the_key() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTHZ_VERIFY_")}
    done = subprocess.run(
        [sys.executable, "-m", "authz_service", "audit", "verify"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert "AUTHZ_VERIFY_DATABASE_URL" in done.stderr
