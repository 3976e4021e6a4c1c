"""Locks for writers that share a store: file locks beside a local store, lock objects beside a
store on object storage.

Object stores have no file locks, but they have conditional writes: ``PUT`` with
``If-None-Match: *`` creates an object only if no object has that key (S3 since 2024, MinIO,
moto). Whoever creates the lock object holds the lock; releasing deletes it. The object holds
its owner and an expiry time, so a lock left by a process that died is taken over once its
lease has run out (at once, where the owner was a process of this host that no longer runs),
instead of blocking every writer; the takeover is itself a conditional write (``If-Match`` on
the dead lock's ETag), so only one writer wins it.

Limits: the lease is not renewed, so a holder must finish within it (60 s by default; the
metadata updates and field writes it guards take milliseconds); expiry compares wall clocks,
so the writers' clocks must roughly agree; the release reads the owner and then deletes, which
can remove a successor's lock only if the holder outlived its own lease.

Written by hand because no maintained library offers this for object stores (filelock and
portalocker lock local files); it needs only obstore's ``put(mode="create")`` and
``put(mode={"e_tag": ...})``.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

from polystore.atomic import LOCK_SUFFIX, LOCKS_FOLDER_SUFFIX, file_lock, lock_path_for
from polystore.backends.zarr.location import ObjectKeys, Stores, beside
from polystore.exceptions import LockTimeoutError

DEFAULT_LEASE_S = 60.0
DEFAULT_TIMEOUT_S = 120.0
_HOST = socket.gethostname()


class ObjectStoreLock:
    """``with ObjectStoreLock(keys, ".plate.zarr.polystore-lock"):`` - one holder at a time."""

    def __init__(
        self, keys: ObjectKeys, key: str, *, timeout: float = DEFAULT_TIMEOUT_S,
        lease: float = DEFAULT_LEASE_S, poll_interval: float = 0.02,
    ) -> None:
        self.keys = keys
        self.key = key
        self.timeout = timeout
        self.lease = lease
        self.poll_interval = poll_interval
        self.owner = f"{_HOST}:{os.getpid()}:{uuid.uuid4().hex}"

    def _body(self) -> bytes:
        return json.dumps({"owner": self.owner, "expires": time.time() + self.lease}).encode()

    def acquire(self) -> None:
        deadline = time.monotonic() + self.timeout
        wait = self.poll_interval
        while True:
            if self.keys.create(self.key, self._body()) or self._take_over_if_dead():
                return
            if time.monotonic() >= deadline:
                raise LockTimeoutError(
                    f"Could not lock '{self.keys.display}/{self.key}' within {self.timeout:g} s: "
                    f"another writer holds it ({self._holder()}). If no writer is running, delete "
                    "that object (or run `polystore repair` on the store)."
                )
            time.sleep(wait)
            wait = min(wait * 2, 0.5)

    def _read(self) -> tuple[str | None, dict[str, Any]] | None:
        """(ETag, content) of the lock object, or None when there is none."""
        found = self.keys.get_versioned(self.key)
        if found is None:
            return None
        raw, etag = found
        try:
            content = json.loads(raw)
        except ValueError:
            content = {}  # unreadable: held by someone until a lease says otherwise
        return etag, content if isinstance(content, dict) else {}

    def _holder(self) -> str:
        found = self._read()
        return "released meanwhile" if found is None else f"owner {found[1].get('owner', 'unknown')}"

    def _take_over_if_dead(self) -> bool:
        """Replace a lock whose holder is gone (lease run out, or a dead process of this host);
        True if we now hold it. Conditioned on the ETag read with the dead content, so of
        several writers taking over at once exactly one succeeds."""
        found = self._read()
        if found is None:
            return False  # released meanwhile: compete on the conditional create again
        etag, content = found
        if not etag or not holder_is_dead(content):
            return False
        return self.keys.replace(self.key, self._body(), etag)

    def release(self) -> None:
        """Delete the lock object if it is still ours (after a lease ran out it may not be)."""
        found = self._read()
        if found is not None and found[1].get("owner") == self.owner:
            self.keys.delete(self.key)

    def __enter__(self) -> ObjectStoreLock:
        self.acquire()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


def holder_is_dead(content: dict[str, Any]) -> bool:
    """Whether a lock object's holder can no longer release it: its lease has run out, or it
    was a process of this host that no longer runs (killed)."""
    expires = content.get("expires")
    if isinstance(expires, (int, float)) and expires < time.time():
        return True
    host, _, rest = str(content.get("owner", "")).partition(":")
    pid_text = rest.partition(":")[0]
    if host != _HOST or not pid_text.isdigit():
        return False
    return not _process_runs(int(pid_text))


def _process_runs(pid: int) -> bool:
    if not 0 < pid <= 2**22:  # Linux's pid_max ceiling; anything beyond names no process
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


LOCAL_STRIPES = 64
"""Lock files a local store's field locks share (see ``field_lock``)."""


