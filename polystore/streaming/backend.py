"""StreamingBackend: ``save`` sends arrays to a live receiver over ZeroMQ; ``load`` receives them.

A backend is one end of a stream, composed, not switched: ``mode="push"`` makes a
:class:`~polystore.streaming.sender.Sender` (binds ``host:port``, acks on ``port + 1``),
``mode="pull"`` a :class:`~polystore.streaming.inbox.PathInbox` over a connecting
:class:`~polystore.streaming.inbound.Inbound`. A receiver may start before or after the
sender: ``save`` returns once the item is queued, and it is delivered when a receiver is there
(see :mod:`polystore.streaming.sender` for the bounds). A stream keeps no files: it has no
directories, and a sender nothing to list (``supports_directories``, ``supports_listing``).
The protocol is in ``docs/streaming.md``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar, Literal

import numpy as np

from polystore.base import PathLike, StorageBackend
from polystore.exceptions import InvalidOptionError
from polystore.paths import matches, normalize_extensions
from polystore.streaming.endpoints import Endpoints
from polystore.streaming.errors import StreamConfigError, UnsupportedOperationError, check_settings
from polystore.streaming.inbound import Inbound
from polystore.streaming.inbox import DEFAULT_INBOX_BYTES, DEFAULT_INBOX_ITEMS, PathInbox
from polystore.streaming.outgoing import checked_path
from polystore.streaming.payloads import encode
from polystore.streaming.protocol import DEFAULT_MAX_BYTES, DEFAULT_SHM_PREFIX, StreamItem
from polystore.streaming.security import CurveKeys
from polystore.streaming.sender import (
    DEFAULT_LINGER_S,
    DEFAULT_MAX_PENDING_BYTES,
    DEFAULT_SHM_SLOTS,
    DEFAULT_SHM_THRESHOLD,
    Frame,
    Policy,
    Sender,
    TransportChoice,
)

logger = logging.getLogger(__name__)

Mode = Literal["push", "pull"]
STREAM_ONLY_OPTIONS = frozenset({"kind", "transport", "wait_for_ack", "timeout", "policy"})
"""Options of a stream that no storage format takes: ``FileManager.save(..., backend=(storage,
stream))`` gives them to the stream alone (``metadata`` goes to both)."""
_SEND_OPTIONS = STREAM_ONLY_OPTIONS | {"metadata"}


class StreamingBackend(StorageBackend):
    """Stream arrays to a viewer (``mode="push"``) or receive them (``mode="pull"``).

    The wire protocol, transports and policies are described in ``docs/streaming.md``.

    Parameters
    ----------
    mode
        ``"push"``: :meth:`save` sends; ``"pull"``: :meth:`load` receives.
    port, host
        The data socket's address (``host`` defaults to 127.0.0.1); acknowledgements on
        ``ack_port`` (default ``port + 1``).
    bind
        Whether this end binds (default: the pushing end binds; viewers that many pipelines
        stream to bind themselves and senders connect).
    send_timeout, recv_timeout
        Seconds a save may wait for room (or an ack) and a load for an item, before
        :class:`~polystore.streaming.StreamTimeoutError` (a ``TimeoutError``).
    linger
        Seconds an item saved before any receiver connected may wait for one (also after
        :meth:`close`); then it is dropped with a warning and counted in ``expired``.
    policy
        ``"block"``: wait for a slow receiver; ``"latest"``: keep only the newest frame per path.
    transport
        ``"auto"`` (shared memory on this host above ``shm_threshold`` bytes), ``"shm"`` or
        ``"inline"``.
    shm_slots
        Frames in flight in the shared-memory ring (default ``DEFAULT_SHM_SLOTS``).
    max_bytes, max_pending_bytes, high_water_mark
        Limits: one received item's size; inline bytes saved and not yet acknowledged by a
        receiver (``save`` waits at it); messages ZeroMQ queues.
    curve
        :class:`~polystore.streaming.CurveKeys` to encrypt and authenticate (CurveZMQ).
    inbox_items, inbox_bytes
        ``mode="pull"``: what :meth:`load` keeps of other paths while it waits for one, at
        most; beyond either, the oldest kept item is dropped (logged, counted in
        ``inbox_dropped``).

    Raises
    ------
    StreamConfigError
        ``mode`` is neither ``"push"`` nor ``"pull"``.
    """

    _backend_type = "streaming"
    VIEWER_TYPE: ClassVar[str] = "generic"
    SHM_PREFIX: ClassVar[str] = DEFAULT_SHM_PREFIX
    SUPPORTED_EXTENSIONS: ClassVar[Iterable[str] | None] = None
    """Extensions this backend streams (compound ones such as ``.roi.zip`` included); None: all."""
    DEFAULT_SHM_SLOTS: ClassVar[int] = DEFAULT_SHM_SLOTS
    """Shared-memory slots in the sender's ring when ``shm_slots`` is not given: frames sent and
    not yet given back by the receiver, at most."""
    supports_directories: ClassVar[bool] = False
    """A stream has no folders: ``list_dir`` and ``ensure_directory`` raise
    :class:`~polystore.streaming.errors.UnsupportedOperationError`; ``is_dir`` is always False."""
    is_live_view: ClassVar[bool] = False
    """A viewer: ``FileManager.save(..., backend=(storage, viewer))`` sends it the newest frames
    only (``policy="latest"``), so that it never slows the storage side."""
    STREAM_ONLY_OPTIONS: ClassVar[frozenset[str]] = STREAM_ONLY_OPTIONS
    """What a two-place save keeps from the storage side (see
    :meth:`~polystore.filemanager.FileManager.save`)."""

    def __init__(
        self,
        mode: Mode = "push",
        port: int = 5555,
        host: str = "127.0.0.1",
        *,
        ack_port: int | None = None,
        bind: bool | None = None,
        send_timeout: float = 5.0,
        recv_timeout: float = 5.0,
        linger: float = DEFAULT_LINGER_S,
        policy: Policy = "block",
        transport: TransportChoice = "auto",
        shm_threshold: int = DEFAULT_SHM_THRESHOLD,
        shm_slots: int | None = None,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_pending_bytes: int = DEFAULT_MAX_PENDING_BYTES,
        high_water_mark: int | None = None,
        curve: CurveKeys | None = None,
        inbox_items: int = DEFAULT_INBOX_ITEMS,
        inbox_bytes: int = DEFAULT_INBOX_BYTES,
    ) -> None:
        if mode not in ("push", "pull"):
            raise StreamConfigError(f"mode must be 'push' or 'pull', got {mode!r}")
        # NaN failed the first load with a bare ValueError, deep in the receiving loop
        check_settings(recv_timeout=(recv_timeout, 0, False))
        self.mode: Mode = mode
        self.endpoints = Endpoints(host, port, ack_port)
        self.bind = (mode == "push") if bind is None else bind
        self.curve = curve
        self.recv_timeout = recv_timeout
        self.max_bytes = max_bytes
        self._inbox_limits = {"max_items": inbox_items, "max_bytes": inbox_bytes}
        self._sender: Sender | None = None
        self._inbox: PathInbox | None = None
        if mode == "push":
            # sockets open at the first save: a backend made by a registry costs nothing
            self._sender_options: dict[str, Any] = dict(
                bind=self.bind, curve=curve, policy=policy, send_timeout=send_timeout,
                linger=linger, transport=transport, shm_threshold=shm_threshold,
                shm_slots=shm_slots if shm_slots is not None else self.DEFAULT_SHM_SLOTS,
                shm_prefix=self.SHM_PREFIX, max_pending_bytes=max_pending_bytes,
                high_water_mark=high_water_mark,
            )
            self._sender = Sender(self.endpoints, **self._sender_options)

    # -- the two ends ------------------------------------------------------------------------------
    @property
    def sender(self) -> Sender:
        """The sending end (``mode="push"``)."""
        if self._sender is None:
            raise UnsupportedOperationError(
                f"this StreamingBackend receives (mode={self.mode!r}); saving needs one made with "
                "mode='push'"
            )
        return self._sender

    def _open_sender(self) -> Sender:
        """The sending end, a fresh one (same settings) if this backend was closed: a closed
        backend streams again at the next save, as a file backend writes again after close."""
        sender = self.sender
        if sender.closing and sender.reopen():
            return sender  # still delivering what it held, on the port a new one could not bind
        if sender.closed:
            self._sender_options["send_timeout"] = sender.send_timeout  # as the caller set it since
            sender = self._sender = Sender(self.endpoints, **self._sender_options)
        return sender

    @property
    def inbox(self) -> PathInbox:
        """The receiving end (``mode="pull"``), connected at first use."""
        if self.mode != "pull":
            raise UnsupportedOperationError(
                f"this StreamingBackend sends (mode={self.mode!r}); loading needs one made with "
                "mode='pull'"
            )
        if self._inbox is None:
            inbound = Inbound(self.endpoints, bind=self.bind, max_bytes=self.max_bytes,
                              shm_prefixes=(self.SHM_PREFIX,), curve=self.curve)
            try:
                self._inbox = PathInbox(inbound, self.recv_timeout, **self._inbox_limits)
            except BaseException:
                inbound.close()
                raise
        return self._inbox

    @property
    def supports_listing(self) -> bool:
        """Whether ``list_files`` answers: a pull backend lists items received and not yet loaded."""
        return self.mode == "pull"

    # settings and counters of the sending end, where scripts and tests read them
    @property
    def port(self) -> int:
        return self.endpoints.port

    @property
    def host(self) -> str:
        return self.endpoints.host

    @property
    def policy(self) -> Policy:
        return self.sender.policy

    @property
    def send_timeout(self) -> float:
        return self.sender.send_timeout

    @send_timeout.setter
    def send_timeout(self, seconds: float) -> None:
        self.sender.send_timeout = seconds

    @property
    def sent(self) -> int:
        return self._sender.sent if self._sender is not None else 0

    @property
    def dropped(self) -> int:
        """Frames replaced by a newer one for the same path before they could be sent (``latest``)."""
        return self._sender.dropped if self._sender is not None else 0

    @property
    def expired(self) -> int:
        """Items dropped because no receiver took them within ``linger`` seconds."""
        return self._sender.expired if self._sender is not None else 0

    @property
    def reclaimed(self) -> int:
        return self._sender.reclaimed if self._sender is not None else 0

    @property
    def pending(self) -> int:
        """Items saved and not yet handed to a receiver's connection."""
        return self._sender.pending if self._sender is not None else 0

    @property
    def received(self) -> int:
        return self._inbox.inbound.received if self._inbox is not None else 0

    @property
    def rejected(self) -> int:
        return self._inbox.inbound.rejected if self._inbox is not None else 0

    @property
    def inbox_dropped(self) -> int:
        """Items of other paths that ``load`` kept and then dropped to stay within
        ``inbox_items`` / ``inbox_bytes`` (``mode="pull"``)."""
        return self._inbox.dropped if self._inbox is not None else 0

    # -- extension filtering -----------------------------------------------------------------------
    def _filter_streamable_files(
        self, data_list: Sequence[Any], file_paths: Sequence[PathLike]
    ) -> tuple[list[Any], list[PathLike], list[PathLike]]:
        """Keep the items whose path ends in one of ``SUPPORTED_EXTENSIONS``.

        Returns ``(kept_data, kept_paths, skipped_paths)``; skipped paths are logged at INFO.
        """
        data = list(data_list)
        paths = list(file_paths)
        if len(data) != len(paths):
            raise InvalidOptionError(
                f"got {len(data)} data items but {len(paths)} paths; pass one path per item.")
        extensions = _extensions(type(self))
        if extensions is None:
            return data, paths, []
        kept_data, kept_paths, skipped = [], [], []
        for item, path in zip(data, paths, strict=True):
            if matches(checked_path(path).replace("\\", "/").rsplit("/", 1)[-1], None, extensions):
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

    # -- sending -------------------------------------------------------------------------------------
    def save(self, data: Any, file_path: PathLike, **kwargs: Any) -> None:
        """Stream ``data`` as ``file_path`` (skipped, with an INFO log, if its extension is not supported).

        Returns once the item is sent or queued. Keywords: ``kind`` (``"image"``, ``"labels"``,
        ...), ``metadata`` (a JSON dict), ``transport`` (``"inline"`` / ``"shm"``),
        ``wait_for_ack`` (wait until a receiver has the item), ``timeout`` (seconds, instead of
        ``send_timeout``), ``policy`` (``"latest"`` for this item only). Other keywords (a
        storage format's options) are ignored.
        """
        if _extensions(type(self)) is None:
            self._stream_data(data, file_path, **kwargs)
            return
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
        """Send one item (ROI sets and DataFrames become bytes of a stated format first)."""
        path = checked_path(path)
        sender = self._open_sender()
        payload = encode(data, path)
        array = payload.array
        if not (array.flags.c_contiguous or array.flags.f_contiguous):
            array = np.ascontiguousarray(array)
        options = {key: value for key, value in kwargs.items() if key in _SEND_OPTIONS}
        if payload.kind is not None:
            options.setdefault("kind", payload.kind)
        if payload.metadata:
            options["metadata"] = {**payload.metadata, **(options.get("metadata") or {})}
        sender.send(array, path, **options)

    def frame(self, shape: tuple[int, ...] | int, dtype: Any, path: PathLike, **options: Any) -> Frame:
        """The zero-copy producer: ``with backend.frame(shape, dtype, path) as buffer:`` fills the
        next shared-memory slot in place; sent when the block exits (see :meth:`Sender.frame`)."""
        unknown = set(options) - {"kind", "metadata", "wait_for_ack", "timeout"}
        if unknown:
            raise InvalidOptionError(f"frame() got unexpected options: {', '.join(sorted(unknown))}; "
                                     "it takes kind, metadata, wait_for_ack and timeout")
        return self._open_sender().frame(shape, dtype, checked_path(path), **options)

    def flush(self, timeout: float | None = None) -> bool:
        """Hand what waits to the receiver's connection, for up to ``timeout`` seconds."""
        return self.sender.flush(timeout)

    # -- receiving -----------------------------------------------------------------------------------
    def receive(self, timeout: float | None = None) -> StreamItem | None:
        """The next item from any path (``None`` after ``timeout``, default ``recv_timeout``)."""
        return self.inbox.receive(timeout)

    def load(self, file_path: PathLike, **kwargs: Any) -> Any:
        """The next array streamed as ``file_path`` (waits up to ``timeout``/``recv_timeout`` seconds)."""
        timeout = kwargs.get("timeout")
        return self.inbox.take(os.fspath(file_path), None if timeout is None else float(timeout)).array

    # -- what a stream has instead of files ------------------------------------------------------------
    def list_files(
        self, directory: PathLike, pattern: str | None = None, extensions: Iterable[str] | None = None,
        recursive: bool = False, **kwargs: Any,
    ) -> list[str]:
        """Paths received and not yet loaded (pull mode only)."""
        prefix = os.fspath(directory).rstrip("/")
        exts = normalize_extensions(extensions)
        return [
            p for p in self.inbox.paths()
            if (not prefix or p.startswith(prefix + "/")) and matches(p.rsplit("/", 1)[-1], pattern, exts)
        ]

    def exists(self, path: PathLike) -> bool:
        """Whether an item received as ``path`` waits to be loaded (pull mode only)."""
        return os.fspath(path) in self.inbox.paths()

    def is_file(self, path: PathLike) -> bool:
        return self.exists(path)

    def is_dir(self, path: PathLike) -> bool:
        return False

    def delete(self, path: PathLike) -> None:
        """Forget the items received as ``path`` and not yet loaded (pull mode only)."""
        self.inbox.discard(os.fspath(path))

    def list_dir(self, path: PathLike) -> list[str]:
        raise UnsupportedOperationError(
            f"{type(self).__name__} has no directories (supports_directories is False); "
            "list what a pull backend received with list_files()"
        )

    def ensure_directory(self, directory: PathLike) -> str:
        raise UnsupportedOperationError(
            f"{type(self).__name__} has no directories (supports_directories is False): save "
            "items by path, no folder needs to exist"
        )

    # -- lifetime ------------------------------------------------------------------------------------
    def close(self, timeout: float | None = None) -> None:
        """Close both ends. A sender delivers what it still holds in the background (up to its
        ``linger``) unless ``timeout`` is given: then it waits here at most that long."""
        if self._sender is not None:
            self._sender.close(timeout)
        if self._inbox is not None:
            self._inbox.close()
            self._inbox = None

    def __enter__(self) -> StreamingBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        # dropped without close(): what was accepted is still delivered, in the background
        if sys.is_finalizing():
            return  # the sender's atexit handler has closed it; no thread can start now
        with contextlib.suppress(Exception):
            if self._sender is not None:
                self._sender.close_in_background()
            if self._inbox is not None:
                self._inbox.close()


_EXTENSIONS: dict[tuple[type, int, int], tuple[str, ...] | None] = {}
_SIZED = (frozenset, set, list, tuple)


def _extensions(cls: type[StreamingBackend]) -> tuple[str, ...] | None:
    """``cls.SUPPORTED_EXTENSIONS`` normalised, once per class and set (every save asks)."""
    declared = cls.SUPPORTED_EXTENSIONS
    key = (cls, id(declared), len(declared) if isinstance(declared, _SIZED) else -1)
    if key not in _EXTENSIONS:
        _EXTENSIONS[key] = normalize_extensions(declared)
    return _EXTENSIONS[key]
