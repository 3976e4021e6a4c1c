"""Start a napari viewer with the stream receiver listening: what launch-on-demand runs.

``python -m polystore_napari --port 5561 --host 127.0.0.1`` (``NapariStreamingBackend(launch=True)``
runs this when no viewer answers). It exits with status 2 when the address is taken, so
the pipeline that launched it reports the reason instead of waiting.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from polystore_napari.backend import NapariStreamingBackend


def parse_arguments(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m polystore_napari",
        description="Open napari with polystore's stream receiver listening.",
    )
    parser.add_argument("--port", type=int, default=None,
                        help=f"data port (acks on port+1, control on port+2; default "
                             f"$POLYSTORE_NAPARI_PORT or {NapariStreamingBackend.DEFAULT_PORT})")
    parser.add_argument("--host", default=None, help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--convention", default=None,
                        help="the naming convention of the pipeline's paths (imagexpress, opera-phenix, "
                             "yokogawa, ...; docs/plates.md); default: as the sender read them")
    parser.add_argument("--pattern", default=None,
                        help="regular expression with named groups (well or row + column, site, channel, "
                             "z, t, plate) read from each path; overrides --convention")
    parser.add_argument("--channels", choices=["layers", "axis"], default="layers",
                        help="one layer per channel (default) or a channel axis")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    import napari

    from polystore_napari.plate_map import PlateMapWidget
    from polystore_napari.receiver_widget import StreamReceiverWidget

    viewer = napari.Viewer(title="napari (polystore stream)")
    widget = StreamReceiverWidget(
        viewer, host=arguments.host, port=arguments.port, pattern=arguments.pattern,
        convention=arguments.convention, channel_mode=arguments.channels,
    )
    viewer.window.add_dock_widget(widget, name="Stream receiver (polystore)", area="right")
    viewer.window.add_dock_widget(PlateMapWidget(viewer), name="Plate map (polystore)", area="right")
    if widget.error is not None:
        print(f"polystore_napari: {widget.error}", file=sys.stderr)
        viewer.close()
        return 2
    print(f"polystore_napari: listening on {widget.address}", flush=True)
    napari.run()
    return 0