def lock_name(field_path: str) -> str:
    return field_path.replace("/", "_")


@contextlib.contextmanager
def local_lock(target: Path) -> Iterator[None]:
    """Hold the exclusive lock tied to ``target`` (the lock file ``polystore.atomic.file_lock``
    uses: the two exclude each other), waiting as long as it takes.

    Written by hand over ``fcntl.flock`` because a save takes two locks: filelock's lock costs
    about 1 ms of CPU a hold here (fallbacks, bookkeeping) and polls every 50 ms while another
    process holds it, where a blocking ``flock`` is a few system calls and wakes at the
    release. The lock file stays (as filelock leaves it): waiters then share one inode.
    """
    if sys.platform == "win32":  # no flock: filelock's Windows lock on the same file
        with file_lock(target):
            yield
        return
    import fcntl

    path = lock_path_for(target)
    try:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # closing the last descriptor of the file releases its flock


def metadata_lock(stores: Stores, store: str) -> contextlib.AbstractContextManager[Any]:
    """Serialise the plate's metadata read-modify-write across processes (and machines)."""
    if "://" in store:
        parent, key = beside(store, f".{{}}{LOCK_SUFFIX}")
        return ObjectStoreLock(stores.keys(parent), key)  # type: ignore[arg-type]
    return local_lock(Path(store))


def field_lock(stores: Stores, store: str, field_path: str) -> contextlib.AbstractContextManager[Any]:
    """Serialise the writers of one field image (creating, growing, filling it).

    Processes writing different fields run in parallel; the locks live in one hidden folder
    beside the store, never inside it. Always taken before the store's metadata lock, never
    while holding it, and one at a time. Locally a field's lock is one of ``LOCAL_STRIPES``
    lock files (by a hash of its path), made once per store: a lock file per field cost a file
    creation per new field, as much as writing one of its chunks on a busy disk; two fields
    sharing a stripe only wait for each other. An object store's lock object is made and
    deleted on every hold anyway, so it stays one per field.
    """
    if "://" in store:
        parent, key = beside(store, f".{{}}{LOCKS_FOLDER_SUFFIX}/{lock_name(field_path)}{LOCK_SUFFIX}")
        return ObjectStoreLock(stores.keys(parent), key)  # type: ignore[arg-type]
    locks = Path(store).with_name(f".{Path(store).name}{LOCKS_FOLDER_SUFFIX}")
    stripe = zlib.crc32(field_path.encode("utf-8", "surrogateescape")) % LOCAL_STRIPES
    return local_lock(locks / f"fields-{stripe:02d}")


def lock_keys(stores: Stores, store: str) -> Iterator[tuple[ObjectKeys, str]]:
    """The lock objects beside an object store (for repair): (keys, key) of each."""
    if "://" not in store:
        return
    parent, metadata_key = beside(store, f".{{}}{LOCK_SUFFIX}")
    keys = stores.keys(parent)
    assert isinstance(keys, ObjectKeys)
    if keys.exists(metadata_key):
        yield keys, metadata_key
    _, folder = beside(store, f".{{}}{LOCKS_FOLDER_SUFFIX}")
    for key in list(keys.list(folder + "/")):
        yield keys, key
