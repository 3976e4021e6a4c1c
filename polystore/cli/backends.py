"""``polystore backends``: registered backends and installed addons."""

from __future__ import annotations

import argparse

from polystore.cli._common import file_manager
from polystore.registry import registered_backend_classes

HELP = "list registered backends and installed addons"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    del parser


def run(args: argparse.Namespace) -> None:
    classes = registered_backend_classes()
    for name in file_manager().registry.names():
        cls = classes.get(name)
        origin = f"{cls.__module__}.{cls.__qualname__}" if cls else "addon (entry point, not loaded yet)"
        print(f"{name:<14} {origin}")
