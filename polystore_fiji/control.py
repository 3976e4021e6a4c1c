"""The Fiji bridge's control ops: the questions a :class:`~polystore_fiji.client.FijiClient` asks.

Each op is ``op(bridge, params, buffers)`` in :data:`CONTROL_OPS` (``docs/fiji.md`` describes
each): which windows exist, their pixels, the ROIs and results drawn and measured in ImageJ,
a macro to run, a screenshot, closing a window. The ops in :data:`SETTLING_OPS` answer about
what the bridge shows, so each first waits until every item received before it is shown.
A window the user closed is not there for them (until a new frame for it opens it again).
"""

from __future__ import annotations

import gc
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from polystore.exceptions import ViewerError
from polystore.streaming.protocol import ALLOWED_DTYPE_KINDS, MAX_DIMENSION, MAX_NDIM
from polystore.streaming.viewer import Handler, HandlerResult, array_reply
from polystore_fiji.convert import from_imageplus, imageplus_axes, to_imageplus
from polystore_fiji.jvm import java_class, on_edt
from polystore_fiji.placement import path_title
from polystore_fiji.progress import item_count, wait_timeout
from polystore_fiji.rois import java_rois_from_zip, overlay_rois, zip_of_java_rois
from polystore_fiji.tables import MAIN_TABLE, find_results_table, results_columns, results_table_titles
from polystore_fiji.window import closed_in_imagej, describe_imageplus

if TYPE_CHECKING:
    from polystore_fiji.bridge import FijiBridge

SETTLE_TIMEOUT_S = 5.0
"""How long a question about the windows waits for items already received to be shown."""
DEFAULT_WAIT_S = 10.0

ControlOp = Callable[["FijiBridge", dict[str, Any], list[memoryview]], HandlerResult]
"""A control op: ``op(bridge, params, buffers)``."""


def _text(params: dict[str, Any], name: str, default: str | None = None) -> str:
    value = params.get(name, default)
    if not isinstance(value, str):
        raise ViewerError(f"parameter {name!r} must be a string")
    return value


def handlers(bridge: FijiBridge) -> dict[str, Handler]:
    """The ops bound to ``bridge``, as the control channel calls them."""
    return {op: _bind(bridge, method, settle=op in SETTLING_OPS) for op, method in CONTROL_OPS.items()}


def _bind(bridge: FijiBridge, method: ControlOp, *, settle: bool) -> Handler:
    def handler(params: dict[str, Any], buffers: list[memoryview]) -> HandlerResult:
        try:
            if settle:
                settle_items(bridge)
            return method(bridge, params, buffers)
        except LookupError as error:  # a clean message, without KeyError's quotes
            raise ViewerError(str(error.args[0]) if error.args else str(error)) from None

    return handler


def settle_items(bridge: FijiBridge, timeout: float = SETTLE_TIMEOUT_S) -> bool:
    """Wait until every item received so far has been shown (or has failed); whether all were.

    The receiver acknowledges an item (``save(..., wait_for_ack=True)`` returns) when it has
    it, before it is shown: questions about what is shown wait for this first, so that an
    acknowledged item is in the answer.
    """
    return bridge.progress.wait(bridge.service.received, timeout)


# -- finding images ---------------------------------------------------------------------------
def all_images(bridge: FijiBridge) -> list[Any]:
    """Every image open in the bridge: its windows, images put by request, ImageJ's open windows
    (not those closed in ImageJ since)."""
    def collect() -> list[Any]:
        bridge.assembler.flush()  # frames placed but not yet drawn (draws are rate-limited)
        found = bridge.assembler.images() + list(bridge.images.values())
        window_manager = java_class("ij.WindowManager")
        found += [window_manager.getImage(i) for i in (window_manager.getIDList() or [])]
        unique: dict[int, Any] = {}
        for imp in found:
            if imp is not None and not closed_in_imagej(imp):
                unique.setdefault(int(imp.getID()), imp)
        return list(unique.values())

    images: list[Any] = bridge.on_edt(collect)
    return images


def find_image(bridge: FijiBridge, title: str) -> Any:
    """The image titled ``title``; a :class:`ViewerError` listing the titles there are if none."""
    images = all_images(bridge)
    for imp in images:
        if str(imp.getTitle()) == title:
            return imp
    titles = sorted({str(i.getTitle()) for i in images})
    raise ViewerError(f"no image titled {title!r}; images: {', '.join(titles) or '(none)'}")


# -- the ops ----------------------------------------------------------------------------------
def op_status(bridge: FijiBridge, params: dict[str, Any], buffers: list[memoryview]) -> HandlerResult:
    return {
        **bridge.progress.snapshot(),
        "imagej": bridge.runtime.version, "flavor": bridge.runtime.flavor, "headless": bridge.headless,
        "received": bridge.service.received, "rejected": bridge.service.rejected,
        "python_objects_frozen": gc.get_freeze_count(),
    }


