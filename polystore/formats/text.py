"""Plain text (``.txt``) and JSON (``.json``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import IO, Any

from polystore.atomic import json_default
from polystore.exceptions import UnsupportedDataError
from polystore.formats import Format


def _save_text(data: Any, handle: IO[bytes], *, encoding: str = "utf-8") -> None:
    if isinstance(data, bytes):
        handle.write(data)
    elif isinstance(data, str):
        handle.write(data.encode(encoding))
    else:
        raise UnsupportedDataError(
            f".txt holds text (str or bytes); got {type(data).__name__}. Save arrays as "
            ".npy, .tif or .csv, and structured data as .json."
        )


def _load_text(path: Path, *, encoding: str = "utf-8") -> str:
    return path.read_text(encoding=encoding)


def _save_json(data: Any, handle: IO[bytes], *, indent: int | None = 2) -> None:
    try:
        text = json.dumps(data, indent=indent, default=json_default)
    except (TypeError, ValueError) as error:
        raise UnsupportedDataError(f"Cannot write this data as JSON: {error}") from error
    handle.write(text.encode("utf-8"))


def _load_json(path: Path) -> Any:
    with open(path, "rb") as handle:
        return json.load(handle)


FORMATS = [
    Format(
        "json", (".json",), _save_json, _load_json,
        description="JSON document",
        accepts="dicts, lists, strings, numbers; arrays become nested lists",
        options={"indent": "save: indentation (None for compact)"},
    ),
    Format(
        "text", (".txt",), _save_text, _load_text,
        description="plain text",
        accepts="str or bytes",
        options={"encoding": "save/load: text encoding (default utf-8)"},
    ),
]
