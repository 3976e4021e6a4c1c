"""A copying receiver's private copies, in memory recycled from arrays already dropped.

A copying receiver (``zero_copy=False``) hands out an array of its own for every
shared-memory item, and gives the slot back at once. Fresh memory for each copy costs the
kernel a page fault and a page of zeros for every page the copy then touches, before the copy
itself; where a virtual machine's host backs guest memory only when it is first touched, a
fresh frame's pages can cost far more than the copy (a stream stalls for tens of
milliseconds). So the memory of a copy whose arrays are all gone is kept and the next copy of
that size goes into it: the caching allocators of PyTorch and CuPy do the same for device
memory. A buffer is reused only once no array refers to it (its lease is collected); at most
``max_bytes`` of unused buffers are kept, the rest is freed as usual.

Written here, not taken from a library: NumPy has no pool of its own for host memory, and its
pluggable allocator (``PyDataMem_SetHandler``) is C-only and process-wide.
"""

from __future__ import annotations

import ctypes
import functools
import threading
from typing import Any

import numpy as np

DEFAULT_MAX_KEPT_BYTES = 256 * 1024**2
"""Unused copy buffers kept for reuse, at most (the receiver's own inbox bound)."""


def _release_lease(lease: Any) -> None:
    lease.on_release()


@functools.lru_cache(maxsize=64)
def lease_type(size: int) -> type[ctypes.Array[ctypes.c_char]]:
    """A ctypes array type of ``size`` bytes whose instances call their ``on_release`` when
    collected: the buffer object arrays are built on. NumPy collapses a view's ``base`` down to
    the first object that is not an ndarray, so every array derived from one built on it keeps
    *it* alive, and it is collected with the last of them (a ``weakref.finalize`` per item costs
    several times more)."""
    return type(f"Lease{size}", (ctypes.c_char * size,), {"__del__": _release_lease})


class CopyBuffers:
    """Private buffers for copies, each reused once the arrays on its last lease are gone."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_KEPT_BYTES) -> None:
        self.max_bytes = max_bytes
        self.kept_bytes = 0
        self.reused = 0
        """Copies made into a buffer that was kept (not fresh memory)."""
        self._free: dict[int, list[np.ndarray]] = {}
        self._closed = False
        # a lease is collected on whichever thread drops its last array, maybe inside a
        # garbage collection that runs while this thread holds the lock: re-entrant
        self._lock = threading.RLock()

    def copy(self, source: np.ndarray) -> ctypes.Array[ctypes.c_char]:
        """A private copy of ``source`` (1-D uint8), as a lease that arrays are built on."""
        size = source.nbytes
        with self._lock:
            free = self._free.get(size)
            buffer = free.pop() if free else None
            if buffer is not None:
                self.kept_bytes -= size
                self.reused += 1
        if buffer is None:
            buffer = np.empty(size, dtype=np.uint8)
        np.copyto(buffer, source)
        lease = lease_type(size).from_buffer(buffer.data)  # keeps the buffer alive
        lease.__dict__["on_release"] = functools.partial(self._give_back, buffer)
        return lease

    def _give_back(self, buffer: np.ndarray) -> None:
        """``buffer``'s lease is gone: keep it for the next copy of its size, within the bound."""
        with self._lock:
            if not self._closed and self.kept_bytes + buffer.nbytes <= self.max_bytes:
                self._free.setdefault(buffer.nbytes, []).append(buffer)
                self.kept_bytes += buffer.nbytes

    def close(self) -> None:
        """Free every kept buffer, and keep none from now on (the receiver closes; copies it
        handed out stay their holders')."""
        with self._lock:
            self._closed = True
            self._free.clear()
            self.kept_bytes = 0