def op_wait(bridge: FijiBridge, params: dict[str, Any], buffers: list[memoryview]) -> HandlerResult:
    """Wait until ``handled`` items have been shown (at most ``timeout`` s); the status."""
    target = item_count(params.get("handled", 0))
    timeout = wait_timeout(params.get("timeout"), DEFAULT_WAIT_S)
    if not bridge.progress.wait(target, timeout):
        handled = bridge.progress.snapshot()["handled"]
        raise ViewerError(f"only {handled} of {target} items were shown within {timeout:g} s "
                          f"({bridge.service.received} received, {bridge.service.rejected} rejected)")
    # items are counted as they are placed; windows are updated at most 15 times a second
    bridge.on_edt(bridge.assembler.flush)
    return op_status(bridge, params, buffers)


def op_windows(bridge: FijiBridge, params: dict[str, Any], buffers: list[memoryview]) -> HandlerResult:
    """Every open image described; the bridge's windows also say the newest plane painted."""
    images = all_images(bridge)

    def describe() -> list[dict[str, Any]]:
        described = bridge.assembler.describe()
        known = {d["id"] for d in described}
        return described + [describe_imageplus(imp) for imp in images if int(imp.getID()) not in known]

    return {"windows": bridge.on_edt(describe)}


def _image_reply(bridge: FijiBridge, imp: Any, params: dict[str, Any]) -> HandlerResult:
    axes = params.get("axes")
    native = bool(params.get("native", False))

    def read() -> tuple[np.ndarray, str]:
        if closed_in_imagej(imp):
            raise ViewerError(f"image {imp.getTitle()!s} was closed while it was being read; ask again")
        return from_imageplus(imp, axes, native=native), axes or imageplus_axes(imp)

    array, used_axes = bridge.on_edt(read)
    return array_reply(array, axes=used_axes, title=str(imp.getTitle()))


def op_fetch_image(bridge: FijiBridge, params: dict[str, Any], buffers: list[memoryview]) -> HandlerResult:
    return _image_reply(bridge, find_image(bridge, _text(params, "title")), params)


def op_load(bridge: FijiBridge, params: dict[str, Any], buffers: list[memoryview]) -> HandlerResult:
    """The window a streamed path went to (``FijiStreamingBackend.load``)."""
    path = _text(params, "path")
    # no header with it: the placer reads the path as the sender did (or by the bridge's convention)
    return _image_reply(bridge, find_image(bridge, bridge.assembler.placer.title(path, {})), params)


def array_of_request(params: dict[str, Any], buffers: list[memoryview]) -> np.ndarray:
    """The image a ``put_image`` request carries (``shape``, ``dtype``, one buffer), checked as a
    stream header is (:mod:`polystore.streaming.protocol`'s limits) before anything is allocated."""
    if len(buffers) != 1:
        raise ViewerError("put_image takes exactly one buffer: the array's bytes")
    shape = params.get("shape", [])
    if not isinstance(shape, list) or not all(type(n) is int and n >= 0 for n in shape):
        raise ViewerError(f"'shape' is a list of sizes (whole numbers from 0), not {shape!r}")
    if len(shape) > MAX_NDIM or any(n > MAX_DIMENSION for n in shape):
        raise ViewerError(f"'shape' has at most {MAX_NDIM} sizes of at most {MAX_DIMENSION} each; "
                          f"got {len(shape)} sizes up to {max(shape)}")
    try:
        dtype = np.dtype(_text(params, "dtype"))
    except TypeError as error:
        raise ViewerError(f"'dtype' is not a NumPy dtype: {error}") from None
    # Python ints: NumPy's int64 product wraps, and a huge shape could match a small buffer
    if dtype.kind not in ALLOWED_DTYPE_KINDS or math.prod(shape) * dtype.itemsize != len(buffers[0]):
        raise ViewerError(f"the buffer of {len(buffers[0])} bytes is not a {shape} {dtype} array")
    if len(shape) < 2 or 0 in shape:
        raise ViewerError(f"an image has at least 2 dimensions and one pixel along each; got shape {shape}")
    return np.frombuffer(buffers[0], dtype=dtype).reshape(shape).copy()


def op_put_image(bridge: FijiBridge, params: dict[str, Any], buffers: list[memoryview]) -> HandlerResult:
    """Show an array sent with the request: ``shape``, ``dtype``, ``title``, ``axes``, ``show``."""
    array = array_of_request(params, buffers)
    title = _text(params, "title", "image")
    axes = params.get("axes")
    imp = to_imageplus(array, axes if isinstance(axes, str) else None, title)
    show = bool(params.get("show", True)) and not bridge.headless

    def register() -> dict[str, Any]:
        previous = bridge.images.pop(title, None)
        if previous is not None and not closed_in_imagej(previous):
            previous.changes = False
            previous.close()
        bridge.images[title] = imp
        if show:
            imp.show()
        return describe_imageplus(imp)

    return {"window": bridge.on_edt(register)}


