"""napari + polystore: a pipeline in another process streams a plate into a live viewer.

    python demos/napari_demo.py                 # or: make demo
    python demos/napari_demo.py --wells 6 --sites 4 --size 512

This process opens napari with the plugin's stream receiver docked (what File > Acquire >
Open polystore stream does); a second process, the "pipeline", makes a synthetic screening
plate (nuclei and cell bodies, two channels, several wells and sites) and streams each image
with ``fm.save(img, "demo_plate/B03_s2_w1.tif", backend="napari")``, plus the cell outlines it
"segmented" as ImageJ ROI sets (``.roi.zip``). The viewer builds one layer per channel with
well and site sliders, and a shapes layer with the outlines.

With a screen, the window stays open when the pipeline is done. Without one (no ``DISPLAY``),
the demo starts Xvfb itself, saves a screenshot PNG (``$TMPDIR/polystore_napari_demo.png``
unless ``--screenshot`` says where), prints where it is and exits.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """The plugin's default port if it is free (with the two after it), else any free triple."""
    from polystore.streaming.viewer import free_ports

    return free_ports(preferred=[5561])


# -- the pipeline (second process) -----------------------------------------------------------------


def synthetic_site(rng: np.random.Generator, size: int, cells: int) -> tuple[np.ndarray, np.ndarray, list]:
    """Two channels of one field of view (nuclei, cell bodies) and the cells' outlines as ROIs."""
    from roifile import ROI_TYPE, ImagejRoi

    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    nuclei = np.zeros((size, size), np.float32)
    bodies = np.zeros((size, size), np.float32)
    rois = []
    radius = size / 40
    for index in range(cells):
        cy, cx = rng.uniform(radius * 3, size - radius * 3, 2)
        r = radius * rng.uniform(0.8, 1.4)
        distance = (yy - cy) ** 2 + (xx - cx) ** 2
        nuclei += rng.uniform(0.6, 1.0) * np.exp(-distance / (2 * r**2))
        bodies += rng.uniform(0.3, 0.6) * np.exp(-distance / (2 * (2.6 * r) ** 2))
        box = int(2.6 * r * 1.5)
        rois.append(ImagejRoi(roitype=ROI_TYPE.OVAL, top=int(cy) - box, left=int(cx) - box,
                              bottom=int(cy) + box, right=int(cx) + box, name=f"cell{index + 1}"))
    noise = rng.normal(0, 0.03, (2, size, size))
    channels = [np.clip(image + n, 0, None) for image, n in zip((nuclei, bodies), noise, strict=True)]
    scaled = [(c / max(float(c.max()), 1e-6) * 40000 + 500).astype(np.uint16) for c in channels]
    return scaled[0], scaled[1], rois


def pipeline(wells: int, sites: int, size: int, plate: str) -> None:
    """Stream a plate to the napari viewer, image by image, as a pipeline's workers finish them."""
    from polystore.filemanager import FileManager

    fm = FileManager()
    rng = np.random.default_rng(2024)
    names = [f"{'ABCDEFGH'[i // 4]}{i % 4 + 1:02d}" for i in range(wells)]
    start = time.monotonic()
    count = 0
    for well_index, well in enumerate(names):
        for site in range(1, sites + 1):
            nuclei, bodies, rois = synthetic_site(rng, size, cells=6 + 3 * well_index)
            fm.save(nuclei, f"{plate}/{well}_s{site}_w1.tif", backend="napari")
            fm.save(bodies, f"{plate}/{well}_s{site}_w2.tif", backend="napari")
            fm.save(rois, f"{plate}/{well}_s{site}.roi.zip", backend="napari")
            count += 3
    # the viewer answers what it shows: read one image back to check it arrived whole
    shown = fm.load(f"{plate}/{names[-1]}_s{sites}_w2.tif", backend="napari")
    assert np.array_equal(shown, bodies), "the viewer shows another image than the one sent"
    fm.get_backend("napari").close()
    print(f"pipeline: streamed {count} items ({wells} wells x {sites} sites x 2 channels + ROI sets) "
          f"in {time.monotonic() - start:.1f} s", flush=True)


# -- the viewer (this process) ------------------------------------------------------------------------


def viewer_main(arguments: argparse.Namespace) -> int:
    from polystore_napari.headless import virtual_display

    had_display = bool(os.environ.get("DISPLAY"))
    with virtual_display():
        import napari
        from qtpy.QtCore import QTimer

        port = free_port()
        viewer = napari.Viewer(title="polystore demo", show=True)
        viewer.window.resize(1500, 950)
        _, receiver = viewer.window.add_plugin_dock_widget("polystore", "Stream receiver")
        viewer.window.add_plugin_dock_widget("polystore", "Plate map")  # wells marked as they arrive
        receiver.port_edit.value = port
        if not receiver.start():
            print(f"demo: the receiver could not listen: {receiver.error}", file=sys.stderr)
            return 1
        print(f"demo: napari listens on 127.0.0.1:{port}; starting the pipeline process", flush=True)
        environment = {**os.environ, "POLYSTORE_NAPARI_PORT": str(port)}
        process = subprocess.Popen(
            [sys.executable, __file__, "--pipeline", "--wells", str(arguments.wells), "--sites",
             str(arguments.sites), "--size", str(arguments.size), "--plate", arguments.plate],
            env=environment, cwd=ROOT,
        )
        outcome: dict[str, int] = {}

        def check() -> None:
            if process.poll() is None:
                return
            timer.stop()
            receiver.show_pending()
            outcome["status"] = process.returncode
            receiver.update_status()
            print(f"demo: viewer received {receiver.received} items; layers: "
                  f"{', '.join(layer.name for layer in viewer.layers)}; sliders: "
                  f"{', '.join(viewer.dims.axis_labels)}", flush=True)
            # show a busy well (the last), first site
            step = list(viewer.dims.current_step)
            step[0] = arguments.wells - 1
            viewer.dims.current_step = tuple(step)
            if not had_display or arguments.screenshot:
                default = Path(tempfile.gettempdir()) / "polystore_napari_demo.png"
                path = Path(arguments.screenshot or default).resolve()
                QTimer.singleShot(500, lambda: finish(path))

        def finish(path: Path) -> None:
            viewer.reset_view()  # after the layout has settled: the plate fills the canvas
            image = viewer.screenshot(str(path), canvas_only=False)
            print(f"demo: screenshot {image.shape[1]}x{image.shape[0]} saved to {path}", flush=True)
            viewer.close()

        timer = QTimer()
        timer.timeout.connect(check)
        timer.start(100)
        napari.run()  # closing the window stops the receiver
        if process.poll() is None:
            process.terminate()
        return outcome.get("status", 1)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--wells", type=int, default=4)
    parser.add_argument("--sites", type=int, default=3)
    parser.add_argument("--size", type=int, default=384, help="image width and height in pixels")
    parser.add_argument("--plate", default="demo_plate")
    parser.add_argument("--screenshot", default=None,
                        help="save a screenshot here (without a screen: always, by default to "
                             "$TMPDIR/polystore_napari_demo.png)")
    parser.add_argument("--pipeline", action="store_true", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.pipeline:
        pipeline(arguments.wells, arguments.sites, arguments.size, arguments.plate)
        return 0
    return viewer_main(arguments)


if __name__ == "__main__":
    raise SystemExit(main())
