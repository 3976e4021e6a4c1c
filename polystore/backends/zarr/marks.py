"""The mark an image's group carries while its pixels are not all written, and what a reader
is told when it meets one.

Two writers leave it: the zarr backend, while it replaces an image (``{"incomplete": true}``
alone, the levels cleared: the next save or ``polystore repair`` makes the image whole from
what is there), and a conversion (``polystore convert``), which creates every image with its
levels and NGFF metadata first, so that a viewer watches it fill, and marks it also with the
node the conversion writes (``"conversion": ""`` for a whole store). Only that conversion,
resumed, knows what the unwritten pixels are: nothing else may unmark such an image.
"""

from __future__ import annotations

from typing import Any

from polystore.backends.zarr.location import Location
from polystore.exceptions import CorruptDataError

INCOMPLETE = {"polystore": {"incomplete": True}}
"""The attributes of an image's group while it is being replaced."""


def converting(destination: str) -> dict[str, Any]:
    """The mark of an image a conversion into ``destination`` (a node of the store, '' the
    store itself) creates, and removes once every pixel of it is written."""
    return {"polystore": {"incomplete": True, "conversion": destination}}


def is_incomplete(attributes: dict[str, Any]) -> bool:
    marker = attributes.get("polystore")
    return isinstance(marker, dict) and bool(marker.get("incomplete"))


def conversion_of(attributes: dict[str, Any]) -> str | None:
    """The destination node of the unfinished conversion that marked this image, or None."""
    marker = attributes.get("polystore")
    if not (isinstance(marker, dict) and marker.get("incomplete")):
        return None
    destination = marker.get("conversion")
    return destination if isinstance(destination, str) else None


def resume_advice(location: Location, destination: str) -> str:
    """What to run to finish the conversion into ``destination`` that left ``location`` unwritten."""
    target = Location(location.store, destination).display
    return (
        f"a conversion into '{target}' did not finish (stopped, killed, or a source file failed), "
        f"so its unwritten pixels would read as 0. Run it again with the same source and options "
        f"and --resume (`polystore convert SOURCE {target} --resume`, or "
        f"polystore.convert_to_zarr(SOURCE, '{target}', resume=True)); --overwrite starts over."
    )


def incomplete_error(location: Location, attributes: dict[str, Any]) -> CorruptDataError:
    """The error for reading the marked image at ``location`` as data."""
    destination = conversion_of(attributes)
    if destination is not None:
        advice = resume_advice(location, destination)
        return CorruptDataError(f"'{location.display}' is not converted yet: {advice}")
    return CorruptDataError(
        f"'{location.display}' was being written when its writer stopped; save it again or run "
        "`polystore repair` on the store."
    )
