"""Stream items assembled into live n-D napari layers (on the GUI thread).

Items are placed by :mod:`polystore_napari.placement` (the plate model's components: plate,
well, site, channel, z, t, extras) and stacked by :mod:`polystore_napari.stacking`: items of
one series (a plate, else the folder of the path) share stacked axes, so a plate streamed
image by image becomes one layer per channel (coloured green, magenta, ...) with sliders for
well, site, t and z, labelled with what they point at ("well B03", "site 2"). An item with no
plate meaning is a layer of its own (a live camera: every frame replaces the last).

Each live layer's ``metadata["polystore"]`` says what its stacked axes hold: ``series``,
``components`` (axis -> value at each slider position), ``texts`` (how each reads) and
``arrived`` (well -> the sites received), which the plate map draws.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from polystore.rois import Shape, shapes_of_item, split_points
from polystore.streaming.protocol import StreamItem
from polystore_napari.display import CHANNEL_COLORMAPS
from polystore_napari.handoff import Coalescer
from polystore_napari.placement import ChannelMode, ComponentParser, Placement
from polystore_napari.stacking import PlaneStack, Series, plane_id

if TYPE_CHECKING:
    from napari.layers import Layer
    from napari.viewer import ViewerModel

logger = logging.getLogger(__name__)

__all__ = [
    "CHANNEL_COLORMAPS", "ChannelMode", "Coalescer", "ComponentParser", "LiveLayers", "PlaneStack",
    "Series", "initial_contrast", "layer_axes", "slider_labels",
]

METADATA_KEY = "polystore"

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
        self.arrived: dict[str, dict[str, set[int]]] = {}
        """Series -> well -> the sites (0-based fields) of which an image arrived."""
        self.displayed = 0
        self.failed = 0
        """Items that could not be shown (napari refused the layer or its update)."""
        self.last_error: str | None = None
        self._made = False
        self._labelling = False
        # napari sets its axis labels back from the layers' when layers change: label again
        self._followed = (viewer.dims.events.current_step, viewer.dims.events.axis_labels,
                          viewer.layers.selection.events.active)
        for emitter in self._followed:
            emitter.connect(self._label_sliders)

    def close(self) -> None:
        """Stop following the viewer's sliders (the layers stay)."""
        for emitter in self._followed:
            emitter.disconnect(self._label_sliders)

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
                self.failed += 1
                self.last_error = f"{item.path}: {error}"
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
                    self.failed += 1
                    self.last_error = f"layer {live.name}: {error}"
        self.displayed += count
        if regrown or self._made:  # the slider labels change only when a series grows or a layer comes
            self._made = False
            self._label_sliders()
        return count

    def _place(self, placement: Placement, item: StreamItem) -> tuple[_LiveLayer, bool]:
        series = self.series.get(placement.series)
        if series is None:
            series = self.series[placement.series] = Series(placement.series)
        grew = series.add(placement.components, dict(placement.texts))
        if placement.plate is not None and placement.kind in ("image", "labels"):
            sites = self.arrived.setdefault(series.name, {}).setdefault(placement.plate.well, set())
            sites.add(placement.plate.field)
        key = placement.layer_key
        live = self.layers.get(key)
        if live is not None and live.layer not in self.viewer.layers:
            # the user deleted the layer: make a new one
            del self.layers[key]
            live = None
        components = placement.components
        if key[0] in ("image", "labels"):
            plane = item.array
            if key[0] == "labels" and plane.dtype == np.bool_:
                plane = plane.view(np.uint8)  # as napari's add_labels views a bool array (a stack cannot)
            if key[0] == "labels" and not plane.flags.writeable:
                plane = plane.copy()  # painting needs a writable array
            replaced = None
            if live is not None and live.stack is not None and not live.stack.accepts(plane):
                logger.info("%s: plane %s %s replaces the layer's %s %s", item.path, plane.shape,
                            plane.dtype, live.stack.plane_shape, live.stack.dtype)
                replaced, live = live, None
            if live is None:
                stack = PlaneStack(series, plane)
                stack.put(components, plane)
                # made before the old layer goes: if napari refuses the new one, the old stays
                live = self._new_scalar_layer(key, placement, series, stack, item)
                if replaced is not None:
                    self._take_place_of(replaced.layer, live)
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
        base = " ".join(part for part in (series, placement.channel_label) if part) or "plate"
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
        rgb = key[0] == "image" and bool(item.metadata.get("rgb"))
        labels = self._axis_labels(series, len(stack.plane_shape) - rgb)  # colours are no axis
        metadata = {METADATA_KEY: self._described(series)}
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
                stack, name=name, axis_labels=labels, metadata=metadata, rgb=rgb,
                colormap=colormap, blending="additive" if channel is not None else "translucent",
                contrast_limits=initial_contrast(item.array),
            )
        live = _LiveLayer(key, series, name, layer, stack=stack, ndim=stack.ndim)
        self.layers[key] = live
        self._made = True
        return live

    def _take_place_of(self, old: Layer, live: _LiveLayer) -> None:
        """``live``'s new layer where ``old`` was in the layer list, under its name (napari
        suffixed the new one's while both were there)."""
        layers = self.viewer.layers
        if old in layers:
            index = list(layers).index(old)
            layers.remove(old)
            layers.move(list(layers).index(live.layer), index)
        live.layer.name = live.name

    def _new_overlay_layer(
        self, key: tuple[str, str, Hashable | None], placement: Placement, series: Series, item: StreamItem,
    ) -> _LiveLayer:
        name = self._layer_name(key, placement)
        ndim = len(series.axes) + 2
        layer = self._make_overlay(key[0], name, ndim, series)
        live = _LiveLayer(key, series, name, layer, ndim=ndim)
        self.layers[key] = live
        self._made = True
        return live

    def _make_overlay(self, kind: str, name: str, ndim: int, series: Series) -> Layer:
        labels = self._axis_labels(series, 2)
        metadata = {METADATA_KEY: self._described(series)}
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
        described = self._described(live.series)
        if layer.metadata.get(METADATA_KEY) != described:
            # only when it changed: each assignment is an event the layer list repaints for
            layer.metadata = {**layer.metadata, METADATA_KEY: described}
        if live.stack is not None:
            if reshaped or live.stack.ndim != layer.ndim:
                layer.data = live.stack  # the same object, grown: napari re-reads its shape
                rgb = bool(getattr(layer, "rgb", False))
                layer.axis_labels = self._axis_labels(live.series, len(live.stack.plane_shape) - rgb)
            else:
                # new pixels, same shape: the extent cannot have changed and image and labels
                # layers draw no highlight, so napari's recomputing both (and its events) is skipped
                layer.refresh(extent=False, highlight=False)
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

    def _described(self, series: Series) -> dict[str, Any]:
        arrived = self.arrived.get(series.name, {})
        return {
            "series": series.name,
            "components": series.labels(),
            "texts": {axis: [series.shown(axis, i) for i in range(n)]
                      for axis, n in zip(series.axes, series.shape, strict=True)},
            "arrived": {well: sorted(sites) for well, sites in arrived.items()},
        }

    # -- slider labels ------------------------------------------------------------------------
    def _label_sliders(self, event: Any = None) -> None:
        """Label each stacked slider with what it points at ("well B03", "site 2"), for the
        active layer's series (else the layers'); napari's own labels elsewhere."""
        if self._labelling:
            return
        labels = slider_labels(self.viewer)
        if labels is not None and tuple(self.viewer.dims.axis_labels) != labels:
            self._labelling = True
            try:
                self.viewer.dims.axis_labels = labels
            finally:
                self._labelling = False

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


