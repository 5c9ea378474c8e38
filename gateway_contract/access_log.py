"""Envoy's audit access-log line: the fields render asks Envoy for, which the shipper reads.

One JSON line per request per hop, written by Envoy itself (so it exists even when the authz
service is down). The request key and correlation id expressions come from render, which
uses the same ones in the problem+json bodies of Envoy's own replies; the shipper's reading
of a line is `authz_service/audit/envoy_log.py`.
"""

from __future__ import annotations

from gateway_contract.headers import CAUSATION_HEADER, DECISION_HEADER, USER_AGENT_HEADER

# the ext_authz filter puts the service's dynamic metadata under its own name
AUTHZ_METADATA = "envoy.filters.http.ext_authz"
# the key of the decision there: the gRPC answer's own metadata, or the HTTP answer's header
# (`dynamic_metadata_from_headers` keeps the header's name)
DECISION_KEYS = {"grpc": "decision", "http": DECISION_HEADER}
# A client's User-Agent in the audit trail (journal, access log, row): a client without any
# credential could otherwise store ~60 KB per request (Envoy's header limit) three times over
# and for the retention period. Both halves keep the same first bytes.
AUDIT_USER_AGENT_MAX_BYTES = 1024


def audit_user_agent(value: str | None) -> str | None:
    """The User-Agent as the audit keeps it: its first AUDIT_USER_AGENT_MAX_BYTES bytes of
    UTF-8, as Envoy's `%REQ(user-agent):N%` cuts it (a character cut in two is dropped)."""
    if value is None or (len(value) <= AUDIT_USER_AGENT_MAX_BYTES and value.isascii()):
        return value
    encoded = value.encode("utf-8", "surrogatepass")
    if len(encoded) <= AUDIT_USER_AGENT_MAX_BYTES:
        return value
    return encoded[:AUDIT_USER_AGENT_MAX_BYTES].decode("utf-8", "ignore")


def log_format(
    gateway_type: str,
    request_key: str,
    correlation_id: str,
    *,
    sets_causation_id: bool = False,
    transport: str = "grpc",
    max_path_bytes: int | None = None,
) -> dict[str, str]:
    """The json_format of the file access log (values are Envoy command operators).

    Fields are named after the audit columns they fill, so a parsed line needs no renaming.
    A hop that sets x-causation-id for the next one (CP, PP) logs no causation id: the header
    it would log is the one it sent on, and its public listener accepted none. `transport` is
    the ext_authz transport (grpc|http): where the decision is found.
    """
    causation = {} if sets_causation_id else {"causation_id": f"%REQ({CAUSATION_HEADER})%"}
    # a request refused for its long target (414) or before it was measured (501) is logged
    # with no more of it than a routed one can have
    path_cut = "" if max_path_bytes is None else f":{max_path_bytes}"
    return {
        "request_id": request_key,
        "correlation_id": correlation_id,
        **causation,
        "gateway_type": gateway_type,
        "route_id": "%ROUTE_NAME%",
        "method": "%REQ(:METHOD)%",
        "path": f"%PATH(NQ:ORIG_OR_PATH){path_cut}%",
        "status_code": "%RESPONSE_CODE%",
        "response_code_details": "%RESPONSE_CODE_DETAILS%",
        "response_flags": "%RESPONSE_FLAGS%",
        "started_at": "%START_TIME(%Y-%m-%dT%H:%M:%S.%6fZ)%",
        "duration_us": "%COMMON_DURATION(DS_RX_BEG:DS_TX_END:us)%",
        "upstream_duration_us": "%COMMON_DURATION(US_TX_BEG:US_RX_END:us)%",
        "request_bytes": "%BYTES_RECEIVED%",
        "response_bytes": "%BYTES_SENT%",
        "upstream_cluster": "%UPSTREAM_CLUSTER%",
        "upstream_host": "%UPSTREAM_HOST%",
        "client_ip": "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%",
        "user_agent": f"%REQ({USER_AGENT_HEADER}):{AUDIT_USER_AGENT_MAX_BYTES}%",
        "authz_decision": f"%DYNAMIC_METADATA({AUTHZ_METADATA}:{DECISION_KEYS[transport]})%",
    }
