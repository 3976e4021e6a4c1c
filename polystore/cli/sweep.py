"""``polystore sweep DIR``: remove temporary files left by killed writers."""

from __future__ import annotations

import argparse

from polystore.atomic import sweep_stale_temp_files

HELP = "remove temporary files of writers that died"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("directory")


def run(args: argparse.Namespace) -> None:
    removed = sweep_stale_temp_files(args.directory)
    print(f"removed {len(removed)} stale temporary file(s)")
