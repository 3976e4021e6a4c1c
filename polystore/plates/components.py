"""What a path says about its place on a plate: one record, one indexing rule.

Indexing rule: every index here (field, channel, z, t) is 0-based, whatever the instrument
counts from, so the same field, channel, plane or time point has the same index whichever
convention named it (``A01_s1_w1.tif``, ``r01c01f01p01-ch1sk1fk1fl1.tiff`` and
``..._A01f00d0.TIF`` are all field 0, channel 0). Wells are named as on the plate: row letters
and a two-digit column (``"B03"``); see :mod:`polystore.plates.wells`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from polystore.plates.errors import PlateNameError
from polystore.plates.wells import normalise_column, normalise_row, split_well

INDEX_NAMES = ("field", "channel", "z", "t")
"""The 0-based indices of a :class:`Components`, outermost first."""
_NO_EXTRAS: Mapping[str, str] = MappingProxyType({})
HEADER_KEYS = ("plate", "well", "row", "column", "field", "site", "channel", "z", "t", "convention", "extras")
"""The keys :meth:`Components.to_header` may write: the one key set of stream headers."""


@dataclass(frozen=True)
class Components:
    """A plate image's components: plate, well (row + column), field, channel, z, t, extras.

    ``field`` is the field of view (``site``, as ImageXpress says, is the same thing: see
    :attr:`site`). ``channel``, ``z`` and ``t`` are None when the path does not say. Values
    are normalised when the record is made: ``Components("b", "3")`` is well ``"B03"``.
    """

    row: str
    column: str
    field: int = 0
    channel: int | None = None
    z: int | None = None
    t: int | None = None
    plate: str | None = None
    extras: Mapping[str, str] = dataclasses.field(default_factory=lambda: MappingProxyType({}))
    """Other named parts a convention captured (e.g. ``suffix``, Yokogawa's ``action``)."""
    convention: str = ""
    """The name of the convention that read the path ("" when made by hand)."""

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen: normalise once, here
        set_(self, "row", normalise_row(self.row))
        set_(self, "column", normalise_column(self.column))
        for name, value in (("field", self.field), ("channel", self.channel), ("z", self.z), ("t", self.t)):
            if value is None and name != "field":
                continue
            if type(value) is not int or value < 0:  # bool and float are no index
                if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                    raise PlateNameError(f"{name} must be a 0-based index (an integer >= 0), got {value!r}")
                set_(self, name, int(value))  # numpy and other int subclasses
        extras = self.extras
        set_(self, "extras", _NO_EXTRAS if not extras else
             MappingProxyType({str(k): str(v) for k, v in dict(extras).items()}))

    def __hash__(self) -> int:  # extras is a read-only mapping, hashed by its items
        return hash((self.row, self.column, self.field, self.channel, self.z, self.t, self.plate,
                     tuple(sorted(self.extras.items())), self.convention))

    @classmethod
    def of(cls, well: str, **values: Any) -> Components:
        """From a well name and keyword values; ``site=`` is accepted for ``field=``."""
        if "site" in values:
            if "field" in values and values["field"] != values["site"]:
                raise PlateNameError(f"field={values['field']!r} and site={values['site']!r} disagree")
            values["field"] = values.pop("site")
        row, column = split_well(well)
        return cls(row, column, **values)

    @property
    def well(self) -> str:
        """The well's name, row letters and two-digit column: ``"B03"``."""
        return self.row + self.column

    @property
    def site(self) -> int:
        """The field of view (ImageXpress calls fields sites): the same 0-based index as ``field``."""
        return self.field

    @property
    def indices(self) -> dict[str, int]:
        """The indices the path gave (field always), by name."""
        return {n: v for n in INDEX_NAMES if (v := getattr(self, n)) is not None}

    def to_header(self) -> dict[str, Any]:
        """The stream header's plate keys: THE one key set (``docs/streaming.md``).

        ``well``, ``row``, ``column``, ``field`` and its alias ``site`` (kept for readers of
        protocol version 1), ``channel``/``z``/``t`` when known, ``plate`` when known, the
        ``convention`` that read the path, and ``extras`` when any.
        """
        header: dict[str, Any] = {} if self.plate is None else {"plate": self.plate}
        header |= {"well": self.well, "row": self.row, "column": self.column,
                   "field": self.field, "site": self.field}
        header |= {n: v for n in ("channel", "z", "t") if (v := getattr(self, n)) is not None}
        if self.convention:
            header["convention"] = self.convention
        if self.extras:
            header["extras"] = dict(self.extras)
        return header

    @classmethod
    def from_header(cls, metadata: Mapping[str, Any]) -> Components | None:
        """The components a stream header carries (as :meth:`to_header` wrote them, or with
        ``site`` for ``field``, or ``row`` + ``column`` for ``well``); None without a well."""
        try:
            if isinstance(metadata.get("well"), str):
                row, column = split_well(metadata["well"])
            elif metadata.get("row") is not None and metadata.get("column") is not None:
                row, column = metadata["row"], metadata["column"]
            else:
                return None
            field_ = metadata.get("field", metadata.get("site", 0))
            extras = metadata.get("extras")
            plate = metadata.get("plate")
            return cls(
                row, column, field=0 if field_ is None else field_,
                channel=metadata.get("channel"), z=metadata.get("z"), t=metadata.get("t"),
                plate=None if plate is None else str(plate),
                extras=extras if isinstance(extras, Mapping) else {},
                convention=str(metadata.get("convention", "")),
            )
        except PlateNameError:
            return None  # a header that names no valid well carries no plate position

    def replace(self, **changes: Any) -> Components:
        """A copy with ``changes`` (``site=`` accepted for ``field=``)."""
        if "site" in changes:
            changes["field"] = changes.pop("site")
        return dataclasses.replace(self, **changes)
