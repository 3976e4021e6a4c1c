"""``polystore repair STORE``: rebuild a zarr store's metadata from the arrays it holds.

For a plate or image left part-written by writers that were killed: every image's multiscales
from its levels, the wells' and plate's lists from the fields present, and the lock objects
and temporary files of writers that are gone removed. Images an unfinished ``polystore
convert`` left are left marked incomplete, with the advice to resume it (only the conversion
has their pixels). Prints what it changed, what it could not save and what is not converted
yet; exit status 1 if anything could not be saved or is not converted yet.
"""

from __future__ import annotations

import argparse

HELP = "rebuild a zarr plate's or image's metadata from the arrays present (after killed writers)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("store", help="the store: a local path or s3:// URL ending in .zarr")
    parser.add_argument("--dry-run", action="store_true", help="report what would change, change nothing")


def run(args: argparse.Namespace) -> int:
    from polystore.backends.zarr.repair import repair_plate

    report = repair_plate(args.store, dry_run=args.dry_run)
    print(str(report))
    return 0 if report.ok else 1
