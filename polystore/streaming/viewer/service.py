"""A viewer's end of the stream: the receiver (bound) and the control server, started together.

A viewer (a napari window, the Fiji bridge) **binds** the data socket on ``port`` (acks on
``port + 1``) so that any number of pipelines can connect to it, and a control socket on
``port + 2`` that answers requests (``ping`` first of all; see
:mod:`polystore.streaming.viewer.control`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from polystore.exceptions import ViewerError
from polystore.streaming.endpoints import Endpoints
from polystore.streaming.errors import AddressInUseError
from polystore.streaming.protocol import DEFAULT_MAX_BYTES, DEFAULT_SHM_PREFIX, PROTOCOL_VERSION, StreamItem
from polystore.streaming.receiver import StreamReceiver
from polystore.streaming.security import CurveKeys
from polystore.streaming.viewer.control import DEFAULT_MAX_REQUEST_BYTES, ControlServer, Handler


class ViewerService:
    """A viewer's end: the stream receiver (bound) and the control server, started together.

    ``on_item(item)`` runs on the receiver thread for every validated item: a GUI hands the
    item to its own thread. ``handlers`` adds control ops to the built-in ``ping``.
    ``zero_copy``: items from shared memory are views of the sender's slot (see
    :class:`StreamReceiver`), for viewers that copy the pixels into their own memory anyway.
    ``max_request_bytes`` bounds a control request (see :class:`ControlServer`).
    """

    def __init__(
        self,
        viewer_type: str,
        port: int,
        host: str = "127.0.0.1",
        *,
        on_item: Callable[[StreamItem], Any],
        handlers: Mapping[str, Handler] | None = None,
        shm_prefixes: Sequence[str] = (),
        control_port: int | None = None,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
        curve: CurveKeys | None = None,
        zero_copy: bool = False,
    ) -> None:
        self.viewer_type = viewer_type
        self.endpoints = Endpoints(host, port, control_port=control_port)
        self.host = host
        self.port = port
        self.control_port = self.endpoints.control_port_number
        self._on_item = on_item
        self.receiver = StreamReceiver(
            port, host, ack_port=self.endpoints.ack_port_number, bind=True, max_bytes=max_bytes,
            curve=curve, shm_prefixes=tuple(shm_prefixes) or (DEFAULT_SHM_PREFIX,), zero_copy=zero_copy,
        )
        self.control = ControlServer(
            self.control_port, host, {"ping": self._ping, **(handlers or {})},
            curve=curve, max_request_bytes=max_request_bytes,
        )

    @property
    def received(self) -> int:
        return self.receiver.received

    @property
    def rejected(self) -> int:
        return self.receiver.rejected

    @property
    def dropped(self) -> int:
        return self.receiver.dropped

    @property
    def running(self) -> bool:
        return self.receiver.running

    def add_handler(self, op: str, handler: Handler) -> None:
        """Answer ``op`` from now on (replaces an earlier handler of that name)."""
        self.control.handlers[op] = handler

    def _ping(self, params: dict[str, Any], buffers: list[memoryview]) -> dict[str, Any]:
        return {
            "viewer": self.viewer_type, "pid": os.getpid(), "protocol": PROTOCOL_VERSION,
            "received": self.received, "rejected": self.rejected, "dropped": self.dropped,
        }

    def start(self) -> ViewerService:
        """Bind both sockets and start serving; a taken port raises here, naming the fix."""
        try:
            self.receiver.start(self._on_item)
        except AddressInUseError as error:  # its message names the address and what to do
            raise ViewerError(f"This viewer cannot receive streams: {error}") from error
        except Exception as error:
            raise ViewerError(
                f"Cannot receive streams on {self.host}:{self.port}: {error}. Another viewer may "
                "already be listening there: stream to it, or choose another port."
            ) from error
        try:
            self.control.start()
        except BaseException:
            self.receiver.stop()
            raise
        return self

    def stop(self) -> None:
        self.control.stop()
        self.receiver.stop()

    def __enter__(self) -> ViewerService:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
