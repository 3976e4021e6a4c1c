"""``polystore formats``: extensions, what they hold, their options."""

from __future__ import annotations

import argparse

from polystore.formats import registered_formats

HELP = "list file formats: extensions, what they hold, their options"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    del parser


def run(args: argparse.Namespace) -> None:
    for fmt in registered_formats():
        print(f"{', '.join(fmt.extensions):<20} {fmt.description}: {fmt.accepts}")
        for option, meaning in fmt.options.items():
            print(f"{'':<22}{option}: {meaning}")
