"""Free TCP ports on 127.0.0.1 for tests that bind real sockets."""

from __future__ import annotations

from polystore.streaming.viewer import free_ports


def free_port_block(count: int) -> int:
    """A port p such that p .. p + count - 1 are all free on 127.0.0.1 (data, acks, control...)."""
    return free_ports(count)
