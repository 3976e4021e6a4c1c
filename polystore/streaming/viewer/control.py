"""The control channel: small requests from a pipeline (or a test) to a live viewer, and replies.

Data flows one way on the stream (PUSH -> PULL); questions such as "are you there?", "which
windows do you show?" or "give me the ROIs drawn on this image" need an answer, so a viewer
also binds a ZeroMQ REP socket (by default on ``port + 2``, see
:mod:`polystore.streaming.endpoints`). A message on it is:

* frame 0: UTF-8 JSON, at most 64 KiB: a request ``{"v": 1, "op": str, "params": {...}}``,
  a reply ``{"v": 1, "ok": true, ...}`` or ``{"v": 1, "ok": false, "error": str}``;
* frames 1..n: raw byte buffers that go with it (an image's pixels, a ``.roi.zip``): at most
  :data:`MAX_BUFFERS` of them, each at most the server's ``max_request_bytes`` (libzmq drops
  a larger frame before it is buffered), together at most ``max_request_bytes``. Ops that
  take no buffers (``ping``) refuse any.

As on the stream, nothing is ever pickled. The format is written down in ``docs/streaming.md``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from polystore.exceptions import InvalidOptionError, ViewerError, ViewerUnavailableError
from polystore.streaming._zmq import zmq
from polystore.streaming.endpoints import Link, control_address
from polystore.streaming.errors import check_settings
from polystore.streaming.protocol import (
    ALLOWED_DTYPE_KINDS,
    DEFAULT_MAX_BYTES,
    MAX_HEADER_BYTES,
    MAX_NDIM,
)
from polystore.streaming.security import CurveKeys, require_keys_for
from polystore.streaming.throttle import ThrottledWarning

logger = logging.getLogger(__name__)

CONTROL_VERSION = 1
MAX_BUFFERS = 8
DEFAULT_MAX_REQUEST_BYTES = 256 * 1024**2
"""What a control request may carry in all (an image sent with ``put_image``, a ROI set);
``ControlServer(max_request_bytes=...)`` raises it."""

HandlerResult = Mapping[str, Any] | tuple[Mapping[str, Any], Sequence[Any]]
Handler = Callable[[dict[str, Any], list[memoryview]], HandlerResult]
"""``handler(params, buffers)`` -> a JSON-able reply dict, or ``(reply, [buffers])``."""


@dataclass
class Reply:
    """A viewer's answer: the JSON header and the raw buffers that came with it."""

    header: dict[str, Any]
    buffers: list[bytes] = field(default_factory=list)


def array_reply(array: np.ndarray, **fields: Any) -> tuple[dict[str, Any], list[Any]]:
    """A reply carrying one array: shape and dtype in the header, C-ordered bytes in frame 1."""
    contiguous = np.ascontiguousarray(array)
    header = {"shape": list(contiguous.shape), "dtype": contiguous.dtype.str, **fields}
    return header, [contiguous.data if contiguous.nbytes else b""]


def array_from_reply(reply: Reply, max_bytes: int = DEFAULT_MAX_BYTES) -> np.ndarray:
    """The array an :func:`array_reply` carried, checked against its announced shape and dtype."""
    try:
        shape = tuple(int(n) for n in reply.header["shape"])
        dtype = np.dtype(reply.header["dtype"])
    except (KeyError, TypeError, ValueError) as error:
        raise ViewerError(f"the viewer's reply carries no valid shape/dtype ({error})") from None
    if dtype.kind not in ALLOWED_DTYPE_KINDS or dtype.fields is not None or len(shape) > MAX_NDIM:
        raise ViewerError(f"the viewer replied with an array of dtype {dtype} and {len(shape)} dims")
    if any(n < 0 for n in shape):
        raise ViewerError(f"the viewer replied with a negative shape {shape}")
    expected = math.prod(shape) * dtype.itemsize  # exact: an int64 product wraps for a huge shape
    if not reply.buffers or len(reply.buffers[0]) != expected or expected > max_bytes:
        got = len(reply.buffers[0]) if reply.buffers else 0
        raise ViewerError(f"the viewer announced {shape} {dtype} ({expected} bytes) but sent {got} bytes")
    return np.frombuffer(reply.buffers[0], dtype=dtype).reshape(shape).copy()


