"""The mark an image's group (or a bare array's own attributes) carries while its pixels are
not all written, and what a reader is told when it meets one.

Two writers leave it. The zarr backend: while it replaces an image whole (``REPLACING``, the
levels cleared first: a writer killed then leaves neither image, so ``load`` refuses it,
``repair`` reports it and the next save writes it); while the next plane save writes a
damaged field again (``INCOMPLETE``, from which ``repair`` rebuilds the field from what is
there, as a plate grows plane by plane); while it writes a bare array (``INCOMPLETE`` in the
array's own attributes, from before its first chunk until after its last: a group document
beside a v2 ``.zarray`` would make the node invalid; ``repair`` reports such an array and
leaves it marked, as no plate fills it plane by plane). And a conversion (``polystore
convert``), which creates every image with its levels and NGFF metadata first, so that a
viewer watches it fill, and marks it also with the node the conversion writes
(``"conversion": ""`` for a whole store). Only that conversion, resumed, knows what the
unwritten pixels are: nothing else may unmark such an image. A save that fails after
clearing the node it replaces leaves the mark with the reason (``"failed"``).

A milder mark (``levels_pending``) says only that a plane save into a pyramid stopped after
level 0: its levels below may hold the plane's previous pixels; readers read it, ``repair``
and the next plane save make those levels again from level 0.

Earlier versions wrote the mark at the top of the attributes (``{"incomplete": true}``, with
``"conversion"`` beside it for a conversion's): read here as the same marks, so that ``load``
refuses such an image and ``polystore repair`` treats it as it treats the current ones.
"""

from __future__ import annotations

from typing import Any

from polystore.backends.zarr.location import Location
from polystore.exceptions import CorruptDataError

INCOMPLETE = {"polystore": {"incomplete": True}}
"""The attributes of a damaged field's group while the next plane save writes it again, and of
a bare array while it is written (in its own attributes)."""

REPLACING = {"polystore": {"incomplete": True, "replacing": True}}
"""The attributes of an image's group while a save replaces it whole: its previous pixels are
cleared first, so a writer killed then leaves neither the old image nor the new one (``repair``
reports it, as it does a failed save's, and does not publish what its levels hold)."""


def levels_pending(labels: bool) -> dict[str, Any]:
    """The mark of a pyramid whose plane save has written level 0 and not yet every level below
    (``labels``: they are made by picking pixels, not averaging). Not ``incomplete``: level 0
    is whole, so readers read the image; ``repair``, or the next plane save into it, makes its
    levels below again from level 0 and removes the mark."""
    return {"polystore": {"levels_pending": {"labels": labels}}}


def pending_levels_of(attributes: dict[str, Any]) -> bool | None:
    """Whether the levels below level 0 are made by picking (labels), where ``levels_pending``
    marks the image; None where it does not."""
    marker = attributes.get("polystore")
    pending = marker.get("levels_pending") if isinstance(marker, dict) else None
    return bool(pending.get("labels")) if isinstance(pending, dict) else None


def converting(destination: str) -> dict[str, Any]:
    """The mark of an image a conversion into ``destination`` (a node of the store, '' the
    store itself) creates, and removes once every pixel of it is written."""
    return {"polystore": {"incomplete": True, "conversion": destination}}


def failed_mark(error: BaseException) -> dict[str, Any]:
    """The mark of an image whose save failed (``error``) after its previous pixels were cleared."""
    reason = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    return {"polystore": {"incomplete": True, "failed": reason[:500]}}


_EARLIER_MARK_KEYS = {"incomplete", "conversion", "ome", "multiscales", "omero"}


def _marker(attributes: dict[str, Any]) -> dict[str, Any] | None:
    """The mark's section of an image group's attributes (the current form under "polystore",
    or an earlier version's at the top), or None where the image is not marked."""
    marker = attributes.get("polystore")
    if isinstance(marker, dict) and marker.get("incomplete"):
        return marker
    # the earlier form only among the keys those versions wrote beside it (a conversion's
    # destination, the image's NGFF metadata), so that a group with attributes of its user's,
    # one of them "incomplete", is not taken for a marked image
    if attributes.get("incomplete") is True and set(attributes) <= _EARLIER_MARK_KEYS:
        return attributes
    return None


def is_incomplete(attributes: dict[str, Any]) -> bool:
    return _marker(attributes) is not None


def is_marked_array(attributes: dict[str, Any]) -> bool:
    """Whether a bare array's attributes carry the mark (in the current form only: earlier
    versions never marked arrays, so an array's own ``"incomplete"`` attribute is its user's)."""
    marker = attributes.get("polystore")
    return isinstance(marker, dict) and bool(marker.get("incomplete"))


def conversion_of(attributes: dict[str, Any]) -> str | None:
    """The destination node of the unfinished conversion that marked this image, or None."""
    marker = _marker(attributes)
    destination = marker.get("conversion") if marker is not None else None
    return destination if isinstance(destination, str) else None


def is_replacing(attributes: dict[str, Any]) -> bool:
    """Whether the mark is a whole-image replacement's (``REPLACING``), whose writer stopped."""
    marker = _marker(attributes)
    return marker is not None and marker.get("replacing") is True


def failure_of(attributes: dict[str, Any]) -> str | None:
    """Why the save that marked this image failed, where one did (``failed_mark``)."""
    marker = _marker(attributes)
    reason = marker.get("failed") if marker is not None else None
    return reason if isinstance(reason, str) else None


def resume_advice(location: Location, destination: str) -> str:
    """What to run to finish the conversion into ``destination`` that left ``location`` unwritten."""
    target = Location(location.store, destination).display
    return (
        f"a conversion into '{target}' did not finish (stopped, killed, or a source file failed), "
        f"so its unwritten pixels would read as 0. Run it again with the same source and options "
        f"and --resume (`polystore convert SOURCE {target} --resume`, or "
        f"polystore.convert_to_zarr(SOURCE, '{target}', resume=True)); --overwrite starts over."
    )


def incomplete_error(
    location: Location, attributes: dict[str, Any], *, array: bool = False
) -> CorruptDataError:
    """The error for reading the marked image (or bare array, ``array``) at ``location`` as data."""
    destination = conversion_of(attributes)
    if destination is not None:
        advice = resume_advice(location, destination)
        return CorruptDataError(f"'{location.display}' is not converted yet: {advice}")
    reason = failure_of(attributes)
    if reason is not None:
        return CorruptDataError(
            f"'{location.display}': saving it failed ({reason}) after its previous data was cleared, "
            f"so it holds no {'data' if array else 'image'} now. Save it again, or delete it (delete_all)."
        )
    if is_replacing(attributes):
        return CorruptDataError(
            f"'{location.display}' was being replaced when its writer stopped (killed, or its machine "
            "lost): its previous data was cleared and the new is not all written. Save it again, or "
            "delete it (delete_all)."
        )
    if array:  # no plate fills it plane by plane: what a killed writer left is part of an array
        return CorruptDataError(
            f"'{location.display}' was being written when its writer stopped (killed, or its machine "
            "lost), so it holds part of its data at most. Save it again, or delete it (delete_all)."
        )
    return CorruptDataError(
        f"'{location.display}' was being written when its writer stopped; save it again or run "
        "`polystore repair` on the store."
    )
