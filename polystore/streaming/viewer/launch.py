"""Starting a viewer on demand, and finding room for one: ports, launch locks, logs.

``python -m <module> --port N --host H`` is run once per address, whoever asks first: under a
file lock named after the viewer and port, a second pipeline waits and then finds the first
one's viewer answering.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from polystore.atomic import file_lock
from polystore.exceptions import InvalidOptionError, ViewerError, ViewerUnavailableError
from polystore.streaming.endpoints import Endpoints
from polystore.streaming.errors import StreamConfigError

logger = logging.getLogger(__name__)

TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
Ping = Callable[[], dict[str, Any] | None]


def free_ports(count: int = 3, host: str = "127.0.0.1", preferred: Sequence[int] = ()) -> int:
    """A port p such that the first ``count`` channels of ``Endpoints(host, p)`` (data, acks,
    control: a viewer needs all three, a plain stream two) have free ports on ``host``; the
    first of ``preferred`` that fits, else one the system picks."""
    if not 1 <= count <= len(Endpoints(host).ports):
        raise InvalidOptionError(f"free_ports(count={count}): a stream has "
                                 f"{len(Endpoints(host).ports)} channels (data, acks, control); "
                                 "ask for 1 to that many")

    def all_free(base: int) -> bool:
        try:
            ports = Endpoints(host, base).ports[:count]
        except StreamConfigError:  # a channel would lie past the last port
            return False
        with contextlib.ExitStack() as probes:
            try:
                for port in ports:
                    probes.enter_context(socket.socket()).bind((host, port))
            except OSError:
                return False
        return True

    for base in preferred:
        if all_free(base):
            return base
    for _ in range(100):
        with socket.socket() as probe:
            probe.bind((host, 0))
            base = int(probe.getsockname()[1])
        if all_free(base):
            return base
    raise ViewerError(f"no free ports for {count} stream channels on {host}: close some sockets, "
                      "or name the ports")


def wait_until_answering(
    ping: Ping, process: subprocess.Popen[bytes], timeout: float, log_path: Path, what: str,
) -> dict[str, Any]:
    """``ping()``'s answer once the viewer ``process`` started gives one; ViewerError with the end
    of its output if it exits first, ViewerUnavailableError if ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        info = ping()
        if info is not None:
            return info
        if process.poll() is not None:
            raise ViewerError(
                f"{what} exited with status {process.returncode} before it answered. "
                f"Its output ({log_path}):\n{log_path.read_text(errors='replace')[-3000:]}"
            )
        if time.monotonic() >= deadline:
            raise ViewerUnavailableError(
                f"{what} (pid {process.pid}) has not answered within {timeout:g} s; "
                f"its output is in {log_path}."
            )


def environment_setting(viewer_type: str, name: str) -> str | None:
    """``POLYSTORE_<VIEWER>_<NAME>`` from the environment (``POLYSTORE_NAPARI_PORT``...)."""
    return os.environ.get(f"POLYSTORE_{viewer_type.upper()}_{name.upper()}")


def runtime_directory() -> Path:
    """This user's folder for launch locks and viewer logs: private (0700), not the shared /tmp
    itself, where another user could plant a link at a predictable name."""
    folder = Path(tempfile.gettempdir()) / f"polystore-{os.getuid()}"
    folder.mkdir(mode=0o700, exist_ok=True)
    status = folder.lstat()
    if not stat.S_ISDIR(status.st_mode) or status.st_uid != os.getuid() or status.st_mode & 0o077:
        raise ViewerError(f"{folder} must be a folder of yours that only you can open; remove it.")
    return folder


def launch_log_path(viewer_type: str, port: int) -> Path:
    """Where a launched viewer's output goes (read it when the launch fails)."""
    return runtime_directory() / f"{viewer_type}-{port}.log"


def launch_viewer(
    viewer_type: str, port: int, command: Sequence[str], ping: Ping, *, timeout: float,
    probe: Ping,
) -> tuple[dict[str, Any], subprocess.Popen[bytes] | None]:
    """Start ``command`` unless a viewer answers ``ping`` meanwhile; its ``ping`` reply and the
    process started (None when another pipeline's viewer answered first).

    ``probe`` is the quick ping used while waiting for the new process to answer.
    """
    lock_path = runtime_directory() / f"{viewer_type}-{port}.launch"
    log_path = launch_log_path(viewer_type, port)
    try:
        with file_lock(lock_path, timeout=timeout):
            info = ping()  # the pipeline that held the lock before us may have launched it
            if info is not None:
                return info, None
            logger.info("starting a %s viewer: %s (output in %s)", viewer_type, " ".join(command), log_path)
            with log_path.open("wb") as log:
                # its own session: the viewer outlives this pipeline and its Ctrl-C
                process = subprocess.Popen(
                    list(command), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )
            what = f"The {viewer_type} viewer started with {' '.join(command)}"
            return wait_until_answering(probe, process, timeout, log_path, what), process
    except TimeoutError as error:  # filelock.Timeout: waiting on another launcher took too long
        raise ViewerUnavailableError(
            f"Another pipeline has been launching a {viewer_type} viewer for {timeout:g} s and it "
            f"has not answered yet; see {log_path}."
        ) from error
