"""THE plate model: where an image sits on a screening plate, read from its path.

* :class:`Components`: plate, well (row + column), field (alias site), channel, z, t, extras;
  every index 0-based, whatever the instrument counts from.
* Well names (:func:`well_name`, :func:`split_well`, :func:`well_position`): rows A..Z then
  AA..AF, columns zero-padded (``r01c12`` is ``A12``, ``r11c02`` is ``K02``).
* Naming conventions as a table of data (:data:`BUILTIN`: ImageXpress/MetaXpress, well
  folders, OME-NGFF, Opera Phenix/Operetta, Yokogawa CV7000/CV8000, CellInsight/Cellomics,
  Incucyte), tried after the user's own (:func:`register_convention`).
* :func:`parse_components` reads a path; :func:`recognise` also says which convention read it,
  or why a name was skipped; :func:`components_of` is a stream item's place (its header, else
  its path); :func:`number_plate` numbers what only a plate's whole set of names says
  (Incucyte's channel names and time stamps). See ``docs/plates.md``.
"""

from __future__ import annotations

from polystore.plates.components import HEADER_KEYS, INDEX_NAMES, Components
from polystore.plates.conventions import (
    BUILTIN,
    DEFAULT_BASE,
    DEFAULT_LIMITS,
    Convention,
    Recognition,
    channel_names,
    components_of,
    conventions,
    find_convention,
    format_name,
    get_convention,
    index_label,
    named_convention,
    parse_components,
    recognise,
    register_convention,
    unregister_convention,
)
from polystore.plates.errors import PlateNameError
from polystore.plates.numbering import name_sort_key, natural_key, number_plate
from polystore.plates.wells import (
    MAX_COLUMNS,
    MAX_ROWS,
    PLATE_FORMATS,
    column_sort_key,
    plate_format,
    row_letters,
    row_number,
    row_sort_key,
    split_well,
    well_name,
    well_position,
    well_sort_key,
)

__all__ = [
    "BUILTIN",
    "DEFAULT_BASE",
    "DEFAULT_LIMITS",
    "HEADER_KEYS",
    "INDEX_NAMES",
    "MAX_COLUMNS",
    "MAX_ROWS",
    "PLATE_FORMATS",
    "Components",
    "Convention",
    "PlateNameError",
    "Recognition",
    "channel_names",
    "column_sort_key",
    "components_of",
    "conventions",
    "find_convention",
    "format_name",
    "get_convention",
    "index_label",
    "name_sort_key",
    "named_convention",
    "natural_key",
    "number_plate",
    "parse_components",
    "plate_format",
    "recognise",
    "register_convention",
    "row_letters",
    "row_number",
    "row_sort_key",
    "split_well",
    "unregister_convention",
    "well_name",
    "well_position",
    "well_sort_key",
]
