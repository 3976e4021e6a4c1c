"""Stream items assembled into live n-D napari layers.

Each item's *components* (plate, well, site, channel, z, t) come from its header metadata
(``docs/streaming.md``: parsed from the path by the sender, 0-based as in OME-NGFF) or, with a
configurable regular expression, from its path. Items of one *series* (the plate, else the
folder of the path) share stacked axes, so a plate streamed image by image becomes one layer
per channel with sliders for well, site, t and z. An item with no components is a layer of its
own (a live camera: every frame replaces the last).

Nothing here touches Qt; :class:`LiveLayers` runs on the GUI thread, :class:`Coalescer` takes
items from any thread and hands the newest per plane to the GUI thread.
"""

from __future__ import annotations

import logging
import math
import posixpath
import re
import threading
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from polystore.rois import Shape, shapes_of_item, split_points
from polystore.streaming.protocol import StreamItem

if TYPE_CHECKING:
    from napari.layers import Layer
    from napari.viewer import ViewerModel

logger = logging.getLogger(__name__)

ChannelMode = Literal["layers", "axis"]
STACK_ORDER = ("well", "site", "t", "channel", "z")
"""Stacked axes in the order the sliders show them (outermost first); pattern extras follow site."""
CHANNEL_COLORMAPS = ("green", "magenta", "cyan", "yellow", "red", "blue")
COMPONENT_KEYS = ("plate", "well", "row", "column", "site", "field", "channel", "z", "t")
OVERLAY_KINDS = frozenset({"shapes", "points", "roi_set"})
"""Kinds drawn over a field: they follow the series' axes but not its channels."""


def natural_key(value: Hashable) -> tuple[Any, ...]:
    """Sort key: absent (None) first, then numbers, then text with its digits compared as numbers."""
    if value is None:
        return (0,)
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        return (1, float(value))
    parts = re.split(r"(\d+)", str(value))
    return (2, tuple(int(p) if p.isdigit() else p for p in parts))


def _as_value(text: Any) -> Hashable:
    if isinstance(text, str) and text.isdigit():
        return int(text)
    return text if isinstance(text, Hashable) else str(text)


# -- where an item goes ----------------------------------------------------------------------


@dataclass(frozen=True)
class Placement:
    """Where one item goes: its layer (kind, series, channel) and its position on the stacked axes."""

    kind: str
    series: str
    channel: Hashable | None
    channel_label: str | None
    components: tuple[tuple[str, Hashable], ...]
    """(axis, value) pairs of the stacked axes this item has, in :data:`STACK_ORDER`."""

    @property
    def layer_key(self) -> tuple[str, str, Hashable | None]:
        kind = "shapes" if self.kind == "roi_set" else self.kind
        return (kind, self.series, self.channel)

    @property
    def plane_key(self) -> tuple[Any, ...]:
        """Items with the same plane key replace each other (newest wins)."""
        return (*self.layer_key, self.components)


