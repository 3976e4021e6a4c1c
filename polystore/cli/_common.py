"""What several commands share: the FileManager they act through, the backend options."""

from __future__ import annotations

import argparse

from polystore.filemanager import FileManager
from polystore.registry import BackendRegistry


def file_manager() -> FileManager:
    return FileManager(BackendRegistry())


def add_backend_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-b", "--backend", default="disk", help="backend name (default: disk)")
