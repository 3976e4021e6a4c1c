"""The Fiji bridge: a process that runs ImageJ and shows what pipelines stream to it.

    python -m polystore_fiji [--port 5571] [--host 127.0.0.1] [--ij-jar PATH | --fiji-dir DIR | --fiji]
                             [--headless] [--convention NAME | --pattern REGEX]
    polystore-fiji ...            (the same, as a console script)

It starts ImageJ (:mod:`polystore_fiji.jvm`), binds the stream (``port``, acknowledgements on
``port + 1``) and the control channel (``port + 2``) through
:class:`polystore.streaming.viewer.ViewerService`, and then:

* images and labels go into hyperstack windows, one per well of a plate
  (:mod:`polystore_fiji.placement`, :mod:`polystore_fiji.hyperstack`);
* ``.roi.zip`` payloads (kind ``roi_set``) go into the RoiManager at their c/z/t positions;
  points and shapes (arrays of y, x vertices; :mod:`polystore.rois`) become ROIs on the
  window's plane of their path;
* tables (kind ``table``: a DataFrame, or numbers under a ``.csv`` path) become ResultsTables
  with their column names and values (:mod:`polystore_fiji.tables`);
* the control ops in :data:`CONTROL_OPS` answer questions: which windows exist, their
  pixels, the ROIs and results drawn and measured in ImageJ, a macro to run, a screenshot.

It stops on SIGTERM, Ctrl-C, the ``quit`` op, or when the user closes ImageJ's main window.
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
from typing import Any

import numpy as np

from polystore.exceptions import MissingDependencyError, ViewerError
from polystore.plates import PlateNameError
from polystore.streaming.protocol import StreamItem
from polystore.streaming.viewer import Handler, HandlerResult, ViewerService, array_reply
from polystore_fiji.backend import FijiStreamingBackend
from polystore_fiji.convert import describe_imageplus, from_imageplus, imageplus_axes, to_imageplus
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
from polystore_fiji.rois import (
    RoiStore,
    java_rois_from_zip,
    java_rois_of_item,
    overlay_rois,
    zip_of_java_rois,
)
from polystore_fiji.tables import (
    MAIN_TABLE,
    dataframe_columns,
    find_results_table,
    results_columns,
    results_table_titles,
    table_from_columns,
)

logger = logging.getLogger("polystore_fiji.bridge")

MAX_WAIT_S = 120.0
SETTLE_TIMEOUT_S = 5.0
"""How long a question about the windows waits for items already received to be shown."""
MAX_CONVERTING = 4
"""Images being converted to Java arrays at once, at most (received but not yet converted)."""
EXIT_SETUP_FAILED = 2


ControlOp = Callable[["FijiBridge", dict[str, Any], list[memoryview]], HandlerResult]
"""A control op's method: ``op(bridge, params, buffers)``."""


def _text(params: dict[str, Any], name: str, default: str | None = None) -> str:
    value = params.get(name, default)
    if not isinstance(value, str):
        raise ViewerError(f"parameter {name!r} must be a string")
    return value