class ComponentParser:
    """Reads an item's components from its metadata, or from its path with ``pattern``.

    ``pattern``: a regular expression searched in the item's path, with named groups among
    ``plate``, ``well`` (or ``row`` and ``column``), ``site`` (or ``field``), ``channel``,
    ``z``, ``t``; other named groups become stacked axes of their own. Values are taken as
    written (digits as integers). ``channel_mode="axis"`` stacks channels on an axis of one
    layer instead of one layer per channel.
    """

    def __init__(self, pattern: str | None = None, channel_mode: ChannelMode = "layers") -> None:
        if channel_mode not in ("layers", "axis"):
            raise ValueError(f"channel_mode must be 'layers' or 'axis', got {channel_mode!r}")
        self.pattern = re.compile(pattern) if pattern else None
        self.channel_mode: ChannelMode = channel_mode

    def components(self, item: StreamItem) -> tuple[dict[str, Hashable], bool]:
        """The item's components and whether they came from the pattern (else: from metadata)."""
        if self.pattern is not None:
            match = self.pattern.search(item.path)
            if match is not None:
                found = {k: _as_value(v) for k, v in match.groupdict().items() if v is not None}
                return _normalise(found), True
        metadata = item.metadata
        found = {k: metadata[k] for k in COMPONENT_KEYS if isinstance(metadata.get(k), (str, int))}
        return _normalise(found), False

    def place(self, item: StreamItem) -> Placement:
        components, from_pattern = self.components(item)
        plate = components.pop("plate", None)
        if plate is not None:
            series = str(plate)
        elif components:
            series = posixpath.dirname(item.path.strip("/")) or "stream"
        else:
            series = item.path  # no components: one layer per path, each frame replaces the last
        channel: Hashable | None = None
        label: str | None = None
        kind = item.kind
        if kind in OVERLAY_KINDS:
            components.pop("channel", None)
        elif self.channel_mode == "layers" and "channel" in components:
            channel = components.pop("channel")
            name = item.metadata.get("channel_name")
            if isinstance(name, str) and name:
                label = name
            elif isinstance(channel, int) and not from_pattern:
                label = f"w{channel + 1}"  # the header's channels are 0-based: w2 in the name is 1
            else:
                label = f"c{channel}"
        order = {axis: i for i, axis in enumerate(STACK_ORDER)}
        ranked = sorted(components, key=lambda axis: order.get(axis, order["site"] + 0.5))
        return Placement(kind, series, channel, label, tuple((a, components[a]) for a in ranked))


def _normalise(found: dict[str, Hashable]) -> dict[str, Hashable]:
    if "field" in found and "site" not in found:
        found["site"] = found.pop("field")
    row, column = found.pop("row", None), found.pop("column", None)
    if "well" not in found and row is not None and column is not None:
        found["well"] = f"{row}{column}"
    found.pop("field", None)
    return found


# -- stacked axes shared by a series ------------------------------------------------------------


