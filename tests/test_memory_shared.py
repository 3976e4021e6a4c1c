"""MemoryBackend shared by processes (a Manager's dict and lock): the tree stays whole while
processes save into a folder and delete it at the same time."""

from __future__ import annotations

import multiprocessing
import os
import pickle
import time
from typing import Any

import numpy as np
import pytest

from polystore import MemoryBackend, PolystoreError, StorageFileNotFoundError
from polystore.exceptions import InvalidOptionError

CHURN_SECONDS = 2.0


def _churn(backend: MemoryBackend, role: str, ready: Any, stop: Any, out: Any) -> None:
    raw: list[str] = []
    done = index = 0
    ready.release()
    while not stop.is_set():
        index += 1
        try:
            if role == "save":
                backend.save(np.zeros(2), f"/run/{os.getpid()}/f{index % 20}.npy")
            else:
                backend.delete_all("/run")
            done += 1
        except StorageFileNotFoundError:  # /run was deleted just before: expected
            pass
        except Exception as error:  # anything else means the tree was broken
            raw.append(f"{type(error).__name__}: {error}")
    out.put((role, done, raw[:5]))


def test_saves_and_deletes_from_four_processes_keep_the_tree_whole() -> None:
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager:
        backend = MemoryBackend.shared(manager)
        ready, stop, out = context.Semaphore(0), context.Event(), context.Queue()
        roles = ["save", "save", "delete", "delete"]
        processes = [context.Process(target=_churn, args=(backend, r, ready, stop, out)) for r in roles]
        for process in processes:
            process.start()
        for _ in processes:
            assert ready.acquire(timeout=60)
        time.sleep(CHURN_SECONDS)
        stop.set()
        results = [out.get(timeout=60) for _ in processes]
        for process in processes:
            process.join(timeout=60)
        assert [raw for result in results for raw in result[2]] == []
        assert all(result[1] > 0 for result in results), results  # every process got work done
        store = dict(backend._store)
        orphans = [key for key in store if key != "/" and key.rsplit("/", 1)[0] not in ("", *store)]
        assert orphans == [], "files or folders left under a deleted folder"
        files = backend.list_files("/", recursive=True)
        assert backend.exists("/run") == bool(files)
        if files:
            backend.delete_all("/run")
        assert backend.list_files("/", recursive=True) == []


def test_a_manager_dict_without_its_lock_is_refused() -> None:
    with multiprocessing.get_context("spawn").Manager() as manager:
        with pytest.raises(InvalidOptionError, match=r"lock=manager\.RLock\(\)") as caught:
            MemoryBackend(manager.dict())
        assert isinstance(caught.value, PolystoreError) and isinstance(caught.value, TypeError)


def test_a_local_store_pickles_with_a_fresh_lock() -> None:
    backend = MemoryBackend()
    backend.save(np.arange(3), "a/x.npy")
    copy = pickle.loads(pickle.dumps(backend))
    np.testing.assert_array_equal(copy.load("a/x.npy"), np.arange(3))
    copy.save(np.zeros(1), "a/y.npy")  # its lock works
    assert not backend.exists("a/y.npy")
