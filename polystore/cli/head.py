"""``polystore head PATH``: the first rows of a table, without reading the rest."""

from __future__ import annotations

import argparse
from typing import Any

from polystore.cli._common import add_backend_option, file_manager, place
from polystore.cli.cat import write

HELP = "print the first rows of a table (CSV, arrays), JSON or text"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_backend_option(parser)
    parser.add_argument("path")
    parser.add_argument("-n", "--rows", type=int, default=10, help="how many rows (default 10)")


def _first_rows(path: str, backend: str, rows: int) -> Any:
    """What to print: only the first rows read where the format allows it."""
    lowered = path.lower()
    if backend == "disk" and lowered.endswith(".csv"):
        import pandas as pd

        return pd.read_csv(path, nrows=rows)
    if backend == "disk" and lowered.endswith(".npy"):
        import numpy as np

        return np.load(path, mmap_mode="r", allow_pickle=False)[:rows]  # only these rows are read
    if backend == "disk" and lowered.endswith(".txt"):
        with open(path, encoding="utf-8") as text:
            return "".join(line for _, line in zip(range(rows), text, strict=False))
    if backend == "zarr":
        from polystore.cli._zarr import plate_plane, zarr_node

        zarr = file_manager().get_backend("zarr")
        if plate_plane(zarr, path) is None:  # a plate's file name is a plane, one chunk: loaded below
            node = zarr_node(zarr, path)
            if node.kind == "array":
                return node.node[:rows]  # zarr reads only the chunks of these rows
    return file_manager().load(path, backend)


def run(args: argparse.Namespace) -> None:
    where = place(args.path, args.backend)
    write(_first_rows(where.path, where.backend, args.rows), rows=args.rows)