def layer_axes(layer: Layer) -> dict[str, Any] | None:
    """What a polystore layer's stacked axes hold (its ``metadata["polystore"]``), or None."""
    described = layer.metadata.get(METADATA_KEY) if isinstance(layer.metadata, dict) else None
    if isinstance(described, dict) and isinstance(described.get("components"), dict):
        return described
    return None


def slider_labels(viewer: ViewerModel) -> tuple[str, ...] | None:
    """The viewer's axis labels with each stacked axis of a polystore layer saying what its
    slider points at ("well B03", "site 2"): the active layer's, else the first such layer's.
    None when no layer is polystore's."""
    active = viewer.layers.selection.active
    candidates = [active, *viewer.layers] if active is not None else list(viewer.layers)
    layer = next((c for c in candidates if layer_axes(c) is not None), None)
    if layer is None:
        return None
    described = layer_axes(layer)
    assert described is not None
    axes = list(described["components"])
    texts = described.get("texts") or {}
    labels = list(viewer.dims.axis_labels)
    step = viewer.dims.current_step
    offset = len(labels) - layer.ndim
    for index, axis in enumerate(axes):
        at = offset + index
        if not 0 <= at < len(labels):
            continue
        shown = texts.get(axis, [])
        position = step[at]
        text = shown[position] if 0 <= position < len(shown) else ""
        labels[at] = f"{axis} {text}" if text else axis
    return tuple(labels)
