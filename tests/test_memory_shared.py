"""MemoryBackend shared by processes: the tree stays whole while processes save into a folder,
delete it and read it at the same time, and when a process is killed in the middle of it."""

from __future__ import annotations

import multiprocessing
import os
import pickle
import signal
import threading
import time
from typing import Any

import numpy as np
import pytest

from polystore import MemoryBackend, PolystoreError, StorageFileNotFoundError
from polystore.backends.memory_tree import MemoryManager
from polystore.exceptions import InvalidOptionError

CHURN_SECONDS = 2.0
SPAWN = multiprocessing.get_context("spawn")


@pytest.fixture(scope="module")
def manager() -> Any:
    """A spawned manager: MemoryBackend.shared() alone uses the default start method (fork on
    Linux), which warns once a threaded library (JAX) is loaded in the test process."""
    with MemoryManager(ctx=SPAWN) as running:
        yield running


def _orphans(backend: MemoryBackend) -> list[str]:
    """Entries whose folder is not in the store (in one snapshot of it)."""
    paths = backend._paths()
    folders = {"/"} | {key for key, is_dir in paths if is_dir}
    return [key for key, _ in paths if (key.rsplit("/", 1)[0] or "/") not in folders]


def _churn(backend: MemoryBackend, role: str, ready: Any, stop: Any, out: Any) -> None:
    raw: list[str] = []
    done = index = broken = 0
    ready.release()
    while not stop.is_set():
        index += 1
        try:
            if role == "save":
                backend.save(np.zeros(2), f"/run/{os.getpid()}/f{index % 20}.npy")
            elif role == "delete":
                backend.delete_all("/run")
            else:  # watch: every snapshot of the store whole
                broken += bool(_orphans(backend))
            done += 1
        except StorageFileNotFoundError:  # /run was deleted just before: expected
            pass
        except Exception as error:  # anything else means the tree was broken
            raw.append(f"{type(error).__name__}: {error}")
    out.put((role, done, raw[:5], broken))


def _run_churn(backend: MemoryBackend, roles: list[str]) -> list[Any]:
    ready, stop, out = SPAWN.Semaphore(0), SPAWN.Event(), SPAWN.Queue()
    processes = [SPAWN.Process(target=_churn, args=(backend, r, ready, stop, out)) for r in roles]
    for process in processes:
        process.start()
    for _ in processes:
        assert ready.acquire(timeout=60)
    time.sleep(CHURN_SECONDS)
    stop.set()
    results = [out.get(timeout=60) for _ in processes]
    for process in processes:
        process.join(timeout=60)
    return results


def test_saves_deletes_and_reads_from_five_processes_keep_the_tree_whole(manager: Any) -> None:
    backend = MemoryBackend.shared(manager)
    results = _run_churn(backend, ["save", "save", "delete", "delete", "watch"])
    assert [raw for result in results for raw in result[2]] == []
    assert all(result[1] > 0 for result in results), results  # every process got work done
    assert sum(result[3] for result in results) == 0, "a reader saw a file whose folder was gone"
    assert _orphans(backend) == [], "files or folders left under a deleted folder"
    files = backend.list_files("/", recursive=True)
    assert backend.exists("/run") == bool(files)
    if files:
        backend.delete_all("/run")
    assert backend.list_files("/", recursive=True) == []


def test_the_older_form_with_a_managers_dict_and_lock_keeps_the_tree_whole() -> None:
    with SPAWN.Manager() as manager:
        backend = MemoryBackend(shared_dict=manager.dict(), lock=manager.RLock())
        results = _run_churn(backend, ["save", "delete", "watch"])
        assert [raw for result in results for raw in result[2]] == []
        assert sum(result[3] for result in results) == 0, "a reader saw a file whose folder was gone"
        assert _orphans(backend) == []


def _fill_then_delete(backend: MemoryBackend, folders: int, filled: Any) -> None:
    """Fill /run, say so, delete it, then wait to be killed."""
    for index in range(folders):
        backend.save(index, f"/run/d{index}/f.npy")
    filled.set()
    backend.delete_all("/run")
    time.sleep(600)


def _save_within(backend: MemoryBackend, path: str, seconds: float) -> bool:
    """Whether a save returns within ``seconds`` (a thread: a wedged save never returns)."""
    thread = threading.Thread(target=backend.save, args=(1, path), daemon=True)
    thread.start()
    thread.join(seconds)
    return not thread.is_alive()


