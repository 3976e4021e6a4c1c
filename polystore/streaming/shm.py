"""Same-host transfer through a ring of reused shared-memory slots.

The sender owns the segments, named ``{prefix}{pid}_{n}``; each begins with a 64-byte stamp
(magic + the sending stream's id), then a control block, and the frame follows at
:data:`DATA_OFFSET`. A slot is written only when the receiver has released it: by writing the
item's id into the control block (a receiver that knows ``shm.release``; a message only when
the sender asked for one there because it waits), or by an ack on the back channel. Normal close
unlinks every segment; :func:`sweep_orphaned_segments` removes those left by a sender that
died (its pid is gone), and the sender's resource tracker unlinks them if it is killed.

What a receiver trusts, and why (:class:`AttachedSegment`): only a regular file owned by its
own user, writable by nobody else, with one link (a hard link planted under our name has two),
stamped by the stream the header names; before every read its size is checked again
(``lseek`` to its end), so a segment shrunk after it was mapped is refused instead of read past its end
(SIGBUS). Only the owner can shrink a segment writable by nobody else, and the owner is the
receiver's own user.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import logging
import mmap
import os
import re
import stat
import struct
import threading
import time
from collections.abc import Callable
from multiprocessing import shared_memory
from pathlib import Path
from typing import Any, Literal

import numpy as np

from polystore.streaming.copies import CopyBuffers, lease_type
from polystore.streaming.errors import ProtocolError, StreamConfigError
from polystore.streaming.protocol import (
    FRAME_AT,
    RELEASE_AT,
    STAMP_BYTES,
    WAKE_AT,
    owner_pid,
    shm_name_pattern,
)

logger = logging.getLogger(__name__)

SHM_DIR = Path("/dev/shm")
MAGIC = b"PSTSHM\x00\x02"
DATA_OFFSET = FRAME_AT
"""Where a frame starts in the segments a sender makes: after the stamp and the control block."""
_STREAM_BYTES = STAMP_BYTES - len(MAGIC)
_WORD = struct.Struct("<Q")  # a control block's words: item ids
_segment_numbers = itertools.count()


def stamp(stream: str) -> bytes:
    """The first :data:`STAMP_BYTES` bytes of every segment a sender of ``stream`` creates."""
    raw = stream.encode("ascii")
    if len(raw) > _STREAM_BYTES:
        raise StreamConfigError(f"stream id {stream!r} is longer than {_STREAM_BYTES} characters")
    return MAGIC + raw.ljust(_STREAM_BYTES, b"\0")


def _pid_alive(pid: int) -> bool:
    """Whether ``pid`` runs: a zombie (killed, not yet reaped by its parent) holds nothing."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as status:
            # "pid (comm) S ...": the state follows the last ')' (comm may hold one)
            return status.read().rpartition(b")")[2][1:2] not in (b"Z", b"X")
    except OSError:
        return True  # no /proc to ask: a process that answers the signal is taken as running


