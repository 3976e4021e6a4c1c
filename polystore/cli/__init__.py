"""``polystore`` command line: one module per command, listed in :data:`COMMANDS`.

Each command module defines ``HELP`` (one line), ``add_arguments(parser)`` and
``run(args) -> int | None``. Modules are imported to build the parser, so they import heavy
dependencies (zarr, dask, napari) inside ``run`` only: ``polystore --help`` stays fast.

Errors: every :class:`~polystore.exceptions.PolystoreError` (and ``OSError``) is printed as one
line, ``polystore: <what went wrong and what to do>``, with exit status 1; ``--debug`` shows
the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from types import ModuleType

from polystore.exceptions import PolystoreError

COMMANDS: dict[str, str] = {
    "backends": "polystore.cli.backends",
    "formats": "polystore.cli.formats",
    "ls": "polystore.cli.ls",
    "info": "polystore.cli.info",
    "convert": "polystore.cli.convert",
    "sweep": "polystore.cli.sweep",
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
    except (PolystoreError, OSError) as error:
        if args.debug:
            raise
        message = " ".join(str(error).split())
        print(f"polystore: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("polystore: interrupted", file=sys.stderr)
        return 130
    return int(status or 0)


if __name__ == "__main__":
    raise SystemExit(main())
