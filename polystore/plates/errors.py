"""The plate model's error (kept apart so every module of the package can raise it)."""

from __future__ import annotations

from polystore.exceptions import PolystoreError


class PlateNameError(PolystoreError, ValueError):
    """A path's plate name cannot be read safely: ambiguous (two conventions disagree), out of
    a convention's range (``w0`` where wavelengths count from 1), or not a well name."""
