"""Done-markers: how a conversion that was stopped knows, when resumed, what it finished.

Each task, after its last chunk is written, writes one empty key of its own beside the store,
named by the task and the digest of what it wrote (``.plate.zarr.polystore-convert/done/A/01/0/
<digest>``; the digest covers the plan of its field or block: source files with their sizes and
times, shape, codecs), so that one listing tells a resumed conversion what is done. A
resumed conversion skips a task whose marker holds the digest it would write now, and
redoes every other. The markers live beside the store, not in it, so that no zarr reader
meets keys it does not know; they are removed when a conversion finishes without failures.

No key is shared between tasks: a marker is written once, by the task it names.
"""

from __future__ import annotations

import contextlib
import shutil

from polystore.backends.zarr.location import KeyStore, Stores, beside, delete_prefix
from polystore.exceptions import InvalidPathError

SUFFIX = ".polystore-convert"
DONE = "done/"


def journal_location(store: str) -> str:
    """Where the markers of a conversion into ``store`` live: a hidden sibling folder or prefix."""
    parent, name = beside(store, f".{{}}{SUFFIX}")
    if parent.endswith(":/"):
        raise InvalidPathError(
            f"'{store}' is a bucket's root; a conversion keeps its progress beside the store, so "
            "give a store inside the bucket (s3://bucket/plate.zarr)."
        )
    return f"{parent}/{name}" if parent else name


class Journal:
    """The done-markers of one conversion (a folder beside a local store, a prefix beside an
    object-store one)."""

    def __init__(self, stores: Stores, store: str) -> None:
        self.stores = stores
        self.location = journal_location(store)

    @property
    def keys(self) -> KeyStore:
        return self.stores.keys(self.location)

    def mark(self, task: str, token: str) -> None:
        """Say that ``task`` wrote everything its plan (``token``) says."""
        self.keys.put(f"{DONE}{task}/{token}", b"")

    def finished(self) -> set[tuple[str, str]]:
        """(task, token) of every task marked done (one listing, not a request per task)."""
        return {tuple(key.removeprefix(DONE).rsplit("/", 1)) for key in self.keys.list(DONE)}  # type: ignore[misc]

    def exists(self) -> bool:
        return self.stores.exists(self.location)

    def remove(self) -> None:
        if "://" in self.location:
            delete_prefix(self.keys, "")
        else:
            with contextlib.suppress(FileNotFoundError):
                shutil.rmtree(self.location)
