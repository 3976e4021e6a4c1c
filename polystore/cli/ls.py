"""``polystore ls DIR``: list files."""

from __future__ import annotations

import argparse

from polystore.cli._common import add_backend_option, file_manager

HELP = "list files"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_backend_option(parser)
    parser.add_argument("directory")
    parser.add_argument("-r", "--recursive", action="store_true")
    parser.add_argument("-p", "--pattern", help="glob on file names, e.g. '*_w2*'")
    parser.add_argument("-e", "--extension", action="append", help="keep this extension (repeatable)")


def run(args: argparse.Namespace) -> None:
    found = file_manager().list_files(
        args.directory, args.backend, args.pattern, args.extension, recursive=args.recursive
    )
    print("\n".join(found))
