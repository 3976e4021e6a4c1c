"""A conversion's progress, kept beside the store: what plan it follows, and which tasks
finished, so that a stopped conversion resumed knows what is left, and refuses to go on
under a different plan.

Beside the store (``.plate.zarr.polystore-convert/``, a hidden folder, or a prefix on object
storage), so that no zarr reader meets keys it does not know; one part per node converted
(``store/`` for a whole store, ``node-<node>/`` for an image inside one), so that
conversions into different nodes of one store keep and remove only their own:

- ``plan.json``: the plan's digest and what it is made of (fields, shape, levels, codecs),
  written before any metadata; a resumed conversion whose plan differs is refused.
- ``done/<task>.<digest>``: one empty key per finished task, named by the task (``A%2F01%2F0``
  for field ``A/01/0``, ``0%2F0_1024`` for a block) and the digest of what it wrote (its files
  with their sizes and times, its codecs), so that one listing tells a resumed conversion what
  is done; a marker of another digest never counts. All in one folder: on a local disk a
  folder per task (made by its task, removed at the end) cost more than the markers. Earlier
  versions' markers, ``done/<task>/<digest>``, are read too.

No key is shared between tasks: a marker is written once, by the task it names. A part is
removed when its conversion finishes without failures.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from typing import Any
from urllib.parse import quote, unquote

from polystore.backends.zarr.location import KeyStore, Stores, beside, delete_prefix
from polystore.exceptions import CorruptDataError, InvalidPathError

SUFFIX = ".polystore-convert"
DONE = "done/"
PLAN = "plan.json"


def digest(*parts: Any) -> str:
    """A short, stable hash of JSON-able ``parts`` (what a done-marker is checked against)."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def journal_location(store: str) -> str:
    """Where the progress of conversions into ``store`` lives: a hidden sibling folder or prefix."""
    parent, name = beside(store, f".{{}}{SUFFIX}")
    if parent.endswith(":/"):
        raise InvalidPathError(
            f"'{store}' is a bucket's root; a conversion keeps its progress beside the store, so "
            "give a store inside the bucket (s3://bucket/plate.zarr)."
        )
    return f"{parent}/{name}" if parent else name


def node_part(node: str) -> str:
    """The journal's part for a conversion into ``node`` ('' the whole store): one path
    component, whatever the node's depth (``a/b`` and ``a`` never share one)."""
    return f"node-{quote(node, safe='')}" if node else "store"


class Journal:
    """The progress of one conversion into one node of a store."""

    def __init__(self, stores: Stores, store: str, node: str = "") -> None:
        self.stores = stores
        self.root = journal_location(store)
        self.part = node_part(node)
        self.location = f"{self.root}/{self.part}"

    @property
    def keys(self) -> KeyStore:
        return self.stores.keys(self.location)

    def begin(self, plan_digest: str, summary: dict[str, Any]) -> None:
        """Record the plan this conversion follows (before it writes anything)."""
        document = {"digest": plan_digest, "plan": summary}
        self.keys.put(PLAN, json.dumps(document, indent=1, default=str).encode())

    def plan(self) -> dict[str, Any] | None:
        """The plan a stopped conversion recorded (``digest`` and ``plan``), or None."""
        raw = self.keys.get(PLAN)
        if raw is None:
            return None
        try:
            document = json.loads(raw)
        except ValueError as error:
            raise CorruptDataError(
                f"'{self.location}/{PLAN}' is damaged ({error}): overwrite=True (--overwrite) starts over."
            ) from error
        return document if isinstance(document, dict) else None

    def mark(self, task: str, token: str) -> None:
        """Say that ``task`` wrote everything its plan (``token``) says."""
        self.keys.put(f"{DONE}{quote(task, safe='')}.{token}", b"")

    def finished(self) -> set[tuple[str, str]]:
        """(task, token) of every task marked done (one listing, not a request per task); also
        the markers of earlier versions, ``done/<task>/<token>`` (a task's name holds a '/',
        never a quoted one), so that a conversion stopped under one resumes under this."""
        found = set()
        for key in self.keys.list(DONE):
            name = key.removeprefix(DONE)
            if "/" in name:  # done/A/01/0/<token>
                task, _, token = name.rpartition("/")
                found.add((task, token))
            else:
                task, _, token = name.rpartition(".")
                found.add((unquote(task), token))
        return found

    def exists(self) -> bool:
        return self.stores.exists(self.location)

    def remove(self) -> None:
        """Remove this conversion's part (and the journal, once no other conversion has one)."""
        self._remove(self.location)
        if "://" not in self.root:
            with contextlib.suppress(OSError):  # another node's conversion still has its part
                os.rmdir(self.root)

    def remove_all(self) -> None:
        """Remove the progress of every conversion into the store (the store itself went)."""
        self._remove(self.root)

    def _remove(self, where: str) -> None:
        if "://" in where:
            delete_prefix(self.stores.keys(where), "")
        else:
            with contextlib.suppress(FileNotFoundError):
                shutil.rmtree(where)
