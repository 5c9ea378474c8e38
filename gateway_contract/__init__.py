"""The contract between render and the authz service: what Envoy tells the service, and how.

Render (`render.py`, `gateway_config/`) writes it into Envoy's configs and runtime.json; the
authz service (`authz_service/`) reads it back. Both import this package and neither imports
the other (tests/unit/test_import_rules.py):

- `headers`: the header names and lists both sides rely on (identity, check request, ids);
- `runtime`: the model of runtime.json (routes, RBAC, budgets, shadow modes);
- `route_facts`: what a route tells the service on each check, and its encodings (gRPC
  context extensions, the HTTP transport's route metadata);
- `matcher`: the one definition of which route Envoy picks for a request;
- `access_log`: the fields of Envoy's audit access-log line, which the shipper reads.
"""
