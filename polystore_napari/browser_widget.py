"""The store browser dock widget: a tree over polystore's backends, and "Save to…" for layers.

Places (a backend and a path in it: the memory store, a disk folder, a zarr store, an
``s3://`` URL) are roots of the tree; a folder's entries are listed when it is first expanded.
Double-clicking a file opens it as a layer (a zarr pyramid as a lazy multiscale layer, a
plate as one layer per channel with well and site sliders). "Save to…" writes the selected
layer through the same :class:`~polystore.filemanager.FileManager`, off the GUI thread.
Errors are shown in the widget.
"""

from __future__ import annotations

import logging
import os
from importlib import metadata
from typing import TYPE_CHECKING, Any

from magicgui.widgets import ComboBox, Container, Label, LineEdit, ProgressBar, PushButton
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QTreeWidget, QTreeWidgetItem, QVBoxLayout, QWidget

from polystore.exceptions import UnviewableDataError
from polystore.filemanager import FileManager
from polystore.registry import ENTRY_POINT_GROUP, registered_backend_classes
from polystore_napari._reader import LayerData, read_zarr
from polystore_napari._writer import layer_payload, save_payload
from polystore_napari.rois import roi_layer_data

if TYPE_CHECKING:
    import napari
    from napari.layers import Layer
    from napari.qt.threading import FunctionWorker

logger = logging.getLogger(__name__)

ROLE = Qt.ItemDataRole.UserRole
PLACEHOLDER = "…"
DEFAULT_PLACES = (("memory", "/"),)


def browsable_backends(manager: FileManager) -> list[str]:
    """Backends that hold data (not live viewers or streams), by name."""
    from polystore.streaming.backend import StreamingBackend

    entry_points = {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}
    names = []
    for name in manager.registry.names():
        cls = registered_backend_classes().get(name)
        if cls is None and name in entry_points:
            try:
                cls = entry_points[name].load()
            except Exception:  # an addon that does not import is not browsable
                continue
        if isinstance(cls, type) and issubclass(cls, StreamingBackend):
            continue
        names.append(name)
    return names


class _Node:
    """What a tree item stands for: a path in a backend, and whether it is a folder."""

    __slots__ = ("backend", "is_dir", "listing", "loaded", "path")

    def __init__(self, backend: str, path: str, is_dir: bool) -> None:
        self.backend = backend
        self.path = path
        self.is_dir = is_dir
        self.loaded = False
        self.listing = False  # a worker is listing it


def _join(parent: str, name: str) -> str:
    return f"{parent.rstrip('/')}/{name}" if parent not in ("", ".") else name


