"""``polystore stream FOLDER --to napari|fiji``: replay a folder of images into a live viewer.

Every image below FOLDER is saved to the viewer backend under ``FOLDER-NAME/relative/path``, in
plate order (well, field, channel, z, t, as :mod:`polystore.plates` reads the names), so the
viewer places each one exactly as it would from the pipeline that wrote them: napari stacks
wells and fields on sliders with a layer per channel, Fiji makes a hyperstack per well. A viewer
is started when none listens (``--no-launch`` to refuse instead).
"""

from __future__ import annotations

import argparse
import os
from collections import Counter
from typing import Any

from polystore.cli._common import file_manager, place, progress
from polystore.exceptions import StorageFileNotFoundError

HELP = "replay a folder of images into a live viewer (napari or Fiji), grouped as a plate"

VIEWERS = ("napari", "fiji")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("folder")
    parser.add_argument("--to", dest="viewer", choices=VIEWERS, required=True, help="the viewer")
    parser.add_argument("--from", dest="source_backend", default=None, metavar="BACKEND",
                        help="backend of the folder (default: inferred from its path)")
    parser.add_argument("--port", type=int, default=None, help="the viewer's port (default: its own)")
    parser.add_argument("--no-launch", dest="launch", action="store_false",
                        help="fail if no viewer listens instead of starting one")
    parser.add_argument("--convention", default=None,
                        help="plate naming convention or regular expression (default: recognised)")


def plate_order(paths: list[str], prefix: str, convention: str | None) -> list[tuple[str, Any]]:
    """(path, components or None) in plate order; names without plate meaning last, by name."""
    from polystore.plates import column_sort_key, parse_components, row_sort_key

    def key(entry: tuple[str, Any]) -> tuple[Any, ...]:
        path, found = entry
        if found is None:
            return (1, path)
        return (0, row_sort_key(found.row), column_sort_key(found.column), found.field,
                found.channel or 0, found.z or 0, found.t or 0, path)

    read = [(path, parse_components(path[len(prefix):].lstrip("/"), convention)) for path in paths]
    return sorted(read, key=key)


def summary(ordered: list[tuple[str, Any]]) -> str:
    found = [components for _, components in ordered if components is not None]
    wells = Counter(components.well for components in found)
    conventions = sorted({components.convention for components in found})
    plate = f": {len(wells)} well(s) ({', '.join(conventions)})" if found else ""
    other = len(ordered) - len(found)
    return f"{len(ordered)} image(s){plate}" + (f", {other} without plate names" if other else "")


def run(args: argparse.Namespace) -> None:
    from polystore.streaming.viewer import IMAGE_EXTENSIONS  # what every viewer shows as images

    src = place(args.folder, args.source_backend)
    fm = file_manager()
    extensions = sorted(IMAGE_EXTENSIONS)
    files = fm.list_files(src.path, src.backend, extensions=extensions, recursive=True)
    if not files:
        fm.stat(src.path, src.backend)  # a missing folder raises here, naming it
        raise StorageFileNotFoundError(
            src.path, src.backend,
            f"No images ({', '.join(extensions)}) below this folder; name a folder that holds some",
        )
    prefix = src.path.rstrip("/")
    ordered = plate_order(files, "" if prefix in ("", ".") else prefix, args.convention)
    series = os.path.basename(os.path.abspath(prefix)) if src.backend == "disk" else os.path.basename(prefix)
    options: dict[str, Any] = {"launch": args.launch}
    if args.port is not None:
        options["port"] = args.port
    viewer: Any = type(fm.get_backend(args.viewer))(**options)  # the registered class (no socket yet)
    try:
        for index, (path, _components) in enumerate(progress(ordered, total=len(ordered), what="images")):
            relative = path[len(prefix):].lstrip("/") if prefix not in ("", ".") else path
            last = index == len(ordered) - 1  # the command returns once the viewer has them all
            viewer.save(fm.load(path, src.backend), f"{series}/{relative}", wait_for_ack=last)
    finally:
        viewer.close()
    print(f"streamed {summary(ordered)} from {src} to {args.viewer}")
