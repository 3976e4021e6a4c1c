"""polystore_fiji: the Fiji/ImageJ bridge.

* ``fm.save(img, "plate/A01_s1_w2.tif", backend="fiji")`` streams to the bridge
  (:class:`FijiStreamingBackend`), which assembles hyperstack windows;
* ``python -m polystore_fiji`` (or ``polystore-fiji``) runs the bridge;
* :class:`FijiClient` asks it which windows it shows and fetches images, ROIs and results;
* :mod:`polystore_fiji.scripting` converts arrays <-> ImagePlus in a session that drives
  ImageJ itself (pyimagej).

Importing this package imports neither JPype nor scyjava: names load on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from polystore_fiji.backend import FijiStreamingBackend
    from polystore_fiji.client import FijiClient
    from polystore_fiji.jvm import ImageJNotFoundError, ImageJStartError, JavaNotFoundError, start_imagej
    from polystore_fiji.scripting import from_imageplus, show, to_imageplus

_EXPORTS = {
    "FijiStreamingBackend": "polystore_fiji.backend",
    "FijiClient": "polystore_fiji.client",
    "ImageJStartError": "polystore_fiji.jvm",
    "ImageJNotFoundError": "polystore_fiji.jvm",
    "JavaNotFoundError": "polystore_fiji.jvm",
    "start_imagej": "polystore_fiji.jvm",
    "from_imageplus": "polystore_fiji.scripting",
    "show": "polystore_fiji.scripting",
    "to_imageplus": "polystore_fiji.scripting",
}

__all__ = [
    "FijiClient",
    "FijiStreamingBackend",
    "ImageJNotFoundError",
    "ImageJStartError",
    "JavaNotFoundError",
    "from_imageplus",
    "show",
    "start_imagej",
    "to_imageplus",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        # the module __getattr__ protocol: hasattr() needs an AttributeError
        raise AttributeError(f"module 'polystore_fiji' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
