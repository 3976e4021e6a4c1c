"""``polystore cp SRC DST``: copy a file or a folder between any backends and URLs.

Each side's backend is inferred from its path (``s3://`` and ``.zarr`` paths are zarr, the
rest disk) or given with ``--from`` / ``--to``. Within one backend the backend copies itself
(zarr keeps chunks, codecs and metadata); across backends every file is loaded and saved in the
format of the destination (``disk -> zarr`` writes plane files into an OME-Zarr plate).
"""

from __future__ import annotations

import argparse
import os

from polystore.cli._common import Place, add_transfer_options, file_manager, place, progress
from polystore.filemanager import FileManager

HELP = "copy a file or folder between backends and URLs (disk, zarr, s3://...)"

BATCH = 16
"""Files loaded and saved per step across backends (save_batch assembles plate planes)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_transfer_options(parser)
    parser.add_argument("source")
    parser.add_argument("destination")


def destination_of(source: str, prefix: str, destination: str) -> str:
    """Where ``source`` (a file below folder ``prefix``) goes below ``destination``."""
    return f"{destination.rstrip('/')}/{source[len(prefix):].lstrip('/')}"


def copy_tree(fm: FileManager, src: Place, dst: Place) -> int:
    """Every file below ``src`` to the same place below ``dst``, in batches; the count."""
    files = fm.list_files(src.path, src.backend, recursive=True)
    prefix = "" if src.path.rstrip("/") in ("", ".") else src.path.rstrip("/")
    batches = [files[start:start + BATCH] for start in range(0, len(files), BATCH)]
    for batch in progress(batches, total=len(batches), what=f"x{BATCH} files"):
        data = fm.load_batch(batch, src.backend)
        fm.save_batch(data, [destination_of(path, prefix, dst.path) for path in batch], dst.backend)
    return len(files)


def run(args: argparse.Namespace) -> None:
    src = place(args.source, args.source_backend)
    dst = place(args.destination, args.dest_backend)
    fm = file_manager()
    if fm.is_file(src.path, src.backend):
        if fm.is_dir(dst.path, dst.backend):  # into an existing folder, as cp does
            dst = Place(f"{dst.path.rstrip('/')}/{os.path.basename(src.path.rstrip('/'))}", dst.backend)
        fm.copy(src.path, dst.path, src.backend, dest_backend=dst.backend)
        print(f"{src} -> {dst}")
        return
    if src.backend == dst.backend:
        fm.stat(src.path, src.backend)  # a missing source raises here, naming it
        fm.copy(src.path, dst.path, src.backend)
        print(f"{src} -> {dst}")
        return
    count = copy_tree(fm, src, dst)
    print(f"{src} -> {dst}: {count} file(s)")
