"""The audit shipper: authz journals and Envoy access logs into PostgreSQL, exactly once."""
