"""``polystore tree PATH``: folders and files below PATH, indented; zarr stores by their nodes."""

from __future__ import annotations

import argparse

from polystore.cli._common import add_backend_option, file_manager, infer_backend, place
from polystore.cli.ls import join
from polystore.filemanager import FileManager

HELP = "show the folders and files below a path as a tree (zarr stores by their images)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_backend_option(parser)
    parser.add_argument("path", nargs="?", default=".")
    parser.add_argument("-L", "--level", type=int, default=None, help="descend at most this many levels")


def walk(fm: FileManager, path: str, backend: str, given: str | None, depth: int,
         limit: int | None, prefix: str = "") -> list[str]:
    """Lines of the tree below ``path``; a ``.zarr`` folder is entered as a zarr store."""
    if limit is not None and depth >= limit:
        return []
    names = fm.list_dir(path, backend)
    lines: list[str] = []
    for index, name in enumerate(names):
        last = index == len(names) - 1
        child = join(path, name)
        child_backend = backend if backend == "zarr" else infer_backend(child, given)
        is_dir = fm.is_dir(child, child_backend)
        lines.append(f"{prefix}{'└── ' if last else '├── '}{name}{'/' if is_dir else ''}")
        if is_dir:
            indent = prefix + ("    " if last else "│   ")
            lines += walk(fm, child, child_backend, given, depth + 1, limit, indent)
    return lines


def run(args: argparse.Namespace) -> None:
    where = place(args.path, args.backend)
    fm = file_manager()
    if not fm.is_dir(where.path, where.backend):
        fm.stat(where.path, where.backend)  # a missing path raises here, naming it
        print(where.path)
        return
    print(f"{where.path.rstrip('/')}/")
    for line in walk(fm, where.path, where.backend, args.backend, 0, args.level):
        print(line)
