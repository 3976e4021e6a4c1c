"""What the commands read from a zarr store's metadata: is a node a plate, a well, an image or an
array, and what is in it. Only metadata documents are read (zarr.json / .zattrs / .zarray), never
chunks, so ``ls``, ``tree`` and ``info`` cost the same for a 10 MB plate and a 10 TB one."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from polystore.ome import ngff


@dataclass(frozen=True)
class ZarrNode:
    """A node of a zarr store as the commands describe it."""

    kind: str  # "plate", "well", "image", "array" or "group"
    attributes: dict[str, Any]
    node: Any  # the zarr Array or Group

    @property
    def ome(self) -> dict[str, Any]:
        return ngff.ngff_section(self.attributes)


def zarr_node(backend: Any, path: str) -> ZarrNode:
    """Open ``path`` in the zarr ``backend`` (metadata only) and say what it is."""
    node = backend.node(path)
    attributes = dict(node.attrs)
    ome = ngff.ngff_section(attributes)
    if hasattr(node, "chunks"):
        kind = "array"
    elif "plate" in ome:
        kind = "plate"
    elif "well" in ome:
        kind = "well"
    elif ngff.is_multiscale_image(attributes):
        kind = "image"
    else:
        kind = "group"
    return ZarrNode(kind, attributes, node)


def plate_plane(backend: Any, path: str) -> tuple[str, str] | None:
    """(the path of the field image, what of it) that a plate's file name names
    (``plate.zarr/A01_s1_w2.tif``: ``plate.zarr/A/01/0``, or ``plate.zarr/A/1/0`` in a plate that
    spells its wells so; ``plane c=1 of ...``), or None for a node path: such a name is read
    from its field image, it is no node of its own."""
    from polystore.backends.zarr.addresses import address_of
    from polystore.plates import PlateNameError

    location = backend.locate(path)
    try:
        address = address_of(location.node, backend.config)
    except PlateNameError:  # no plane either: opening the node says what is there
        return None
    if address is None or address.components is None:  # None: a node path (B/03/0)
        return None
    # the well as the plate spells it: one another tool wrote has A/1 where the name says A01
    address = backend.spelled_address(location.store, address)
    trimmed = path.rstrip("/")
    prefix = trimmed[: -len(location.node)] if trimmed.endswith(location.node) else f"{location.store}/"
    field = prefix + address.field_path
    planes = zip(address.plane_axes, address.plane_index, strict=True)
    index = ", ".join(f"{axis}={value}" for axis, value in planes)
    return field, (f"plane {index} of the field image {field}" if index else f"the field image {field}")


def plate_wells(plate: ZarrNode) -> list[str]:
    """The wells' paths in the plate's metadata (``A/01``), in the plate's order."""
    return [str(well["path"]) for well in plate.ome["plate"].get("wells", [])]


def well_fields(well: ZarrNode) -> list[str]:
    """The fields' paths in the well's metadata (``0``, ``1``)."""
    return [str(image["path"]) for image in well.ome["well"].get("images", [])]


def plate_summary(plate: ZarrNode) -> str:
    section = plate.ome["plate"]
    name = f" '{section['name']}'" if section.get("name") else ""
    rows, columns = section.get("rows", []), section.get("columns", [])
    fields = section.get("field_count")
    per_well = f", up to {fields} field(s) a well" if fields else ""
    return (f"OME-Zarr plate{name} (NGFF {plate.ome.get('version', '0.4')}): {len(rows)} row(s) x "
            f"{len(columns)} column(s), {len(section.get('wells', []))} well(s){per_well}")


def image_levels(backend: Any, path: str, image: ZarrNode) -> list[tuple[str, Any]]:
    """(level path, zarr Array) for each resolution level, full resolution first."""
    return [(level, image.node[level]) for level in ngff.multiscale_paths(image.attributes)]


def channel_names(image: ZarrNode) -> list[str]:
    channels = (image.ome.get("omero") or image.attributes.get("omero") or {}).get("channels", [])
    return [str(channel.get("label", index)) for index, channel in enumerate(channels)]


def image_lines(backend: Any, path: str, image: ZarrNode) -> list[str]:
    """``info`` of an OME-Zarr image: axes, channels, and each level's shape and chunks."""
    levels = image_levels(backend, path, image)
    lines = [f"OME-Zarr image (NGFF {image.ome.get('version', '0.4')}), axes "
             f"{ngff.multiscale_axes(image.attributes) or '?'}, {len(levels)} level(s)"]
    channels = channel_names(image)
    if channels:
        lines.append(f"channels: {', '.join(channels)}")
    for level, array in levels:
        lines.append(f"level {level}: {array_line(array).removeprefix('zarr array: ')}")
    return lines


def array_line(array: Any) -> str:
    return f"zarr array: shape={tuple(array.shape)} dtype={array.dtype} chunks={tuple(array.chunks)}"
