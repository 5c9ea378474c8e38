"""Adapters of the ports to real things: JWKS/static keys, OPA, regopy, Redis, in-process ledger."""
