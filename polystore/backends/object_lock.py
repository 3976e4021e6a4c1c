"""A lock on an object store (S3 and compatibles), for read-modify-write of shared metadata.

Object stores have no file locks, but they have conditional writes: ``PUT`` with
``If-None-Match: *`` creates an object only if no object has that key (S3 since 2024, MinIO,
moto). Whoever creates the lock object holds the lock; releasing deletes it. The object holds
its owner and an expiry time, so a lock left by a process that died is taken over once its
lease has run out, instead of blocking every writer forever.

Written by hand because no maintained library offers this for fsspec stores (filelock and
portalocker are local-file locks); it relies only on ``fs.pipe_file(..., IfNoneMatch="*")``
raising FileExistsError when the key exists (s3fs maps S3's 412 PreconditionFailed to it).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
import uuid
from types import TracebackType
from typing import Any

DEFAULT_LEASE_S = 60.0
DEFAULT_TIMEOUT_S = 120.0


class ObjectStoreLock:
    """``with ObjectStoreLock(fs, "bucket/plate.zarr.polystore-lock"):`` - one holder at a time."""

    def __init__(
        self, fs: Any, key: str, *, timeout: float = DEFAULT_TIMEOUT_S, lease: float = DEFAULT_LEASE_S,
        poll_interval: float = 0.02,
    ) -> None:
        self.fs = fs
        self.key = key
        self.timeout = timeout
        self.lease = lease
        self.poll_interval = poll_interval
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex}"

    def acquire(self) -> None:
        deadline = time.monotonic() + self.timeout
        wait = self.poll_interval
        while True:
            body = json.dumps({"owner": self.owner, "expires": time.time() + self.lease}).encode()
            try:
                self.fs.pipe_file(self.key, body, IfNoneMatch="*")
                return
            except FileExistsError:
                self._take_over_if_expired()
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"Could not lock '{self.key}' within {self.timeout:g} s: another writer holds it "
                    f"({self._holder()}). If no writer is running, delete that object."
                )
            time.sleep(wait)
            wait = min(wait * 2, 0.5)

    def _read(self) -> dict[str, Any] | None:
        try:
            content = json.loads(self.fs.cat_file(self.key))
        except FileNotFoundError:
            return None
        except ValueError:
            return {}  # unreadable: treat as held by someone else until its lease says otherwise
        return content if isinstance(content, dict) else {}

    def _holder(self) -> str:
        content = self._read()
        return "released meanwhile" if content is None else f"owner {content.get('owner', 'unknown')}"

    def _take_over_if_expired(self) -> None:
        content = self._read()
        if content is None:
            return
        expires = content.get("expires")
        if isinstance(expires, (int, float)) and expires < time.time():
            # a holder that died: its lease ran out. Deleting races only with other takers,
            # who then compete on the conditional create like everyone else.
            self._remove()
        self.fs.invalidate_cache(self.key)

    def _remove(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self.key)

    def release(self) -> None:
        content = self._read()
        if content is not None and content.get("owner") == self.owner:
            self._remove()

    def __enter__(self) -> ObjectStoreLock:
        self.acquire()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()
