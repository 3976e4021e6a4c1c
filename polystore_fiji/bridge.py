"""The Fiji bridge: a process that runs ImageJ and shows what pipelines stream to it.

    python -m polystore_fiji [--port 5571] [--host 127.0.0.1] [--ij-jar PATH | --fiji-dir DIR | --fiji]
                             [--headless] [--convention NAME | --pattern REGEX]
    polystore-fiji ...            (the same, as a console script)

It starts ImageJ (:mod:`polystore_fiji.jvm`), binds the stream (``port``, acknowledgements on
``port + 1``) and the control channel (``port + 2``) through
:class:`polystore.streaming.viewer.ViewerService`, and then shows each stream item:

* images and labels go into hyperstack windows, one per well of a plate, labels in a window
  of their own (:mod:`polystore_fiji.placement`, :mod:`polystore_fiji.hyperstack`);
* ``.roi.zip`` payloads (kind ``roi_set``) go into the RoiManager at their c/z/t positions;
  points and shapes (arrays of y, x vertices; :mod:`polystore.rois`) become ROIs on the
  window's plane of their path, and stay on it as the window grows;
* tables (kind ``table``: a DataFrame, or numbers under a ``.csv`` path) become ResultsTables
  with their column names and values (:mod:`polystore_fiji.tables`).

The questions the control channel answers are :mod:`polystore_fiji.control`'s; how many items
are done, :mod:`polystore_fiji.progress`'s. It stops on SIGTERM, Ctrl-C, the ``quit`` op, or
when the user closes ImageJ's main window.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import logging
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from polystore.exceptions import MissingDependencyError, ViewerError
from polystore.plates import PlateNameError
from polystore.streaming.protocol import StreamItem
from polystore.streaming.viewer import ViewerService
from polystore_fiji.backend import FijiStreamingBackend
from polystore_fiji.hyperstack import HyperstackAssembler
from polystore_fiji.jvm import (
    ImageJRuntime,
    ImageJStartError,
    check_display,
    java_class,
    on_edt,
    start_imagej,
)
from polystore_fiji.placement import WindowPlacer, path_title
from polystore_fiji.progress import Progress
from polystore_fiji.rois import RoiStore, java_rois_of_item
from polystore_fiji.tables import show_table, table_columns, table_from_columns
from polystore_fiji.window import TrackedRoi

logger = logging.getLogger("polystore_fiji.bridge")

MAX_CONVERTING = 4
"""Images being converted to Java arrays at once, at most (received but not yet converted)."""
EXIT_SETUP_FAILED = 2


@dataclass(frozen=True)
class StreamedTable:
    """A ResultsTable made from a streamed table, and the column order it was sent with."""

    table: Any
    columns: list[str]


class FijiBridge:
    """The bridge's state and what it does with stream items; ImageJ must already run (see
    :func:`main`). Its control ops are :data:`polystore_fiji.control.CONTROL_OPS`."""

    def __init__(self, runtime: ImageJRuntime, port: int = FijiStreamingBackend.DEFAULT_PORT,
                 host: str = "127.0.0.1", *, allow_macros: bool = False,
                 convention: str | None = None) -> None:
        from polystore_fiji.control import handlers

        self.allow_macros = allow_macros
        """Whether the ``run_macro`` op runs code: ImageJ macros can run shell commands
        (``exec``), and any local user can reach the control port, so it is off by default."""
        self.runtime = runtime
        self.headless = runtime.headless
        self.progress = Progress()
        self.assembler = HyperstackAssembler(
            show=not self.headless, placer=WindowPlacer(convention),
            run_later=None if self.headless else self._run_later, on_placed=self.progress.done,
            # half the heap: ImageJ duplicates a stack for many commands, and a window's
            # positions are every combination of the indices its items name
            max_window_bytes=int(java_class("java.lang.Runtime").getRuntime().maxMemory()) // 2,
        )
        self.roi_store = RoiStore()
        self.tables: dict[str, StreamedTable] = {}
        """ResultsTables made from streamed tables, by title (headless JVMs cannot show them)."""
        self.images: dict[str, Any] = {}
        """Images sent with the ``put_image`` op, by title."""
        self.stopping = threading.Event()
        # Images are converted to Java arrays by two threads, so that one converts while the
        # receiver takes the next frame and the other converts that (the copy into Java runs
        # without the GIL); a few at a time, to bound memory.
        self._converters = ThreadPoolExecutor(max_workers=2, thread_name_prefix="polystore-fiji-convert")
        self._convert_slots = threading.BoundedSemaphore(MAX_CONVERTING)
        self.service = ViewerService(
            FijiStreamingBackend.VIEWER_TYPE, port, host, on_item=self.on_item,
            handlers=handlers(self), shm_prefixes=(FijiStreamingBackend.SHM_PREFIX,),
            # items are views of the sender's slots: the converting threads copy them straight
            # into Java (see convert.java_pixels), and the receiver thread copies nothing
            zero_copy=True,
        )

    # -- lifetime ------------------------------------------------------------------------------
    def start(self) -> FijiBridge:
        self.service.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self.service.stop()
        self._converters.shutdown(wait=True)

    def _run_later(self, function: Callable[[], None]) -> None:
        from polystore_fiji.jvm import _python_runnable

        java_class("java.awt.EventQueue").invokeLater(_python_runnable()(function))

    def on_edt(self, function: Callable[[], Any]) -> Any:
        """``function()`` on the event thread (here, headless) and its result."""
        return function() if self.headless else on_edt(function)

    # -- stream items -------------------------------------------------------------------------
    def on_item(self, item: StreamItem) -> None:
        """Show one validated item (receiver thread); every item is reported done once."""
        try:
            if self.ITEM_KINDS[item.kind](self, item):
                return  # reported by whichever thread finishes it
        except Exception as error:
            logger.exception("could not show '%s'", item.path)
            self.progress.done(self._title_of(item), error)
            return
        self.progress.done(self._title_of(item))

    def _title_of(self, item: StreamItem) -> str:
        """The window an item went to, for messages (its path if placing it is what failed)."""
        try:
            if item.kind == "table":
                return path_title(item.path)
            return self.assembler.placer.title(item.path, item.metadata, item.kind)
        except Exception:
            return item.path

    def _finish_later(self, title: str, function: Callable[[], None]) -> bool:
        """Run ``function`` on the event thread behind the updates queued so far, and report the
        item done (or failed) there."""
        def run() -> None:
            try:
                function()
            except Exception as error:
                logger.exception("could not show '%s'", title)
                self.progress.done(title, error)
                return
            self.progress.done(title)

        self.assembler.in_order(run)
        return True

    def _show_image(self, item: StreamItem) -> bool:
        sequence = self.assembler.next_sequence()  # here, in arrival order
        self._convert_slots.acquire()
        try:
            self._converters.submit(self._convert, item, sequence)
        except BaseException:
            self._convert_slots.release()
            raise
        return True

    def _convert(self, item: StreamItem, sequence: int) -> None:
        try:
            self.assembler.submit(item.array, item.path, item.metadata, sequence, item.kind)
        except Exception as error:
            logger.exception("could not show '%s'", item.path)
            self.progress.done(self._title_of(item), error)
        finally:
            self._convert_slots.release()

    def _add_rois(self, item: StreamItem) -> bool:
        """A ROI set, or shapes/points (vertex arrays), into the RoiManager on the item's window.

        Vertices carry no plane: they go on the window's plane of the item's path (its C, Z, and
        T from field and t), named after it, and stay there while the window grows; the planes
        may still be converting, or come later, so the window places them when it has the plane."""
        rois = java_rois_of_item(item.kind, item.array, item.metadata)
        placement = self.assembler.placer.place(item.path, item.metadata)
        key = None if item.kind == "roi_set" else placement.origin
        if key is not None:
            for roi in rois:
                roi.setName(path_title(item.path))

        def add() -> None:
            held = self.roi_store.add(rois)
            self.assembler.track_rois(placement.title, [TrackedRoi(roi, key) for roi in held])

        return self._finish_later(placement.title, add)

    def _add_table(self, item: StreamItem) -> bool:
        """A ResultsTable, filled and shown here, on the receiver thread, as ImageJ's own
        measuring plugins show theirs from their threads: ``ResultsTable.show`` turns every row
        into a line of text (about a second for 300 000 rows), which on the event thread froze
        every window for that long."""
        title = path_title(item.path)
        columns = table_columns(item.table(), item.metadata)
        streamed = StreamedTable(table_from_columns(columns), list(columns))
        show_table(streamed.table, title)
        self.tables[title] = streamed
        return False

    ITEM_KINDS: dict[str, Callable[[FijiBridge, StreamItem], bool]] = {
        "image": _show_image,
        "labels": _show_image,
        "roi_set": _add_rois,
        "points": _add_rois,
        "shapes": _add_rois,
        "table": _add_table,
    }
    """Item kind -> what to do; True when another thread reports the item done."""


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="polystore-fiji",
        description="Run ImageJ (Fiji through pyimagej, or ImageJ 1 from a jar) and show what "
        "pipelines stream to it with backend='fiji'.",
    )
    parser.add_argument("--port", type=int, default=FijiStreamingBackend.DEFAULT_PORT,
                        help="stream port (acks on port+1, control on port+2); default %(default)s")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind; default %(default)s")
    parser.add_argument("--ij-jar",
                        help="ImageJ jar (default: $POLYSTORE_IJ_JAR, else /usr/share/java/ij.jar)")
    parser.add_argument("--fiji-dir", help="a Fiji.app folder: start Fiji through pyimagej")
    parser.add_argument("--fiji", action="store_true",
                        help="start Fiji through pyimagej from Maven (sc.fiji:fiji; downloads on first use)")
    parser.add_argument("--headless", action="store_true",
                        help="no display: images kept without windows, no RoiManager window")
    parser.add_argument("--allow-macros", action="store_true",
                        help="run ImageJ macros sent with the run_macro op (they can run shell "
                        "commands: only where every local user is trusted)")
    parser.add_argument("--convention", default=None,
                        help="the naming convention of the pipeline's paths (imagexpress, well-folders, "
                        "ngff, opera-phenix, yokogawa, cellinsight, incucyte, or one registered); "
                        "default: what the sender read from each path")
    parser.add_argument("--pattern", default=None,
                        help="a regular expression with named groups (well or row + column; plate, "
                        "field/site, channel, z, t) read from each path; overrides --convention")
    parser.add_argument("--log-level", default="INFO", help="logging level; default %(default)s")
    return parser.parse_args(argv)


def _show_imagej_ui(runtime: ImageJRuntime) -> None:
    """ImageJ's main window (menus and tools), as a user of the bridge expects."""
    if runtime.headless or runtime.flavor == "attached":
        return
    if runtime.flavor == "fiji" and runtime.gateway is not None:
        runtime.gateway.ui().showUI()
        return
    imagej = java_class("ij.ImageJ")
    if java_class("ij.IJ").getInstance() is None:
        on_edt(lambda: imagej(imagej.EMBEDDED))  # EMBEDDED: quitting ImageJ does not exit Python


