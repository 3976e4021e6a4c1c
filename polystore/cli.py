"""``polystore`` command line: look at backends, formats and stores; convert files.

    polystore backends                 registered backends and installed addons
    polystore formats                  extensions, what they hold, their options
    polystore ls DIR [-r] [-p GLOB] [-e EXT ...] [-b BACKEND]
    polystore info PATH [-b BACKEND]   kind, size, and shape/dtype of arrays
    polystore convert SRC DST          e.g. image.npy image.tif --imagej --axes ZYX
    polystore sweep DIR                remove temporary files left by killed writers
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from polystore.arrays import is_array, to_numpy
from polystore.atomic import sweep_stale_temp_files
from polystore.exceptions import PolystoreError
from polystore.filemanager import FileManager
from polystore.formats import registered_formats
from polystore.registry import BackendRegistry, registered_backend_classes


def _cmd_backends(fm: FileManager, _args: argparse.Namespace) -> None:
    classes = registered_backend_classes()
    for name in fm.registry.names():
        cls = classes.get(name)
        origin = f"{cls.__module__}.{cls.__qualname__}" if cls else "addon (entry point, not loaded yet)"
        print(f"{name:<14} {origin}")


def _cmd_formats(_fm: FileManager, _args: argparse.Namespace) -> None:
    for fmt in registered_formats():
        print(f"{', '.join(fmt.extensions):<20} {fmt.description}: {fmt.accepts}")
        for option, meaning in fmt.options.items():
            print(f"{'':<22}{option}: {meaning}")


def _cmd_ls(fm: FileManager, args: argparse.Namespace) -> None:
    found = fm.list_files(
        args.directory, args.backend, args.pattern, args.extension, recursive=args.recursive
    )
    print("\n".join(found))


def _describe(data: Any) -> str:
    if is_array(data):
        array = to_numpy(data)
        return f"array shape={array.shape} dtype={array.dtype}"
    if isinstance(data, dict):
        return f"dict with {len(data)} keys: {', '.join(map(str, list(data)[:8]))}"
    if isinstance(data, list):
        return f"list of {len(data)} items"
    return type(data).__name__


def _cmd_info(fm: FileManager, args: argparse.Namespace) -> None:
    stat = fm.stat(args.path, args.backend)
    size = f", {stat.size} bytes" if stat.size is not None else ""
    print(f"{stat.path}: {stat.kind}{size}")
    if stat.is_file:
        print(f"  {_describe(fm.load(args.path, args.backend))}")


def _cmd_convert(fm: FileManager, args: argparse.Namespace) -> None:
    options: dict[str, Any] = {}
    if args.imagej:
        options["imagej"] = True
    if args.axes:
        options["axes"] = args.axes
    fm.save(fm.load(args.source, args.backend), args.destination, args.backend, **options)
    print(f"{args.source} -> {args.destination}")


def _cmd_sweep(_fm: FileManager, args: argparse.Namespace) -> None:
    removed = sweep_stale_temp_files(args.directory)
    print(f"removed {len(removed)} stale temporary file(s)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="polystore", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument("-b", "--backend", default="disk", help="backend name (default: disk)")
        return sub

    command("backends", "list registered backends").set_defaults(run=_cmd_backends)
    command("formats", "list file formats").set_defaults(run=_cmd_formats)
    ls = command("ls", "list files")
    ls.add_argument("directory")
    ls.add_argument("-r", "--recursive", action="store_true")
    ls.add_argument("-p", "--pattern", help="glob on file names, e.g. '*_w2*'")
    ls.add_argument("-e", "--extension", action="append", help="keep this extension (repeatable)")
    ls.set_defaults(run=_cmd_ls)
    info = command("info", "describe a file or directory")
    info.add_argument("path")
    info.set_defaults(run=_cmd_info)
    convert = command("convert", "load a file and save it in the format of another extension")
    convert.add_argument("source")
    convert.add_argument("destination")
    convert.add_argument("--imagej", action="store_true", help="write an ImageJ hyperstack TIFF")
    convert.add_argument("--axes", help="axis letters for TIFF, e.g. TZCYX")
    convert.set_defaults(run=_cmd_convert)
    sweep = command("sweep", "remove temporary files of writers that died")
    sweep.add_argument("directory")
    sweep.set_defaults(run=_cmd_sweep)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.run(FileManager(BackendRegistry()), args)
    except (PolystoreError, OSError) as error:
        print(f"polystore: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
