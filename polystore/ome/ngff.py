"""OME-NGFF metadata (0.4 on Zarr v2; 0.5 and 0.6 on Zarr v3), validated by ome-zarr-models.

0.6 writes RFC-5's coordinate systems: an image's axes are those of its one coordinate system
("physical"), and each level's scale maps that array ("input") to it ("output"); plates and
wells carry their version once, in the "ome" section, not in their own dictionaries.

The dictionaries are built here from plain arguments and then passed through the
ome-zarr-models pydantic models, so what is written is checked against the specification
by the library the community maintains, not by our reading of it.
"""

from __future__ import annotations

import functools
import json
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from polystore.exceptions import InvalidOptionError
from polystore.lazy import optional_import

NgffVersion = Literal["0.4", "0.5", "0.6"]
COORDINATE_SYSTEM = "physical"
"""The name of the one coordinate system an NGFF 0.6 image is written with."""
MODULES = {"0.4": "ome_zarr_models.v04", "0.5": "ome_zarr_models.v05", "0.6": "ome_zarr_models.v06"}

AXIS_TYPES = {"t": "time", "c": "channel", "z": "space", "y": "space", "x": "space"}
DEFAULT_AXES = {2: "yx", 3: "zyx", 4: "czyx", 5: "tczyx"}
DEFAULT_UNITS = {"t": "second", "z": "micrometer", "y": "micrometer", "x": "micrometer"}
CHANNEL_COLORS = ("00FF00", "FF00FF", "00FFFF", "FF0000", "0000FF", "FFFF00", "FFFFFF")
"""Default LUTs: green, magenta, cyan, red, blue, yellow, grey (colour-blind-friendly first)."""

RGB_CHANNELS = (("R", "FF0000"), ("G", "00FF00"), ("B", "0000FF"), ("A", "FFFFFF"))
"""An RGB(A) picture's colours as OME channels (label, colour): what marks an image as one,
read back as a colour picture (``is_rgb``), and shown as three coloured channels elsewhere."""


def _models(version: NgffVersion) -> Any:
    return optional_import(MODULES[version], extra="zarr", purpose="Writing OME-Zarr metadata")


def _validate(version: NgffVersion, model: str, attrs: dict[str, Any]) -> None:
    """Check ``attrs`` with ome-zarr-models' ``model`` ("image.ImageAttrs"); raise if invalid.

    Each distinct content is validated once: a plate repeats the same few dictionaries for
    every field and well, and a validation costs milliseconds (ome-zarr-models builds pydantic
    classes per call). Invalid content is never cached, so it raises every time.
    """
    try:
        text = json.dumps(attrs, sort_keys=True)
    except TypeError:  # not JSON as given (e.g. NumPy integers): validate it uncached
        text = json.dumps(attrs, sort_keys=True, default=lambda value: getattr(value, "item", str)())
    _validate_json(version, model, text)


@functools.lru_cache(maxsize=512)
def _validate_json(version: NgffVersion, model: str, text: str) -> None:
    if version != "0.6":
        _model(version, model).model_validate(json.loads(text))
        return
    # ome-zarr-models 1.8 models 0.6 as its last draft ("0.6.dev4") and warns that it reads
    # the released "0.6" as that draft: expected here, not the user's concern
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Version number is '0.6'", category=Warning)
        _model(version, model).model_validate(json.loads(text))


def _model(version: NgffVersion, model: str) -> Any:
    module, name = model.split(".")
    return getattr(getattr(_models(version), module), name)


def infer_axes(ndim: int, axes: str | None = None) -> str | None:
    """Axis letters for an ``ndim``-D image: the given ones (checked) or the NGFF default.

    Returns ``None`` where OME-NGFF cannot describe the array (1-D, or over 5-D).
    """
    if axes is None:
        return DEFAULT_AXES.get(ndim)
    axes = axes.lower()
    if len(axes) != ndim or len(set(axes)) != ndim or set(axes) - set(AXIS_TYPES):
        raise InvalidOptionError(
            f"axes='{axes}' does not describe a {ndim}-D image: give one distinct letter per "
            "dimension from 't', 'c', 'z', 'y', 'x' (in OME-NGFF's order t, c, z, y, x)."
        )
    order = "tczyx"
    if [order.index(a) for a in axes] != sorted(order.index(a) for a in axes):
        raise InvalidOptionError(
            f"axes='{axes}' must follow OME-NGFF's order t, c, z, y, x; reorder the data and its "
            "axes (e.g. 'czyx')."
        )
    return axes


