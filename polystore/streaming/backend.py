"""StreamingBackend: ``save`` sends arrays to a live receiver over ZeroMQ; ``load`` receives them.

Sender (``mode="push"``) binds a PUSH socket on ``host:port`` and a PULL socket on
``host:ack_port`` (default ``port + 1``) for acknowledgements; a receiver (``mode="pull"``,
or :class:`~polystore.streaming.receiver.StreamReceiver`) connects to both. A receiver may
start before or after the sender. The protocol is in ``docs/streaming.md``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import time
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar, Literal

import numpy as np

from polystore.base import PathLike, StorageBackend
from polystore.paths import matches, normalize_extensions
from polystore.streaming._zmq import bind, endpoint, zmq
from polystore.streaming.payloads import encode
from polystore.streaming.protocol import (
    DEFAULT_MAX_BYTES,
    DEFAULT_SHM_PREFIX,
    StreamItem,
    encode_header,
    make_header,
)
from polystore.streaming.security import CurveKeys, is_local, require_keys_for

logger = logging.getLogger(__name__)

DEFAULT_SHM_THRESHOLD = 256 * 1024
Policy = Literal["block", "latest"]


class StreamingBackend(StorageBackend):
    """Stream arrays to a viewer (``mode="push"``) or receive them (``mode="pull"``)."""

    _backend_type = "streaming"
    VIEWER_TYPE: ClassVar[str] = "generic"
    SHM_PREFIX: ClassVar[str] = DEFAULT_SHM_PREFIX
    SUPPORTED_EXTENSIONS: ClassVar[Iterable[str] | None] = None
    """Extensions this backend streams (compound ones such as ``.roi.zip`` included); None: all."""
    DEFAULT_SHM_SLOTS: ClassVar[int] = 4
    """Shared-memory slots in the sender's ring when ``shm_slots`` is not given: frames sent and
    not yet given back by the receiver, at most."""

    def __init__(
        self,
        mode: Literal["push", "pull"] = "push",
        port: int = 5555,
        host: str = "127.0.0.1",
        *,
        ack_port: int | None = None,
        bind: bool | None = None,
        send_timeout: float = 5.0,
        recv_timeout: float = 5.0,
        policy: Policy = "block",
        transport: Literal["auto", "inline", "shm"] = "auto",
        shm_threshold: int = DEFAULT_SHM_THRESHOLD,
        shm_slots: int | None = None,
        max_bytes: int = DEFAULT_MAX_BYTES,
        high_water_mark: int | None = None,
        curve: CurveKeys | None = None,
    ) -> None:
        if mode not in ("push", "pull"):
            raise ValueError(f"mode must be 'push' or 'pull', got {mode!r}")
        if policy not in ("block", "latest"):
            raise ValueError(f"policy must be 'block' or 'latest', got {policy!r}")
        if transport not in ("auto", "inline", "shm"):
            raise ValueError(f"transport must be 'auto', 'inline' or 'shm', got {transport!r}")
        self.mode = mode
        self.port = port
        self.host = host
        self.ack_port = ack_port if ack_port is not None else port + 1
        self.bind = (mode == "push") if bind is None else bind
        self.send_timeout = send_timeout
        self.recv_timeout = recv_timeout
        self.policy: Policy = policy
        self.transport = transport
        self.shm_threshold = shm_threshold
        self.shm_slots = shm_slots if shm_slots is not None else self.DEFAULT_SHM_SLOTS
        self.max_bytes = max_bytes
        self.high_water_mark = high_water_mark if high_water_mark is not None else (
            2 if policy == "latest" else 1000
        )
        self.curve = curve
        self._context: Any = None
        self._authenticator: Any = None
        self._reply_to: str | None = None
        self.sent = 0
        self.dropped = 0
        """Frames replaced by a newer one for the same path before they could be sent (``latest``)."""
        self.reclaimed = 0
        """Shared-memory slots given up on because no receiver gave them back in ``send_timeout``."""
        self._stream_id = secrets.token_hex(8)
        self._next_id = 1
        self._pending: dict[str, tuple[np.ndarray, dict[str, Any]]] = {}
        self._acked: set[int] = set()
        self._out: Any = None
        self._acks: Any = None
        self._ring: Any = None
        self._inbound: Any = None
        self._inbox: dict[str, list[StreamItem]] = {}

    # -- extension filtering -------------------------------------------------------------
    def _filter_streamable_files(
        self, data_list: Sequence[Any], file_paths: Sequence[PathLike]
    ) -> tuple[list[Any], list[PathLike], list[PathLike]]:
        """Keep the items whose path ends in one of ``SUPPORTED_EXTENSIONS``.

        Returns ``(kept_data, kept_paths, skipped_paths)``; skipped paths are logged at INFO.
        """
        data = list(data_list)
        paths = list(file_paths)
        if len(data) != len(paths):
            raise ValueError(f"got {len(data)} data items but {len(paths)} paths; pass one path per item.")
        extensions = normalize_extensions(self.SUPPORTED_EXTENSIONS)
        if extensions is None:
            return data, paths, []
        kept_data, kept_paths, skipped = [], [], []
        for item, path in zip(data, paths, strict=True):
            if matches(os.fspath(path).replace("\\", "/").rsplit("/", 1)[-1], None, extensions):
                kept_data.append(item)
                kept_paths.append(path)
            else:
                skipped.append(path)
        if skipped:
            logger.info(
                "%s streams only %s; skipped %d file(s): %s",
                type(self).__name__, ", ".join(sorted(extensions)), len(skipped),
                ", ".join(os.fspath(p) for p in skipped),
            )
        return kept_data, kept_paths, skipped

    # -- sending ---------------------------------------------------------------------------
    def _require(self, mode: str, operation: str) -> None:
        if self.mode != mode:
            raise ValueError(
                f"{operation}() needs a StreamingBackend in mode={mode!r}; this one is mode={self.mode!r}"
            )

    def _open_sender(self) -> None:
        if self._out is not None:
            return
        z = zmq()
        require_keys_for(self.host, self.bind, self.curve)
        context = self._make_context()
        out = context.socket(z.PUSH)
        out.setsockopt(z.SNDHWM, self.high_water_mark)
        out.setsockopt(z.SNDTIMEO, int(self.send_timeout * 1000))
        out.setsockopt(z.LINGER, int(self.send_timeout * 1000))
        if self.bind:
            acks = context.socket(z.PULL)  # acks from every receiver, fanned in
        else:
            # the receiver binds and may serve many senders: its ROUTER sends each ack to
            # the sender named in the header's reply_to
            acks = context.socket(z.DEALER)
            self._reply_to = f"{os.getpid()}-{id(self):x}"
            acks.setsockopt(z.IDENTITY, self._reply_to.encode())
        acks.setsockopt(z.LINGER, 0)
        if self.curve is not None:
            self.curve.secure(out, server=self.bind)
            self.curve.secure(acks, server=self.bind)
        try:
            if self.bind:
                bind(out, endpoint(self.host, self.port))
                bind(acks, self._ack_endpoint())
            else:
                out.connect(endpoint(self.host, self.port))
                acks.connect(self._ack_endpoint())
        except Exception:
            out.close(0)
            acks.close(0)
            raise
        self._out, self._acks = out, acks

    def _make_context(self) -> Any:
        z = zmq()
        if self.curve is None:
            return z.Context.instance()
        # a context of our own, so that its authenticator admits only this backend's clients
        self._context = z.Context()
        if self.bind:
            self._authenticator = self.curve.start_authenticator(self._context)
        return self._context

    def _ack_endpoint(self) -> str:
        return self.host + ".ack" if "://" in self.host else endpoint(self.host, self.ack_port)

    def save(self, data: Any, file_path: PathLike, **kwargs: Any) -> None:
        """Stream ``data`` as ``file_path`` (skipped, with an INFO log, if its extension is not supported).

        Keywords: ``kind`` (``"image"``, ``"labels"``, ...), ``metadata`` (a JSON dict),
        ``transport`` (``"inline"`` / ``"shm"``), ``wait_for_ack`` (wait until the receiver
        has the item), ``timeout`` (seconds, instead of ``send_timeout``).
        """
        kept, paths, _ = self._filter_streamable_files([data], [file_path])
        if kept:
            self._stream_data(kept[0], paths[0], **kwargs)

    def save_batch(self, data_list: Sequence[Any], file_paths: Sequence[PathLike], **kwargs: Any) -> None:
        """Stream every supported item, in order (unsupported extensions are skipped and logged)."""
        for name in ("progress", "max_workers"):
            kwargs.pop(name, None)
        kept, paths, _ = self._filter_streamable_files(data_list, file_paths)
        for data, path in zip(kept, paths, strict=True):
            self._stream_data(data, path, **kwargs)

    def _stream_data(self, data: Any, path: PathLike, **kwargs: Any) -> None:
        """Send one item now (``policy="block"``) or as soon as possible, newest first (``"latest"``)."""
        self._require("push", "save")
        if kwargs.get("transport", self.transport) == "shm" and not is_local(self.host):
            raise ValueError(f"transport='shm' needs a receiver on this host; host is {self.host!r}")
        self._open_sender()
        payload = encode(data, path)  # ROI sets and DataFrames become bytes of a stated format
        array = payload.array
        if not (array.flags.c_contiguous or array.flags.f_contiguous):
            array = np.ascontiguousarray(array)
        options = dict(kwargs)
        if payload.kind is not None:
            options.setdefault("kind", payload.kind)
        if payload.metadata:
            options["metadata"] = {**payload.metadata, **(options.get("metadata") or {})}
        options["id"] = self._next_id
        self._next_id += 1
        key = os.fspath(path)
        if self.policy == "latest":
            self._flush_pending()
            if self._pending or not self._send(array, key, options, block=False):
                if key in self._pending:
                    self.dropped += 1
                self._pending.pop(key, None)
                self._pending[key] = (array, options)
            return
        self._send(array, key, options, block=True)

    def flush(self, timeout: float | None = None) -> bool:
        """Try to send what ``policy="latest"`` holds back, for up to ``timeout`` seconds."""
        deadline = time.monotonic() + (self.send_timeout if timeout is None else timeout)
        while self._pending:
            self._flush_pending()
            if not self._pending or time.monotonic() >= deadline:
                break
            self._drain_acks(0.01)
        return not self._pending

    @property
    def pending(self) -> int:
        return len(self._pending)

    def _flush_pending(self) -> None:
        for key in list(self._pending):
            array, options = self._pending[key]
            if not self._send(array, key, options, block=False):
                return
            del self._pending[key]

    def _choose_transport(self, array: np.ndarray, requested: str | None) -> str:
        choice = requested or self.transport
        if choice == "auto":
            return "shm" if is_local(self.host) and array.nbytes >= self.shm_threshold else "inline"
        if choice == "shm" and not is_local(self.host):
            raise ValueError(f"transport='shm' needs a receiver on this host; host is {self.host!r}")
        return choice

    def _send(self, array: np.ndarray, path: str, options: dict[str, Any], *, block: bool) -> bool:
        """Send one message; ``False`` if it would block (non-blocking only)."""
        z = zmq()
        options = dict(options)
        msg_id = options.pop("id")
        wait_for_ack = bool(options.pop("wait_for_ack", False))
        timeout = float(options.pop("timeout", self.send_timeout))
        transport = self._choose_transport(array, options.pop("transport", None))
        deadline = time.monotonic() + timeout
        slot = None
        shm_info = None
        if transport == "shm":
            ring = self._slot_ring()
            while not ring.has_free():
                self._drain_acks(0.0 if not block else min(0.05, max(0.0, deadline - time.monotonic())))
                if ring.has_free():
                    break
                if ring.oldest_age() > self.send_timeout:
                    # its receiver died or lost it: a fresh segment takes the slot's place (a
                    # reader still holding the old one keeps its pages; its late ack is ignored)
                    ring.reclaim_oldest()
                    self.reclaimed += 1
                    break
                if not block:
                    return False
                if time.monotonic() >= deadline:
                    raise TimeoutError(
                        f"No shared-memory slot was released within {timeout:g} s while streaming "
                        f"'{path}': is the receiver on port {self.port} running?"
                    )
            slot, segment = ring.acquire(array.nbytes)
        try:
            if slot is not None:
                target = np.ndarray(array.shape, dtype=array.dtype, buffer=segment.buf,
                                    order="C" if array.flags.c_contiguous else "F")
                np.copyto(target, array, casting="no")
                del target
                shm_info = {"name": segment.name, "offset": 0, "size": int(array.nbytes), "slot": slot}
            header = make_header(
                array, path, kind=options.pop("kind", "image"), metadata=options.pop("metadata", None),
                transport="shm" if transport == "shm" else "inline", shm=shm_info, msg_id=msg_id,
                ack=wait_for_ack, sender=os.getpid(), reply_to=self._reply_to, stream=self._stream_id,
            )
            frames: list[Any] = [encode_header(header)]
            if transport != "shm":
                frames.append(array.reshape(-1, order="A").view(np.uint8).data if array.nbytes else b"")
            if block:
                self._out.setsockopt(z.SNDTIMEO, max(1, int((deadline - time.monotonic()) * 1000)))
                self._out.send_multipart(frames, copy=False)
            else:
                self._out.send_multipart(frames, flags=z.NOBLOCK, copy=False)
        except BaseException as error:
            if slot is not None:  # nothing went out: the slot is ours again
                self._ring.release(slot)
            if not isinstance(error, z.Again):
                raise
            if not block:
                return False
            raise TimeoutError(
                f"Could not stream '{path}' within {timeout:g} s: no receiver is reading from "
                f"{endpoint(self.host, self.port)} (start one, e.g. StreamingBackend(mode='pull', "
                f"port={self.port}).load(...), or use policy='latest' to drop stale frames)."
            ) from None
        self.sent += 1
        if wait_for_ack:
            self._wait_for_ack(msg_id, path, deadline, timeout)
        else:
            self._drain_acks(0.0)
        return True

    def _slot_ring(self) -> Any:
        if self._ring is None:
            from polystore.streaming.shm import SlotRing

            self._ring = SlotRing(self.SHM_PREFIX, self.shm_slots)
        return self._ring

    def _drain_acks(self, wait: float) -> None:
        z = zmq()
        if self._acks is None:
            return
        if wait > 0 and not self._acks.poll(int(wait * 1000), z.POLLIN):
            return
        while True:
            try:
                raw = self._acks.recv(z.NOBLOCK)
            except z.Again:
                return
            try:
                message = json.loads(raw)
                ack_id, slot = message["ack"], message.get("slot")
                stream = message.get("stream")
            except (ValueError, TypeError, KeyError, AttributeError):
                logger.warning("ignored a malformed acknowledgement")
                continue
            if stream != self._stream_id:
                continue  # meant for an earlier sender on this port (or another one)
            if type(ack_id) is int:
                self._acked.add(ack_id)
            # only if the slot still holds the segment the receiver read (not a replaced one)
            ring = self._ring
            if type(slot) is int and ring is not None and ring.name_of(slot) == message.get("name"):
                ring.release(slot)

    def _wait_for_ack(self, msg_id: int, path: str, deadline: float, timeout: float) -> None:
        while msg_id not in self._acked:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"The receiver did not acknowledge '{path}' within {timeout:g} s.")
            self._drain_acks(min(remaining, 0.1))
        self._acked.discard(msg_id)

    # -- receiving -------------------------------------------------------------------------
    def _open_receiver(self) -> Any:
        if self._inbound is None:
            from polystore.streaming.receiver import Inbound

            self._inbound = Inbound(
                self.port, self.host, ack_port=self.ack_port, bind=self.bind,
                max_bytes=self.max_bytes, shm_prefixes=(self.SHM_PREFIX,), curve=self.curve,
            )
        return self._inbound

    def receive(self, timeout: float | None = None) -> StreamItem | None:
        """The next item from any path (``None`` after ``timeout``, default ``recv_timeout``)."""
        self._require("pull", "receive")
        inbound = self._open_receiver()
        for path, items in self._inbox.items():
            if items:
                item = items.pop(0)
                if not items:
                    del self._inbox[path]
                return item
        result: StreamItem | None = inbound.receive(self.recv_timeout if timeout is None else timeout)
        return result

    def load(self, file_path: PathLike, **kwargs: Any) -> Any:
        """The next array streamed as ``file_path`` (waits up to ``timeout``/``recv_timeout`` seconds)."""
        self._require("pull", "load")
        inbound = self._open_receiver()
        key = os.fspath(file_path)
        timeout = float(kwargs.get("timeout", self.recv_timeout))
        deadline = time.monotonic() + timeout
        while True:
            queued = self._inbox.get(key)
            if queued:
                item = queued.pop(0)
                if not queued:
                    del self._inbox[key]
                return item.array
            remaining = deadline - time.monotonic()
            received = inbound.receive(max(0.0, remaining))
            if received is None:
                raise TimeoutError(
                    f"Nothing was streamed as '{key}' to {endpoint(self.host, self.port)} "
                    f"within {timeout:g} s."
                )
            self._inbox.setdefault(received.path, []).append(received)

    # -- the rest of the contract: a stream keeps no files ------------------------------------
    def list_files(
        self, directory: PathLike, pattern: str | None = None, extensions: Iterable[str] | None = None,
        recursive: bool = False, **kwargs: Any,
    ) -> list[str]:
        """Paths received but not yet loaded (pull mode); a sender holds none."""
        prefix = os.fspath(directory).rstrip("/")
        exts = normalize_extensions(extensions)
        return sorted(
            p for p in self._inbox
            if (not prefix or p.startswith(prefix + "/")) and matches(p.rsplit("/", 1)[-1], pattern, exts)
        )

    def list_dir(self, path: PathLike) -> list[str]:
        return []

    def exists(self, path: PathLike) -> bool:
        return os.fspath(path) in self._inbox

    def is_file(self, path: PathLike) -> bool:
        return self.exists(path)

    def is_dir(self, path: PathLike) -> bool:
        return False

    def delete(self, path: PathLike) -> None:
        self._inbox.pop(os.fspath(path), None)

    def ensure_directory(self, directory: PathLike) -> str:
        return os.fspath(directory)

    # -- lifetime ------------------------------------------------------------------------------
    @property
    def received(self) -> int:
        return self._inbound.received if self._inbound is not None else 0

    @property
    def rejected(self) -> int:
        return self._inbound.rejected if self._inbound is not None else 0

    def close(self, timeout: float | None = None) -> None:
        """Send what is pending, wait for shared-memory slots to come back, close, unlink segments."""
        if self._out is not None:
            if self._pending:
                self.flush(timeout)
            if self._ring is not None:
                deadline = time.monotonic() + (self.send_timeout if timeout is None else timeout)
                while self._ring.free_slots < self.shm_slots and time.monotonic() < deadline:
                    self._drain_acks(0.05)
            self._out.close()
            self._acks.close(0)
            self._out = self._acks = None
        if self._ring is not None:
            self._ring.close()
            self._ring = None
        if self._inbound is not None:
            self._inbound.close()
            self._inbound = None
        if self._authenticator is not None:
            self._authenticator.stop()
            self._authenticator = None
        if self._context is not None:
            self._context.term()
            self._context = None

    def __enter__(self) -> StreamingBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        # a backend dropped without close(): still wait (up to send_timeout) for receivers to
        # give its shared-memory slots back, then unlink them
        with contextlib.suppress(Exception):
            self.close()
