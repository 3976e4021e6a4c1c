"""The plate map: a dock that draws the plate as a grid of wells (96, 384 or 1536), marks the
wells and sites that have arrived while a stream or a store fills, and moves the viewer to a
well when one is clicked.

It follows the active polystore layer (else the first one): a streamed plate's live layers
(well slider: a click moves it) or an OME-Zarr plate's tiled overview (a click centres the
camera on the well's tile and zooms to it; the store is looked at again every few seconds, so
wells a pipeline adds meanwhile are marked). What it draws comes from the layer's
``metadata["polystore"]`` (see :mod:`polystore_napari.layers`); the plate's geometry from
:mod:`polystore.plates`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from qtpy.QtCore import QPointF, QRectF, Qt, QTimer
from qtpy.QtGui import QColor, QMouseEvent, QPainter, QPaintEvent, QPen
from qtpy.QtWidgets import QLabel, QSizePolicy, QVBoxLayout, QWidget

from polystore.plates import PlateNameError, plate_format, row_letters, split_well, well_name, well_position
from polystore_napari.layers import layer_axes

if TYPE_CHECKING:
    import napari
    from napari.components import ViewerModel
    from napari.layers import Layer

REFRESH_MS = 250
"""How often the map looks at the layers (a stream updates their metadata as planes arrive)."""
STORE_REFRESH_S = 2.0
"""How often a store being filled is looked at again (metadata documents only)."""
EMPTY, ARRIVED, PARTIAL, CURRENT = "#303030", "#2fb36b", "#1e6e46", "#ffffff"


@dataclass
class PlateView:
    """What the map draws for one layer: its plate's wells, which arrived, the current one."""

    layer: Layer
    series: str
    arrived: dict[str, list[int]]
    """Well ("B03") -> the 0-based sites (fields) that arrived."""
    current: str | None = None
    sites: int = 1
    """The most sites any well has (a well with fewer is drawn as partly arrived)."""
    overview: dict[str, Any] | None = None
    shape: tuple[int, int] = field(default=(8, 12))

    def describe(self, well: str) -> str:
        sites = self.arrived.get(well)
        if not sites:
            return f"{well}: nothing yet"
        return f"{well}: {len(sites)} of {self.sites} site{'s' if self.sites != 1 else ''}"


def plate_view(viewer: ViewerModel) -> PlateView | None:
    """The plate of the active polystore layer (else of the first), or None."""
    active = viewer.layers.selection.active
    candidates = [active, *viewer.layers] if active is not None else list(viewer.layers)
    for layer in candidates:
        described = layer_axes(layer) if layer is not None else None
        if described is None or (not described.get("arrived") and "well" not in described["components"]):
            continue
        arrived = {_well(w): list(s) for w, s in (described.get("arrived") or {}).items() if _well(w)}
        for well in described["components"].get("well", []):
            if isinstance(well, str) and _well(well):
                arrived.setdefault(_well(well), [])
        if not arrived:
            continue
        sites = max((max(s) + 1 for s in arrived.values() if s), default=1)
        view = PlateView(layer, str(described.get("series", layer.name)), arrived, sites=sites,
                         overview=described.get("overview"), shape=plate_format(arrived))
        view.current = _current_well(viewer, view, described)
        return view
    return None


def _well(name: Any) -> str:
    try:
        return "".join(split_well(str(name)))
    except PlateNameError:
        return ""


