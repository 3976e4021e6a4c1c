"""What the distributed tests run inside dask workers (importable there: spawned workers get the
test process's sys.path), and the cluster they share.

- :class:`RecordingBackend`: the real ZarrBackend writing through a real store wrapped to
  record every key it writes (one log file per process), and, when asked, to kill its own
  process (SIGKILL, as the OOM killer or a lost machine would) the first time it writes a
  given key: a worker, or a whole job, dies in the middle of a field; or to write half of
  that key first, as a writer on a store without atomic writes leaves it (a torn shard).
- :func:`tiles`: a lazy image, computed block by block where it is needed (never whole).
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from typing import Any

import numpy as np

from polystore.backends.zarr import ZarrBackend

RECORD = "test_record_to"
KILL_AT = "test_kill_at"
"""A key (the process dies writing it), or ``write:N`` (it dies at its N-th chunk written)."""
TORN = "test_torn"
"""With KILL_AT: the process writes the first half of the key's bytes, then dies."""
_WRITES: list[str] = []


def _wrapper_class() -> type:
    import zarr.storage

    class RecordingStore(zarr.storage.WrapperStore):  # type: ignore[type-arg]
        """A store that logs the keys written to it, and may kill its process at one key."""

        def __init__(self, store: Any, record_to: str, kill_at: str | None, torn: bool) -> None:
            super().__init__(store)
            self.record_to = record_to
            self.kill_at = kill_at
            self.torn = torn

        def _with_store(self, store: Any) -> Any:
            return type(self)(store, self.record_to, self.kill_at, self.torn)

        def _log(self, what: str, key: str) -> None:
            with open(Path(self.record_to, f"{os.getpid()}.log"), "a") as log:
                log.write(f"{what} {key}\n")

        async def set(self, key: str, value: Any) -> None:
            _WRITES.append(key)
            if key == self.kill_at or self.kill_at == f"write:{len(_WRITES)}":
                try:  # the first process to get here dies; a retry goes on
                    os.close(os.open(Path(self.record_to, "killed"), os.O_CREAT | os.O_EXCL))
                except FileExistsError:
                    pass
                else:
                    if self.torn:
                        written = value.to_bytes()
                        await self._store.set(key, type(value).from_bytes(written[: len(written) // 2]))
                    os.kill(os.getpid(), signal.SIGKILL)
            self._log("set", key)
            await self._store.set(key, value)

        async def set_if_not_exists(self, key: str, value: Any) -> None:
            self._log("set", key)
            await self._store.set_if_not_exists(key, value)

        async def delete(self, key: str) -> None:
            self._log("delete", key)
            await self._store.delete(key)

    return RecordingStore


class RecordingBackend(ZarrBackend):
    """ZarrBackend whose zarr stores record writes; ``storage_options`` carry where to
    (``test_record_to``) and the key at which to die (``test_kill_at``)."""

    def __init__(
        self, root: Any = None, *, storage_options: dict[str, Any] | None = None, **kwargs: Any
    ) -> None:
        options = dict(storage_options or {})
        self.record_to = str(options.pop(RECORD))
        self.kill_at = options.pop(KILL_AT, None)
        self.torn = bool(options.pop(TORN, False))
        super().__init__(root, storage_options=options, **kwargs)
        self.storage_options = {**options, RECORD: self.record_to,
                                **({KILL_AT: self.kill_at} if self.kill_at else {}),
                                **({TORN: True} if self.torn else {})}
        # whole planes of local stores are written by key, past the zarr store (planes.py)
        plain_keys = self.documents.keys
        self.documents.keys = lambda location: RecordingKeys(plain_keys(location), self.record_to)  # type: ignore[method-assign]

    def _open_store(self, store: str, *, writable: bool) -> Any:
        wrapped = super()._open_store(store, writable=writable)
        return _wrapper_class()(wrapped, self.record_to, self.kill_at, self.torn)



class RecordingKeys:
    """The zarr backend's plain key I/O, logging the chunk keys written as RecordingStore does
    (metadata documents, written by key since before planes were, are not logged: the tests
    count chunk writes)."""

    def __init__(self, keys: Any, record_to: str) -> None:
        self._keys = keys
        self.record_to = record_to

    def _log(self, what: str, key: str) -> None:
        if "/c/" in key or key.startswith("c/"):
            with open(Path(self.record_to, f"{os.getpid()}.log"), "a") as log:
                log.write(f"{what} {key}\n")

    def put(self, key: str, content: bytes) -> None:
        self._log("set", key)
        self._keys.put(key, content)

    def create(self, key: str, content: bytes) -> bool:
        self._log("set", key)
        return bool(self._keys.create(key, content))

    def delete(self, key: str) -> None:
        self._log("delete", key)
        self._keys.delete(key)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._keys, name)


def recorded_writes(folder: Path) -> list[tuple[int, str]]:
    """(pid, key) of every key the recording stores wrote, from every process."""
    writes = []
    for log in folder.glob("*.log"):
        for line in log.read_text().splitlines():
            what, key = line.split(" ", 1)
            if what == "set":
                writes.append((int(log.stem), key))
    return writes


TILE = 1024


def tile_value(ty: np.ndarray | int, tx: np.ndarray | int) -> np.ndarray:
    """The value of every pixel of tile (ty, tx) of :func:`tiles`."""
    return np.asarray((np.asarray(ty) * 37 + np.asarray(tx) * 11) % 4093 + 1).astype(np.uint16)


def _tile_block(block: np.ndarray, block_info: Any = None) -> np.ndarray:
    (y0, _), (x0, _) = block_info[None]["array-location"][-2:]
    return np.full(block.shape, tile_value(y0 // TILE, x0 // TILE), np.uint16)


def tiles(shape: tuple[int, int]) -> Any:
    """A uint16 image of ``shape`` that dask computes tile by tile (never whole), each
    1024 x 1024 tile one value (:func:`tile_value`): cheap to make and to compress, so that a
    test of memory moves gigabytes in seconds."""
    import dask.array as da

    return da.zeros(shape, dtype=np.uint16, chunks=(TILE, TILE)).map_blocks(_tile_block, dtype=np.uint16)


def tile_values(rows: slice, columns: slice, level: int = 0) -> np.ndarray:
    """What level ``level`` of :func:`tiles`' pyramid holds in ``rows`` x ``columns`` (a tile's
    pixels average to its value)."""
    scale = 2**level
    y = np.arange(rows.start, rows.stop)[:, None] * scale // TILE
    x = np.arange(columns.start, columns.stop)[None, :] * scale // TILE
    return tile_value(y, x)


GATE = threading.Event()
"""Held shut, :func:`gated` blocks wait on it (workers in this process: ``processes=False``)."""
AT_GATE = threading.Event()
"""Set when a :func:`gated` block starts waiting (its task is running on a worker)."""


def _wait_at_gate(block: np.ndarray) -> np.ndarray:
    AT_GATE.set()
    GATE.wait()
    return block


def gated(shape: tuple[int, int]) -> Any:
    """A uint16 image of ``shape`` whose blocks are computed only once :data:`GATE` is set: its
    tasks stay running until the test lets them end."""
    import dask.array as da

    # meta given: dask would otherwise call the function on an empty block to learn it
    return da.ones(shape, dtype=np.uint16, chunks=shape).map_blocks(
        _wait_at_gate, meta=np.empty((0, 0), np.uint16))


def peak_rss_bytes() -> int:
    """This process's peak resident memory (run on a worker with client.run): VmHWM, which
    starts anew at exec. ru_maxrss would carry the peak of the process that forked it (a worker
    is spawned from the test runner, whose napari, torch and JAX weigh more than the limit)."""
    import re

    with open("/proc/self/status") as status:
        found = re.search(r"VmHWM:\s*(\d+) kB", status.read())
    assert found, "no VmHWM in /proc/self/status"
    return int(found.group(1)) * 1024


def _graphs_plugin() -> type:
    from distributed.diagnostics.plugin import SchedulerPlugin

    class GraphSizes(SchedulerPlugin):
        """Records how many keys each graph a client sends to the scheduler asks for."""

        name = "test-graph-sizes"

        def __init__(self) -> None:
            self.sizes: list[int] = []

        def update_graph(self, scheduler: Any, *, keys: Any, **kwargs: Any) -> None:
            self.sizes.append(len(keys))

    return GraphSizes


def record_graph_sizes(client: Any) -> None:
    """From now on the scheduler of ``client``'s cluster records the size of each graph sent."""
    client.register_plugin(_graphs_plugin()())


def graph_sizes(client: Any) -> list[int]:
    """The sizes :func:`record_graph_sizes` recorded."""
    sizes = client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.plugins["test-graph-sizes"].sizes)
    return list(sizes)