@dataclass(frozen=True)
class ChannelInfo:
    label: str
    color: str
    window: tuple[float, float]
    """Display range (start, end) and data range, from the data's dtype or values."""


def default_window(dtype: np.dtype[Any]) -> tuple[float, float]:
    if dtype.kind in "ui":
        info = np.iinfo(dtype)
        return float(info.min), float(info.max)
    return 0.0, 1.0


def data_windows(
    array: np.ndarray, channel_axis: int, *, max_samples: int = 1 << 14
) -> list[tuple[float, float]]:
    """Display range per channel: the 0.1st-99.9th percentile of a strided sample.

    A dtype's full range (0-65535 for uint16) shows typical microscopy nearly black;
    percentiles of a sample cost well under a millisecond per channel and ignore hot pixels.
    """
    channels = np.moveaxis(array, channel_axis, 0)  # a view: no copy
    per_channel = channels[0].size if len(channels) else 0
    if per_channel == 0 or array.dtype.kind not in "uif":  # no percentile of bool or complex
        return [default_window(array.dtype) for _ in range(len(channels))]
    step = max(1, int((per_channel / max_samples) ** (1 / max(channels.ndim - 1, 1))))
    sample = channels[(slice(None),) + (slice(None, None, step),) * (channels.ndim - 1)]
    # one call for every channel: NumPy's percentile costs more to set up than to compute here
    lows, highs = np.percentile(sample.reshape(len(channels), -1), (0.1, 99.9), axis=1)
    return [(float(low), float(high) if high > low else float(low) + 1.0)
            for low, high in zip(lows, highs, strict=True)]


def channel_infos(
    count: int,
    dtype: np.dtype[Any],
    names: Sequence[str] | None = None,
    colors: Sequence[str] | None = None,
    windows: Sequence[tuple[float, float]] | None = None,
) -> list[ChannelInfo]:
    return [
        ChannelInfo(
            label=names[i] if names and i < len(names) else f"channel {i}",
            color=(colors[i] if colors and i < len(colors) else CHANNEL_COLORS[i % len(CHANNEL_COLORS)])
            .lstrip("#")
            .upper(),
            window=windows[i] if windows and i < len(windows) else default_window(dtype),
        )
        for i in range(count)
    ]


def level_translations(
    axes: str, level_scales: Sequence[Sequence[float]], translation: Sequence[float], *, labels: bool = False,
) -> list[list[float]]:
    """Each level's translation for an image whose full resolution is placed at ``translation``
    (one offset per axis, checked): a coordinate is the centre of a pixel, and a coarser level's
    first pixel is the mean of a block of finer ones, so its centre moves by half the pixel
    sizes it gained, (scale - scale0) / 2. Both ngff-zarr (``_next_scale_metadata``) and
    ome-zarr-py (``generate_coordinate_transformations``) shift their block-mean levels so;
    followed so that their readers, and ours, overlay the levels where the pixels are. A label
    image's levels pick the block's first pixel (``downsample``): their centres do not move."""
    try:
        given: tuple[Any, ...] = tuple(translation)
    except TypeError:  # one number: reported as given
        given = (translation,)
    try:
        offsets = [float(t) for t in given]
    except (TypeError, ValueError):
        offsets = [math.nan]
    if not all(math.isfinite(t) for t in offsets):
        wrong = "is not all finite numbers"
    elif len(offsets) != len(axes):
        wrong = f"has {len(offsets)} values"
    else:
        wrong = ""
    if wrong:
        raise InvalidOptionError(
            f"translation={given} {wrong} for an image of axes '{axes}': give one finite offset per "
            f"axis ({len(axes)}, in the units of scale), or leave translation out."
        )
    base = level_scales[0]
    return [[t + (0.0 if labels else (s - s0) / 2) for t, s, s0 in zip(offsets, scale, base, strict=True)]
            for scale in level_scales]


def _dataset_transforms(
    version: NgffVersion, path: str, scale: Sequence[float], translation: Sequence[float] | None,
) -> list[dict[str, Any]]:
    """A level's coordinate transformations: its scale, then its translation where it has one
    (0.6: RFC-5's one transformation from the array to the coordinate system, a "sequence"
    where there are two, as ome-zarr-models' ``Dataset.build`` writes it)."""
    steps: list[dict[str, Any]] = [{"type": "scale", "scale": list(scale)}]
    if translation is not None:
        steps.append({"type": "translation", "translation": list(translation)})
    if version != "0.6":
        return steps
    ends = {"input": {"path": path}, "output": {"name": COORDINATE_SYSTEM}}
    if len(steps) == 1:
        return [{**steps[0], **ends}]
    return [{"type": "sequence", **ends, "transformations": steps}]


