"""The gateway config: pydantic models of config/gateway.yaml and its checked loader."""

from gateway_config.loader import ConfigError, deep_merge, load_gateway_config
from gateway_config.models import GatewayConfig, Route

__all__ = ["ConfigError", "GatewayConfig", "Route", "deep_merge", "load_gateway_config"]
