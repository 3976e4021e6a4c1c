"""Free TCP ports on 127.0.0.1 for tests that bind real sockets."""

from __future__ import annotations

import contextlib
import random
import socket


def free_port_block(count: int) -> int:
    """A port p such that p .. p + count - 1 are all free on 127.0.0.1 (data, acks, control...)."""
    for _ in range(500):
        port = random.randint(20000, 60000)
        with contextlib.ExitStack() as stack:
            try:
                for offset in range(count):
                    probe = stack.enter_context(socket.socket())
                    probe.bind(("127.0.0.1", port + offset))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no block of {count} free ports on 127.0.0.1")
