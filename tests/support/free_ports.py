"""The one free-port helper: devstack's, which make up, the bench and the e2e stacks use too."""

from devstack.free_ports import LOOPBACK, free_port, free_ports

__all__ = ["LOOPBACK", "free_port", "free_ports"]
