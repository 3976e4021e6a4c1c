"""Same-host transfer through a ring of reused shared-memory slots.

The sender owns the segments, named ``{prefix}{pid}_{n}``; a slot is written only when the
receiver has released it (an ack on the back channel). Normal close unlinks every segment;
:func:`sweep_orphaned_segments` removes those left by a sender that died (its pid is gone).
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import logging
import mmap
import os
import re
import time
from multiprocessing import shared_memory
from pathlib import Path

from polystore.streaming.protocol import shm_name_pattern

logger = logging.getLogger(__name__)

SHM_DIR = Path("/dev/shm")
_segment_numbers = itertools.count()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def list_segments(prefix: str) -> list[str]:
    """Names of the shared-memory segments on this host that follow our naming for ``prefix``."""
    if not SHM_DIR.is_dir():
        return []
    pattern = shm_name_pattern([prefix])
    return sorted(p.name for p in SHM_DIR.iterdir() if pattern.match(p.name))


def sweep_orphaned_segments(prefix: str) -> list[str]:
    """Unlink segments named ``{prefix}{pid}_{n}`` whose owner ``pid`` no longer runs; return them."""
    pattern = shm_name_pattern([prefix])
    removed = []
    for name in list_segments(prefix):
        match = pattern.match(name)
        if match is None or _pid_alive(int(match["pid"])):
            continue
        with contextlib.suppress(FileNotFoundError):
            (SHM_DIR / name).unlink()
            removed.append(name)
            logger.info("removed orphaned shared-memory segment %s", name)
    return removed


class AttachedSegment:
    """A receiver's read-write mapping of a sender's segment, unknown to any resource tracker.

    ``SharedMemory(name)`` on Python < 3.13 registers the segment with the resource tracker,
    which then unlinks it (and warns of a "leak") when the receiver exits, while the sender
    still uses it. Unregistering afterwards (``resource_tracker.unregister``) is not enough
    under the 'spawn' and 'forkserver' start methods: children share their parent's tracker,
    so the unregister would also drop the *sender's* registration when both are in one
    process tree. Mapping the segment directly never registers it at all.
    """

    def __init__(self, name: str) -> None:
        import _posixshmem  # type: ignore[import-not-found]  # behind multiprocessing.shared_memory

        fd = _posixshmem.shm_open("/" + name, os.O_RDWR, mode=0o600)
        try:
            status = os.fstat(fd)
            self.size = status.st_size
            self.identity = (status.st_dev, status.st_ino)
            self._mmap = mmap.mmap(fd, self.size)
        finally:
            os.close(fd)
        self.name = name
        self.buf = memoryview(self._mmap)

    def is_current(self) -> bool:
        """Whether ``name`` still names the segment mapped here (not unlinked, nor replaced)."""
        try:
            status = os.stat(SHM_DIR / self.name)
        except FileNotFoundError:
            return False
        return (status.st_dev, status.st_ino) == self.identity

    def exported(self, offset: int, size: int) -> ctypes.Array[ctypes.c_char]:
        """``size`` bytes at ``offset`` as a buffer object that arrays can be built on.

        A ctypes array, not a slice of :attr:`buf`: NumPy collapses a view's ``base`` down to
        the first object that is not an ndarray, so every array derived from one built on this
        object keeps *this object* alive, and a ``weakref.finalize`` on it fires only when the
        last of them is gone (the moment a zero-copy receiver may give the slot back).
        """
        return (ctypes.c_char * size).from_buffer(self._mmap, offset)

    def close(self) -> None:
        self.buf.release()
        # zero-copy arrays may still point into the mapping: then it is unmapped when the last
        # of them is collected (the sender may unlink the segment meanwhile; the pages stay)
        with contextlib.suppress(BufferError):
            self._mmap.close()


def attach(name: str) -> AttachedSegment:
    """Map an existing segment of ours without registering it anywhere."""
    return AttachedSegment(name)


class SlotRing:
    """A fixed number of reusable segments owned by this process."""

    def __init__(self, prefix: str, slots: int = 4) -> None:
        if not re.fullmatch(r"[A-Za-z0-9_]+", prefix):
            raise ValueError(f"shared-memory prefix {prefix!r} must be letters, digits and '_'")
        self.prefix = prefix
        self.pid = os.getpid()
        self._segments: list[shared_memory.SharedMemory | None] = [None] * slots
        self._free = list(range(slots))
        self._in_flight: list[int] = []  # oldest first
        self._sent_at: dict[int, float] = {}
        sweep_orphaned_segments(prefix)

    @property
    def free_slots(self) -> int:
        return len(self._free)

    def has_free(self) -> bool:
        return bool(self._free)

    def acquire(self, nbytes: int) -> tuple[int, shared_memory.SharedMemory]:
        """A free slot of at least ``nbytes``; the caller has checked :meth:`has_free`."""
        slot = self._free.pop(0)
        segment = self._segments[slot]
        if segment is None or segment.size < nbytes:
            self._drop(slot)
            # a number no other ring of this process has used: a receiver never confuses a
            # new segment with an old one of the same name it still has mapped
            name = f"{self.prefix}{self.pid}_{next(_segment_numbers)}"
            segment = shared_memory.SharedMemory(name=name, create=True, size=max(nbytes, 1))
            self._segments[slot] = segment
        self._in_flight.append(slot)
        self._sent_at[slot] = time.monotonic()
        return slot, segment

    def oldest_age(self) -> float:
        """Seconds since the slot in flight longest was taken (0 when none is in flight)."""
        return time.monotonic() - self._sent_at[self._in_flight[0]] if self._in_flight else 0.0

    def name_of(self, slot: int) -> str | None:
        """The name of the segment in ``slot`` now (None for an empty or unknown slot)."""
        segment = self._segments[slot] if 0 <= slot < len(self._segments) else None
        return segment.name if segment is not None else None

    def release(self, slot: int) -> None:
        if 0 <= slot < len(self._segments) and slot not in self._free:
            self._free.append(slot)
            with contextlib.suppress(ValueError):
                self._in_flight.remove(slot)

    def reclaim_oldest(self) -> int | None:
        """Give up on the slot in flight longest (its receiver died, or lost it): a new segment
        will take its place. Safe while someone still reads it: unlinking keeps their pages."""
        if not self._in_flight:
            return None
        slot = self._in_flight[0]
        self._drop(slot)
        self.release(slot)
        return slot

    def _drop(self, slot: int) -> None:
        segment = self._segments[slot]
        if segment is not None:
            segment.close()
            with contextlib.suppress(FileNotFoundError):
                segment.unlink()
            self._segments[slot] = None

    def close(self) -> None:
        """Close and unlink every segment (in the process that created them only)."""
        if os.getpid() != self.pid:
            return  # a forked child closing an inherited backend must not unlink the parent's
        for index in range(len(self._segments)):
            self._drop(index)
        self._free = list(range(len(self._segments)))
        self._in_flight = []
