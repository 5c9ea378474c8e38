"""AUTHZ_WORKERS: the supervisor restarts a dead worker, passes SIGHUP on, stops all on
SIGTERM with every journal flushed; both transports journal the same record for a check."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import uuid
from pathlib import Path

import grpc
import pytest
from envoy.service.auth.v3 import external_auth_pb2_grpc as ext_grpc

from authz_service._proto.gateway.admin.v1 import admin_pb2
from devstack import RedisService
from tests.integration._http_authz import (
    FACTS,
    RUNTIME,
    http_check,
    service_process,
    token,
    wait_until,
)
from tests.support.check_requests import check_request
from tests.support.free_ports import free_port

# what differs between two checks of the same request by nature (ids, time, the chain)
PER_CHECK = {
    "request_id", "decided_at", "decided_at_us", "authz_latency_ms", "budget_used",
    "journal_id", "journal_seq", "journal_prev_hash", "journal_hash", "correlation_id",
}  # fmt: skip


def test_a_killed_worker_is_replaced_and_the_port_keeps_answering(tmp_path: Path) -> None:
    with service_process(tmp_path, {"AUTHZ_WORKERS": "2"}) as service:
        service.wait_for_workers(2)
        victim, survivor = service.worker_pids()
        os.kill(victim, signal.SIGKILL)
        wait_until(
            lambda: len(service.worker_pids()) == 2 and victim not in service.worker_pids(),
            "a new worker in place of the killed one",
        )
        assert survivor in service.worker_pids()
        replies = [service.exchange(http_check(bearer=token())) for _ in range(20)]
        assert {reply.status for reply in replies} == {200}


def test_a_hung_worker_is_killed_and_replaced(tmp_path: Path) -> None:
    """Faults pass 2026-11-30: a stopped (hung) worker is alive, so it was never restarted,
    and with SO_REUSEPORT it kept its share of new connections: each check on one hung until
    Envoy's deadline and became a 503, for as long as the worker hung."""
    env = {"AUTHZ_WORKERS": "2", "AUTHZ_WORKER_HANG_SECONDS": "2"}
    with service_process(tmp_path, env) as service:
        service.wait_for_workers(2)
        victim, survivor = service.worker_pids()
        os.kill(victim, signal.SIGSTOP)  # hung as a blocked event loop is: alive, silent
        wait_until(
            lambda: len(service.worker_pids()) == 2 and victim not in service.worker_pids(),
            "a new worker in place of the hung one",
        )
        assert survivor in service.worker_pids(), "a beating worker is left alone"
        replies = [service.exchange(http_check(bearer=token())) for _ in range(20)]
        assert {reply.status for reply in replies} == {200}


def test_sigterm_stops_every_worker_with_its_journal_flushed(tmp_path: Path) -> None:
    with service_process(tmp_path, {"AUTHZ_WORKERS": "2"}) as service:
        service.wait_for_workers(2)
        sent = [str(uuid.uuid4()) for _ in range(40)]
        for correlation in sent:  # a new connection each: both workers get some
            reply = service.exchange(http_check(bearer=token(), correlation_id=correlation))
            assert reply.status == 200
        assert service.stop() == 0
        journaled = {row["correlation_id"] for row in service.journal_rows()}
        assert set(sent) <= journaled
        journals = list(service.journal_dir.glob("*/writer.lock"))
        assert len(journals) >= 2, "one journal per worker"
        for lock in journals:  # released: the shipper may finish each journal
            with lock.open("rb") as held:
                fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)


def test_sighup_reloads_every_worker(tmp_path: Path) -> None:
    with service_process(tmp_path, {"AUTHZ_WORKERS": "2"}) as service:
        service.wait_for_workers(2)
        runtime = Path(service.env["AUTHZ_RUNTIME_CONFIG"])
        assert service.exchange(http_check(bearer=token())).status == 200
        revoked = {**RUNTIME, "revision": "revoked", "rbac": {"PLANT": {}, "CP": {}, "PP": {}}}
        runtime.write_text(json.dumps(revoked))
        os.kill(service.process.pid, signal.SIGHUP)

        def every_worker_refuses() -> bool:
            # new connections land on either worker (SO_REUSEPORT): all must refuse now
            return all(
                service.exchange(http_check(bearer=token())).status == 403 for _ in range(20)
            )

        wait_until(every_worker_refuses, "both workers on the new revision", 15)


def test_the_admin_reload_of_worker_0_reloads_every_worker(tmp_path: Path) -> None:
    admin = f"127.0.0.1:{free_port()}"
    env = {"AUTHZ_WORKERS": "2", "AUTHZ_ADMIN_ADDRESS": admin}
    with service_process(tmp_path, env) as service:
        service.wait_for_workers(2)
        runtime = Path(service.env["AUTHZ_RUNTIME_CONFIG"])
        revoked = {**RUNTIME, "revision": "revoked", "rbac": {"PLANT": {}, "CP": {}, "PP": {}}}
        runtime.write_text(json.dumps(revoked))
        with grpc.insecure_channel(admin) as channel:
            reload = channel.unary_unary(
                "/gateway.admin.v1.GatewayAdmin/Reload",
                request_serializer=admin_pb2.ReloadRequest.SerializeToString,
                response_deserializer=admin_pb2.ReloadResponse.FromString,
            )
            reply = reload(admin_pb2.ReloadRequest(), timeout=10)
        assert (reply.applied, reply.config_revision) == (True, "revoked")

        def every_worker_refuses() -> bool:
            return all(
                service.exchange(http_check(bearer=token())).status == 403 for _ in range(20)
            )

        wait_until(every_worker_refuses, "both workers on the new revision", 15)


def test_an_invalid_configuration_stops_the_whole_group_with_status_2(tmp_path: Path) -> None:
    missing = tmp_path / "absent.json"
    env = {"AUTHZ_WORKERS": "2", "AUTHZ_RUNTIME_CONFIG": str(missing)}
    with pytest.raises(AssertionError, match="not found"), service_process(tmp_path, env):
        pass  # never reached: the group exits before it serves
    log = (tmp_path / "authz.log").read_text()
    assert "invalid configuration; stopping every worker" in log


def test_both_transports_journal_the_same_record(
    tmp_path: Path, redis_service: RedisService
) -> None:
    grpc_address = f"127.0.0.1:{free_port()}"
    env = {"AUTHZ_GRPC_ADDRESS": grpc_address, "AUTHZ_REDIS_URL": redis_service.url}
    bearer = token()
    with service_process(tmp_path, env) as service:
        over_http = service.exchange(http_check(bearer=bearer, correlation_id="via-http"))
        headers = {
            "authorization": f"Bearer {bearer}",
            "x-request-id": uuid.uuid4().hex,
            "x-correlation-id": "via-grpc",
            "x-client-ip": "203.0.113.7",
        }
        request = check_request(
            path="/api/v1/reports", headers=headers, context=FACTS.to_context_extensions()
        )
        with grpc.insecure_channel(grpc_address) as channel:
            over_grpc = ext_grpc.AuthorizationStub(channel).Check(request, timeout=5)
        assert over_http.status == 200
        assert over_grpc.HasField("ok_response")
        rows = {row["correlation_id"]: row for row in service.journal_rows()}
    http_row, grpc_row = rows["via-http"], rows["via-grpc"]
    shared = set(http_row) - PER_CHECK
    assert shared == set(grpc_row) - PER_CHECK
    assert {k: http_row[k] for k in shared} == {k: grpc_row[k] for k in shared}
    assert http_row["decision"] == "allow"
    assert http_row["client_ip"] == "203.0.113.7"