class ControlServer:
    """Answers control requests on its own thread with a table of handlers (op name -> handler)."""

    def __init__(
        self,
        port: int,
        host: str = "127.0.0.1",
        handlers: Mapping[str, Handler] | None = None,
        *,
        curve: CurveKeys | None = None,
        max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
        no_buffers: Sequence[str] = ("ping",),
    ) -> None:
        # libzmq takes a negative MAXMSGSIZE as no limit at all
        check_settings(max_request_bytes=(max_request_bytes, 0, True))
        require_keys_for(host, True, curve)  # a public address without keys: refused now
        self.host = host
        self.address = control_address(host, port)
        self.handlers: dict[str, Handler] = dict(handlers or {})
        self.curve = curve
        self.max_request_bytes = max_request_bytes
        self.no_buffers = frozenset(no_buffers)
        """Ops that take no buffers: a request for one that carries any is refused."""
        self.served = 0
        self.refused = 0
        self.refusals = ThrottledWarning(logger, "control requests refused")
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> ControlServer:
        """Bind and serve; raises here (not on the thread) when the address is taken."""
        self._stop.clear()
        self._ready.clear()
        self._thread = threading.Thread(target=self._serve, daemon=True, name="polystore-control")
        self._thread.start()
        self._ready.wait(10)
        if self._error is not None:
            raise self._error
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _serve(self) -> None:
        z = zmq()
        link = Link(self.host, serve=True, curve=self.curve)
        try:
            # libzmq refuses (and disconnects) a frame over the limit before buffering it
            socket = link.open(z.REP, self.address, {z.MAXMSGSIZE: self.max_request_bytes})
        except z.ZMQError as error:
            link.close()
            self._error = ViewerError(
                f"Cannot serve control requests on {self.address}: {error}. Another viewer may "
                "already be listening there: connect to it, or choose another port."
            )
            self._ready.set()
            return
        self._ready.set()
        try:
            while not self._stop.is_set():
                if not socket.poll(100, z.POLLIN):
                    continue
                header, buffers = self._answer(*self._receive(socket))
                try:
                    socket.send_multipart([json.dumps(header).encode(), *buffers], copy=False)
                except (z.ZMQError, TypeError, ValueError) as error:
                    # a REP socket must answer before it can receive again: send the reason
                    logger.warning("control reply could not be sent: %s", error)
                    refusal = {"v": CONTROL_VERSION, "ok": False, "error": f"reply not sendable: {error}"}
                    with contextlib.suppress(z.ZMQError):
                        socket.send(json.dumps(refusal).encode())
        finally:
            self.refusals.flush()
            link.close()

    def _receive(self, socket: Any) -> tuple[list[Any], int, int]:
        """A request's first frames (as many as a request may have) and its frame and byte
        counts: the rest is read one frame at a time and not kept (libzmq caps each frame, not
        a message: see docs/streaming.md, "Limits")."""
        z = zmq()
        frames = [socket.recv(copy=False)]
        count, size = 1, 0
        while socket.getsockopt(z.RCVMORE):
            frame = socket.recv(copy=False)
            count += 1
            size += len(frame)
            if count <= MAX_BUFFERS + 1 and size <= self.max_request_bytes:
                frames.append(frame)
        return frames, count, size

    def _answer(self, frames: Sequence[Any], count: int, size: int) -> tuple[dict[str, Any], list[Any]]:
        try:
            op, params = self._parse(frames, count, size)
            handler = self.handlers.get(op)
            if handler is None:
                known = ", ".join(sorted(self.handlers))
                raise ViewerError(f"unknown op {op!r}; this viewer answers: {known}")
            if op in self.no_buffers and len(frames) > 1:
                raise ViewerError(f"{op!r} takes no buffers; this request carries {len(frames) - 1}")
            result = handler(params, [memoryview(frame.buffer) for frame in frames[1:]])
            reply, raw_buffers = (result if isinstance(result, tuple) else (result, ()))
            header = {"v": CONTROL_VERSION, "ok": True, **reply}
            json.dumps(header)  # a handler's reply must be JSON; fail here, not mid-send
            buffers = [memoryview(b) for b in raw_buffers]  # bytes-like, or refused here
        except Exception as error:
            self.refused += 1
            self.refusals.warn("control request refused: %s", error)
            return {"v": CONTROL_VERSION, "ok": False, "error": str(error) or type(error).__name__}, []
        self.served += 1
        return header, list(buffers)

    def _parse(self, frames: Sequence[Any], count: int, size: int) -> tuple[str, dict[str, Any]]:
        raw = frames[0].bytes
        if len(raw) > MAX_HEADER_BYTES:
            raise ViewerError(f"request header of {len(raw)} bytes exceeds {MAX_HEADER_BYTES}")
        if count - 1 > MAX_BUFFERS:
            raise ViewerError(f"request carries {count - 1} buffers ({size} bytes); at most "
                              f"{MAX_BUFFERS}: send fewer, larger buffers, or several requests")
        if size > self.max_request_bytes:
            raise ViewerError(f"request carries {size} bytes; this viewer takes at most "
                              f"{self.max_request_bytes} (ControlServer(max_request_bytes=...))")
        try:
            request = json.loads(raw)
        except (UnicodeDecodeError, ValueError) as error:
            raise ViewerError(f"request header is not JSON ({error})") from None
        if not isinstance(request, dict) or request.get("v") != CONTROL_VERSION:
            raise ViewerError(f"request is not a version-{CONTROL_VERSION} control message")
        op, params = request.get("op"), request.get("params", {})
        if not isinstance(op, str) or not isinstance(params, dict):
            raise ViewerError("request needs a string 'op' and an object 'params'")
        return op, params


