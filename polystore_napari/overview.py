"""An OME-Zarr plate as a tiled overview: low resolution first, full resolution on zoom.

As napari-ome-zarr shows a plate, the wells are tiles of one mosaic, placed by the plate's
rows and columns; here every field of a well is in its tile (a small grid of fields), and the
mosaic is a multiscale layer (one per channel) built lazily from the fields' own resolution
levels. napari draws the level that suits the zoom and reads only the chunks in view: opening
a plate reads its coarsest level, not every field at full size. A plate written without a
pyramid gets coarser levels by striding the full one (the same data, less to draw; reading
still touches whole chunks: write plates with ``pyramid_levels`` for fast overviews).

A plate being converted (``polystore convert``) lists every field from the start, each marked
incomplete until written: the overview shows it filling (unwritten pixels as 0), and a field
counts as arrived (the plate map) only once its mark is gone.
"""

from __future__ import annotations

import math
import os
from typing import Any

from polystore.backends.zarr.marks import is_incomplete
from polystore.lazy import optional_import
from polystore.ome import ngff
from polystore.plates import PlateNameError, well_name
from polystore_napari.display import channel_options, image_scale

LayerData = tuple[Any, dict[str, Any], str]

OVERVIEW_SIZE = 2048
"""Coarser levels are added until the whole mosaic fits in this many pixels a side."""


def _plate_section(attributes: dict[str, Any]) -> dict[str, Any]:
    plate = ngff.ngff_section(attributes).get("plate")
    return plate if isinstance(plate, dict) else {}


def _wells(plate: dict[str, Any]) -> list[tuple[str, str, int, int]]:
    """(path, name, row index, column index) of each well the plate lists."""
    rows = [str(r.get("name")) for r in plate.get("rows", [])]
    columns = [str(c.get("name")) for c in plate.get("columns", [])]
    wells = []
    for entry in plate.get("wells", []):
        path = str(entry.get("path", ""))
        row, _, column = path.partition("/")
        row_index = entry.get("rowIndex", rows.index(row) if row in rows else None)
        column_index = entry.get("columnIndex", columns.index(column) if column in columns else None)
        if row_index is None or column_index is None:
            continue
        try:
            name = well_name(row, column)
        except PlateNameError:  # a row or column no plate format has: shown as written
            name = row + column
        wells.append((path, name, int(row_index), int(column_index)))
    return wells


def _fields(backend: Any, well_path: str) -> list[str]:
    try:
        well = ngff.ngff_section(backend.attributes(well_path)).get("well") or {}
    except (FileNotFoundError, KeyError):
        return []
    return [str(image["path"]) for image in well.get("images", []) if "path" in image]


def _arrived(backend: Any, well_path: str, fields: list[str]) -> list[int]:
    """The fields of a well that are written whole: listed, and not marked incomplete."""
    def written(field: str) -> bool:
        try:
            return not is_incomplete(backend.attributes(f"{well_path}/{field}"))
        except (FileNotFoundError, KeyError):
            return False

    return sorted(int(f) if f.isdigit() else i for i, f in enumerate(fields) if written(f))


def store_arrivals(path: str, backend: Any = None) -> dict[str, list[int]]:
    """Well -> the fields of a plate in a store written so far (reading metadata documents only)."""
    if backend is None:
        from polystore.backends.zarr import ZarrBackend

        backend = ZarrBackend()
    plate = _plate_section(backend.attributes(path))
    arrived: dict[str, list[int]] = {}
    for well_path, name, _, _ in _wells(plate):
        fields = _fields(backend, f"{path}/{well_path}")
        arrived[name] = _arrived(backend, f"{path}/{well_path}", fields)
    return arrived


def read_well_overview(backend: Any, path: str) -> list[LayerData]:
    """The well at ``path`` (``plate.zarr/B/03``) as its fields in a grid, one lazy multiscale
    layer per channel: the plate's overview of that well alone (napari-ome-zarr shows a well
    so). A well group outside a plate's row/column layout gives no layers here."""
    parent, _, column = path.rstrip("/").rpartition("/")
    plate_path, _, row = parent.rpartition("/")
    if not plate_path or not row or not column:
        return []
    plate = {"rows": [{"name": row}], "columns": [{"name": column}],
             "wells": [{"path": f"{row}/{column}", "rowIndex": 0, "columnIndex": 0}]}
    return read_plate_overview(backend, plate_path, {"plate": plate}, name=f"{row}{column}")


