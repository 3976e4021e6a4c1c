"""The stream receiver dock widget: pipelines' ``fm.save(..., backend="napari")`` shows up here.

Receiving runs on the :class:`~polystore.streaming.viewer.ViewerService`'s threads; they only
hand items to a :class:`~polystore_napari.layers.Coalescer`. A timer on the GUI thread takes
what arrived at display rate (newest frame per plane) and updates the layers, so the GUI never
waits on the network and a fast pipeline never queues stale frames.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import ComboBox, Container, Label, LineEdit, PushButton, SpinBox
from qtpy.QtCore import QEvent, QTimer
from qtpy.QtWidgets import QVBoxLayout, QWidget

from polystore.exceptions import ViewerError
from polystore.plates import PlateNameError, conventions
from polystore.streaming.protocol import DEFAULT_SHM_PREFIX
from polystore.streaming.viewer import ViewerService, environment_setting
from polystore.streaming.viewer.control import array_reply
from polystore_napari.backend import NapariStreamingBackend
from polystore_napari.layers import ChannelMode, Coalescer, ComponentParser, LiveLayers, slider_labels

if TYPE_CHECKING:
    import napari

DISPLAY_INTERVAL_MS = 16
"""How often the GUI thread takes new frames: about the display's refresh rate."""
STATS_INTERVAL_MS = 500
FPS_WINDOW_S = 2.0
LOAD_WAIT_S = 2.0
"""How long a ``load`` request waits for a frame still on its way."""
FROM_HEADER = "from the stream"
"""The convention choice that reads what the sender put in each header (its path, parsed there)."""


def default_address() -> tuple[str, int]:
    """``POLYSTORE_NAPARI_HOST`` / ``_PORT``, else 127.0.0.1 and the backend's default port."""
    host = environment_setting("napari", "host") or "127.0.0.1"
    port = int(environment_setting("napari", "port") or NapariStreamingBackend.DEFAULT_PORT)
    return host, port


class _Shutdown:
    """Stops a service when its widget is destroyed (a plain object: the widget is gone by then)."""

    def __init__(self) -> None:
        self.service: ViewerService | None = None
        self.disconnect: list[Callable[[], object]] = []

    def __call__(self, *args: object) -> None:
        service, self.service = self.service, None
        if service is not None:
            service.stop()

    def destroyed(self, *args: object) -> None:
        self()
        for undo in self.disconnect:
            undo()
        self.disconnect.clear()


