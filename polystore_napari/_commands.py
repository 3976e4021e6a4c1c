"""Commands napari runs from its menus (imported only when one runs, inside napari)."""

from __future__ import annotations

# a runtime import, not TYPE_CHECKING: napari injects the viewer by resolving this annotation
import napari.viewer

PLUGIN = "polystore"
RECEIVER = "Stream receiver"


def open_stream(viewer: napari.viewer.Viewer) -> None:
    """File > Acquire > Open polystore stream: dock the stream receiver (listening at once)."""
    viewer.window.add_plugin_dock_widget(PLUGIN, RECEIVER)
