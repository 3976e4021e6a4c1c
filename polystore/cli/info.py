"""``polystore info PATH``: kind, size, and shape/dtype of arrays."""

from __future__ import annotations

import argparse
from typing import Any

from polystore.arrays import is_array, to_numpy
from polystore.cli._common import add_backend_option, file_manager

HELP = "describe a file or directory"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_backend_option(parser)
    parser.add_argument("path")


def _describe(data: Any) -> str:
    if is_array(data):
        array = to_numpy(data)
        return f"array shape={array.shape} dtype={array.dtype}"
    if isinstance(data, dict):
        return f"dict with {len(data)} keys: {', '.join(map(str, list(data)[:8]))}"
    if isinstance(data, list):
        return f"list of {len(data)} items"
    return type(data).__name__


def run(args: argparse.Namespace) -> None:
    fm = file_manager()
    stat = fm.stat(args.path, args.backend)
    size = f", {stat.size} bytes" if stat.size is not None else ""
    print(f"{stat.path}: {stat.kind}{size}")
    if stat.is_file:
        print(f"  {_describe(fm.load(args.path, args.backend))}")
