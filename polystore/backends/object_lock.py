"""A lock on an object store (S3 and compatibles), for read-modify-write of shared metadata.

Object stores have no file locks, but they have conditional writes: ``PUT`` with
``If-None-Match: *`` creates an object only if no object has that key (S3 since 2024, MinIO,
moto). Whoever creates the lock object holds the lock; releasing deletes it. The object holds
its owner and an expiry time, so a lock left by a process that died is taken over once its
lease has run out, instead of blocking every writer forever; the takeover is itself a
conditional write (``If-Match`` on the expired lock's ETag), so only one writer wins it.

Limits: the lease is not renewed, so a holder must finish within it (60 s by default; the
plate metadata updates it guards take milliseconds); expiry compares wall clocks, so the
writers' clocks must roughly agree; the release reads the owner and then deletes, which can
remove a successor's lock only if the holder outlived its own lease.

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

    def _body(self) -> bytes:
        return json.dumps({"owner": self.owner, "expires": time.time() + self.lease}).encode()

    def acquire(self) -> None:
        deadline = time.monotonic() + self.timeout
        wait = self.poll_interval
        while True:
            try:
                self.fs.pipe_file(self.key, self._body(), IfNoneMatch="*")
                return
            except FileExistsError:
                if self._take_over_if_expired():
                    return
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"Could not lock '{self.key}' within {self.timeout:g} s: another writer holds it "
                    f"({self._holder()}). If no writer is running, delete that object."
                )
            time.sleep(wait)
            wait = min(wait * 2, 0.5)

    def _read(self) -> tuple[str, dict[str, Any]] | None:
        """(ETag, content) of the lock object, or None when there is none."""
        self.fs.invalidate_cache(self.key)
        try:
            # the ETag first: if the object changes before the body is read, a replacement
            # conditioned on this ETag fails instead of replacing a lock it never saw
            etag = str(self.fs.info(self.key).get("ETag", ""))
            raw = self.fs.cat_file(self.key)
        except FileNotFoundError:
            return None
        try:
            content = json.loads(raw)
        except ValueError:
            content = {}  # unreadable: held by someone until a lease says otherwise
        return etag, content if isinstance(content, dict) else {}

    def _holder(self) -> str:
        found = self._read()
        return "released meanwhile" if found is None else f"owner {found[1].get('owner', 'unknown')}"

    def _take_over_if_expired(self) -> bool:
        """Replace a lock whose lease has run out (its holder died); True if we now hold it.

        The replacement is conditioned on the ETag read with the expired content, so of
        several writers taking over at once exactly one succeeds.
        """
        found = self._read()
        if found is None:
            return False  # released meanwhile: compete on the conditional create again
        etag, content = found
        expires = content.get("expires")
        if not (isinstance(expires, (int, float)) and expires < time.time()) or not etag:
            return False
        try:
            self.fs.pipe_file(self.key, self._body(), IfMatch=etag)
        except FileNotFoundError:
            return False  # released first
        except OSError as error:
            # 412: someone else took it over first (s3fs maps If-Match's 412 to a bare OSError)
            if _precondition_failed(error):
                return False
            raise
        return True

    def _remove(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self.key)

    def release(self) -> None:
        """Delete the lock object if it is still ours (after a lease ran out it may not be)."""
        found = self._read()
        if found is not None and found[1].get("owner") == self.owner:
            self._remove()

    def __enter__(self) -> ObjectStoreLock:
        self.acquire()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


def _precondition_failed(error: OSError) -> bool:
    text = f"{error} {error.__cause__ or ''}"
    return isinstance(error, FileExistsError) or "PreconditionFailed" in text or "pre-condition" in text
