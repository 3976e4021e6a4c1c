"""``polystore convert SRC DST``: load a file and save it in the format of another extension."""

from __future__ import annotations

import argparse
from typing import Any

from polystore.cli._common import add_backend_option, file_manager, infer_backend

HELP = "load a file and save it in the format of another extension"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_backend_option(parser)
    parser.add_argument("source")
    parser.add_argument("destination")
    parser.add_argument("--imagej", action="store_true", help="write an ImageJ hyperstack TIFF")
    parser.add_argument("--axes", help="axis letters for TIFF, e.g. TZCYX")


def run(args: argparse.Namespace) -> None:
    options: dict[str, Any] = {}
    if args.imagej:
        options["imagej"] = True
    if args.axes:
        options["axes"] = args.axes
    fm = file_manager()
    source = infer_backend(args.source, args.backend)  # .zarr paths and s3:// URLs are zarr
    destination = infer_backend(args.destination, args.backend)
    fm.save(fm.load(args.source, source), args.destination, destination, **options)
    print(f"{args.source} -> {args.destination}")