class Series:
    """The stacked axes of one series and the values seen on each, sorted."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.axes: list[str] = []
        self.values: dict[str, list[Hashable]] = {}

    def add(self, components: Sequence[tuple[str, Hashable]]) -> bool:
        """Make room for ``components``; whether an axis or a value is new."""
        changed = False
        given = dict(components)
        for axis, value in given.items():
            if axis not in self.values:
                order = {a: i for i, a in enumerate(STACK_ORDER)}
                rank = order.get(axis, order["site"] + 0.5)
                position = sum(1 for a in self.axes if order.get(a, order["site"] + 0.5) <= rank)
                self.axes.insert(position, axis)
                # items before this axis existed sit at "absent" on it
                self.values[axis] = [None] if self._has_items else []
                changed = True
            values = self.values[axis]
            if value not in values:
                values.append(value)
                values.sort(key=natural_key)
                changed = True
        for axis in self.axes:
            if axis not in given and None not in self.values[axis]:
                self.values[axis].insert(0, None)
                changed = True
        self._has_items = True
        return changed

    _has_items = False

    def index(self, key: Mapping[str, Hashable]) -> tuple[int, ...]:
        return tuple(self.values[axis].index(key.get(axis)) for axis in self.axes)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(len(self.values[axis]) for axis in self.axes)

    def labels(self) -> dict[str, list[Hashable]]:
        """Axis -> the value at each slider position (for the widget and ``layer.metadata``)."""
        return {axis: list(self.values[axis]) for axis in self.axes}


class PlaneStack:
    """An n-D array-like over the planes received so far: stacked axes of a series, then the plane.

    napari slices it like any array (``LayerDataProtocol``); planes never received read as
    zeros. Storing a plane is O(1) and copies nothing.
    """

    def __init__(self, series: Series, plane: np.ndarray) -> None:
        self.series = series
        self.plane_shape: tuple[int, ...] = tuple(plane.shape)
        self.dtype: np.dtype[Any] = plane.dtype
        self.planes: dict[tuple[tuple[str, Hashable], ...], np.ndarray] = {}
        self._zeros: np.ndarray | None = None

    def accepts(self, plane: np.ndarray) -> bool:
        return tuple(plane.shape) == self.plane_shape and plane.dtype == self.dtype

    def put(self, components: Sequence[tuple[str, Hashable]], plane: np.ndarray) -> None:
        self.planes[plane_id(components)] = plane

    def get(self, components: Sequence[tuple[str, Hashable]]) -> np.ndarray | None:
        return self.planes.get(plane_id(components))

    # -- the array protocol napari uses ------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        return self.series.shape + self.plane_shape

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def _plane_at(self, index: tuple[int, ...]) -> np.ndarray:
        axes = self.series.axes
        wanted = {axis: self.series.values[axis][i] for axis, i in zip(axes, index, strict=True)}
        plane = self.planes.get(plane_id((a, v) for a, v in wanted.items() if v is not None))
        if plane is not None:
            return plane
        if self._zeros is None:
            self._zeros = np.zeros(self.plane_shape, self.dtype)
            self._zeros.flags.writeable = False
        return self._zeros

    def __getitem__(self, key: Any) -> np.ndarray:
        index = key if isinstance(key, tuple) else (key,)
        if any(k is Ellipsis for k in index):
            at = index.index(Ellipsis)
            fill = (slice(None),) * (self.ndim - len(index) + 1)
            index = index[:at] + fill + index[at + 1 :]
        if not all(isinstance(k, (int, np.integer, slice)) for k in index) or len(index) > self.ndim:
            # fancy indexing: materialise (napari does not index so)
            return np.asarray(np.asarray(self)[key])
        index = index + (slice(None),) * (self.ndim - len(index))
        stacked, in_plane = index[: len(self.series.axes)], index[len(self.series.axes) :]
        if not any(isinstance(k, slice) for k in stacked):  # one plane (napari's 2-D view): no copy
            return np.asarray(self._plane_at(tuple(int(k) for k in stacked))[in_plane])
        ranges = [
            [int(k)] if not isinstance(k, slice) else list(range(n))[k]
            for k, n in zip(stacked, self.series.shape, strict=True)
        ]
        planes = [self._plane_at(position) for position in _product(ranges)]
        block = np.stack(planes) if planes else np.zeros((0, *self.plane_shape), self.dtype)
        # integer indices drop their axis, as NumPy's do
        block = block.reshape(tuple(len(r) for r, k in zip(ranges, stacked, strict=True)
                                    if isinstance(k, slice)) + self.plane_shape)
        return np.asarray(block[(slice(None),) * (block.ndim - len(self.plane_shape)) + in_plane])

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        full = self[(slice(None),) * self.ndim]
        return full.astype(dtype) if dtype is not None else full

    def snapshot(self) -> PlaneStack:
        """What is stacked now, frozen: the planes are shared (received planes are replaced,
        never written into), the axes and values copied. For another thread to read while
        new planes keep arriving here (stacking hundreds of planes takes the GUI seconds)."""
        series = Series(self.series.name)
        series.axes = list(self.series.axes)
        series.values = {axis: list(values) for axis, values in self.series.values.items()}
        series._has_items = self.series._has_items
        frozen = PlaneStack.__new__(PlaneStack)
        frozen.series, frozen.plane_shape, frozen.dtype = series, self.plane_shape, self.dtype
        frozen.planes, frozen._zeros = dict(self.planes), self._zeros
        return frozen

    def __repr__(self) -> str:
        return f"PlaneStack(shape={self.shape}, dtype={self.dtype}, planes={len(self.planes)})"


def plane_id(components: Iterable[tuple[str, Hashable]]) -> tuple[tuple[str, Hashable], ...]:
    """A plane's key: its (axis, value) pairs in axis-name order, whatever order they came in."""
    return tuple(sorted(components, key=lambda pair: pair[0]))


def _product(ranges: list[list[int]]) -> Iterable[tuple[int, ...]]:
    import itertools

    return itertools.product(*ranges)


# -- ROI sets ----------------------------------------------------------------------------------

