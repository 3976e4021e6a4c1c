"""``polystore view PATH``: napari with polystore's plugin on a store or file.

The store browser is docked with PATH as its place and PATH is opened as layers, as a
double-click there would (a zarr plate: one lazy layer per channel with well and field
sliders; a pyramid: a multiscale layer; a file: an image, labels or shapes). ``--screenshot``
saves the window instead of showing it, prints the layers and exits (under Xvfb when there is
no display): scripts, tests and the documentation's pictures use it.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from polystore.cli._common import add_backend_option, file_manager, place
from polystore.exceptions import PolystoreError, ViewerError
from polystore.lazy import optional_import

HELP = "open a store or file in napari with polystore's plugin (store browser + layers)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_backend_option(parser)
    parser.add_argument("path")
    parser.add_argument("--screenshot", metavar="PNG",
                        help="save a screenshot of the window to PNG, print the layers and exit")


def open_viewer(path: str, backend: str, title: str) -> tuple[Any, list[Any]]:
    """A napari viewer with the store browser on ``path`` and its layers added."""
    napari = optional_import("napari", extra="napari", purpose="polystore view")
    from polystore_napari.browser_widget import StoreBrowserWidget

    viewer = napari.Viewer(title=title)
    browser = StoreBrowserWidget(viewer, places=())
    viewer.window.add_dock_widget(browser, name="Store browser (polystore)", area="right")
    item = browser.add_place(backend, path)
    layers = browser.open_item(item) if item is not None else []
    if item is None or (not layers and browser.status.value):  # the browser's status says why
        viewer.close()
        raise ViewerError(f"napari could not open '{path}' ({backend}): {browser.status.value}")
    return viewer, layers


def layer_lines(layers: list[Any]) -> list[str]:
    return [f"{type(layer).__name__.lower()} '{layer.name}' shape={tuple(layer.data.shape)}"
            if hasattr(layer.data, "shape") else f"{type(layer).__name__.lower()} '{layer.name}'"
            for layer in layers]


def run(args: argparse.Namespace) -> None:
    where = place(args.path, args.backend)
    fm = file_manager()
    if not fm.exists(where.path, where.backend):
        fm.stat(where.path, where.backend)  # raises, naming what is missing, before napari starts
    title = f"polystore: {where}"
    if args.screenshot:
        from polystore_napari.headless import virtual_display

        with virtual_display():
            viewer, layers = open_viewer(where.path, where.backend, title)
            try:
                viewer.window.resize(1200, 800)  # a fixed size: pictures comparable run to run
                from qtpy.QtWidgets import QApplication

                for _ in range(5):  # let Qt lay out the docked browser and draw before the picture
                    QApplication.processEvents()
                viewer.reset_view()  # the whole of the layers in the canvas, at its new size
                viewer.screenshot(os.fspath(args.screenshot), canvas_only=False)
            finally:
                viewer.close()
        print("\n".join(layer_lines(layers)))
        print(f"screenshot: {args.screenshot}")
        return
    if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
        raise PolystoreError(
            "No display for napari: run it on a desktop, under xvfb-run, or with --screenshot PNG."
        )
    napari = optional_import("napari", extra="napari", purpose="polystore view")
    viewer, layers = open_viewer(where.path, where.backend, title)
    print("\n".join(layer_lines(layers)))
    napari.run()