def test_a_process_killed_mid_delete_all_leaves_the_tree_whole_and_nobody_waiting(manager: Any) -> None:
    """SIGKILL a process as soon as its delete_all of 2,000 folders has begun (the operation
    runs whole in the manager's server, so no change is half done and no lock is held)."""
    backend = MemoryBackend.shared(manager)
    for kill in range(3):
        full = len(backend._paths()) + 1 + 2 * 2000  # /run, and a folder and a file each
        filled = SPAWN.Event()
        victim = SPAWN.Process(target=_fill_then_delete, args=(backend, 2000, filled))
        victim.start()
        assert filled.wait(timeout=120)
        deadline = time.monotonic() + 30
        while len(backend._paths()) >= full and time.monotonic() < deadline:
            pass  # the deletion has begun (or is done) once fewer entries are left
        assert victim.pid is not None
        os.kill(victim.pid, signal.SIGKILL)
        victim.join(timeout=30)
        assert _orphans(backend) == [], f"kill {kill}: files left whose folder is gone"
        assert _save_within(backend, f"/other/after-kill-{kill}.npy", 20), "a save waited forever"
        if backend.exists("/run"):
            backend.delete_all("/run")
    assert len(backend.list_files("/other")) == 3


def test_shared_needs_a_manager_that_can_hold_the_store(manager: Any) -> None:
    with SPAWN.Manager() as plain:
        with pytest.raises(InvalidOptionError, match="MemoryManager") as caught:
            MemoryBackend.shared(plain)
        assert isinstance(caught.value, PolystoreError) and isinstance(caught.value, TypeError)
    backend = MemoryBackend.shared(manager)
    backend.save(np.arange(2), "a/x.npy")
    assert pickle.loads(pickle.dumps(backend)).list_files("a") == ["a/x.npy"]


def test_a_manager_dict_without_its_lock_is_refused() -> None:
    with SPAWN.Manager() as manager:
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


@pytest.mark.parametrize("form", ["shared", "shared_dict"])
def test_an_object_that_does_not_pickle_is_refused_by_a_shared_store(manager: Any, form: str) -> None:
    # pickle's bare PicklingError / TypeError reached the caller
    backend = (MemoryBackend.shared(manager) if form == "shared"
               else MemoryBackend(shared_dict=manager.dict(), lock=manager.RLock()))
    for unpicklable in (threading.Lock(), (n for n in range(3))):
        with pytest.raises(PolystoreError, match="pickle") as caught:
            backend.save(unpicklable, "a/x.obj")
        assert isinstance(caught.value, TypeError)
        assert not backend.exists("a/x.obj")
    backend.save(np.arange(3), "a/x.npy")  # the store still works
    np.testing.assert_array_equal(backend.load("a/x.npy"), np.arange(3))


class _LoadsOnlyInAnotherProcess:
    """Pickles here and loads in the manager's process, but does not load back here: as an object
    another program saved, whose class this process lacks."""

    def __init__(self) -> None:
        self.made_in = os.getpid()

    def __setstate__(self, state: dict[str, Any]) -> None:
        if state["made_in"] == os.getpid():
            raise AttributeError("Can't get attribute '_LoadsOnlyInAnotherProcess' on <module '__main__'>")
        self.__dict__.update(state)


def test_a_failure_that_is_not_pickling_is_not_blamed_on_the_data(manager: Any) -> None:
    # a save reads what is at its path first; an AttributeError loading that back was reported
    # as "this does not pickle" about the array being saved
    backend = MemoryBackend(shared_dict=manager.dict(), lock=manager.RLock())
    backend.save(_LoadsOnlyInAnotherProcess(), "a/x.obj")
    with pytest.raises(PolystoreError) as caught:
        backend.save(np.arange(3), "a/x.obj")
    message = str(caught.value)
    assert "does not pickle" not in message and "not a pickling failure" in message, message
    assert "Can't get attribute" in message
    assert isinstance(caught.value.__cause__, AttributeError)
    backend.save(np.arange(3), "a/y.npy")  # the store still works
    np.testing.assert_array_equal(backend.load("a/y.npy"), np.arange(3))