def image_attributes(
    axes: str,
    level_scales: Sequence[Sequence[float]],
    *,
    version: NgffVersion,
    units: dict[str, str] | None = None,
    name: str | None = None,
    channels: Sequence[ChannelInfo] | None = None,
    dtype: np.dtype[Any] | None = None,
    label: bool = False,
    level_translations: Sequence[Sequence[float]] | None = None,
) -> dict[str, Any]:
    """The group attributes of a multiscale image with one dataset ("0", "1", ...) per level;
    ``label``: a label image (``image-label``: viewers open it as labels, not intensities);
    ``level_translations``: each level's translation, after its scale (see ``level_translations``)."""
    unit_of = {**DEFAULT_UNITS, **(units or {})}
    axis_list = [
        {"name": a, "type": AXIS_TYPES[a], **({"unit": unit_of[a]} if a in unit_of else {})}
        for a in axes
    ]
    datasets = [
        {"path": str(level), "coordinateTransformations": _dataset_transforms(
            version, str(level), scale, level_translations[level] if level_translations else None)}
        for level, scale in enumerate(level_scales)
    ]
    if version == "0.6":  # RFC-5: the axes belong to a coordinate system the levels map into
        multiscale: dict[str, Any] = {
            "coordinateSystems": [{"name": COORDINATE_SYSTEM, "axes": axis_list}], "datasets": datasets,
        }
    else:
        multiscale = {"axes": axis_list, "datasets": datasets}
    if name:
        multiscale["name"] = name
    omero = None
    if channels:
        low, high = default_window(dtype) if dtype is not None else (0.0, 1.0)
        omero = {
            "channels": [
                {
                    "label": c.label,
                    "color": c.color,
                    "active": True,
                    "window": {"start": c.window[0], "end": c.window[1], "min": low, "max": high},
                }
                for c in channels
            ],
            "rdefs": {"model": "color" if len(channels) > 1 else "greyscale"},
        }
    model = "image_label.ImageLabelAttrs" if label else "image.ImageAttrs"
    if version in ("0.5", "0.6"):
        attrs: dict[str, Any] = {"version": version, "multiscales": [multiscale]}
        if label:
            attrs["image-label"] = {}  # the version is the "ome" section's
        _validate(version, model, attrs)  # raises if we got the spec wrong
        if omero:
            attrs["omero"] = omero
        return {"ome": attrs}
    multiscale["version"] = "0.4"
    attrs = {"multiscales": [multiscale]}
    if label:
        attrs["image-label"] = {"version": "0.4"}
    if omero:
        attrs["omero"] = omero
    _validate(version, model, attrs)
    return attrs


def ngff_section(attributes: dict[str, Any]) -> dict[str, Any]:
    """The OME part of a group's attributes, for either version (0.5 nests it under "ome")."""
    ome = attributes.get("ome")
    return ome if isinstance(ome, dict) else attributes


def is_multiscale_image(attributes: dict[str, Any]) -> bool:
    return bool(ngff_section(attributes).get("multiscales"))


def multiscale_paths(attributes: dict[str, Any]) -> list[str]:
    """Dataset paths of a multiscale image, full resolution first."""
    multiscales = ngff_section(attributes).get("multiscales") or [{}]
    return [d["path"] for d in multiscales[0].get("datasets", [])]


def _axis_entries(attributes: dict[str, Any]) -> list[Any]:
    """A multiscale image's axes as its metadata lists them (0.6: its first coordinate system's)."""
    multiscale = (ngff_section(attributes).get("multiscales") or [{}])[0]
    axes = multiscale.get("axes")
    if axes is None:
        axes = ((multiscale.get("coordinateSystems") or [{}])[0]).get("axes", [])
    return list(axes)


def multiscale_axes(attributes: dict[str, Any]) -> str:
    """The axis letters of a multiscale image (0.6: those of its first coordinate system)."""
    return "".join(a["name"] if isinstance(a, dict) else str(a) for a in _axis_entries(attributes))


def _transforms(node: Any) -> list[dict[str, Any]]:
    """A node's coordinate transformations in order (a 0.6 "sequence" spelled out)."""
    found = node.get("coordinateTransformations") if isinstance(node, dict) else None
    flat: list[dict[str, Any]] = []
    for transform in found if isinstance(found, list) else []:
        if isinstance(transform, dict) and transform.get("type") == "sequence":
            flat += _transforms({"coordinateTransformations": transform.get("transformations")})
        elif isinstance(transform, dict):
            flat.append(transform)
    return flat


