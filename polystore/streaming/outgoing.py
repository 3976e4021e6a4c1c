"""An item a sender has accepted: its header fields, its header, and where its bytes are until it goes out."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from polystore.exceptions import InvalidPathError, PathTypeError
from polystore.streaming.errors import ProtocolError
from polystore.streaming.protocol import KINDS, MAX_PATH_CHARS, HeaderWriter, ShmPlace, encode_header, with_id
from polystore.streaming.shm import DATA_OFFSET


@dataclass(eq=False, slots=True)  # one per frame: made and read on the hot path
class Outgoing:
    """One accepted item: its header fields and where its bytes are until it is sent."""

    msg_id: int
    path: str
    shape: tuple[int, ...]
    dtype: np.dtype[Any]
    order: Literal["C", "F"]
    options: dict[str, Any]
    """kind, metadata, ack (wait_for_ack), queued (counted in the pending bytes while it waits)."""
    accepted_at: float
    use_shm: bool = False
    data: np.ndarray | None = None
    """Inline bytes (or, under policy="latest" without a slot, the frame to put in one)."""
    slot: int | None = None
    segment_name: str | None = None
    owned: bool = False
    """``data`` is a copy of our own (ZeroMQ may keep it); otherwise it is the caller's array."""
    prefix: bytes | None = None
    """Its header's bytes before the id, worked out for the slot it holds now (None: not yet)."""

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize

    @property
    def inline_bytes(self) -> int:
        return self.nbytes if self.slot is None else 0

    def place(self) -> ShmPlace | None:
        """Its header's ``shm`` field while it holds a slot (None for an inline item)."""
        if self.slot is None:
            return None
        assert self.segment_name is not None  # set with the slot
        return (self.segment_name, DATA_OFFSET, self.nbytes, self.slot)

    def plan_header(self, headers: HeaderWriter) -> None:
        """Work out its header's bytes before the id now, for the slot it holds, so that sending
        it only adds the id. Not for items given metadata, even an empty dict: the caller's dict
        may change (be filled) until the item is sent."""
        options = self.options
        if options["metadata"] is None:
            self.prefix = headers.prefix(self.shape, self.dtype, self.order, self.path, kind=options["kind"],
                                         ack=options["ack"], shm=self.place())

    def header(self, headers: HeaderWriter) -> bytes:
        """Frame 0, as it goes out now."""
        if self.prefix is not None:  # worked out before (a frame() block, while it was filled)
            return with_id(self.prefix, self.msg_id)
        options = self.options
        return headers.encode(self.shape, self.dtype, self.order, self.path, kind=options["kind"],
                              metadata=options["metadata"], ack=options["ack"], shm=self.place(),
                              msg_id=self.msg_id)


def checked_path(path: Any) -> str:
    """``path`` as the header's text, refused here if no receiver would take it (they refuse
    paths over :data:`MAX_PATH_CHARS`: sent, such an item would be lost without a word)."""
    text = os.fspath(path) if isinstance(path, os.PathLike) else path
    if type(text) is not str:
        raise PathTypeError(f"a stream's path must be a str or os.PathLike of str, got {type(path).__name__} "
                            f"{path!r}: pass it as text")
    if len(text) > MAX_PATH_CHARS:
        raise InvalidPathError(f"path of {len(text)} characters is over the stream's limit of "
                               f"{MAX_PATH_CHARS} (receivers refuse it): use a shorter path")
    return text


def checked_options(kind: str, metadata: Mapping[str, Any] | None, wait_for_ack: bool) -> dict[str, Any]:
    """The header options of an item, refused here (not after a slot is taken) if they cannot be sent."""
    if kind not in KINDS:
        raise ProtocolError(f"unknown kind {kind!r}; known kinds: {', '.join(sorted(KINDS))}")
    if metadata:
        encode_header(dict(metadata))  # JSON, or ProtocolError naming why not
    return {"kind": kind, "metadata": metadata, "ack": bool(wait_for_ack), "queued": False}


def private_copy(array: np.ndarray, reuse: np.ndarray | None) -> np.ndarray:
    """A copy of ``array`` the caller cannot change, in ``reuse`` when that has its shape and dtype."""
    if reuse is not None and reuse.shape == array.shape and reuse.dtype == array.dtype and (
        reuse.flags.c_contiguous == array.flags.c_contiguous
    ):
        np.copyto(reuse, array, casting="no")
        return reuse
    return np.array(array, order="A", copy=True)
