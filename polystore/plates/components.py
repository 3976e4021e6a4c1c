"""What a path says about its place on a plate: one record, one indexing rule.

Indexing rule: every index here (field, channel, z, t) is 0-based, whatever the instrument
counts from, so the same field, channel, plane or time point has the same index whichever
convention named it (``A01_s1_w1.tif``, ``r01c01f01p01-ch1sk1fk1fl1.tiff`` and
``..._A01f00d0.TIF`` are all field 0, channel 0). Wells are named as on the plate: row letters
and a two-digit column (``"B03"``); see :mod:`polystore.plates.wells`.

An index a name gives as text rather than a number (Incucyte's channel ``phase``, its time
stamp ``00d04h00m``) is the extra ``<index>_name`` (``channel_name``, ``t_name``): which
index that is only a plate's whole set of names says (:func:`polystore.plates.number_plate`).
"""

from __future__ import annotations

import dataclasses
import numbers
import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from polystore.plates.errors import PlateNameError
from polystore.plates.wells import normalise_column, normalise_row, split_well

INDEX_NAMES = ("field", "channel", "z", "t")
"""The 0-based indices of a :class:`Components`, outermost first."""
DEFAULT_LIMITS: Mapping[str, int] = MappingProxyType(
    {"field": 10_000, "channel": 100, "z": 10_000, "t": 100_000}
)
"""How many values an index may take. Beyond, a name is refused, not stored: ``w30000`` would
make a zarr field of 30 000 channels."""
HEADER_KEYS = ("plate", "well", "row", "column", "field", "site", "channel", "z", "t", "convention",
               "extras", "folder", "bases", "labels")
"""The keys :meth:`Components.to_header` may write, in order: the one key set of stream headers."""
NAME_SUFFIX = "_name"
"""``<index>_name`` in :attr:`Components.extras`: that index given as text (``channel_name``)."""
PROJECTION = "projection"
"""The extra that marks an image as a projection of the Z stack beside it (:func:`number_plate`)."""

_NO_TEXT: Mapping[str, str] = MappingProxyType({})
_NO_BASES: Mapping[str, int] = MappingProxyType({})
LABEL_FORMAT = re.compile(r"[A-Za-z_ -]{0,16}\{(?::0[1-9]d)?\}")
"""How an index may be shown: a short prefix and the number, perhaps zero-padded ("C{:02d}").
Labels arrive in stream headers: nothing richer than this is formatted."""