def _is_our_orphan(path: Path) -> bool:
    """Whether ``path`` is a segment a sender of ours made: a regular file of this user, one
    link, beginning with our magic (a name alone could be anyone's)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        status = os.fstat(fd)
        if not stat.S_ISREG(status.st_mode) or status.st_uid != os.geteuid() or status.st_nlink != 1:
            return False
        return os.pread(fd, len(MAGIC), 0) == MAGIC
    finally:
        os.close(fd)


def list_segments(prefix: str) -> list[str]:
    """Names of the shared-memory segments on this host that follow our naming for ``prefix``."""
    if not SHM_DIR.is_dir():
        return []
    pattern = shm_name_pattern([prefix])
    return sorted(p.name for p in SHM_DIR.iterdir() if pattern.match(p.name))


def sweep_orphaned_segments(prefix: str) -> list[str]:
    """Unlink this user's segments named ``{prefix}{pid}_{n}`` whose ``pid`` no longer runs
    (or is a zombie), and that carry our stamp.

    A sender's resource tracker unlinks its segments when the sender alone is killed; when the
    whole process group is (a batch scheduler, Ctrl-\\), nothing does: every receiver sweeps
    when it starts and every few seconds, every sender when it makes its ring. Names whose pid
    no process can have (above Linux's limit), other users' files and files without our stamp
    are left alone. Returns the names removed.
    """
    pattern = shm_name_pattern([prefix])
    removed = []
    for name in list_segments(prefix):
        pid = owner_pid(name, pattern)
        if pid is None or _pid_alive(pid):
            continue
        path = SHM_DIR / name
        if not _is_our_orphan(path):
            continue
        with contextlib.suppress(FileNotFoundError, PermissionError):
            path.unlink()
            removed.append(name)
            logger.info("removed orphaned shared-memory segment %s", name)
    return removed


def _reserve_pages(name: str, size: int) -> None:
    """Give a new segment its memory now. /dev/shm (a tmpfs: 64 MiB in a container by default)
    lets a segment be made larger than the room it has, and the first write past that room is
    a SIGBUS that kills the sender; ``posix_fallocate`` says ENOSPC instead. (Linux's: a system
    without /dev/shm or the call keeps the segment as it was made.)"""
    if not hasattr(os, "posix_fallocate") or not SHM_DIR.is_dir():
        return
    fd = os.open(SHM_DIR / name, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        os.posix_fallocate(fd, 0, size)
    finally:
        os.close(fd)


class AttachedSegment:
    """A receiver's mapping of a sender's segment, checked, and unknown to any resource tracker.

    ``SharedMemory(name)`` on Python < 3.13 registers the segment with the resource tracker,
    which then unlinks it (and warns of a "leak") when the receiver exits, while the sender
    still uses it; unregistering afterwards is not enough under 'spawn', whose children share
    their parent's tracker. Mapping the segment directly never registers it at all.
    """

    def __init__(self, name: str) -> None:
        flags = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
        self.fd = os.open(SHM_DIR / name, flags)
        try:
            status = os.fstat(self.fd)
            if not stat.S_ISREG(status.st_mode):
                raise ProtocolError(f"shared-memory segment {name!r} is not a regular file")
            if status.st_uid != os.geteuid():
                raise ProtocolError(f"shared-memory segment {name!r} belongs to another user")
            if status.st_mode & 0o022:
                raise ProtocolError(f"shared-memory segment {name!r} is writable by other users")
            if status.st_size < STAMP_BYTES:
                raise ProtocolError(f"shared-memory segment {name!r} is smaller than its stamp")
            self._check_links(status, name)
            self.size = status.st_size
            self.identity = (status.st_dev, status.st_ino)
            self._mmap = mmap.mmap(self.fd, self.size)
        except BaseException:
            os.close(self.fd)
            raise
        self.name = name
        self._stamped_by: str | None = None
        # a zero-copy item gives its slot back from whichever thread drops its last array, maybe
        # while the receiving thread closes the segment: the fd must not be closed in between.
        # An RLock: a garbage collection inside give_back may drop another item of this segment
        self._lock = threading.RLock()
        self._closed = False

    @staticmethod
    def _check_links(status: os.stat_result, name: str) -> None:
        if status.st_nlink != 1:
            raise ProtocolError(f"shared-memory segment {name!r} has {status.st_nlink} links: "
                                "a segment of ours has one")

    def is_current(self) -> bool:
        """Whether ``name`` still names the segment mapped here (not unlinked, nor replaced)."""
        try:
            status = os.stat(f"{SHM_DIR}/{self.name}", follow_symlinks=False)
        except FileNotFoundError:
            return False
        return (status.st_dev, status.st_ino) == self.identity

    def size_now(self) -> int:
        """The segment's size now, as the kernel has it (the end of the file: one ``lseek``, a
        fraction of an ``fstat``, which builds a whole stat result; the fd's offset is unused:
        reads go through the mapping and ``pread``)."""
        return os.lseek(self.fd, 0, os.SEEK_END)

    def check(self, offset: int, size: int, stream: str) -> None:
        """Refuse (:class:`ProtocolError`) a read of ``size`` bytes at ``offset`` that would go past
        the segment's real size now, or of a segment ``stream`` did not stamp.

        Its links were counted when it was opened (a name planted as a hard link to someone
        else's file has two): a link made later changes nothing of what this mapping reads."""
        end = offset + size
        held = min(self.size_now(), self.size)
        if offset < STAMP_BYTES or end > held:
            raise ProtocolError(
                f"shm slot {self.name!r} holds bytes {STAMP_BYTES}..{held}, not {offset}..{end}"
            )
        if stream == self._stamped_by:
            return  # read once per mapping: only the owner (our own user) could write it since
        # pread, not the mapping: the stamp is read even if the segment shrank meanwhile
        if os.pread(self.fd, STAMP_BYTES, 0) != stamp(stream):
            raise ProtocolError(f"shared-memory segment {self.name!r} was not made by stream {stream!r}")
        self._stamped_by = stream

    def give_back(self, msg_id: int) -> bool:
        """Give item ``msg_id``'s slot back through the control block (a header with
        ``shm.release``, checked then): whether that is all (False: send the acknowledgement
        too, because the sender asked for one, or the segment is closed or no longer holds its
        control block).

        The size is checked again first: a segment shrunk since it was mapped would make the
        write a SIGBUS. Runs on any thread (see ``__init__``)."""
        with self._lock:
            if self._closed or min(self.size_now(), self.size) < FRAME_AT:
                return False
            _WORD.pack_into(self._mmap, RELEASE_AT, msg_id)
            # after the write: a sender that asks from now on sees the release itself
            wake: int = _WORD.unpack_from(self._mmap, WAKE_AT)[0]
            return wake != msg_id

    def copy_out(self, offset: int, size: int, buffers: CopyBuffers) -> ctypes.Array[ctypes.c_char]:
        """A private copy of ``size`` bytes at ``offset`` (checked by :meth:`check` just before),
        in memory ``buffers`` recycles."""
        return buffers.copy(np.frombuffer(self._mmap, dtype=np.uint8, count=size, offset=offset))

    def lease(self, offset: int, size: int, on_release: Callable[[], object]) -> ctypes.Array[ctypes.c_char]:
        """``size`` bytes at ``offset`` as a buffer object that arrays can be built on;
        ``on_release()`` runs when the last of them is gone (the moment a zero-copy receiver may
        give the slot back).

        A lease (:func:`~polystore.streaming.copies.lease_type`), not a slice of the mapping:
        every array derived from one built on it keeps it alive.
        """
        lease = lease_type(size).from_buffer(self._mmap, offset)
        lease.__dict__["on_release"] = on_release
        return lease

    def close(self) -> None:
        # zero-copy arrays may still point into the mapping: then it is unmapped when the last
        # of them is collected (the sender may unlink the segment meanwhile; the pages stay)
        with self._lock:
            self._closed = True
            with contextlib.suppress(BufferError):
                self._mmap.close()
            with contextlib.suppress(OSError):
                os.close(self.fd)


class SlotRing:
    """A fixed number of reusable, stamped segments owned by this process.

    A slot is free, taken (being filled, or waiting to be sent), or in flight (sent, not yet
    given back); only slots in flight are ever reclaimed.
    """

    def __init__(self, prefix: str, slots: int, stream: str) -> None:
        if not re.fullmatch(r"[A-Za-z0-9_]+", prefix):
            raise StreamConfigError(f"shared-memory prefix {prefix!r} must be letters, digits and '_'")
        if slots < 1:
            raise StreamConfigError(f"shm_slots must be at least 1, got {slots}")
        self.prefix = prefix
        self.pid = os.getpid()
        self._stamp = stamp(stream)
        self._segments: list[shared_memory.SharedMemory | None] = [None] * slots
        self._names: list[str | None] = [None] * slots
        # the array over each slot handed out last, by (shape, dtype, order): a camera asks for
        # the same one frame after frame, and making it costs more than checking it is unchanged
        self._views: dict[int, tuple[tuple[Any, ...], np.ndarray]] = {}
        self._free = list(range(slots))
        self._sent_at: dict[int, float] = {}  # slots in flight, oldest first
        self._sent_id: dict[int, int] = {}  # slot in flight -> the item it carries
        self.given_back = 0
        """Slots given back through their control block (no message)."""
        sweep_orphaned_segments(prefix)

    @property
    def slots(self) -> int:
        return len(self._segments)

    @property
    def free_slots(self) -> int:
        return len(self._free)

    @property
    def in_flight(self) -> int:
        return len(self._sent_at)

    def has_free(self) -> bool:
        """Whether a slot is free, taking the releases receivers wrote if none is."""
        return bool(self._free) or self.collect() > 0

    def collect(self) -> int:
        """Free the slots in flight whose receiver wrote, in the control block, the id of the
        item the slot carries (any other value frees nothing: a receiver may write what it
        likes there); how many."""
        freed = 0
        for slot, msg_id in list(self._sent_id.items()):
            segment = self._segments[slot]
            if segment is not None and _WORD.unpack_from(segment.buf, RELEASE_AT)[0] == msg_id:  # type: ignore[arg-type]
                self.release(slot)
                freed += 1
        self.given_back += freed
        return freed

    def ask_wake(self) -> None:
        """Ask the receivers of the slots in flight for a message when they give them back (the
        sender is about to wait for one): the item's id in the control block's wake word."""
        for slot, msg_id in self._sent_id.items():
            segment = self._segments[slot]
            if segment is not None:
                _WORD.pack_into(segment.buf, WAKE_AT, msg_id)  # type: ignore[arg-type]

    def acquire(self, nbytes: int) -> tuple[int, shared_memory.SharedMemory]:
        """A free slot with room for ``nbytes`` after the stamp; the caller has checked :meth:`has_free`."""
        slot = self._free[-1]  # the most recently used: its pages are the warmest
        segment = self._segments[slot]
        if segment is None or segment.size < DATA_OFFSET + nbytes:
            self._drop(slot)
            # a number no other ring of this process has used: a receiver never confuses a
            # new segment with an old one of the same name it still has mapped
            name = f"{self.prefix}{self.pid}_{next(_segment_numbers)}"
            segment = shared_memory.SharedMemory(name=name, create=True, size=DATA_OFFSET + max(nbytes, 1))
            try:
                _reserve_pages(name, segment.size)
            except OSError:
                segment.close()
                segment.unlink()
                raise
            buffer = segment.buf
            assert buffer is not None  # a segment just created is open
            buffer[:STAMP_BYTES] = self._stamp
            self._segments[slot] = segment
            self._names[slot] = segment.name
        self._free.pop()  # taken only now: a segment that could not be made leaves the slot free
        return slot, segment

    def view(
        self, slot: int, shape: tuple[int, ...], dtype: np.dtype[Any], order: Literal["C", "F"] = "C"
    ) -> np.ndarray:
        """A writable array over ``slot``'s frame area."""
        key = (shape, dtype, order)
        cached = self._views.get(slot)
        # reused only as made: a caller may have set its shape, dtype or flags since
        if cached is not None and cached[0] == key:
            view = cached[1]
            if view.shape == shape and view.dtype == dtype and view.flags.writeable:
                return view
        segment = self._segments[slot]
        assert segment is not None
        view = np.ndarray(shape, dtype=dtype, buffer=segment.buf, offset=DATA_OFFSET, order=order)
        self._views[slot] = (key, view)
        return view

    def sent(self, slot: int, msg_id: int) -> None:
        """``slot`` went out carrying item ``msg_id``: in flight until given back (or reclaimed)."""
        self._sent_at[slot] = time.monotonic()
        self._sent_id[slot] = msg_id

    def oldest_age(self) -> float:
        """Seconds since the slot in flight longest was sent (0 when none is in flight)."""
        return time.monotonic() - next(iter(self._sent_at.values())) if self._sent_at else 0.0

    def name_of(self, slot: int) -> str | None:
        """The name of the segment in ``slot`` now (None for an empty or unknown slot)."""
        return self._names[slot] if 0 <= slot < len(self._names) else None

    def release(self, slot: int) -> None:
        if 0 <= slot < len(self._segments) and slot not in self._free:
            self._free.append(slot)
            self._sent_at.pop(slot, None)
            self._sent_id.pop(slot, None)

    def release_if(self, slot: int | None, name: str | None, msg_id: int | None = None) -> bool:
        """Give ``slot`` back if it is in flight, still holds segment ``name`` and (when the ack
        names one) carries item ``msg_id``: an ack for a segment since replaced, for a slot not
        sent, or for an earlier item of a slot given back through its control block and sent
        again, frees nothing."""
        if slot is None or slot not in self._sent_at or name is None or self.name_of(slot) != name:
            return False
        if msg_id is not None and self._sent_id.get(slot) != msg_id:
            return False
        self.release(slot)
        return True

    def reclaim_oldest(self) -> int | None:
        """Give up on the slot in flight longest (its receiver died, or lost it): a new segment
        will take its place. Safe while someone still reads it: unlinking keeps their pages."""
        if not self._sent_at:
            return None
        slot = next(iter(self._sent_at))
        self._drop(slot)
        self.release(slot)
        return slot

    def _drop(self, slot: int) -> None:
        self._views.pop(slot, None)  # its export of the buffer would keep the segment from closing
        self._names[slot] = None
        segment = self._segments[slot]
        if segment is not None:
            with contextlib.suppress(BufferError):  # a view handed out is still alive
                segment.close()
            with contextlib.suppress(FileNotFoundError):
                segment.unlink()
            self._segments[slot] = None

    def close(self) -> None:
        """Close and unlink every segment (in the process that created them only)."""
        if os.getpid() != self.pid:
            return  # a forked child closing an inherited sender must not unlink the parent's
        for index in range(len(self._segments)):
            self._drop(index)
        self._free = list(range(len(self._segments)))
        self._sent_at = {}
        self._sent_id = {}
