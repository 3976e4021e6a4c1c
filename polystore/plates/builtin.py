"""The built-in naming conventions, as data: tried in this order, after the user's own.

Each entry was checked against the layouts the instruments write (Bio-Formats' readers, faim-hcs
and fractal's MetaXpress parsers, published Cell Painting data sets): see ``docs/plates.md``.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from polystore.plates.convention import EXTENSION_PATTERN, GUID_PATTERN, WELL_PATTERN, Convention

_METAXPRESS_FOLDERS = (
    r"(?:(?P<date>\d{4}-\d{2}-\d{2})/(?P<acquisition>\d+)/)?"
    r"(?:TimePoint_(?P<timepoint>\d+)/)?(?:ZStep_(?P<zstep>\d+)/)?"
)
_INCUCYTE_CHANNELS = ("phase", "green", "red", "nir", "blue", "orange")
"""Incucyte's channels, in the order they are numbered (phase contrast first)."""
_FROM_ZERO: Mapping[str, int] = MappingProxyType({"field": 0, "channel": 0, "z": 0, "t": 0})

BUILTIN: tuple[Convention, ...] = (
    Convention(
        "imagexpress",
        _METAXPRESS_FOLDERS
        + rf"(?:(?P<plate>[^/]*)_)?(?P<well>{WELL_PATTERN})"
        r"(?:_s(?P<field>\d+))?(?:_w(?P<channel>\d+))?(?:_z(?P<z>\d+))?(?:_t(?P<t>\d+))?"
        # a suffix only after the wavelength: "_B03_T0001F001..." is Yokogawa's, not a suffix
        r"(?(channel)(?:_(?P<suffix>(?![Tt]humb)[A-Za-z0-9][A-Za-z0-9-]*))?)"
        rf"(?P<thumb>_[Tt]humb)?(?P<guid>{GUID_PATTERN})?{EXTENSION_PATTERN}",
        groups={"timepoint": "t", "zstep": "z", "date": "", "acquisition": "", "guid": "", "thumb": "thumb"},
        skip={"thumb": "a MetaXpress thumbnail (a small preview of an image stored beside it)"},
        title="ImageXpress / MetaXpress",
        example="TimePoint_1/ZStep_2/plate1_B03_s2_w1E0C7D6E0-B8B5-4A6E-9E9F-0123456789AB.tif",
        writes=("{plate}_", "{well}", "_s{field}", "_w{channel}", "_z{z}", "_t{t}", ".tif"),
        channel_label="w{}",
    ),
    Convention(
        "well-folders",
        rf"(?P<well>{WELL_PATTERN})/(?:"
        r"(?:(?:site|field|s|f)(?P<field>\d+))?(?:[_-]?(?P<channel_tag>channel|ch|w|c)(?P<channel>\d+))?"
        r"(?:[_-]?z(?P<z>\d+))?(?:[_-]?t(?P<t>\d+))?"
        # any other name is one image of the well (named in extras); a name that says a well
        # too is read by both this and its own convention: the same well, or an ambiguous name
        rf"|(?P<name>[^/.][^/]*?)){EXTENSION_PATTERN}",
        title="one folder per well",
        example="plate1/B03/s2_w1.tif",
        writes=("{plate}/", "{well}/", "s{field}", "_w{channel}", "_z{z}", "_t{t}", ".tif"),
        channel_label="w{}",
    ),
    Convention(
        "ngff",
        r"(?P<row>[A-Za-z]{1,2})/(?P<column>\d{1,3})/(?P<field>\d+)",
        base=_FROM_ZERO,
        title="OME-NGFF plate paths",
        example="plate.zarr/B/03/0",
        writes=("{plate}/", "{row}/{column}/{field}"),
    ),
    Convention(
        "opera-phenix",
        r"(?:Images/)?r(?P<row>\d{1,2})c(?P<column>\d{1,2})f(?P<field>\d{1,3})p(?P<z>\d{1,3})"
        r"-ch(?P<channel>\d{1,2})(?:sk(?P<t>\d+))?(?:fk(?P<fk>\d+))?(?:fl(?P<fl>\d+))?" + EXTENSION_PATTERN,
        # sk is the time point; fk and fl are 1 in every Harmony export we know of
        groups={"fk": "", "fl": ""},
        title="Opera Phenix / Operetta (Harmony)",
        example="Images/r02c03f01p01-ch1sk1fk1fl1.tiff",
        writes=("{plate}/Images/",
                "r{row_number:02d}c{column_number:02d}f{field:02d}p{z:02d}-ch{channel}sk{t}fk1fl1.tiff"),
        channel_label="ch{}",
    ),
    Convention(
        "yokogawa",
        rf"(?:(?P<plate>[^/]*)_)?(?P<well>{WELL_PATTERN})_T(?P<t>\d{{4}})F(?P<field>\d{{3}})"
        r"L(?P<timeline>\d{2})A(?P<action>\d{2})Z(?P<z>\d{2})C(?P<channel>\d{2})" + EXTENSION_PATTERN,
        # A (the action) changes with the channel in every CV7000/CV8000 measurement and L (the
        # timeline) with T: C is the channel and T the time point, neither is a position of its own
        groups={"action": "", "timeline": ""},
        title="Yokogawa CV7000 / CV8000",
        example="AssayPlate_Greiner_#655090_B03_T0001F001L01A01Z01C01.tif",
        writes=("{plate}_", "{well}_T{t:04d}F{field:03d}L01A01Z{z:02d}C{channel:02d}.tif"),
        channel_label="C{:02d}",
    ),
    Convention(
        "cellinsight",
        rf"(?:(?P<plate>[^/]*)_)?(?P<well>{WELL_PATTERN})f(?P<field>\d{{2,3}})"
        rf"(?:(?:d|(?P<overlay>o))(?P<channel>\d+))?{EXTENSION_PATTERN}",
        base=_FROM_ZERO,
        skip={"overlay": "a Cellomics overlay (o: the outlines ArrayScan drew over that channel's "
                         "image, d), not an image"},
        title="Thermo CellInsight / Cellomics ArrayScan",
        example="MFGTMP_150612140001_B03f00d0.TIF",
        writes=("{plate}_", "{well}f{field:02d}d{channel}.TIF"),
        channel_label="d{}",
    ),
    Convention(
        "incucyte",
        r"(?P<plate>[^/]*?)_(?:(?P<channel_name>" + "|".join(_INCUCYTE_CHANNELS) + r")_)?"
        r"(?P<well>[A-Z]{1,2}\d{1,2})_(?P<field>\d+)"
        r"(?:_(?P<t_name>\d{4}y\d{2}m\d{2}d_\d{2}h\d{2}m|\d+d\d+h\d+m))?" + EXTENSION_PATTERN,
        # the channel's name and the time stamp (a date, or the time since the scan began) are
        # indices given as text: numbered among a plate's names (polystore.plates.number_plate)
        title="Sartorius Incucyte",
        example="VID1_phase_B3_1_2019y01m23d_12h00m.tif",
        writes=("{plate}_", "{channel_name}_", "{row}{column_number}_{field}", "_{t_name}", ".tif"),
        name_order={"channel": _INCUCYTE_CHANNELS},
    ),
)
"""The built-in conventions, tried in this order after the user's."""

