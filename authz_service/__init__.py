"""Envoy ext_authz service: authenticate, authorize, policy, budget, decide, audit."""

__version__ = "0.1.0"
