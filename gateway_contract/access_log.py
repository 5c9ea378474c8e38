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


def log_format(
    gateway_type: str,
    request_key: str,
    correlation_id: str,
    *,
    sets_causation_id: bool = False,
    transport: str = "grpc",
) -> dict[str, str]:
    """The json_format of the file access log (values are Envoy command operators).

    Fields are named after the audit columns they fill, so a parsed line needs no renaming.
    A hop that sets x-causation-id for the next one (CP, PP) logs no causation id: the header
    it would log is the one it sent on, and its public listener accepted none. `transport` is
    the ext_authz transport (grpc|http): where the decision is found.
    """
    causation = {} if sets_causation_id else {"causation_id": f"%REQ({CAUSATION_HEADER})%"}
    return {
        "request_id": request_key,
        "correlation_id": correlation_id,
        **causation,
        "gateway_type": gateway_type,
        "route_id": "%ROUTE_NAME%",
        "method": "%REQ(:METHOD)%",
        "path": "%PATH(NQ:ORIG_OR_PATH)%",
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
        "user_agent": f"%REQ({USER_AGENT_HEADER})%",
        "authz_decision": f"%DYNAMIC_METADATA({AUTHZ_METADATA}:{DECISION_KEYS[transport]})%",
    }