def main(argv: Sequence[str] | None = None) -> int:
    """Run the bridge until it is told to stop; the exit status."""
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="polystore-fiji: %(levelname)s %(message)s")
    logging.getLogger("scyjava").setLevel(logging.WARNING)  # "Fetching zulu-jre" when it fetches nothing
    try:
        placer = WindowPlacer(args.pattern or args.convention)  # a broken one fails before ImageJ starts
    except PlateNameError as error:
        print(f"polystore-fiji: {error}", file=sys.stderr)
        return EXIT_SETUP_FAILED
    try:
        check_display(args.headless)  # before minutes of starting Fiji for nothing
        runtime = start_imagej(
            ij_jar=args.ij_jar, fiji_dir=args.fiji_dir, fiji=args.fiji, headless=args.headless
        )
        check_display(runtime.headless)
    except (ImageJStartError, MissingDependencyError) as error:
        print(f"polystore-fiji: {error}", file=sys.stderr)
        return EXIT_SETUP_FAILED
    _show_imagej_ui(runtime)
    bridge = FijiBridge(runtime, args.port, args.host, allow_macros=args.allow_macros,
                        convention=placer.convention)
    # What starting ImageJ made (JPype's proxies of Java classes, mostly) lives as long as the
    # JVM: frozen, Python's full collections stop scanning it every time (12-37 ms each, all
    # threads of the bridge stopped and the stream with them)
    gc.collect()
    gc.freeze()
    try:
        bridge.start()
    except ViewerError as error:
        print(f"polystore-fiji: {error}", file=sys.stderr)
        return EXIT_SETUP_FAILED
    with contextlib.suppress(ValueError):  # not the main thread (embedded use): no signals
        signal.signal(signal.SIGTERM, lambda *_: bridge.stopping.set())
    ui_shown = java_class("ij.IJ").getInstance() is not None
    print(f"polystore-fiji: ImageJ {runtime.version} ({runtime.flavor}) listening on "
          f"{args.host}:{args.port} (control {bridge.service.control_port})", flush=True)
    try:
        while not bridge.stopping.wait(0.25):
            if ui_shown and java_class("ij.IJ").getInstance() is None:
                logger.info("ImageJ's main window was closed: stopping")
                break
    except KeyboardInterrupt:
        pass
    bridge.stop()
    return 0
