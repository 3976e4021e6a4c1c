"""``polystore cat PATH``: a table (CSV, a 1-D/2-D array, JSON, text) printed to stdout."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from polystore.cli._common import add_backend_option, file_manager, place

HELP = "print a table (CSV, 1-D/2-D arrays as CSV), JSON or text"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_backend_option(parser)
    parser.add_argument("path")


def write(data: Any, rows: int | None = None) -> None:
    """``data`` on stdout: tables and arrays as CSV, JSON as JSON, text as it is."""
    import numpy as np

    from polystore.arrays import is_array, to_numpy
    from polystore.exceptions import UnsupportedDataError

    if hasattr(data, "to_csv"):  # a pandas DataFrame
        (data if rows is None else data.head(rows)).to_csv(sys.stdout, index=False)
    elif is_array(data):
        array = np.asarray(to_numpy(data))
        if array.ndim > 2:
            raise UnsupportedDataError(
                f"A {array.ndim}-D array {array.shape} is not a table: 'polystore info' describes it."
            )
        np.savetxt(sys.stdout, np.atleast_1d(array)[:rows], delimiter=",", fmt="%s")
    elif isinstance(data, str):
        lines = data.splitlines(keepends=True)
        sys.stdout.write("".join(lines[:rows]))
    elif isinstance(data, (dict, list)):
        text = json.dumps(data, indent=2, default=str).splitlines()
        print("\n".join(text[:rows]))
    else:
        raise UnsupportedDataError(
            f"A {type(data).__name__} is not a table or text: 'polystore info' describes it."
        )


def run(args: argparse.Namespace) -> None:
    where = place(args.path, args.backend)
    write(file_manager().load(where.path, where.backend))
