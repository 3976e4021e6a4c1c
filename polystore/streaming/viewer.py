"""The family of viewer backends: what napari's and Fiji's share, on both ends of the stream.

A viewer (a napari window, the Fiji bridge) runs a :class:`ViewerService`: it **binds** the
data socket on ``port`` (acknowledgements on ``port + 1``) so that any number of pipelines can
connect to it, and a control socket on ``port + 2`` that answers requests (``ping`` first of
all; see :mod:`polystore.streaming.control`).

A pipeline writes ``fm.save(img, "plate/A01_s1_w2.tif", backend="napari")``: the registered
:class:`ViewerStreamingBackend` subclass connects to that viewer, checks once that it answers,
and, when asked to (``launch=True`` or ``POLYSTORE_<VIEWER>_LAUNCH=1``), starts one first:
``python -m <LAUNCH_MODULE> --port N --host H``, once per address, whoever asks first.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from polystore.atomic import file_lock
from polystore.base import PathLike
from polystore.exceptions import ViewerError, ViewerUnavailableError
from polystore.streaming.backend import StreamingBackend
from polystore.streaming.control import ControlServer, Handler, Reply, array_from_reply, request
from polystore.streaming.payloads import ROI_SET_SUFFIXES
from polystore.streaming.protocol import DEFAULT_MAX_BYTES, PROTOCOL_VERSION, StreamItem
from polystore.streaming.receiver import StreamReceiver
from polystore.streaming.security import CurveKeys

logger = logging.getLogger(__name__)

CONTROL_PORT_OFFSET = 2

IMAGE_EXTENSIONS = frozenset({
    ".tif", ".tiff", ".ome.tif", ".ome.tiff", ".png", ".jpg", ".jpeg", ".bmp", ".npy", ".npz",
})
"""What every viewer shows as images (a viewer's SUPPORTED_EXTENSIONS add its own)."""
ROI_EXTENSIONS = frozenset(ROI_SET_SUFFIXES)
TRUE_WORDS = frozenset({"1", "true", "yes", "on"})


def free_ports(count: int = CONTROL_PORT_OFFSET + 1, host: str = "127.0.0.1",
               preferred: Sequence[int] = ()) -> int:
    """A port p such that p .. p + count - 1 are all free on ``host`` (a viewer needs three:
    stream, acks, control); the first of ``preferred`` that fits, else one the system picks."""

    def all_free(base: int) -> bool:
        if base + count - 1 > 65535:
            return False
        with contextlib.ExitStack() as probes:
            try:
                for port in range(base, base + count):
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
    raise ViewerError(f"no {count} consecutive free ports on {host}")


def wait_until_answering(
    ping: Callable[[], dict[str, Any] | None], process: subprocess.Popen[bytes], timeout: float,
    log_path: Path, what: str,
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


class ViewerService:
    """A viewer's end: the stream receiver (bound) and the control server, started together.

    ``on_item(item)`` runs on the receiver thread for every validated item: a GUI hands the
    item to its own thread. ``handlers`` adds control ops to the built-in ``ping``.
    ``zero_copy``: items from shared memory are views of the sender's slot (see
    :class:`StreamReceiver`), for viewers that copy the pixels into their own memory anyway.
    """

    def __init__(
        self,
        viewer_type: str,
        port: int,
        host: str = "127.0.0.1",
        *,
        on_item: Callable[[StreamItem], Any],
        handlers: Mapping[str, Handler] | None = None,
        shm_prefixes: Sequence[str] = (),
        control_port: int | None = None,
        max_bytes: int = DEFAULT_MAX_BYTES,
        curve: CurveKeys | None = None,
        zero_copy: bool = False,
    ) -> None:
        from polystore.streaming.protocol import DEFAULT_SHM_PREFIX

        self.viewer_type = viewer_type
        self.host = host
        self.port = port
        self.control_port = control_port if control_port is not None else port + CONTROL_PORT_OFFSET
        self._on_item = on_item
        self.receiver = StreamReceiver(
            port, host, bind=True, max_bytes=max_bytes, curve=curve,
            shm_prefixes=tuple(shm_prefixes) or (DEFAULT_SHM_PREFIX,), zero_copy=zero_copy,
        )
        self.control = ControlServer(
            self.control_port, host, {"ping": self._ping, **(handlers or {})},
            curve=curve, max_bytes=max_bytes,
        )

    @property
    def received(self) -> int:
        return self.receiver.received

    @property
    def rejected(self) -> int:
        return self.receiver.rejected

    @property
    def dropped(self) -> int:
        return self.receiver.dropped

    @property
    def running(self) -> bool:
        return self.receiver.running

    def add_handler(self, op: str, handler: Handler) -> None:
        """Answer ``op`` from now on (replaces an earlier handler of that name)."""
        self.control.handlers[op] = handler

    def _ping(self, params: dict[str, Any], buffers: list[memoryview]) -> dict[str, Any]:
        return {
            "viewer": self.viewer_type, "pid": os.getpid(), "protocol": PROTOCOL_VERSION,
            "received": self.received, "rejected": self.rejected, "dropped": self.dropped,
        }

    def start(self) -> ViewerService:
        """Bind both sockets and start serving; a taken port raises here, naming the fix."""
        try:
            self.receiver.start(self._on_item)
        except Exception as error:
            raise ViewerError(
                f"Cannot receive streams on {self.host}:{self.port}: {error}. Another viewer may "
                "already be listening there: stream to it, or choose another port."
            ) from error
        try:
            self.control.start()
        except BaseException:
            self.receiver.stop()
            raise
        return self

    def stop(self) -> None:
        self.control.stop()
        self.receiver.stop()

    def __enter__(self) -> ViewerService:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class ViewerStreamingBackend(StreamingBackend):
    """Sender base for live viewers: connects to a viewer that binds, launching one if asked.

    Settings not given fall back to ``POLYSTORE_<VIEWER_TYPE>_PORT``, ``_HOST`` and ``_LAUNCH``
    (so that a pipeline's ``fm.save(..., backend="napari")`` can be pointed elsewhere without
    code), then to the class's ``DEFAULT_PORT`` on 127.0.0.1 without launching.
    """

    VIEWER_TYPE: ClassVar[str] = "viewer"
    DEFAULT_PORT: ClassVar[int] = 5555
    LAUNCH_MODULE: ClassVar[str | None] = None
    """Module run as ``python -m LAUNCH_MODULE --port N --host H`` to start a viewer."""

    def __init__(
        self,
        port: int | None = None,
        host: str | None = None,
        *,
        launch: bool | None = None,
        launch_timeout: float = 120.0,
        launch_args: Sequence[str] = (),
        probe_timeout: float = 2.0,
        control_port: int | None = None,
        policy: Any = "block",
        **options: Any,
    ) -> None:
        env = environment_setting
        port = port if port is not None else int(env(self.VIEWER_TYPE, "port") or self.DEFAULT_PORT)
        host = host if host is not None else (env(self.VIEWER_TYPE, "host") or "127.0.0.1")
        options.pop("mode", None)
        options.pop("bind", None)
        super().__init__(mode="push", port=port, host=host, bind=False, policy=policy, **options)
        if launch is None:
            launch = (env(self.VIEWER_TYPE, "launch") or "").lower() in TRUE_WORDS
        self.launch = launch
        self.launch_timeout = launch_timeout
        self.launch_args = tuple(launch_args)
        self.probe_timeout = probe_timeout
        self.control_port = control_port if control_port is not None else port + 2
        self.viewer: dict[str, Any] | None = None
        """The ``ping`` reply of the viewer this backend streams to, once it has answered."""
        self.launched: subprocess.Popen[bytes] | None = None

    # -- the viewer's presence -------------------------------------------------------------
    def request(
        self, op: str, params: Mapping[str, Any] | None = None, buffers: Sequence[Any] = (),
        *, timeout: float | None = None,
    ) -> Reply:
        """Ask the viewer to run a control ``op`` (see the viewer's documentation for its ops)."""
        return request(
            self.host, self.control_port, op, params, buffers,
            timeout=self.send_timeout if timeout is None else timeout, curve=self.curve,
        )

    def ping(self, timeout: float | None = None) -> dict[str, Any] | None:
        """The viewer's ``ping`` reply, or ``None`` when nothing answers."""
        try:
            return self.request("ping", timeout=self.probe_timeout if timeout is None else timeout).header
        except ViewerUnavailableError:
            return None

    def ensure_viewer(self) -> dict[str, Any]:
        """Check (once) that a viewer answers; launch one first when ``launch`` is on."""
        if self.viewer is not None:
            return self.viewer
        info = self.ping()
        if info is None and self.launch:
            info = self._launch()
        if info is None:
            raise ViewerUnavailableError(self._absent_message())
        if info.get("viewer") != self.VIEWER_TYPE:
            raise ViewerError(
                f"The process answering at {self.host}:{self.control_port} is a "
                f"{info.get('viewer')!r} viewer, not {self.VIEWER_TYPE!r}: choose another port."
            )
        self.viewer = info
        return info

    def _absent_message(self) -> str:
        name = self.VIEWER_TYPE
        module = self.LAUNCH_MODULE
        hint = f"start one (python -m {module} --port {self.port}), " if module else ""
        return (
            f"No {name} viewer is listening at {self.host}:{self.port}: {hint}or let polystore "
            f"start it with {type(self).__name__}(launch=True) or POLYSTORE_{name.upper()}_LAUNCH=1."
        )

    def launch_command(self) -> list[str]:
        """The command that starts a viewer for this backend's address."""
        if self.LAUNCH_MODULE is None:
            raise ViewerError(f"{type(self).__name__} cannot launch a viewer: it names no LAUNCH_MODULE.")
        return [sys.executable, "-m", self.LAUNCH_MODULE, "--port", str(self.port),
                "--host", self.host, *self.launch_args]

    def _launch(self) -> dict[str, Any] | None:
        """Start a viewer unless another process did meanwhile; wait until it answers."""
        lock_path = runtime_directory() / f"{self.VIEWER_TYPE}-{self.port}.launch"
        try:
            with file_lock(lock_path, timeout=self.launch_timeout):
                return self._launch_locked()
        except TimeoutError as error:  # filelock.Timeout: waiting on another launcher took too long
            log_path = launch_log_path(self.VIEWER_TYPE, self.port)
            raise ViewerUnavailableError(
                f"Another pipeline has been launching a {self.VIEWER_TYPE} viewer for "
                f"{self.launch_timeout:g} s and it has not answered yet; see {log_path}."
            ) from error

    def _launch_locked(self) -> dict[str, Any] | None:
        info = self.ping()  # the pipeline that held the lock before us may have launched it
        if info is not None:
            return info
        log_path = launch_log_path(self.VIEWER_TYPE, self.port)
        logger.info("starting a %s viewer: %s (output in %s)", self.VIEWER_TYPE,
                    " ".join(self.launch_command()), log_path)
        with log_path.open("wb") as log:
            # its own session: the viewer outlives this pipeline and its Ctrl-C
            self.launched = subprocess.Popen(
                self.launch_command(), stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )
        what = f"The {self.VIEWER_TYPE} viewer started with {' '.join(self.launch_command())}"
        return wait_until_answering(
            lambda: self.ping(timeout=0.5), self.launched, self.launch_timeout, log_path, what,
        )

    # -- sending -----------------------------------------------------------------------------
    def _stream_data(self, data: Any, path: PathLike, **kwargs: Any) -> None:
        self.ensure_viewer()
        super()._stream_data(data, path, **kwargs)

    def load(self, file_path: PathLike, **kwargs: Any) -> Any:
        """What the viewer shows under ``file_path`` (a layer, a window), as a NumPy array.

        The viewer answers the control op ``load``; ``kwargs`` go to it as parameters.
        """
        self.ensure_viewer()
        params = {"path": os.fspath(file_path), **kwargs}
        return array_from_reply(self.request("load", params), self.max_bytes)

    def close(self, timeout: float | None = None) -> None:
        super().close(timeout)
        self.viewer = None