@dataclass(frozen=True)
class Components:
    """A plate image's components: plate, well (row + column), field, channel, z, t, extras.

    ``field`` is the field of view (``site``, as ImageXpress says, is the same thing: see
    :attr:`site`). ``channel``, ``z`` and ``t`` are None when the path does not say. Values
    are normalised when the record is made: ``Components("b", "3")`` is well ``"B03"``.
    ``folder``, ``bases`` and ``labels`` say where the name was found and how its indices
    were written; two records of the same position are equal whatever they say.
    """

    row: str
    column: str
    field: int = 0
    channel: int | None = None
    z: int | None = None
    t: int | None = None
    plate: str | None = None
    extras: Mapping[str, str] = dataclasses.field(default_factory=lambda: _NO_TEXT)
    """Other named parts a convention captured (e.g. ``suffix``, Incucyte's ``channel_name``)."""
    convention: str = ""
    """The name of the convention that read the path ("" when made by hand)."""
    folder: str = dataclasses.field(default="", compare=False)
    """The path above what the convention read (``run/plate1`` in
    ``run/plate1/TimePoint_1/A01_s1_w1.tif``; a folder of the image's own well left out): the
    images of one acquisition share it."""
    bases: Mapping[str, int] = dataclasses.field(default_factory=lambda: _NO_BASES, compare=False)
    """From what each index the name gave was counted (ImageXpress ``s1``: ``{"field": 1}``);
    an index not here is shown 0-based."""
    labels: Mapping[str, str] = dataclasses.field(default_factory=lambda: _NO_TEXT, compare=False)
    """How an index is shown, as a format of its number as the name counts it (``{"channel":
    "w{}"}``); "{}" where absent."""

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen: normalise once, here
        set_(self, "row", normalise_row(self.row))
        set_(self, "column", normalise_column(self.column))
        for name in INDEX_NAMES:
            value = getattr(self, name)
            if value is None and name != "field":
                continue
            set_(self, name, _index(name, value))
        set_(self, "extras", _text_mapping(self.extras, "extras"))
        set_(self, "labels", _text_mapping(self.labels, "labels"))
        bad = [f"{k}={v!r}" for k, v in self.labels.items()
               if k not in INDEX_NAMES or not LABEL_FORMAT.fullmatch(v)]
        if bad:
            raise PlateNameError(f"labels {', '.join(bad)}: an index's label is a short prefix and "
                                 "'{}' (or '{:02d}'), e.g. 'w{}'")
        bases = {str(k): _index(f"base of {k}", v) for k, v in dict(self.bases).items()}
        if set(bases) - set(INDEX_NAMES):
            unknown = sorted(set(bases) - set(INDEX_NAMES))
            raise PlateNameError(f"bases name {unknown}; indices are {INDEX_NAMES}")
        set_(self, "bases", MappingProxyType(bases) if bases else _NO_BASES)
        set_(self, "folder", str(self.folder).strip("/"))

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

    def unplaced(self) -> str | None:
        """Why a store that places images by plate, well, field, channel, z and t alone (an
        OME-Zarr plate) cannot place this one, or None when it can.

        An extra part of the name is no index: placed without it, the image would overwrite the
        one named without it (``A01_s1_w2_mask.tif`` over ``A01_s1_w2.tif``). Only an index's
        name whose index is known (numbered from the plate's names) places it."""
        for key, value in self.extras.items():
            index = named_index(key)
            if index is not None:
                if getattr(self, index) is not None:
                    continue  # a numbered index's name: how it is shown
                return (f"its name gives {index} {value!r} as text, and which {index} that is only "
                        "a whole plate's names say: convert the folder (polystore convert, or "
                        "polystore.convert_to_zarr), which numbers them from the names it sees, or "
                        "save it under a numbered name")
            if key == PROJECTION:
                return ("it is a projection of the Z stack beside it (the same well, field, "
                        "channel and time point with planes): a plane of neither; save it to a "
                        "store of its own")
            return (f"its name has a part {key!r} ({value!r}) that is no plate position (field, "
                    "channel, z or t): placed without it, it would overwrite the image named "
                    "without it. Leave that part out of the name, save it elsewhere, or register "
                    f"a convention whose groups map it to an index or drop it (groups={{{key!r}: ''}})")
        return None

    def to_header(self) -> dict[str, Any]:
        """The stream header's plate keys: THE one key set (:data:`HEADER_KEYS`,
        ``docs/streaming.md``).

        ``well``, ``row``, ``column``, ``field`` and its alias ``site`` (kept for readers of
        protocol version 1), ``channel``/``z``/``t`` when known, ``plate`` when known, the
        ``convention`` that read the path, and ``extras``, ``folder``, ``bases`` and
        ``labels`` when any (so a receiver shows indices as the names count them without
        knowing the convention).
        """
        values: dict[str, Any] = {
            "plate": self.plate, "well": self.well, "row": self.row, "column": self.column,
            "field": self.field, "site": self.field, "channel": self.channel, "z": self.z, "t": self.t,
            "convention": self.convention, "extras": dict(self.extras), "folder": self.folder,
            "bases": dict(self.bases), "labels": dict(self.labels),
        }
        return {key: values[key] for key in HEADER_KEYS if values[key] not in (None, "", {})}

    @classmethod
    def from_header(
        cls, metadata: Mapping[str, Any], limits: Mapping[str, int] = DEFAULT_LIMITS
    ) -> Components | None:
        """The components a stream header carries (as :meth:`to_header` wrote them, or with
        ``site`` for ``field``, or ``row`` + ``column`` for ``well``); None without a well.

        A header that names a well but an index that is not one, or out of ``limits`` (as a
        name out of its convention's range is), is refused with :class:`PlateNameError`: a
        sender's ``channel=30000`` does not make a receiver allocate 30 000 channels."""
        try:
            if isinstance(metadata.get("well"), str):
                row, column = split_well(metadata["well"])
            elif metadata.get("row") is not None and metadata.get("column") is not None:
                row, column = normalise_row(metadata["row"]), normalise_column(metadata["column"])
            else:
                return None
        except PlateNameError:
            return None  # "well": "control" in a user's metadata is no plate position
        field_ = metadata.get("field", metadata.get("site", 0))
        plate = metadata.get("plate")
        try:
            components = cls(
                row, column, field=0 if field_ is None else field_,
                channel=metadata.get("channel"), z=metadata.get("z"), t=metadata.get("t"),
                plate=None if plate is None else str(plate),
                extras=_mapping(metadata.get("extras")), convention=str(metadata.get("convention", "")),
                folder=str(metadata.get("folder", "")), bases=_mapping(metadata.get("bases")),
                labels=_mapping(metadata.get("labels")),
            )
        except (PlateNameError, TypeError, ValueError) as error:
            raise PlateNameError(f"a stream header's plate position is not one: {error}") from error
        for name, value in components.indices.items():
            limit = limits.get(name, DEFAULT_LIMITS[name])
            if value >= limit:
                raise PlateNameError(
                    f"a stream header gives {name} {value} (well {components.well}): at most {limit} "
                    f"{name}s are taken (0..{limit - 1}); the sender named the image out of range"
                )
        return components

    def replace(self, **changes: Any) -> Components:
        """A copy with ``changes`` (``site=`` accepted for ``field=``). An index changed loses
        the name its old value had (``channel_name``)."""
        if "site" in changes:
            changes["field"] = changes.pop("site")
        if "extras" not in changes and any(n in changes for n in INDEX_NAMES):
            changes["extras"] = {k: v for k, v in self.extras.items() if named_index(k) not in changes}
        return dataclasses.replace(self, **changes)


def named_index(extra: str) -> str | None:
    """The index an extra names as text (``channel_name`` -> ``channel``), or None."""
    index = extra.removesuffix(NAME_SUFFIX)
    return index if index != extra and index in INDEX_NAMES else None


def _index(name: str, value: Any) -> int:
    # bool is an int but no index; NumPy's integers are numbers.Integral without being int
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise PlateNameError(f"{name} must be a 0-based index (an integer >= 0), got {value!r}")
    return int(value)


def _text_mapping(values: Mapping[str, Any], what: str) -> Mapping[str, str]:
    if not values:
        return _NO_TEXT
    if not isinstance(values, Mapping):
        raise PlateNameError(f"{what} must be a mapping of names to text, got {values!r}")
    return MappingProxyType({str(k): str(v) for k, v in dict(values).items()})


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}