Overlay = tuple[list[Shape], np.ndarray]
"""What an overlay item holds: its outlines, and its points as one (N, 2) y/x array."""


def overlay_of(item: StreamItem) -> Overlay:
    """A shapes / points / roi_set item as outlines and points (:mod:`polystore.rois`)."""
    return split_points(shapes_of_item(item.kind, item.array, item.metadata))


# -- the layers in a viewer --------------------------------------------------------------------


@dataclass
class _LiveLayer:
    """One napari layer fed by the stream and what it holds."""

    key: tuple[str, str, Hashable | None]
    series: Series
    name: str
    layer: Layer
    stack: PlaneStack | None = None
    overlays: dict[tuple[tuple[str, Hashable], ...], Overlay] = field(
        default_factory=dict
    )
    ndim: int = 2


class LiveLayers:
    """Builds and updates napari layers from stream items; runs on the GUI thread.

    ``apply(items)`` places each item, then refreshes every touched layer once: a new frame
    updates its layer in place (contrast limits are set when the layer is made, never reset),
    a new well or site grows the stacked axes of its whole series.
    """

    def __init__(self, viewer: ViewerModel, parser: ComponentParser | None = None) -> None:
        self.viewer = viewer
        self.parser = parser or ComponentParser()
        self.series: dict[str, Series] = {}
        self.layers: dict[tuple[str, str, Hashable | None], _LiveLayer] = {}
        self.paths: dict[str, tuple[tuple[str, str, Hashable | None], tuple[tuple[str, Hashable], ...]]] = {}
        """Path -> (layer key, components) of the newest item sent under it (for the ``load`` op)."""
        self.displayed = 0

    def apply(self, items: Iterable[tuple[Placement, StreamItem]]) -> int:
        """Show ``items`` (placed by :meth:`ComponentParser.place`); the number shown."""
        touched: dict[tuple[str, str, Hashable | None], _LiveLayer] = {}
        regrown: set[str] = set()
        count = 0
        for placement, item in items:
            try:
                live, grew = self._place(placement, item)
            except Exception as error:  # one bad item must not stop the others
                logger.warning("could not show %s: %s", item.path, error)
                continue
            touched[live.key] = live
            if grew:
                regrown.add(live.series.name)
            count += 1
        for live in list(self.layers.values()):
            if live.series.name in regrown or live.key in touched:
                try:
                    self._refresh(live, reshaped=live.series.name in regrown)
                except Exception as error:  # one layer's trouble must not stop the others
                    logger.warning("could not update layer %s: %s", live.name, error)
        self.displayed += count
        return count

    def _place(self, placement: Placement, item: StreamItem) -> tuple[_LiveLayer, bool]:
        series = self.series.get(placement.series)
        if series is None:
            series = self.series[placement.series] = Series(placement.series)
        grew = series.add(placement.components)
        key = placement.layer_key
        live = self.layers.get(key)
        if live is not None and live.layer not in self.viewer.layers:
            # the user deleted the layer: make a new one
            del self.layers[key]
            live = None
        components = placement.components
        if key[0] in ("image", "labels"):
            plane = item.array
            if key[0] == "labels" and not plane.flags.writeable:
                plane = plane.copy()  # painting needs a writable array
            if live is not None and live.stack is not None and not live.stack.accepts(plane):
                logger.info("%s: plane %s %s replaces the layer's %s %s", item.path, plane.shape,
                            plane.dtype, live.stack.plane_shape, live.stack.dtype)
                self.viewer.layers.remove(live.layer)
                del self.layers[key]
                live = None
            if live is None:
                stack = PlaneStack(series, plane)
                stack.put(components, plane)
                live = self._new_scalar_layer(key, placement, series, stack, item)
                grew = False  # made with its final shape
            else:
                assert live.stack is not None
                live.stack.put(components, plane)
        else:
            overlay = overlay_of(item)
            if live is None:
                live = self._new_overlay_layer(key, placement, series, item)
            live.overlays[plane_id(components)] = overlay
        self.paths[item.path] = (key, plane_id(components))
        return live, grew

    # -- making layers -----------------------------------------------------------------------
    def _layer_name(self, key: tuple[str, str, Hashable | None], placement: Placement) -> str:
        kind, series, _channel = key
        base = series if placement.channel_label is None else f"{series} {placement.channel_label}"
        return base if kind == "image" else f"{base} {kind}"

    def _axis_labels(self, series: Series, plane_ndim: int) -> tuple[str, ...]:
        plane = ("y", "x") if plane_ndim >= 2 else ("x",)
        extra = tuple(f"plane{i}" for i in range(plane_ndim - len(plane)))
        return (*series.axes, *extra, *plane)

    def _new_scalar_layer(
        self, key: tuple[str, str, Hashable | None], placement: Placement, series: Series,
        stack: PlaneStack, item: StreamItem,
    ) -> _LiveLayer:
        name = self._layer_name(key, placement)
        labels = self._axis_labels(series, len(stack.plane_shape))
        metadata = {"polystore": {"series": series.name, "components": series.labels()}}
        if key[0] == "labels":
            layer = self.viewer.add_labels(stack, name=name, axis_labels=labels, metadata=metadata)
        else:
            channel = key[2]
            if isinstance(channel, int):
                colour = channel
            else:  # channels named by text: colours in order of arrival
                colour = sum(1 for k in self.layers if k[:2] == ("image", key[1]) and k[2] is not None)
            colormap = "gray" if channel is None else CHANNEL_COLORMAPS[colour % len(CHANNEL_COLORMAPS)]
            layer = self.viewer.add_image(
                stack, name=name, axis_labels=labels, metadata=metadata, rgb=bool(item.metadata.get("rgb")),
                colormap=colormap, blending="additive" if channel is not None else "translucent",
                contrast_limits=initial_contrast(item.array),
            )
        live = _LiveLayer(key, series, name, layer, stack=stack, ndim=stack.ndim)
        self.layers[key] = live
        return live

    def _new_overlay_layer(
        self, key: tuple[str, str, Hashable | None], placement: Placement, series: Series, item: StreamItem,
    ) -> _LiveLayer:
        name = self._layer_name(key, placement)
        ndim = len(series.axes) + 2
        layer = self._make_overlay(key[0], name, ndim, series)
        live = _LiveLayer(key, series, name, layer, ndim=ndim)
        self.layers[key] = live
        return live

    def _make_overlay(self, kind: str, name: str, ndim: int, series: Series) -> Layer:
        labels = self._axis_labels(series, 2)
        metadata = {"polystore": {"series": series.name, "components": series.labels()}}
        if kind == "points":
            return self.viewer.add_points(
                np.zeros((0, ndim)), ndim=ndim, name=name, axis_labels=labels, metadata=metadata,
                size=5, face_color="yellow",
            )
        return self.viewer.add_shapes(
            None, ndim=ndim, name=name, axis_labels=labels, metadata=metadata,
            edge_color="yellow", face_color="transparent", edge_width=1,
        )

    # -- updating ----------------------------------------------------------------------------
    def _refresh(self, live: _LiveLayer, *, reshaped: bool) -> None:
        layer = live.layer
        described = {"series": live.series.name, "components": live.series.labels()}
        layer.metadata = {**layer.metadata, "polystore": described}
        if live.stack is not None:
            if reshaped or live.stack.ndim != layer.ndim:
                layer.data = live.stack  # the same object, grown: napari re-reads its shape
                layer.axis_labels = self._axis_labels(live.series, len(live.stack.plane_shape))
            else:
                layer.refresh()
            return
        ndim = len(live.series.axes) + 2
        present = layer in self.viewer.layers  # the user may have deleted it: make it again
        if ndim != live.ndim or not present:  # an overlay's dimensionality is fixed when it is made
            index = list(self.viewer.layers).index(layer) if present else None
            if present:
                self.viewer.layers.remove(layer)
            layer = self._make_overlay(live.key[0], live.name, ndim, live.series)
            if index is not None:
                self.viewer.layers.move(list(self.viewer.layers).index(layer), index)
            live.layer, live.ndim = layer, ndim
        shapes: list[tuple[np.ndarray, str]] = []
        points: list[np.ndarray] = []
        for components, (plane_shapes, plane_points) in live.overlays.items():
            position = np.array(live.series.index(dict(components)), dtype=float)
            for shape in plane_shapes:
                lead = np.broadcast_to(position, (len(shape.vertices), len(position)))
                shapes.append((np.hstack([lead, shape.vertices]), shape.kind))
            if len(plane_points):
                points.append(np.hstack([np.broadcast_to(position, (len(plane_points), len(position))),
                                         plane_points]))
        if live.key[0] == "points":
            layer.data = np.concatenate(points) if points else np.zeros((0, ndim))
        else:
            layer.data = shapes

    # -- reading back (the control channel's ``load``) ---------------------------------------------
    def plane(self, path: str) -> np.ndarray | None:
        """The newest array shown for ``path``, or None."""
        found = self.paths.get(path)
        if found is None:
            return None
        key, components = found
        live = self.layers.get(key)
        if live is None or live.stack is None:
            return None
        return live.stack.get(components)

    def describe(self) -> list[dict[str, Any]]:
        """Name, kind, shape and axis labels of each live layer (the control channel's ``layers``)."""
        return [
            {
                "name": live.layer.name, "kind": live.key[0], "series": live.series.name,
                "shape": list(live.stack.shape) if live.stack is not None else None,
                "axis_labels": list(live.layer.axis_labels),
                "components": {a: [v if isinstance(v, (int, str)) else None for v in vs]
                               for a, vs in live.series.labels().items()},
            }
            for live in list(self.layers.values())  # a snapshot: the GUI thread may add layers
        ]


