"""Audit trail: one row per request in gateway_audit_logs, written off the request path."""
