"""ViewerStreamingBackend: the sender side every viewer backend (napari, Fiji) shares.

A pipeline writes ``fm.save(img, "plate/A01_s1_w2.tif", backend="napari")``: the registered
subclass connects to that viewer (which binds; see :mod:`polystore.streaming.viewer.service`),
checks once that it answers, and, when asked to (``launch=True`` or
``POLYSTORE_<VIEWER>_LAUNCH=1``), starts one first.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from polystore.base import PathLike
from polystore.exceptions import ViewerError, ViewerUnavailableError
from polystore.streaming.backend import StreamingBackend
from polystore.streaming.sender import Frame
from polystore.streaming.viewer.control import Reply, array_from_reply, request
from polystore.streaming.viewer.launch import TRUE_WORDS, environment_setting, launch_viewer

MAX_ABSENT_BACKOFF_S = 30.0
"""The longest a backend trusts that no viewer answers before it asks again."""


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
    is_live_view: ClassVar[bool] = True

    def __init__(
        self,
        port: int | None = None,
        host: str | None = None,
        *,
        launch: bool | None = None,
        launch_timeout: float = 120.0,
        launch_args: Sequence[str] = (),
        probe_timeout: float = 2.0,
        absent_backoff: float = 1.0,
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
        self.endpoints = dataclasses.replace(self.endpoints, control_port=control_port)
        if launch is None:
            launch = (env(self.VIEWER_TYPE, "launch") or "").lower() in TRUE_WORDS
        self.launch = launch
        self.launch_timeout = launch_timeout
        self.launch_args = tuple(launch_args)
        self.probe_timeout = probe_timeout
        self.absent_backoff = absent_backoff
        """Seconds a failed check of the viewer is trusted before the next (doubling)."""
        self._absent_backoff = absent_backoff
        self._absent_since = self._absent_until = 0.0
        self.viewer: dict[str, Any] | None = None
        """The ``ping`` reply of the viewer this backend streams to, once it has answered."""
        self.launched: Any = None
        """The viewer process this backend started (``subprocess.Popen``), if it started one."""

    @property
    def control_port(self) -> int:
        return self.endpoints.control_port_number

    # -- the viewer's presence -------------------------------------------------------------
    def request(
        self, op: str, params: Mapping[str, Any] | None = None, buffers: Sequence[Any] = (),
        *, timeout: float | None = None,
    ) -> Reply:
        """Ask the viewer to run a control ``op`` (see the viewer's documentation for its ops)."""
        return request(
            self.host, self.control_port, op, params, buffers,
            timeout=self.send_timeout if timeout is None else timeout, curve=self.curve,
            max_reply_bytes=self.max_bytes,
        )

    def ping(self, timeout: float | None = None) -> dict[str, Any] | None:
        """The viewer's ``ping`` reply, or ``None`` when nothing answers."""
        try:
            return self.request("ping", timeout=self.probe_timeout if timeout is None else timeout).header
        except ViewerUnavailableError:
            return None

    def ensure_viewer(self) -> dict[str, Any]:
        """Check (once) that a viewer answers; launch one first when ``launch`` is on.

        When none answers, the answer is remembered: calls in the next ``absent_backoff``
        seconds raise at once instead of waiting ``probe_timeout`` each (a two-place save of
        every frame would otherwise pay it per frame); each check that fails doubles the
        wait, up to ``MAX_ABSENT_BACKOFF_S``.
        """
        if self.viewer is not None:
            return self.viewer
        now = time.monotonic()
        if now < self._absent_until:
            raise ViewerUnavailableError(
                f"{self._absent_message()} (checked {now - self._absent_since:.0f} s ago; "
                f"checked again in {self._absent_until - now:.0f} s)"
            )
        info = self.ping()
        if info is None and self.launch:
            info, self.launched = launch_viewer(
                self.VIEWER_TYPE, self.port, self.launch_command(), self.ping,
                timeout=self.launch_timeout, probe=lambda: self.ping(timeout=0.5),
            )
        if info is None:
            now = time.monotonic()
            self._absent_since, self._absent_until = now, now + self._absent_backoff
            self._absent_backoff = min(2 * self._absent_backoff, MAX_ABSENT_BACKOFF_S)
            raise ViewerUnavailableError(self._absent_message())
        self._absent_backoff, self._absent_until = self.absent_backoff, 0.0
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

    # -- sending -----------------------------------------------------------------------------
    def _stream_data(self, data: Any, path: PathLike, **kwargs: Any) -> None:
        self.ensure_viewer()
        super()._stream_data(data, path, **kwargs)

    def frame(self, shape: tuple[int, ...] | int, dtype: Any, path: PathLike, **options: Any) -> Frame:
        self.ensure_viewer()
        return super().frame(shape, dtype, path, **options)

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
