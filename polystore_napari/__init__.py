"""polystore_napari: the napari plugin (stream receiver, store browser, reader and writer).

Pipelines import :mod:`polystore_napari.backend` (through the ``polystore.backends`` entry
point, for ``fm.save(..., backend="napari")``), so importing this package imports neither Qt
nor napari; the widgets, reader and writer are imported by napari when first used
(``napari.yaml``).
"""

from __future__ import annotations

from typing import Any

__all__ = ["NapariStreamingBackend"]


def __getattr__(name: str) -> Any:
    if name == "NapariStreamingBackend":
        from polystore_napari.backend import NapariStreamingBackend

        return NapariStreamingBackend
    # the module __getattr__ protocol: hasattr() needs an AttributeError
    raise AttributeError(f"module 'polystore_napari' has no attribute {name!r}")
