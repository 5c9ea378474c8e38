"""The development stack: provisioning of PostgreSQL, Redis, OPA and Envoy (see services)."""

from devstack.model import (
    EnvoyService,
    OpaService,
    PostgresService,
    RedisService,
    ServiceUnavailable,
)
from devstack.services import (
    provision_envoy,
    provision_opa,
    provision_postgres,
    provision_redis,
)

__all__ = [
    "EnvoyService",
    "OpaService",
    "PostgresService",
    "RedisService",
    "ServiceUnavailable",
    "provision_envoy",
    "provision_opa",
    "provision_postgres",
    "provision_redis",
]