def op_fetch_rois(bridge: FijiBridge, params: dict[str, Any], buffers: list[memoryview]) -> HandlerResult:
    """``source``: ``manager`` (default: the RoiManager) or ``overlay`` (of image ``title``)."""
    source = _text(params, "source", "manager")
    if source == "overlay":
        imp = find_image(bridge, _text(params, "title"))
        rois = bridge.on_edt(lambda: overlay_rois(imp))
    elif source == "manager":
        rois = bridge.roi_store.rois()
        title = params.get("title")
        if isinstance(title, str):  # only those attached to that image, when asked
            rois = [r for r in rois if r.getImage() is not None and str(r.getImage().getTitle()) == title]
    else:
        raise ViewerError(f"source must be 'manager' or 'overlay', got {source!r}")
    names = [str(r.getName() or "") for r in rois]
    return {"count": len(rois), "names": names}, [bridge.on_edt(lambda: zip_of_java_rois(rois))]


def op_put_rois(bridge: FijiBridge, params: dict[str, Any], buffers: list[memoryview]) -> HandlerResult:
    """Add the ROIs of a ``.roi.zip`` (one buffer) to the RoiManager; ``title``: attach to that image."""
    if len(buffers) != 1:
        raise ViewerError("put_rois takes exactly one buffer: the .roi.zip's bytes")
    title = params.get("title")
    imp = find_image(bridge, title) if isinstance(title, str) else None
    return {"count": len(bridge.roi_store.add(java_rois_from_zip(bytes(buffers[0])), imp))}


def op_clear_rois(bridge: FijiBridge, params: dict[str, Any], buffers: list[memoryview]) -> HandlerResult:
    bridge.roi_store.clear()
    bridge.on_edt(bridge.assembler.forget_rois)
    return {}


def op_fetch_results(bridge: FijiBridge, params: dict[str, Any], buffers: list[memoryview]) -> HandlerResult:
    """A ResultsTable's columns: numbers as float64 buffers, text as JSON lists; ``rows`` 0
    for an empty table; refused, naming the tables there are, for a title that has none."""
    title = _text(params, "title", MAIN_TABLE)
    streamed = bridge.tables.get(title, bridge.tables.get(path_title(title)))
    if streamed is not None:
        table, order = streamed.table, streamed.columns
    else:
        table, order = bridge.on_edt(lambda: find_results_table(title)), None
        if table is None:
            titles = sorted(set(bridge.tables) | set(bridge.on_edt(results_table_titles)))
            raise ViewerError(f"no results table titled {title!r}; tables: {', '.join(titles) or '(none)'}")
    columns: list[dict[str, Any]] = []
    payload: list[bytes] = []
    # read here, not on the event thread: a ResultsTable is no window, and reading a long one
    # there froze every window for as long
    for name, values in results_columns(table, order).items():
        if isinstance(values, np.ndarray):
            columns.append({"name": name, "dtype": values.dtype.str, "buffer": len(payload)})
            payload.append(values.tobytes())
        else:
            columns.append({"name": name, "values": values})
    return {"title": title, "rows": int(table.size()), "columns": columns}, payload


def op_run_macro(bridge: FijiBridge, params: dict[str, Any], buffers: list[memoryview]) -> HandlerResult:
    """Run an ImageJ macro (``code``, optional ``arg``); its return value, or its error."""
    if not bridge.allow_macros:
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


def op_screenshot(bridge: FijiBridge, params: dict[str, Any], buffers: list[memoryview]) -> HandlerResult:
    """What the screen shows of an image's window (its canvas), as a (Y, X, 3) uint8 array."""
    if bridge.headless:
        raise ViewerError("a headless bridge shows no windows to capture; start it without --headless")
    imp = find_image(bridge, _text(params, "title"))

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


def op_close(bridge: FijiBridge, params: dict[str, Any], buffers: list[memoryview]) -> HandlerResult:
    """Close every image titled ``title`` (unsaved changes discarded); a bridge window's update
    still due does nothing, and a later frame for it opens a new window."""
    title = _text(params, "title")
    images = [imp for imp in all_images(bridge) if str(imp.getTitle()) == title]

    def close() -> None:
        bridge.assembler.close(title)
        bridge.images.pop(title, None)
        for imp in images:
            if not closed_in_imagej(imp):
                imp.changes = False
                imp.close()

    bridge.on_edt(close)
    return {"closed": len(images)}


def op_quit(bridge: FijiBridge, params: dict[str, Any], buffers: list[memoryview]) -> HandlerResult:
    bridge.stopping.set()
    return {"stopping": True}


SETTLING_OPS = frozenset({
    "windows", "fetch_image", "load", "fetch_rois", "put_rois", "fetch_results", "run_macro",
    "screenshot", "close",
})
"""The ops that answer about what the bridge shows: each first waits (:func:`settle_items`)
until every item received before it has been shown."""

CONTROL_OPS: dict[str, ControlOp] = {
    "status": op_status,
    "wait": op_wait,
    "windows": op_windows,
    "fetch_image": op_fetch_image,
    "load": op_load,
    "put_image": op_put_image,
    "fetch_rois": op_fetch_rois,
    "put_rois": op_put_rois,
    "clear_rois": op_clear_rois,
    "fetch_results": op_fetch_results,
    "run_macro": op_run_macro,
    "screenshot": op_screenshot,
    "close": op_close,
    "quit": op_quit,
}
"""The bridge's control ops (besides the built-in ``ping``); ``docs/fiji.md`` describes each."""