class FijiBridge:
    """The bridge's state and its control ops; ImageJ must already run (see :func:`main`)."""

    def __init__(self, runtime: ImageJRuntime, port: int = FijiStreamingBackend.DEFAULT_PORT,
                 host: str = "127.0.0.1", *, allow_macros: bool = False,
                 convention: str | None = None) -> None:
        self.allow_macros = allow_macros
        """Whether the ``run_macro`` op runs code: ImageJ macros can run shell commands
        (``exec``), and any local user can reach the control port, so it is off by default."""
        self.runtime = runtime
        self.headless = runtime.headless
        self.assembler = HyperstackAssembler(
            show=not self.headless, placer=WindowPlacer(convention),
            run_later=None if self.headless else self._run_later, on_placed=self._item_done,
        )
        self.roi_store = RoiStore()
        self.tables: dict[str, Any] = {}
        """ResultsTables made from streamed tables, by title (headless JVMs cannot show them)."""
        self.images: dict[str, Any] = {}
        """Images sent with the ``put_image`` op, by title."""
        self.handled = 0
        self.failed = 0
        self.last_error: str | None = None
        self._progress = threading.Condition()
        self._awaited: list[int] = []
        """The counts of handled items that threads wait for (see :meth:`_wait_handled`)."""
        self.stopping = threading.Event()
        # Images are converted to Java arrays by two threads, so that one converts while the
        # receiver takes the next frame and the other converts that (the copy into Java runs
        # without the GIL); a few at a time, to bound memory.
        self._converters = ThreadPoolExecutor(max_workers=2, thread_name_prefix="polystore-fiji-convert")
        self._convert_slots = threading.BoundedSemaphore(MAX_CONVERTING)
        self._converting = 0
        self._conversions = threading.Condition()
        self.service = ViewerService(
            FijiStreamingBackend.VIEWER_TYPE, port, host, on_item=self.on_item,
            handlers=self.handlers(), shm_prefixes=(FijiStreamingBackend.SHM_PREFIX,),
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

    # -- stream items -------------------------------------------------------------------------
    def on_item(self, item: StreamItem) -> None:
        """Show one validated item (receiver thread)."""
        try:
            handler = self.ITEM_KINDS[item.kind]
            if handler is not FijiBridge._show_image:
                self._drain_conversions()  # e.g. ROIs for an image still being converted
            if handler(self, item):
                return  # counted by the event thread once the window has it
        except Exception as error:
            logger.exception("could not show '%s'", item.path)
            self._item_done(self._title_of(item), error)
            return
        self._item_done(self._title_of(item))

    def _title_of(self, item: StreamItem) -> str:
        """The window an item went to, for messages (its path if placing it is what failed)."""
        try:
            return self.assembler.placer.title(item.path, item.metadata)
        except Exception:
            return item.path

    def _item_done(self, title: str, error: BaseException | None = None) -> None:
        with self._progress:
            self.handled += 1
            if error is not None:
                self.failed += 1
                self.last_error = f"{title}: {error}"
            if any(self.handled >= target for target in self._awaited):
                self._progress.notify_all()  # only when a waiter is done, not at every frame

    def _wait_handled(self, target: int, timeout: float) -> bool:
        """Wait until ``target`` items have been shown (or have failed); whether they were."""
        with self._progress:
            self._awaited.append(target)
            try:
                return self._progress.wait_for(lambda: self.handled >= target, timeout)
            finally:
                self._awaited.remove(target)

    def _show_image(self, item: StreamItem) -> bool:
        sequence = self.assembler.next_sequence()  # here, in arrival order
        self._convert_slots.acquire()
        with self._conversions:
            self._converting += 1
        self._converters.submit(self._convert, item, sequence)
        return True

    def _convert(self, item: StreamItem, sequence: int) -> None:
        try:
            self.assembler.submit(item.array, item.path, item.metadata, sequence)
        except Exception as error:
            logger.exception("could not show '%s'", item.path)
            self._item_done(self._title_of(item), error)
        finally:
            self._convert_slots.release()
            with self._conversions:
                self._converting -= 1
                self._conversions.notify_all()

    def _drain_conversions(self, timeout: float = 60.0) -> None:
        with self._conversions:
            self._conversions.wait_for(lambda: self._converting == 0, timeout)

    def _add_rois(self, item: StreamItem) -> bool:
        """A ROI set, or shapes/points (vertex arrays), into the RoiManager on the item's window."""
        rois = java_rois_of_item(item.kind, item.array, item.metadata)
        placement = self.assembler.placer.place(item.path, item.metadata)
        if item.kind != "roi_set":
            # vertices carry no plane: they go on the window's own C, Z, T of the item's path
            # (T is field and t together), named after it
            position = self.assembler.position(item.path, item.metadata)
            for roi in rois:
                roi.setPosition(*position)
                roi.setName(path_title(item.path))
        self.roi_store.add(rois, self._image_or_none(placement.title))
        return False

    def _add_table(self, item: StreamItem) -> bool:
        title = path_title(item.path)
        columns = dataframe_columns(item.table(), item.metadata)
        self.tables[title] = self._on_edt(lambda: table_from_columns(columns, title))
        return False

    ITEM_KINDS: dict[str, Callable[[FijiBridge, StreamItem], bool]] = {
        "image": _show_image,
        "labels": _show_image,
        "roi_set": _add_rois,
        "points": _add_rois,
        "shapes": _add_rois,
        "table": _add_table,
    }
    """Item kind -> what to do; True when the event thread counts the item as done."""

    # -- finding images -------------------------------------------------------------------------
    def _all_images(self) -> list[Any]:
        """Every image the bridge knows: its windows, images put by request, ImageJ's open windows."""
        def collect() -> list[Any]:
            self.assembler.flush()  # frames placed but not yet drawn (draws are rate-limited)
            found = [w.imp for w in self.assembler.windows.values() if w.imp is not None]
            found += list(self.images.values())
            window_manager = java_class("ij.WindowManager")
            ids = window_manager.getIDList()
            found += [window_manager.getImage(i) for i in (ids or [])]
            unique: dict[int, Any] = {}
            for imp in found:
                if imp is not None:
                    unique.setdefault(int(imp.getID()), imp)
            return list(unique.values())

        images: list[Any] = self._on_edt(collect)
        return images

    def _image_or_none(self, title: str) -> Any:
        for imp in self._all_images():
            if str(imp.getTitle()) == title:
                return imp
        return None

    def find_image(self, title: str) -> Any:
        """The image titled ``title``; a :class:`ViewerError` listing the titles there are if none."""
        imp = self._image_or_none(title)
        if imp is None:
            titles = sorted({str(i.getTitle()) for i in self._all_images()})
            raise ViewerError(f"no image titled {title!r}; images: {', '.join(titles) or '(none)'}")
        return imp

    def _on_edt(self, function: Callable[[], Any]) -> Any:
        return function() if self.headless else on_edt(function)

    # -- control ops --------------------------------------------------------------------------
    def handlers(self) -> dict[str, Handler]:
        return {op: self._bind(method, settle=op in SETTLING_OPS) for op, method in CONTROL_OPS.items()}

    def _bind(self, method: ControlOp, *, settle: bool) -> Handler:
        def handler(params: dict[str, Any], buffers: list[memoryview]) -> HandlerResult:
            try:
                if settle:
                    self.settle()
                return method(self, params, buffers)
            except LookupError as error:  # a clean message, without KeyError's quotes
                raise ViewerError(str(error.args[0]) if error.args else str(error)) from None

        return handler

    def settle(self, timeout: float = SETTLE_TIMEOUT_S) -> bool:
        """Wait until every item received so far has been shown (or has failed); whether all were.

        The receiver acknowledges an item (``save(..., wait_for_ack=True)`` returns) when it
        has it, before it is shown: questions about what is shown wait for this first, so that
        an acknowledged item is in the answer.
        """
        return self._wait_handled(self.service.received, timeout)  # what arrived before the question

    def op_status(self, params: dict[str, Any], buffers: list[memoryview]) -> HandlerResult:
        with self._progress:
            return {
                "handled": self.handled, "failed": self.failed, "last_error": self.last_error,
                "imagej": self.runtime.version, "flavor": self.runtime.flavor, "headless": self.headless,
                "received": self.service.received, "rejected": self.service.rejected,
                "python_objects_frozen": gc.get_freeze_count(),
            }

    def op_wait(self, params: dict[str, Any], buffers: list[memoryview]) -> HandlerResult:
        """Wait until ``handled`` items have been shown (at most ``timeout`` s); the status."""
        target = int(params.get("handled", 0))
        timeout = min(float(params.get("timeout", 10.0)), MAX_WAIT_S)
        if not self._wait_handled(target, timeout):
            raise ViewerError(f"only {self.handled} of {target} items were shown within {timeout:g} s "
                              f"({self.service.received} received, {self.service.rejected} rejected)")
        # items are counted as they are placed; windows are updated at most 15 times a second
        self._on_edt(self.assembler.flush)
        return self.op_status(params, buffers)

    def op_windows(self, params: dict[str, Any], buffers: list[memoryview]) -> HandlerResult:
        images = self._all_images()
        return {"windows": self._on_edt(lambda: [describe_imageplus(imp) for imp in images])}

    def _image_reply(self, imp: Any, params: dict[str, Any]) -> HandlerResult:
        axes = params.get("axes")
        native = bool(params.get("native", False))

        def read() -> tuple[np.ndarray, str]:
            return from_imageplus(imp, axes, native=native), axes or imageplus_axes(imp)

        array, used_axes = self._on_edt(read)
        return array_reply(array, axes=used_axes, title=str(imp.getTitle()))

    def op_fetch_image(self, params: dict[str, Any], buffers: list[memoryview]) -> HandlerResult:
        return self._image_reply(self.find_image(_text(params, "title")), params)

    def op_load(self, params: dict[str, Any], buffers: list[memoryview]) -> HandlerResult:
        """The window a streamed path went to (``FijiStreamingBackend.load``)."""
        path = _text(params, "path")
        # no header with it: the placer reads the path as the sender did (or by the bridge's convention)
        return self._image_reply(self.find_image(self.assembler.placer.title(path, {})), params)

    def op_put_image(self, params: dict[str, Any], buffers: list[memoryview]) -> HandlerResult:
        """Show an array sent with the request: ``shape``, ``dtype``, ``title``, ``axes``, ``show``."""
        if len(buffers) != 1:
            raise ViewerError("put_image takes exactly one buffer: the array's bytes")
        shape = [int(n) for n in params.get("shape", [])]
        dtype = np.dtype(_text(params, "dtype"))
        if dtype.kind not in "biufc" or int(np.prod(shape)) * dtype.itemsize != len(buffers[0]):
            raise ViewerError(f"the buffer of {len(buffers[0])} bytes is not a {shape} {dtype} array")
        array = np.frombuffer(buffers[0], dtype=dtype).reshape(shape).copy()
        title = _text(params, "title", "image")
        axes = params.get("axes")
        imp = to_imageplus(array, axes if isinstance(axes, str) else None, title)
        show = bool(params.get("show", True)) and not self.headless

        def register() -> dict[str, Any]:
            previous = self.images.pop(title, None)
            if previous is not None:
                previous.changes = False
                previous.close()
            self.images[title] = imp
            if show:
                imp.show()
            return describe_imageplus(imp)

        return {"window": self._on_edt(register)}

    def op_fetch_rois(self, params: dict[str, Any], buffers: list[memoryview]) -> HandlerResult:
        """``source``: ``manager`` (default: the RoiManager) or ``overlay`` (of image ``title``)."""
        source = _text(params, "source", "manager")
        if source == "overlay":
            imp = self.find_image(_text(params, "title"))
            rois = self._on_edt(lambda: overlay_rois(imp))
        elif source == "manager":
            rois = self.roi_store.rois()
            title = params.get("title")
            if isinstance(title, str):  # only those attached to that image, when asked
                rois = [r for r in rois if r.getImage() is not None and str(r.getImage().getTitle()) == title]
        else:
            raise ViewerError(f"source must be 'manager' or 'overlay', got {source!r}")
        names = [str(r.getName() or "") for r in rois]
        return {"count": len(rois), "names": names}, [self._on_edt(lambda: zip_of_java_rois(rois))]

    def op_put_rois(self, params: dict[str, Any], buffers: list[memoryview]) -> HandlerResult:
        """Add the ROIs of a ``.roi.zip`` (one buffer) to the RoiManager; ``title``: attach to that image."""
        if len(buffers) != 1:
            raise ViewerError("put_rois takes exactly one buffer: the .roi.zip's bytes")
        title = params.get("title")
        imp = self.find_image(title) if isinstance(title, str) else None
        return {"count": self.roi_store.add(java_rois_from_zip(bytes(buffers[0])), imp)}

    def op_clear_rois(self, params: dict[str, Any], buffers: list[memoryview]) -> HandlerResult:
        self.roi_store.clear()
        return {}

    def op_fetch_results(self, params: dict[str, Any], buffers: list[memoryview]) -> HandlerResult:
        """A ResultsTable's columns: numbers as float64 buffers, text as JSON lists; ``rows`` 0
        for an empty table; refused, naming the tables there are, for a title that has none."""
        title = _text(params, "title", MAIN_TABLE)
        table = self._results_table(title)
        columns: list[dict[str, Any]] = []
        payload: list[bytes] = []
        for name, values in self._on_edt(lambda: results_columns(table)).items():
            if isinstance(values, np.ndarray):
                columns.append({"name": name, "dtype": values.dtype.str, "buffer": len(payload)})
                payload.append(values.tobytes())
            else:
                columns.append({"name": name, "values": values})
        return {"title": title, "rows": int(table.size()), "columns": columns}, payload

    def _results_table(self, title: str) -> Any:
        """The table streamed as ``title`` (its path, with or without ``.csv``), else ImageJ's."""
        streamed = self.tables.get(title, self.tables.get(path_title(title)))
        if streamed is not None:
            return streamed
        table = self._on_edt(lambda: find_results_table(title))
        if table is None:
            titles = sorted(set(self.tables) | set(self._on_edt(results_table_titles)))
            raise ViewerError(
                f"no results table titled {title!r}; tables: {', '.join(titles) or '(none)'}"
            )
        return table

    def op_run_macro(self, params: dict[str, Any], buffers: list[memoryview]) -> HandlerResult:
        """Run an ImageJ macro (``code``, optional ``arg``); its return value, or its error."""
        if not self.allow_macros:
            raise ViewerError(
                "this bridge does not run macros sent over its control port (they can run any "
                "command as its user); start it with --allow-macros to allow them"
            )
        interpreter = java_class("ij.macro.Interpreter")()
        interpreter.setIgnoreErrors(True)  # an error is returned, not shown in a dialog nobody closes
        result = interpreter.run(_text(params, "code"), _text(params, "arg", ""))
        error = interpreter.getErrorMessage()
        if error is not None and str(error):
            raise ViewerError(f"the macro failed: {error}")
        return {"result": None if result is None else str(result)}

    def op_screenshot(self, params: dict[str, Any], buffers: list[memoryview]) -> HandlerResult:
        """What the screen shows of an image's window (its canvas), as a (Y, X, 3) uint8 array."""
        if self.headless:
            raise ViewerError("a headless bridge shows no windows to capture; start it without --headless")
        imp = self.find_image(_text(params, "title"))

        def bounds() -> tuple[int, int, int, int]:
            window = imp.getWindow()
            if window is None:
                raise ViewerError(f"{imp.getTitle()!s} is not shown in a window")
            window.toFront()
            imp.updateAndDraw()
            canvas = window.getCanvas()
            origin, size = canvas.getLocationOnScreen(), canvas.getSize()
            return int(origin.x), int(origin.y), int(size.width), int(size.height)

        x, y, width, height = on_edt(bounds)
        robot = java_class("java.awt.Robot")()
        robot.waitForIdle()  # until the event thread has painted what was queued
        java_class("java.awt.Toolkit").getDefaultToolkit().sync()
        capture = robot.createScreenCapture(java_class("java.awt.Rectangle")(x, y, width, height))
        packed = np.array(capture.getRGB(0, 0, width, height, None, 0, width), dtype=np.int32)
        argb = packed.view(np.uint32).reshape(height, width)
        rgb = np.stack([(argb >> shift) & 0xFF for shift in (16, 8, 0)], axis=-1).astype(np.uint8)
        return array_reply(rgb, title=str(imp.getTitle()), x=x, y=y)

    def op_close(self, params: dict[str, Any], buffers: list[memoryview]) -> HandlerResult:
        """Close every image titled ``title`` (unsaved changes discarded)."""
        title = _text(params, "title")
        images = [imp for imp in self._all_images() if str(imp.getTitle()) == title]

        def close() -> None:
            for imp in images:
                imp.changes = False
                imp.close()
            self.assembler.windows.pop(title, None)
            self.images.pop(title, None)

        self._on_edt(close)
        return {"closed": len(images)}

    def op_quit(self, params: dict[str, Any], buffers: list[memoryview]) -> HandlerResult:
        self.stopping.set()
        return {"stopping": True}


SETTLING_OPS = frozenset({
    "windows", "fetch_image", "load", "fetch_rois", "put_rois", "fetch_results", "run_macro",
    "screenshot", "close",
})
"""The ops that answer about what the bridge shows: each first waits (:meth:`FijiBridge.settle`)
until every item received before it has been shown."""

CONTROL_OPS: dict[str, ControlOp] = {
    "status": FijiBridge.op_status,
    "wait": FijiBridge.op_wait,
    "windows": FijiBridge.op_windows,
    "fetch_image": FijiBridge.op_fetch_image,
    "load": FijiBridge.op_load,
    "put_image": FijiBridge.op_put_image,
    "fetch_rois": FijiBridge.op_fetch_rois,
    "put_rois": FijiBridge.op_put_rois,
    "clear_rois": FijiBridge.op_clear_rois,
    "fetch_results": FijiBridge.op_fetch_results,
    "run_macro": FijiBridge.op_run_macro,
    "screenshot": FijiBridge.op_screenshot,
    "close": FijiBridge.op_close,
    "quit": FijiBridge.op_quit,
}
"""The bridge's control ops (besides the built-in ``ping``); ``docs/fiji.md`` describes each."""


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