class StoreBrowserWidget(QWidget):
    """Browse memory, disk, zarr and s3 stores; open items as layers; save layers back."""

    def __init__(
        self,
        napari_viewer: napari.viewer.Viewer,
        manager: FileManager | None = None,
        *,
        places: tuple[tuple[str, str], ...] = DEFAULT_PLACES,
    ) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.manager = manager or FileManager()
        backends = browsable_backends(self.manager)
        writable = [b for b in backends if getattr(self.manager.get_backend(b), "supports_writes", False)]

        self.place_backend = ComboBox(choices=backends, value="disk" if "disk" in backends else backends[0],
                                      label="backend")
        self.place_path = LineEdit(value=os.getcwd(), label="path")
        self.add_button = PushButton(text="Add place")
        self.tree = QTreeWidget()
        self.tree.setHeaderLabels(["name", "backend", "size"])
        self.tree.setColumnWidth(0, 220)
        self.save_backend = ComboBox(choices=writable, value="disk" if "disk" in writable else writable[0],
                                     label="save to")
        self.save_path = LineEdit(value="", label="path")
        self.save_button = PushButton(text="Save to…")
        self.progress = ProgressBar(min=0, max=1, value=0, visible=False)
        self.status = Label(value="")
        self.status.native.setWordWrap(True)
        top = Container(widgets=[self.place_backend, self.place_path, self.add_button])
        bottom = Container(widgets=[self.save_backend, self.save_path, self.save_button, self.progress,
                                    self.status])
        layout = QVBoxLayout(self)
        layout.addWidget(top.native)
        layout.addWidget(self.tree, 1)
        layout.addWidget(bottom.native)

        self.add_button.changed.connect(
            lambda *_: self.add_place(self.place_backend.value, self.place_path.value)
        )
        self.save_button.changed.connect(lambda *_: self.save_selected())
        self.tree.itemExpanded.connect(self._expand_in_background)
        self.listings: list[Any] = []  # running listing workers (kept referenced until done)
        self.openings: list[Any] = []  # running workers reading items to open, likewise
        self.tree.itemDoubleClicked.connect(self._double_clicked)
        self.worker: FunctionWorker[None] | None = None
        for backend, path in places:
            self.add_place(backend, path)

    # -- feedback ---------------------------------------------------------------------------
    def show_error(self, message: str) -> None:
        self.status.value = message
        self.status.native.setStyleSheet("color: #e05050")

    def show_message(self, message: str) -> None:
        self.status.value = message
        self.status.native.setStyleSheet("")

    # -- the tree ---------------------------------------------------------------------------
    def add_place(self, backend: str, path: str) -> QTreeWidgetItem | None:
        """Add a root: ``path`` in ``backend`` (a folder, a ``.zarr`` store, ``s3://bucket/x.zarr``)."""
        path = os.fspath(path)
        if backend == "disk" and path.rstrip("/").lower().endswith(".zarr"):
            backend = "zarr"  # a zarr store on disk: browse its nodes, not its chunk files
        try:
            is_dir = self.manager.is_dir(path, backend)
            if not is_dir and not self.manager.exists(path, backend):
                self.show_error(f"Nothing at '{path}' in backend '{backend}'.")
                return None
        except Exception as error:
            self.show_error(f"Cannot open '{path}' in backend '{backend}': {error}")
            return None
        item = self._make_item(self._root(), path, _Node(backend, path, is_dir))
        item.setText(1, backend)
        self.show_message("")
        return item

    def _make_item(self, parent: QTreeWidgetItem, name: str, node: _Node) -> QTreeWidgetItem:
        item = QTreeWidgetItem(parent, [name, "", ""])
        item.setData(0, ROLE, node)
        if node.is_dir:
            QTreeWidgetItem(item, [PLACEHOLDER])  # shows the expand arrow until it is listed
        return item

    @staticmethod
    def node(item: QTreeWidgetItem) -> _Node:
        node = item.data(0, ROLE)
        assert isinstance(node, _Node)
        return node

    def _expand_in_background(self, item: QTreeWidgetItem) -> None:
        """A folder opened by the user: list it in a worker thread (an s3:// listing takes
        network round trips per entry), and fill the item on the GUI thread when it is done."""
        from superqt.utils import create_worker

        node = self.node(item)
        if node.loaded or node.listing:
            return
        node.listing = True
        listing_message = f"Listing {node.path} ({node.backend})…"
        self.show_message(listing_message)

        def listed(result: tuple[list[tuple[str, _Node, str]] | None, str | None]) -> None:
            node.listing = False
            self.listings.remove(worker)
            if self.status.value == listing_message:
                self.show_message("")
            self._fill(item, *result)

        worker = create_worker(self._listing, node, _connect={"returned": listed}, _start_thread=False)
        self.listings.append(worker)  # referenced until it has returned
        worker.start()

    def _expand(self, item: QTreeWidgetItem) -> None:
        """List a folder now, on this thread (for callers that need its entries at once)."""
        self._fill(item, *self._listing(self.node(item)))

    def _listing(self, node: _Node) -> tuple[list[tuple[str, _Node, str]] | None, str | None]:
        """A folder's entries with their sizes, or the reason it cannot be listed (any thread)."""
        if node.loaded:
            return None, None
        try:
            return [(name, child, "" if child.is_dir else self._size(child))
                    for name, child in self.entries(node)], None
        except Exception as error:
            return None, f"Cannot list '{node.path}' ({node.backend}): {error}"

    def _fill(self, item: QTreeWidgetItem, entries: list[tuple[str, _Node, str]] | None,
              error: str | None) -> None:
        node = self.node(item)
        if error is not None:
            self.show_error(error)
            return
        if entries is None or node.loaded:
            return  # listed already
        node.loaded = True
        item.takeChildren()
        for name, child, size in entries:
            child_item = self._make_item(item, name, child)
            if child.backend != node.backend:
                child_item.setText(1, child.backend)
            child_item.setText(2, size)

    def entries(self, node: _Node) -> list[tuple[str, _Node]]:
        """The entries of a folder node, each with the backend that reads it."""
        found = []
        for name in self.manager.list_dir(node.path, node.backend):
            if name.startswith("."):  # hidden, as in a file manager (zarr's lock folders, ...)
                continue
            path = _join(node.path, name)
            if node.backend == "disk" and name.lower().endswith(".zarr"):
                # a store: browse its nodes through the zarr backend (a lone image is a file)
                found.append((name, _Node("zarr", path, self.manager.is_dir(path, "zarr"))))
                continue
            found.append((name, _Node(node.backend, path, self.manager.is_dir(path, node.backend))))
        return found

    def _size(self, node: _Node) -> str:
        try:
            size = self.manager.stat(node.path, node.backend).size
        except Exception:
            return ""
        if size is None:
            return ""
        amount = float(size)
        for unit in ("B", "KiB", "MiB", "GiB"):
            if amount < 1024 or unit == "GiB":
                return f"{amount:.0f} {unit}" if unit == "B" else f"{amount:.1f} {unit}"
            amount /= 1024
        return ""

    def _root(self) -> QTreeWidgetItem:
        root = self.tree.invisibleRootItem()
        assert root is not None
        return root

    @staticmethod
    def child_items(item: QTreeWidgetItem) -> list[QTreeWidgetItem]:
        return [child for i in range(item.childCount()) if (child := item.child(i)) is not None]

    def find_item(self, *names: str) -> QTreeWidgetItem | None:
        """The item at ``names`` (root text, then child names), expanding on the way."""
        level = self._root()
        for depth, name in enumerate(names):
            if depth:
                level.setExpanded(True)
                self._expand(level)
            match = next((child for child in self.child_items(level) if child.text(0) == name), None)
            if match is None:
                return None
            level = match
        return level

    # -- opening ----------------------------------------------------------------------------
    def _double_clicked(self, item: QTreeWidgetItem, column: int) -> None:
        self.open_in_background(item)

    def open_in_background(self, item: QTreeWidgetItem) -> Any:
        """Open a tree item as layers, reading it in a worker thread (a large file, or any
        object on s3, would freeze the viewer while it is read); the layers are added on the
        GUI thread once it is read. Returns the worker (None if nothing is to be read)."""
        from superqt.utils import create_worker

        node = self.node(item)
        if node.is_dir and node.backend != "zarr":
            return None  # a plain folder just expands
        opening_message = f"Opening {node.path} ({node.backend})…"
        self.show_message(opening_message)

        def read(result: tuple[list[LayerData] | None, str | None]) -> None:
            self.openings.remove(worker)
            layer_data, error = result
            if error is not None:
                self.show_error(error)
            elif layer_data is not None:
                self._add_layers(node, layer_data)
            elif self.status.value == opening_message:
                self.show_message("")

        worker = create_worker(self._read_layer_data, node, _connect={"returned": read}, _start_thread=False)
        self.openings.append(worker)  # referenced until it has returned
        worker.start()
        return worker

    def open_item(self, item: QTreeWidgetItem) -> list[Layer]:
        """Open a tree item as layers now, on this thread (for scripts and tests; a double
        click opens in the background): files, zarr images and plates (a plain folder: none)."""
        node = self.node(item)
        layer_data, error = self._read_layer_data(node)
        if error is not None:
            self.show_error(error)
            return []
        return self._add_layers(node, layer_data) if layer_data is not None else []

    def _read_layer_data(self, node: _Node) -> tuple[list[LayerData] | None, str | None]:
        """:meth:`layer_data`, or the reason it failed (any thread)."""
        try:
            return self.layer_data(node), None
        except Exception as error:
            return None, f"Cannot open '{node.path}' ({node.backend}): {error}"

    def _add_layers(self, node: _Node, layer_data: list[LayerData]) -> list[Layer]:
        layers: list[Layer] = []
        for data, options, layer_type in layer_data:
            added = getattr(self.viewer, f"add_{layer_type}")(data, **options)
            layers += added if isinstance(added, list) else [added]
        self.show_message(f"Opened {node.path} ({node.backend}) as {len(layers)} layer(s).")
        return layers

    def layer_data(self, node: _Node) -> list[LayerData] | None:
        """What ``node`` opens as; None for a plain folder."""
        if node.backend == "zarr":
            backend = self.manager.get_backend("zarr")
            if node.is_dir:
                from polystore_napari._reader import node_attributes

                if node_attributes(backend, node.path)[0] != "plate":
                    return None
            return read_zarr(backend, node.path)
        if node.is_dir:
            return None
        name = node.path.rstrip("/").rsplit("/", 1)[-1]
        return loaded_layer_data(self.manager.load(node.path, node.backend), name)

    # -- saving -----------------------------------------------------------------------------
    def save_selected(
        self, backend: str | None = None, path: str | None = None, layer: Layer | None = None
    ) -> FunctionWorker[None] | None:
        """Write ``layer`` (the selected one) to ``path`` on ``backend``, off the GUI thread."""
        from napari.qt.threading import create_worker

        layer = layer if layer is not None else self.viewer.layers.selection.active
        backend = backend or self.save_backend.value
        path = path or self.save_path.value
        if layer is None:
            self.show_error("Select a layer to save first.")
            return None
        if not path:
            self.show_error("Give a path to save to.")
            return None
        if self.worker is not None:
            self.show_error("A save is still running.")
            return None
        try:  # on the GUI thread: napari's layers are not for other threads
            data, options = layer_payload(layer, path)
        except Exception as error:
            self.show_error(f"Could not save '{layer.name}' to {path}: {error}")
            return None
        self.progress.visible = True
        self.progress.min, self.progress.max = 0, 0  # busy: FileManager.save reports no fraction
        self.save_button.enabled = False
        name = layer.name
        self.show_message(f"Saving '{name}' to {path} ({backend})…")
        worker: FunctionWorker[None] = create_worker(
            save_payload, self.manager, data, options, path, backend,
            _connect={
                "returned": lambda _: self.show_message(f"Saved '{name}' to {path} ({backend})."),
                "errored": lambda error: self.show_error(f"Could not save '{name}' to {path}: {error}"),
                "finished": self._saved,
            },
            _start_thread=False,
        )
        self.worker = worker
        worker.start()
        return worker

    def _saved(self) -> None:
        self.worker = None
        self.progress.visible = False
        self.progress.max = 1
        self.save_button.enabled = True
        # folders already listed may hold the new file: list them again when next expanded
        for item in self.child_items(self._root()):
            self._forget(item)

    def _forget(self, item: QTreeWidgetItem) -> None:
        node = self.node(item)
        if node.is_dir and node.loaded:
            node.loaded = False
            expanded = item.isExpanded()
            item.takeChildren()
            QTreeWidgetItem(item, [PLACEHOLDER])
            if expanded:
                self._expand(item)


def loaded_layer_data(data: Any, name: str) -> list[LayerData]:
    """Layer data for what a backend's ``load`` returned: arrays as images, ROI lists as shapes."""
    from polystore.arrays import framework_of, to_numpy

    if framework_of(data) is not None:
        return [(to_numpy(data), {"name": name}, "image")]
    if type(data).__module__.startswith("dask"):
        return [(data, {"name": name}, "image")]
    items = data if isinstance(data, list) else [data]
    if items and all(type(item).__name__ == "ImagejRoi" for item in items):
        return roi_layer_data(items, name)
    raise UnviewableDataError(
        f"A {type(data).__name__} cannot be shown as a layer: only arrays and ImageJ ROIs can. "
        "Open a file that holds an image or ROIs."
    )
