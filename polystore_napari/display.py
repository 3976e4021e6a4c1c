"""How OME-Zarr images are shown in napari: OMERO channel names, colours and windows; scale."""

from __future__ import annotations

from typing import Any

from polystore.ome import ngff
from polystore.plates import channel_names

CHANNEL_COLORMAPS = ("green", "magenta", "cyan", "yellow", "red", "blue")
"""Channel colours in order (live layers and OME-Zarr channels without an OMERO colour)."""


def omero_channels(attributes: dict[str, Any]) -> list[dict[str, Any]]:
    omero = ngff.ngff_section(attributes).get("omero") or attributes.get("omero") or {}
    channels = omero.get("channels") if isinstance(omero, dict) else None
    return [c for c in channels if isinstance(c, dict)] if isinstance(channels, list) else []


def colormap(color: Any, fallback: str) -> Any:
    """A napari colormap from black to an OMERO channel colour (``"00FF00"``)."""
    if not isinstance(color, str) or len(color) != 6:
        return fallback
    try:
        rgb = [int(color[i : i + 2], 16) / 255 for i in (0, 2, 4)]
    except ValueError:
        return fallback
    from napari.utils.colormaps import Colormap

    return Colormap([[0, 0, 0, 1], [*rgb, 1]], name=f"#{color.lower()}")


def image_scale(attributes: dict[str, Any]) -> list[float] | None:
    return ngff.image_transform(attributes)[0]


def channel_options(attributes: dict[str, Any], count: int, prefix: str = "") -> dict[str, Any]:
    channels = omero_channels(attributes)
    names: list[str] = []
    colormaps: list[Any] = []
    limits: list[tuple[float, float] | None] = []
    unnamed = channel_names(count)  # the plate model's labels for channels nothing names
    for index in range(count):
        info = channels[index] if index < len(channels) else {}
        label = str(info.get("label") or unnamed[index])
        names.append(f"{prefix}{label}")
        colormaps.append(colormap(info.get("color"), CHANNEL_COLORMAPS[index % len(CHANNEL_COLORMAPS)]))
        window = info.get("window") or {}
        start, end = (window.get("start"), window.get("end")) if isinstance(window, dict) else (None, None)
        if isinstance(start, (int, float)) and isinstance(end, (int, float)) and end > start:
            limits.append((float(start), float(end)))
        else:
            limits.append(None)
    options: dict[str, Any] = {"name": names, "colormap": colormaps, "blending": "additive"}
    if all(limit is not None for limit in limits):
        options["contrast_limits"] = limits
    return options