def image_transform(attributes: dict[str, Any]) -> tuple[list[float] | None, list[float] | None]:
    """(scale, translate) of a multiscale image's full resolution, one value per axis (None
    where it has none): its first dataset's transformations, then the multiscale's own."""
    multiscale = (ngff_section(attributes).get("multiscales") or [{}])[0]
    datasets = multiscale.get("datasets") or [{}]
    scale: list[float] | None = None
    translate: list[float] | None = None
    for transform in _transforms(datasets[0]) + _transforms(multiscale):
        kind = transform.get("type")
        if kind == "scale" and isinstance(transform.get("scale"), list):
            factors = [float(s) for s in transform["scale"]]
            scale = [a * b for a, b in zip(scale, factors, strict=True)] if scale else factors
            if translate is not None:
                translate = [t * f for t, f in zip(translate, factors, strict=True)]
        elif kind == "translation" and isinstance(transform.get("translation"), list):
            offsets = [float(t) for t in transform["translation"]]
            translate = [a + b for a, b in zip(translate, offsets, strict=True)] if translate else offsets
    return scale, translate


def multiscale_units(attributes: dict[str, Any]) -> dict[str, str]:
    """The units a multiscale image gives its axes (0.6: those of its first coordinate system)."""
    return {a["name"]: a["unit"] for a in _axis_entries(attributes)
            if isinstance(a, dict) and isinstance(a.get("unit"), str)}


def is_rgb(attributes: dict[str, Any], shape: Sequence[int], dtype: np.dtype[Any]) -> bool:
    """Whether a multiscale image is an RGB(A) picture written as channels: a uint8/uint16
    intensity image whose c axis holds 3 or 4 channels labelled and coloured exactly as
    ``RGB_CHANNELS``. Read from the standard metadata, so a picture another tool wrote so is
    one too."""
    section = ngff_section(attributes)
    axes = multiscale_axes(attributes)
    if "c" not in axes or len(axes) != len(shape) or "image-label" in section:
        return False
    count = shape[axes.index("c")]
    omero = section.get("omero") or attributes.get("omero")
    channels = omero.get("channels") if isinstance(omero, dict) else None
    if np.dtype(dtype) not in (np.uint8, np.uint16) or count not in (3, 4) or not isinstance(channels, list):
        return False
    found = [(c.get("label"), str(c.get("color", "")).upper()) if isinstance(c, dict) else None
             for c in channels]
    return found == list(RGB_CHANNELS[:count])


def plate_attributes(
    rows: Sequence[str],
    columns: Sequence[str],
    wells: Sequence[tuple[str, str]],
    *,
    version: NgffVersion,
    field_count: int | None = None,
    name: str | None = None,
) -> dict[str, Any]:
    """Plate attributes listing ``wells`` (row, column) with indices into ``rows``/``columns``."""
    plate: dict[str, Any] = {
        "rows": [{"name": r} for r in rows],
        "columns": [{"name": c} for c in columns],
        "wells": [
            {"path": f"{r}/{c}", "rowIndex": rows.index(r), "columnIndex": columns.index(c)}
            for r, c in wells
        ],
    }
    if version != "0.6":  # 0.6 states the version once, in the "ome" section
        plate["version"] = version
    if field_count:
        plate["field_count"] = field_count
    if name:
        plate["name"] = name
    if version == "0.6":
        attrs: dict[str, Any] = {"version": "0.6", "plate": plate}
        # ome-zarr-models 1.8's 0.6 model still asks for the plate's own version, which 0.6
        # dropped: checked with it supplied from the "ome" section, written without
        _validate(version, "hcs.HCSAttrs", {**attrs, "plate": {**plate, "version": version}})
        return {"ome": attrs}
    if version == "0.5":
        attrs = {"version": "0.5", "plate": plate}
        _validate(version, "hcs.HCSAttrs", attrs)
        return {"ome": attrs}
    attrs = {"plate": plate}
    _validate(version, "hcs.HCSAttrs", attrs)
    return attrs


def well_attributes(fields: Sequence[str], *, version: NgffVersion) -> dict[str, Any]:
    """Well attributes listing its field-of-view image paths ("0", "1", ...)."""
    well: dict[str, Any] = {"images": [{"path": f} for f in fields]}
    if version in ("0.5", "0.6"):
        attrs: dict[str, Any] = {"version": version, "well": well}
        _validate(version, "well.WellAttrs", attrs)
        return {"ome": attrs}
    well["version"] = "0.4"
    attrs = {"well": well}
    _validate(version, "well.WellAttrs", attrs)
    return attrs
