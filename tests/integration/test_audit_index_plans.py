"""Each operator query on gateway_audit_logs is planned on its index (real PostgreSQL, 20k rows)."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from devstack import PostgresService
from tests.integration._audit_db import migrated_database

SEED = """
INSERT INTO gateway_audit_logs (request_id, correlation_id, causation_id, created_at,
    gateway_type, route_id, method, path, status_code, authz_status_code, decision,
    denied_stage, problem_type, user_id, customer_id, opa_decisions, journal_id, journal_seq,
    access_log_id, access_log_seq)
SELECT 'req-' || i, 'corr-' || (i / 3), 'cause-' || (i / 2),
       now() - make_interval(secs => (20000 - i) * 60),
       (ARRAY['PLANT', 'CP', 'PP'])[1 + i % 3], 'route-' || (i % 40), 'GET', '/api/v1/x',
       CASE WHEN i % 10 = 0 THEN 403 ELSE 200 END, CASE WHEN i % 10 = 0 THEN 403 ELSE 200 END,
       CASE WHEN i % 10 = 0 THEN 'deny' ELSE 'allow' END,
       CASE WHEN i % 10 = 0 THEN (ARRAY['authenticate', 'policy', 'budget'])[1 + i % 3] END,
       CASE WHEN i % 10 = 0 THEN 'budget_exceeded' END,
       'user-' || (i % 500), 'cust-' || (i % 50),
       jsonb_build_object('allow', i % 10 <> 0, 'policy', 'gateway/authz'),
       'journal-' || (i % 7), i, 'log-' || (i % 3), i
FROM generate_series(1, 20000) AS i
"""

QUERIES = {
    # one request at one hop; also the shipper's conflict target and its completing UPDATEs
    "uq_gateway_audit_logs_request_hop":
        "SELECT * FROM gateway_audit_logs WHERE request_id = 'req-77'",
    # `audit verify` reads each chain in order (0008)
    "uq_gateway_audit_logs_journal_seq":
        "SELECT journal_seq FROM gateway_audit_logs WHERE journal_id = 'journal-3' "
        "ORDER BY journal_seq",
    "uq_gateway_audit_logs_access_log_seq":
        "SELECT access_log_seq FROM gateway_audit_logs WHERE access_log_id = 'log-1' "
        "ORDER BY access_log_seq",
    "ix_gateway_audit_logs_correlation_id":
        "SELECT * FROM gateway_audit_logs WHERE correlation_id = 'corr-7' ORDER BY created_at",
    "ix_gateway_audit_logs_causation_id":
        "SELECT * FROM gateway_audit_logs WHERE causation_id = 'cause-7'",
    "ix_gateway_audit_logs_user_created":
        "SELECT * FROM gateway_audit_logs WHERE user_id = 'user-7' "
        "AND created_at > now() - interval '7 days' ORDER BY created_at DESC LIMIT 50",
    "ix_gateway_audit_logs_customer_created":
        "SELECT * FROM gateway_audit_logs WHERE customer_id = 'cust-7' "
        "AND created_at > now() - interval '1 day' ORDER BY created_at DESC LIMIT 50",
    "ix_gateway_audit_logs_errors_created":
        "SELECT * FROM gateway_audit_logs WHERE status_code >= 400 "
        "AND created_at > now() - interval '1 hour' ORDER BY created_at DESC",
    "ix_gateway_audit_logs_denials_stage":
        "SELECT count(*) FROM gateway_audit_logs WHERE decision = 'deny' "
        "AND denied_stage = 'budget' AND created_at > now() - interval '1 day'",
    "ix_gateway_audit_logs_problem_created":
        "SELECT * FROM gateway_audit_logs WHERE problem_type = 'budget_exceeded' "
        "ORDER BY created_at DESC LIMIT 20",
    "ix_gateway_audit_logs_opa_decisions":
        """SELECT * FROM gateway_audit_logs WHERE opa_decisions @> '{"allow": false}'""",
    "ix_gateway_audit_logs_created_brin":
        "SELECT count(*) FROM gateway_audit_logs "
        "WHERE created_at BETWEEN now() - interval '3 days' AND now() - interval '2 days'",
    "ix_gateway_audit_logs_route_created":
        "SELECT * FROM gateway_audit_logs WHERE route_id = 'route-3' "
        "AND created_at > now() - interval '1 day'",
    "ix_gateway_audit_logs_gateway_created":
        "SELECT count(*) FROM gateway_audit_logs WHERE gateway_type = 'CP' "
        "AND created_at > now() - interval '1 hour'",
    # "what would the shadowed stages have blocked in the last hour" (0006)
    "ix_gateway_audit_logs_shadow_created":
        "SELECT route_id, shadow_denials FROM gateway_audit_logs WHERE shadow_denials <> '{}' "
        "AND created_at > now() - interval '1 hour' ORDER BY created_at DESC",
}  # fmt: skip


@pytest.fixture(scope="module")
def seeded(postgres: PostgresService) -> Iterator[psycopg.Connection]:
    dsn = migrated_database(postgres, "plans")
    with psycopg.connect(dsn, autocommit=True) as conn:
        # the superuser seeds history: triggers off, or every row would be dated now()
        conn.execute("SET session_replication_role = replica")
        conn.execute(SEED)
        conn.execute("SET session_replication_role = DEFAULT")
        conn.execute("VACUUM ANALYZE gateway_audit_logs")
        # 20k rows is small: keep the planner off whole-table scans so it shows its index
        conn.execute("SET enable_seqscan = off")
        yield conn


def test_every_index_is_covered_by_a_query(seeded: psycopg.Connection) -> None:
    names = seeded.execute(
        "SELECT indexname FROM pg_indexes WHERE tablename = 'gateway_audit_logs' "
        "AND indexname <> 'gateway_audit_logs_pkey'"
    ).fetchall()
    assert {n[0] for n in names} == set(QUERIES)


@pytest.mark.parametrize("index", sorted(QUERIES))
def test_operator_query_uses_its_index(seeded: psycopg.Connection, index: str) -> None:
    plan = "\n".join(r[0] for r in seeded.execute(f"EXPLAIN {QUERIES[index]}").fetchall())
    assert index in plan, plan
