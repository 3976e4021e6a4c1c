"""``polystore rm PATH``: remove a file, or with ``-r`` a folder, store or plate and all below it."""

from __future__ import annotations

import argparse

from polystore.cli._common import add_backend_option, file_manager, place
from polystore.exceptions import IsADirectoryStorageError

HELP = "remove a file, or a folder with -r (zarr nodes and s3:// URLs too)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_backend_option(parser)
    parser.add_argument("paths", nargs="+", metavar="path")
    parser.add_argument("-r", "--recursive", action="store_true", help="remove folders and all below them")


def run(args: argparse.Namespace) -> None:
    fm = file_manager()
    for path in args.paths:
        where = place(path, args.backend)
        if fm.is_dir(where.path, where.backend):
            if not args.recursive:
                raise IsADirectoryStorageError(
                    f"'{where.path}' is a folder: 'polystore rm -r {where.path}' removes it and all below it."
                )
            fm.delete_all(where.path, where.backend)
        else:
            fm.delete(where.path, where.backend)  # a missing path raises, naming it
        print(f"removed {where}")
