"""``polystore`` command line: one module per command, listed in :data:`COMMANDS`.

Each command module defines ``HELP`` (one line), ``add_arguments(parser)`` and
``run(args) -> int | None``. Modules are imported to build the parser, so they import heavy
dependencies (zarr, dask, napari) inside ``run`` only: ``polystore --help`` stays fast.

Errors: every error is printed as one line, ``polystore: <what went wrong and what to do>``,
with exit status 1; errors of dependencies users meet often (missing S3 credentials, a damaged
TIFF) get what to do from :data:`polystore.cli._common.DEPENDENCY_HINTS`. ``--debug`` shows the
traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from types import ModuleType

from polystore.cli._common import one_line

COMMANDS: dict[str, str] = {
    "ls": "polystore.cli.ls",
    "tree": "polystore.cli.tree",
    "info": "polystore.cli.info",
    "cat": "polystore.cli.cat",
    "head": "polystore.cli.head",
    "cp": "polystore.cli.cp",
    "rm": "polystore.cli.rm",
    "convert": "polystore.cli.convert",
    "view": "polystore.cli.view",
    "stream": "polystore.cli.stream",
    "backends": "polystore.cli.backends",
    "formats": "polystore.cli.formats",
    "sweep": "polystore.cli.sweep",
    "repair": "polystore.cli.repair",
}
"""Command name -> module; the order is the order of ``polystore --help``."""

DESCRIPTION = "Save, load, convert and look at arrays wherever they live (disk, zarr, s3, viewers)."


def _command_module(name: str) -> ModuleType:
    return importlib.import_module(COMMANDS[name])


def build_parser() -> argparse.ArgumentParser:
    from polystore import __version__

    parser = argparse.ArgumentParser(prog="polystore", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"polystore {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        module = _command_module(name)
        sub = commands.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(sub)
        sub.set_defaults(run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        status = args.run(args)
    except KeyboardInterrupt:
        print("polystore: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # every error, a dependency's too, is one line unless --debug
        if args.debug:
            raise
        print(f"polystore: {one_line(error)}", file=sys.stderr)
        return 1
    return int(status or 0)


if __name__ == "__main__":
    raise SystemExit(main())