def initial_contrast(array: np.ndarray) -> tuple[float, float]:
    """Contrast limits for a new layer, from its first frame (then left to the user)."""
    if array.dtype == np.bool_:
        return (0.0, 1.0)
    finite = array[np.isfinite(array)] if array.dtype.kind == "f" else array
    if finite.size == 0:
        return (0.0, 1.0)
    low, high = float(finite.min()), float(finite.max())
    if high <= low:
        if array.dtype.kind in "iu":
            info = np.iinfo(array.dtype)
            high = low + 1 if low < info.max else low
            low = high - 1
        else:
            high = low + 1.0
    return (low, high)


# -- from any thread to the GUI thread -------------------------------------------------------------


class Coalescer:
    """Items from the receiver thread, newest per plane, waiting for the GUI thread.

    ``put`` runs on the receiver thread and never blocks on the GUI; ``take`` hands the GUI
    thread what arrived since its last call. A frame replaced before it was shown counts in
    ``replaced``.
    """

    def __init__(self, parser: ComponentParser | None = None) -> None:
        self.parser = parser or ComponentParser()
        self._pending: dict[tuple[Any, ...], tuple[Placement, StreamItem]] = {}
        self._lock = threading.Lock()
        self.replaced = 0
        self.failed = 0
        self.last_error: str | None = None

    def put(self, item: StreamItem) -> None:
        try:
            placement = self.parser.place(item)
        except Exception as error:
            self.failed += 1
            self.last_error = f"{item.path}: {error}"
            return
        with self._lock:
            key = placement.plane_key
            if key in self._pending:
                self.replaced += 1
                del self._pending[key]  # re-inserted last: items keep their arrival order
            self._pending[key] = (placement, item)

    def take(self) -> list[tuple[Placement, StreamItem]]:
        with self._lock:
            pending, self._pending = self._pending, {}
        return list(pending.values())

    def peek(self, path: str) -> np.ndarray | None:
        """The newest pending array for ``path`` (not shown yet), or None."""
        with self._lock:
            for _placement, item in reversed(self._pending.values()):
                if item.path == path and item.kind in ("image", "labels"):
                    return item.array
        return None

    def __len__(self) -> int:
        return len(self._pending)