class StreamReceiverWidget(QWidget):
    """Listens for streamed items and shows them as live layers; shows address, state and counters."""

    def __init__(
        self,
        napari_viewer: napari.viewer.Viewer,
        *,
        host: str | None = None,
        port: int | None = None,
        pattern: str | None = None,
        convention: str | None = None,
        channel_mode: ChannelMode = "layers",
        autostart: bool = True,
    ) -> None:
        super().__init__()
        self.viewer = napari_viewer
        default_host, default_port = default_address()
        self.host_edit = LineEdit(value=host or default_host, label="host")
        self.port_edit = SpinBox(value=port or default_port, min=1, max=65533, label="port")
        known = [c.name for c in conventions()]
        given = [convention] if convention and convention not in known else []  # start() says why not
        self.convention_edit = ComboBox(
            value=convention or FROM_HEADER, choices=[FROM_HEADER, *known, *given],
            label="convention", tooltip="How file names say where an image is on the plate "
                                        "(docs/plates.md); 'from the stream': as the sender read them")
        self.pattern_edit = LineEdit(value=pattern or "", label="file-name pattern",
                                     tooltip="A regular expression with named groups (well or row + column, "
                                             "site, channel, z, t, plate), counted from 1 unless named "
                                             "channel0, site0, ...; overrides the convention")
        self.channels_edit = ComboBox(value=channel_mode, choices=["layers", "axis"], label="channels")
        self.toggle_button = PushButton(text="Start")
        self.state_label = Label(value="stopped", label="state")
        self.counters_label = Label(value="", label="frames")
        self.position_label = Label(value="", label="position")
        self.form: Container[Any] = Container(widgets=[
            self.host_edit, self.port_edit, self.convention_edit, self.pattern_edit, self.channels_edit,
            self.toggle_button,
            self.state_label, self.counters_label, self.position_label,
        ])
        layout = QVBoxLayout(self)
        layout.addWidget(self.form.native)
        layout.addStretch(1)
        self.toggle_button.changed.connect(self._toggle)

        self.service: ViewerService | None = None
        self.error: str | None = None
        self.coalescer = Coalescer()
        self.live = LiveLayers(napari_viewer, self.coalescer.parser)
        self._shown_at: collections.deque[tuple[float, int]] = collections.deque()
        self._last_arrival = 0.0
        self._shutdown = _Shutdown()
        self.destroyed.connect(self._shutdown.destroyed)

        self._display_timer = QTimer(self)
        self._display_timer.setInterval(DISPLAY_INTERVAL_MS)
        self._display_timer.timeout.connect(self._show_pending_now)
        self._stats_timer = QTimer(self)
        self._stats_timer.setInterval(STATS_INTERVAL_MS)
        self._stats_timer.timeout.connect(self.update_status)
        napari_viewer.dims.events.current_step.connect(self._show_position)
        self._shutdown.disconnect.append(
            lambda: napari_viewer.dims.events.current_step.disconnect(self._show_position)
        )
        if autostart:
            self.start()

    # -- listening -------------------------------------------------------------------------------
    @property
    def address(self) -> str:
        return f"{self.host_edit.value}:{self.port_edit.value}"

    @property
    def listening(self) -> bool:
        return self.service is not None and self.service.running

    def start(self) -> bool:
        """Listen on the address in the form; False (with the reason shown) when that fails."""
        self.stop()
        chosen = self.convention_edit.value
        try:
            parser = ComponentParser(self.pattern_edit.value or (None if chosen == FROM_HEADER else chosen),
                                     self.channels_edit.value)
        except PlateNameError as error:
            return self._fail(str(error))
        # zero-copy: frames stay in the sender's memory until the GUI takes the newest, and
        # only those are copied (see Coalescer)
        self.coalescer = Coalescer(parser, borrowed=True)
        self.live.parser = parser
        service = ViewerService(
            "napari", int(self.port_edit.value), str(self.host_edit.value),
            on_item=self._arrived,
            shm_prefixes=(NapariStreamingBackend.SHM_PREFIX, DEFAULT_SHM_PREFIX),
            handlers={"load": self._load, "layers": self._layers}, zero_copy=True,
        )
        try:
            service.start()
        except (ViewerError, ValueError, OSError) as error:
            return self._fail(str(error))
        self.service = self._shutdown.service = service
        self.error = None
        self.toggle_button.text = "Stop"
        self._display_timer.start()
        self._stats_timer.start()
        self.update_status()
        return True

    def stop(self) -> None:
        """Stop listening (the layers stay)."""
        self._shutdown()
        self.service = None
        self._display_timer.stop()
        self._stats_timer.stop()
        self.show_pending()
        self.toggle_button.text = "Start"
        self.update_status()

    def event(self, event: QEvent | None) -> bool:
        # napari's close button (remove_dock_widget) takes the widget out of its dock and keeps
        # it: the receiver thread references it, so it is never destroyed and kept the port
        if (event is not None and event.type() == QEvent.Type.ParentChange and self.parent() is None
                and self.service is not None):
            self.stop()
        return super().event(event)

    def _toggle(self, *args: object) -> None:
        if self.listening:
            self.stop()
        else:
            self.start()

    def _fail(self, message: str) -> bool:
        self.error = message
        self.state_label.value = f"error: {message}"
        self.state_label.native.setStyleSheet("color: #e05050")
        self.state_label.native.setWordWrap(True)
        return False

    # -- from the receiver thread --------------------------------------------------------------------
    def _arrived(self, item: Any) -> None:
        self._last_arrival = time.monotonic()
        self.coalescer.put(item)

    # -- on the GUI thread ---------------------------------------------------------------------------
    def _show_pending_now(self) -> None:
        self.show_pending()

    def show_pending(self) -> int:
        """Show what arrived since the last call (newest frame per plane); the number shown."""
        taken = self.coalescer.take()
        if not taken:
            return 0
        shown = self.live.apply(taken)
        now = time.monotonic()
        self._shown_at.append((now, shown))
        while self._shown_at and now - self._shown_at[0][0] > FPS_WINDOW_S:
            self._shown_at.popleft()
        return shown

    @property
    def fps(self) -> float:
        """Frames shown per second over the last two seconds."""
        if not self._shown_at:
            return 0.0
        now = time.monotonic()
        frames = sum(n for t, n in self._shown_at if now - t <= FPS_WINDOW_S)
        return frames / FPS_WINDOW_S

    @property
    def received(self) -> int:
        return self.service.received if self.service is not None else 0

    @property
    def dropped(self) -> int:
        """Frames lost on the way plus frames replaced by a newer one before they were shown."""
        lost = self.service.dropped if self.service is not None else 0
        return lost + self.coalescer.replaced

    def update_status(self) -> None:
        if self.error is not None and self.service is None:
            return
        self.state_label.native.setStyleSheet("")
        if self.service is None:
            self.state_label.value = "stopped"
        elif not self.service.running:
            self.state_label.value = f"receiver on {self.address} stopped unexpectedly"
        else:
            idle = time.monotonic() - self._last_arrival
            if self._last_arrival and idle < 2.0:
                state = "receiving"
            elif self._last_arrival:
                state = f"idle for {idle:.0f} s"
            else:
                state = "waiting for a pipeline"
            self.state_label.value = f"listening on {self.address}: {state}"
        rejected = self.service.rejected if self.service is not None else 0
        text = (f"{self.received} received, {self.live.displayed} shown, {self.dropped} dropped, "
                f"{self.fps:.1f} fps")
        if rejected:
            text += f", {rejected} rejected"
        if self.coalescer.failed:
            text += f", {self.coalescer.failed} unplaced ({self.coalescer.last_error})"
        if self.live.failed:  # napari refused them: said here, not only in a log nobody reads
            text += f", {self.live.failed} not shown ({self.live.last_error})"
        self.counters_label.value = text

    def _show_position(self, event: Any = None) -> None:
        """What the sliders point at, by name ("well A02, site 1")."""
        labels = slider_labels(self.viewer) or ()
        shown = [label for label in labels[: self.viewer.dims.ndim - 2] if " " in label]
        self.position_label.value = ", ".join(shown)

    # -- control requests (on the control thread: read only) ----------------------------------------------
    def _load(self, params: dict[str, Any], buffers: list[memoryview]) -> Any:
        path = params.get("path")
        if not isinstance(path, str):
            raise ViewerError("load needs a 'path'")
        # the data and control sockets are separate: a load sent right after a save can
        # overtake the frame, so give frames in flight a moment to arrive
        deadline = time.monotonic() + LOAD_WAIT_S
        while True:
            array = self.coalescer.peek(path)
            if array is None:
                array = self.live.plane(path)
            if array is not None:
                break
            if time.monotonic() > deadline:
                raise ViewerError(f"this viewer shows nothing under {path!r}")
            time.sleep(0.01)
        return array_reply(np.asarray(array), path=path)

    def _layers(self, params: dict[str, Any], buffers: list[memoryview]) -> dict[str, Any]:
        return {"layers": self.live.describe()}
