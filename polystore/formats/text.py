"""Plain text (``.txt``) and JSON (``.json``)."""

from __future__ import annotations

import json
from typing import IO, Any

from polystore.atomic import json_default
from polystore.exceptions import UnsupportedDataError
from polystore.formats import Format


def _save_text(data: Any, handle: IO[bytes], *, encoding: str = "utf-8") -> None:
    if not isinstance(data, str):
        is_bytes = isinstance(data, (bytes, bytearray))
        kind = "bytes (which would come back as str)" if is_bytes else type(data).__name__
        raise UnsupportedDataError(
            f".txt holds text (a str); got {kind}. Decode bytes first (data.decode()), save "
            "arrays as .npy, .tif or .csv, and structured data as .json."
        )
    handle.write(data.encode(encoding))


def _load_text(handle: IO[bytes], *, encoding: str = "utf-8") -> str:
    return handle.read().decode(encoding)


def _check_keys(data: Any, where: str = "") -> None:
    """JSON objects have string keys: any other key would come back as a string, so refuse it."""
    if isinstance(data, dict):
        for key, value in data.items():
            if not isinstance(key, str):
                raise UnsupportedDataError(
                    f"JSON object keys are strings; the key {key!r} at {where or 'the top level'} "
                    f"would come back as the string {json.dumps(str(key))}. Use str keys."
                )
            _check_keys(value, f"{where}[{key!r}]")
    elif isinstance(data, (list, tuple)):
        for index, value in enumerate(data):
            _check_keys(value, f"{where}[{index}]")


def _save_json(data: Any, handle: IO[bytes], *, indent: int | None = 2) -> None:
    _check_keys(data)
    try:
        text = json.dumps(data, indent=indent, default=json_default)
    except (TypeError, ValueError) as error:
        raise UnsupportedDataError(f"Cannot write this data as JSON: {error}") from error
    handle.write(text.encode("utf-8"))


def _load_json(handle: IO[bytes]) -> Any:
    return json.load(handle)


FORMATS = [
    Format(
        "json", (".json",), _save_json, _load_json,
        description="JSON document",
        accepts="dicts with str keys, lists, strings, numbers, booleans, None; tuples and "
        "arrays come back as lists",
        options={"indent": "save: indentation (None for compact)"},
    ),
    Format(
        "text", (".txt",), _save_text, _load_text,
        description="plain text",
        accepts="str",
        options={"encoding": "save/load: text encoding (default utf-8)"},
    ),
]
