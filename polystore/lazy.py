"""Import optional dependencies at first use, with an error that names the extra to install."""

from __future__ import annotations

import importlib
from types import ModuleType

from polystore.exceptions import MissingDependencyError


def optional_import(module: str, *, extra: str, purpose: str) -> ModuleType:
    """Import ``module`` or raise :class:`MissingDependencyError` naming ``polystore[extra]``."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        top = module.split(".")[0]
        if error.name is not None and error.name.split(".")[0] != top:
            raise  # the package is there but one of *its* dependencies is broken: show that
        raise MissingDependencyError(top, extra, purpose) from error
