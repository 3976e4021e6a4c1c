"""``polystore ls PATH``: folders and files; a zarr plate as its wells and their fields."""

from __future__ import annotations

import argparse

from polystore.cli._common import add_backend_option, file_manager, infer_backend, place
from polystore.filemanager import FileManager

HELP = "list a folder (folders end in /), or a zarr plate's wells and fields"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_backend_option(parser)
    parser.add_argument("path", nargs="?", default=".")
    parser.add_argument("-r", "--recursive", action="store_true", help="every file below, one per line")
    parser.add_argument("-p", "--pattern", help="glob on file names, e.g. '*_w2*'")
    parser.add_argument("-e", "--extension", action="append", help="keep this extension (repeatable)")


def join(parent: str, name: str) -> str:
    return name if parent in ("", ".") else f"{parent.rstrip('/')}/{name}"


def entry_label(fm: FileManager, path: str, name: str, backend: str, given: str | None) -> str:
    """``name``, ``name/`` for a folder, and what a zarr store in a disk folder is."""
    child = join(path, name)
    child_backend = infer_backend(child, given)
    if not fm.is_dir(child, backend):
        return name
    if child_backend == "zarr" and backend != "zarr":
        from polystore.cli._zarr import plate_summary, zarr_node

        try:
            node = zarr_node(fm.get_backend("zarr"), child)
        except Exception:  # a folder named .zarr that is no store: list it as a folder
            return f"{name}/"
        detail = plate_summary(node) if node.kind == "plate" else f"zarr {node.kind}"
        return f"{name}/  [{detail}]"
    return f"{name}/"


def plate_lines(fm: FileManager, path: str, backend: str) -> list[str] | None:
    """A plate's header line and one line per well with its fields; None if not a plate."""
    from polystore.cli._zarr import plate_summary, plate_wells, well_fields, zarr_node

    store = fm.get_backend(backend)
    node = zarr_node(store, path)
    if node.kind == "well":
        return [f"{path}: well, fields {' '.join(well_fields(node))}"]
    if node.kind != "plate":
        return None
    lines = [f"{path}: {plate_summary(node)}"]
    for well in plate_wells(node):
        try:
            fields = f"fields {' '.join(well_fields(zarr_node(store, join(path, well))))}"
        except FileNotFoundError:  # listed by the plate, gone from the store
            fields = "missing (listed in the plate's metadata, not in the store)"
        lines.append(f"{well}/  {fields}")
    return lines


def run(args: argparse.Namespace) -> None:
    where = place(args.path, args.backend)
    fm = file_manager()
    if args.recursive or args.pattern or args.extension:
        found = fm.list_files(where.path, where.backend, args.pattern, args.extension,
                              recursive=args.recursive)
        print("\n".join(found))
        return
    if not fm.is_dir(where.path, where.backend):
        fm.stat(where.path, where.backend)  # a missing path raises here, naming it
        print(where.path)
        return
    if where.backend == "zarr":
        lines = plate_lines(fm, where.path, where.backend)
        if lines is not None:
            print("\n".join(lines))
            return
    for name in fm.list_dir(where.path, where.backend):
        print(entry_label(fm, where.path, name, where.backend, args.backend))
