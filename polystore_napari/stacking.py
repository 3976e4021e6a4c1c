"""Stacking: the stacked axes a series of items shares, and the n-D array napari slices.

A :class:`Series` (one plate, or one folder of a stream) knows, for each stacked axis (well,
site, t, channel, z, and any other component), the values seen so far, sorted, and how each is
shown ("B03", "site 2"). A :class:`PlaneStack` is an array-like over the planes received so
far: napari indexes it like any array; planes never received read as zeros. Nothing here
touches Qt or napari.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from polystore.plates import PlateNameError, well_sort_key

STACK_ORDER = ("well", "site", "t", "channel", "z")
"""Stacked axes in the order the sliders show them (outermost first); other components follow site."""


def axis_rank(axis: str) -> float:
    order = {a: i for i, a in enumerate(STACK_ORDER)}
    return order.get(axis, order["site"] + 0.5)


def sort_key(axis: str) -> Callable[[Hashable], tuple[Any, ...]]:
    """How the values of ``axis`` are ordered on its slider: wells in plate order (A..Z, then
    AA..AF), anything else naturally."""
    return _well_key if axis == "well" else natural_key


def _well_key(value: Hashable) -> tuple[Any, ...]:
    if value is None:
        return (0,)
    try:
        return (1, *well_sort_key(str(value)))
    except PlateNameError:  # a well axis of something else: after the wells
        return (2, natural_key(value))


def natural_key(value: Hashable) -> tuple[Any, ...]:
    """Sort key: absent (None) first, then numbers, then text with its digits compared as numbers."""
    if value is None:
        return (0,)
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        return (1, float(value))
    parts = re.split(r"(\d+)", str(value))
    return (2, tuple(int(p) if p.isdigit() else p for p in parts))


class Series:
    """The stacked axes of one series, the values seen on each (sorted) and how each is shown."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.axes: list[str] = []
        self.values: dict[str, list[Hashable]] = {}
        self.texts: dict[str, dict[Hashable, str]] = {}
        """Axis -> value -> how a person reads it ("B03"; ImageXpress site 1 as "2")."""

    def add(self, components: Sequence[tuple[str, Hashable]], texts: Mapping[str, str] | None = None) -> bool:
        """Make room for ``components`` (shown as ``texts``); whether an axis or a value is new."""
        changed = False
        given = dict(components)
        for axis, text in (texts or {}).items():
            if axis in given:
                self.texts.setdefault(axis, {})[given[axis]] = text
        for axis, value in given.items():
            if axis not in self.values:
                rank = axis_rank(axis)
                position = sum(1 for a in self.axes if axis_rank(a) <= rank)
                self.axes.insert(position, axis)
                # items before this axis existed sit at "absent" on it
                self.values[axis] = [None] if self._has_items else []
                changed = True
            values = self.values[axis]
            if value not in values:
                values.append(value)
                values.sort(key=sort_key(axis))
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

    def shown(self, axis: str, position: int) -> str:
        """How the value at slider ``position`` of ``axis`` reads ("" for "absent")."""
        values = self.values.get(axis, [])
        if not 0 <= position < len(values) or values[position] is None:
            return ""
        value = values[position]
        return self.texts.get(axis, {}).get(value, str(value))

    def copy(self) -> Series:
        twin = Series(self.name)
        twin.axes = list(self.axes)
        twin.values = {axis: list(values) for axis, values in self.values.items()}
        twin.texts = {axis: dict(texts) for axis, texts in self.texts.items()}
        twin._has_items = self._has_items
        return twin


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
        series = self.series.copy()
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
    return itertools.product(*ranges)