def read_plate_overview(backend: Any, path: str, attributes: dict[str, Any], *,
                        name: str | None = None) -> list[LayerData]:
    """The plate at ``path`` as one lazy multiscale mosaic layer per channel (see the module);
    ``name``: the layers' (the store's by default)."""
    da: Any = optional_import("dask.array", extra="zarr", purpose="Opening a plate in napari")
    plate = _plate_section(attributes)
    wells = _wells(plate)
    fields = {name: _fields(backend, f"{path}/{well_path}") for well_path, name, _, _ in wells}
    present = [(w, fields[w[1]]) for w in wells if fields[w[1]]]
    if not present:
        return []
    (first_path, _, _, _), first_fields = present[0]
    field_attributes = backend.attributes(f"{path}/{first_path}/{first_fields[0]}")
    axes = ngff.multiscale_axes(field_attributes)
    stored = min(len(ngff.multiscale_paths(backend.attributes(f"{path}/{w[0]}/{f}")) or [0])
                 for w, names in present for f in names)
    levels: dict[tuple[str, str], list[Any]] = {
        (w[1], f): [backend.load(f"{path}/{w[0]}/{f}", level=level, lazy=True, incomplete=True)
                    for level in range(stored)]
        for w, names in present for f in names
    }
    arrays = [stack[0] for stack in levels.values()]
    axes = axes or "tczyx"[-arrays[0].ndim :]
    lead = tuple(max(a.shape[i] for a in arrays) for i in range(arrays[0].ndim - 2))
    dtype = arrays[0].dtype
    count = max(len(names) for _, names in present)
    grid_columns = math.ceil(math.sqrt(count))
    grid_rows = math.ceil(count / grid_columns)
    plate_rows = max(w[2] for w in wells) + 1
    plate_columns = max(w[3] for w in wells) + 1

    def tile_shape(level: int) -> tuple[int, int]:
        return (max(stack[level].shape[-2] for stack in levels.values()),
                max(stack[level].shape[-1] for stack in levels.values()))

    def padded(array: Any, shape: tuple[int, ...]) -> Any:
        # fields fill as channels arrive, and sizes differ by a pixel between levels
        if tuple(array.shape) == shape:
            return array
        return da.pad(array, [(0, t - s) for t, s in zip(shape, array.shape, strict=True)])

    def mosaic(level: int, stride: int) -> Any:
        height, width = tile_shape(level)
        height, width = -(-height // stride), -(-width // stride)
        shape = (*lead, height, width)
        empty = da.zeros(shape, dtype=dtype, chunks=shape)
        well_tiles: dict[tuple[int, int], Any] = {}
        for (_, name, row, column), names in present:
            tiles = [padded(levels[name, f][level][..., ::stride, ::stride], shape) for f in names]
            tiles += [empty] * (grid_rows * grid_columns - len(tiles))
            well_tiles[row, column] = da.block([tiles[r * grid_columns : (r + 1) * grid_columns]
                                                for r in range(grid_rows)])
        empty_well = da.zeros((*lead, grid_rows * height, grid_columns * width), dtype=dtype,
                              chunks=shape)
        return da.block([[well_tiles.get((r, c), empty_well) for c in range(plate_columns)]
                         for r in range(plate_rows)])

    pyramid = [mosaic(level, 1) for level in range(stored)]
    stride = 2
    while max(pyramid[-1].shape[-2:]) > OVERVIEW_SIZE:  # coarser than stored: strided
        pyramid.append(mosaic(stored - 1, stride))
        stride *= 2
    tile_h, tile_w = tile_shape(0)
    prefix = f"{name} " if name else ""  # a well's channels: not taken for its plate's
    name = name or os.path.basename(path.rstrip("/"))
    leading = [a for a in axes[:-2] if a != "c"]
    described = {
        "series": name,
        "components": {axis: list(range(lead[axes.index(axis)])) for axis in leading},
        "arrived": {w[1]: _arrived(backend, f"{path}/{w[0]}", names) for w, names in present},
        "overview": {"grid": {w[1]: [w[2], w[3]] for w, _ in present},
                     "tile": [grid_rows * tile_h, grid_columns * tile_w],
                     "store": path},
    }
    options: dict[str, Any] = {"multiscale": len(pyramid) > 1, "metadata": {"polystore": described},
                               "axis_labels": (*leading, "y", "x")}
    scale = image_scale(field_attributes)
    if scale is not None:
        options["scale"] = [s for a, s in zip(axes, scale, strict=False) if a != "c"]
    if "c" in axes:
        options["channel_axis"] = axes.index("c")
        options.update(channel_options(field_attributes, lead[axes.index("c")], prefix))
    else:
        options["name"] = name
    return [(pyramid if len(pyramid) > 1 else pyramid[0], options, "image")]