def request(
    host: str,
    port: int,
    op: str,
    params: Mapping[str, Any] | None = None,
    buffers: Sequence[Any] = (),
    *,
    timeout: float = 5.0,
    curve: CurveKeys | None = None,
    max_reply_bytes: int = DEFAULT_MAX_BYTES,
) -> Reply:
    """Ask the viewer at ``host:port`` (its control port) to run ``op``; its reply.

    Raises :class:`ViewerUnavailableError` when nothing answers within ``timeout`` seconds and
    :class:`ViewerError` when the viewer refuses (with its reason).
    """
    z = zmq()
    # a socket per request: a REQ socket whose reply never came cannot send again
    address = control_address(host, port)
    link = Link(host, serve=False, curve=curve)
    try:
        socket = link.open(z.REQ, address, {z.MAXMSGSIZE: max_reply_bytes + MAX_HEADER_BYTES})
        try:
            message = json.dumps({"v": CONTROL_VERSION, "op": op, "params": dict(params or {})}).encode()
            parts = [message, *(memoryview(buffer) for buffer in buffers)]
        except (TypeError, ValueError) as error:
            raise InvalidOptionError(
                f"Cannot ask {address} for {op!r}: params must be JSON (str, numbers, lists, dicts) "
                f"and buffers bytes-like (bytes, a contiguous NumPy array) ({error})"
            ) from error
        socket.send_multipart(parts, copy=False)
        if not socket.poll(int(timeout * 1000), z.POLLIN):
            raise ViewerUnavailableError(f"No viewer answered {op!r} at {address} within {timeout:g} s.")
        frames = socket.recv_multipart(copy=True)
    finally:
        link.close()
    try:
        header = json.loads(frames[0])
    except ValueError:
        raise ViewerError(f"the viewer at {address} replied with a header that is not JSON") from None
    if not isinstance(header, dict):
        raise ViewerError(f"the viewer at {address} replied with a header that is not an object")
    if not header.get("ok"):
        raise ViewerError(f"The viewer at {address} refused {op!r}: {header.get('error', 'no reason given')}")
    return Reply(header, list(frames[1:]))