def _current_well(viewer: ViewerModel, view: PlateView, described: dict[str, Any]) -> str | None:
    axes = list(described["components"])
    if "well" in axes:
        offset = viewer.dims.ndim - view.layer.ndim
        position = viewer.dims.current_step[offset + axes.index("well")]
        wells = described["components"]["well"]
        return _well(wells[position]) if 0 <= position < len(wells) and wells[position] else None
    if view.overview:
        center = viewer.scene.camera.center[-2:]
        y, x = (c / s for c, s in zip(center, view.layer.scale[-2:], strict=True))
        tile_h, tile_w = view.overview["tile"]
        at = (int(y // tile_h), int(x // tile_w))
        return next((w for w, rc in view.overview["grid"].items() if tuple(rc) == at), None)
    return None


def go_to(viewer: ViewerModel, view: PlateView, well: str) -> bool:
    """Move the viewer to ``well``: its slider position, or its tile of the overview. False
    when the layer does not hold that well (nothing arrived there yet)."""
    described = layer_axes(view.layer)
    if described is None:
        return False
    axes = list(described["components"])
    if "well" in axes:
        wells = [_well(w) if w else "" for w in described["components"]["well"]]
        if well not in wells:
            return False
        offset = viewer.dims.ndim - view.layer.ndim
        viewer.dims.set_current_step(offset + axes.index("well"), wells.index(well))
        return True
    overview = view.overview
    if not overview or well not in overview["grid"]:
        return False
    row, column = overview["grid"][well]
    tile_h, tile_w = overview["tile"]
    scale_y, scale_x = view.layer.scale[-2:]
    center = ((row + 0.5) * tile_h * scale_y, (column + 0.5) * tile_w * scale_x)
    viewer.scene.camera.center = (*viewer.scene.camera.center[:-2], *center)
    canvas_h, canvas_w = getattr(viewer, "_canvas_size", (600, 800))
    viewer.scene.camera.zoom = 0.9 * min(canvas_h / (tile_h * scale_y), canvas_w / (tile_w * scale_x))
    return True


class PlateGrid(QWidget):
    """The wells drawn as a grid; clicking one calls ``on_click(well)``."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.view: PlateView | None = None
        self.on_click: Any = None
        self.setMinimumSize(240, 160)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setMouseTracking(True)

    # -- geometry ------------------------------------------------------------------------------
    def _layout(self) -> tuple[float, float, float]:
        rows, columns = self.view.shape if self.view is not None else (8, 12)
        margin = 16.0 if rows <= 16 else 10.0  # room for the row letters and column numbers
        cell = max(2.0, min((self.width() - margin) / columns, (self.height() - margin) / rows))
        return margin, margin, cell

    def cell_rect(self, well: str) -> QRectF:
        """Where ``well`` is drawn, in widget coordinates."""
        left, top, cell = self._layout()
        row, column = well_position(well)
        return QRectF(left + column * cell, top + row * cell, cell, cell)

    def well_at(self, x: float, y: float) -> str | None:
        if self.view is None:
            return None
        left, top, cell = self._layout()
        row, column = math.floor((y - top) / cell), math.floor((x - left) / cell)
        rows, columns = self.view.shape
        if not (0 <= row < rows and 0 <= column < columns):
            return None
        return well_name(row + 1, column + 1)

    # -- Qt -------------------------------------------------------------------------------------
    def paintEvent(self, event: QPaintEvent | None) -> None:  # noqa: N802 (Qt's name)
        painter = QPainter(self)
        try:
            self._paint(painter)
        finally:
            painter.end()

    def _paint(self, painter: QPainter) -> None:
        view = self.view
        rows, columns = view.shape if view is not None else (8, 12)
        left, top, cell = self._layout()
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, cell > 6)
        labels = cell >= 9
        painter.setPen(QColor("#a0a0a0"))
        if labels:
            for column in range(columns):
                if columns <= 24 or column % 4 == 3:
                    painter.drawText(QRectF(left + column * cell, 0, cell, top), Qt.AlignmentFlag.AlignCenter,
                                     str(column + 1))
            for row in range(rows):
                painter.drawText(QRectF(0, top + row * cell, left, cell), Qt.AlignmentFlag.AlignCenter,
                                 row_letters(row + 1))
        for row in range(rows):
            for column in range(columns):
                well = well_name(row + 1, column + 1)
                rect = QRectF(left + column * cell, top + row * cell, cell, cell).adjusted(1, 1, -1, -1)
                sites = view.arrived.get(well) if view is not None else None
                colour = EMPTY if not sites else ARRIVED if view and len(sites) >= view.sites else PARTIAL
                painter.setBrush(QColor(colour))
                current = view is not None and well == view.current
                painter.setPen(QPen(QColor(CURRENT), 2) if current else QPen(QColor("#505050"), 1))
                painter.drawEllipse(rect) if cell >= 6 else painter.drawRect(rect)

    def mousePressEvent(self, event: QMouseEvent | None) -> None:  # noqa: N802 (Qt's name)
        if event is None:
            return
        point: QPointF = event.position() if hasattr(event, "position") else QPointF(event.pos())
        well = self.well_at(point.x(), point.y())
        if well is not None and self.on_click is not None:
            self.on_click(well)

    def mouseMoveEvent(self, event: QMouseEvent | None) -> None:  # noqa: N802 (Qt's name)
        if event is None or self.view is None:
            return
        point: QPointF = event.position() if hasattr(event, "position") else QPointF(event.pos())
        well = self.well_at(point.x(), point.y())
        self.setToolTip(self.view.describe(well) if well else "")


class PlateMapWidget(QWidget):
    """The plate map dock (see the module docstring)."""

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.grid = PlateGrid(self)
        self.grid.on_click = self.go_to
        self.title = QLabel("no plate yet: stream one, or open an OME-Zarr plate")
        self.title.setWordWrap(True)
        self.status = QLabel("")
        layout = QVBoxLayout(self)
        layout.addWidget(self.title)
        layout.addWidget(self.grid, 1)
        layout.addWidget(self.status)
        self.view: PlateView | None = None
        self._drawn: Any = None
        self._store_checked: dict[str, float] = {}
        self._timer = QTimer(self)
        self._timer.setInterval(REFRESH_MS)
        self._timer.timeout.connect(self.refresh)
        self._timer.start()
        self.refresh()

    def refresh(self) -> None:
        """Look at the layers again; redraw if what the map shows changed."""
        self._check_store()
        view = plate_view(self.viewer)
        drawn = None if view is None else (
            id(view.layer), view.series, view.current, view.shape, view.sites,
            tuple(sorted((w, len(s)) for w, s in view.arrived.items())),
        )
        self.view = view
        if drawn == self._drawn:
            return
        self._drawn = drawn
        self.grid.view = view
        if view is not None:
            done = sum(1 for s in view.arrived.values() if s)
            rows, columns = view.shape
            self.title.setText(f"{view.series}: {done} well{'s' if done != 1 else ''} of "
                               f"{rows * columns} ({rows} x {columns})")
            if view.current:
                self.status.setText(view.describe(view.current))
        self.grid.update()

    def go_to(self, well: str) -> bool:
        """Move the viewer to ``well`` (what a click does)."""
        if self.view is None:
            return False
        moved = go_to(self.viewer, self.view, well)
        self.status.setText(self.view.describe(well) if moved else f"{well}: nothing there yet")
        self.refresh()
        return moved

    def _check_store(self) -> None:
        """A plate opened from a store: mark the wells a pipeline added since (metadata only)."""
        import time

        view = self.view
        store = view.overview.get("store") if view is not None and view.overview else None
        if view is None or not isinstance(store, str):
            return
        now = time.monotonic()
        if now - self._store_checked.get(store, 0.0) < STORE_REFRESH_S:
            return
        self._store_checked[store] = now
        from polystore_napari.overview import store_arrivals

        try:
            arrived = store_arrivals(store)
        except Exception as error:  # a store being written may be read half-way: try again later
            self.status.setText(f"could not read {store}: {error}")
            return
        described = layer_axes(view.layer)
        if described is not None and arrived != described.get("arrived"):
            view.layer.metadata = {**view.layer.metadata,
                                   "polystore": {**described, "arrived": arrived}}
