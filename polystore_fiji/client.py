"""Talking to a running Fiji bridge from Python: what it shows, and what was drawn and measured there.

    from polystore_fiji import FijiClient
    fiji = FijiClient()                      # the bridge on 127.0.0.1:5571 (control 5573)
    fiji.windows()                           # [{"title": "A01", "channels": 2, ...}, ...]
    image = fiji.fetch_image("A01")          # NumPy, axes TZCYX without the singleton ones
    rois = fiji.fetch_rois()                 # the RoiManager's ROIs as .roi.zip bytes
    table = fiji.fetch_results("Results")    # a pandas DataFrame (None: no rows yet)

No JVM here: this is a ZeroMQ client of the bridge's control channel
(:mod:`polystore.streaming.viewer`). :func:`launch_bridge` runs a bridge process of one's
own on free ports for as long as a ``with`` block lasts (benchmarks, tests, notebooks).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from polystore.exceptions import ViewerError, ViewerUnavailableError
from polystore.streaming.endpoints import Endpoints
from polystore.streaming.viewer import (
    CONTROL_PORT_OFFSET,
    Reply,
    array_from_reply,
    free_ports,
    request,
    wait_until_answering,
)
from polystore_fiji.backend import FijiStreamingBackend
from polystore_fiji.progress import wait_timeout


@dataclass
class FijiClient:
    """The control channel of the bridge streaming on ``host:port`` (control on ``port + 2``)."""

    port: int = FijiStreamingBackend.DEFAULT_PORT
    host: str = "127.0.0.1"
    timeout: float = 10.0

    @property
    def control_port(self) -> int:
        return Endpoints(self.host, self.port).control_port_number

    def request(self, op: str, params: Mapping[str, Any] | None = None, buffers: Sequence[Any] = (),
                *, timeout: float | None = None) -> Reply:
        """Run a control op on the bridge; :class:`ViewerError` with its reason if it refuses."""
        return request(self.host, self.control_port, op, params, buffers,
                       timeout=self.timeout if timeout is None else timeout)

    def ping(self) -> dict[str, Any]:
        return self.request("ping").header

    def status(self) -> dict[str, Any]:
        """Items handled and failed, ImageJ's version, headless or not."""
        return self.request("status").header

    def wait(self, handled: int, timeout: float = 30.0) -> dict[str, Any]:
        """Block until the bridge has shown ``handled`` stream items in all (at most ``timeout``
        s, finite, from 0: :class:`InvalidOptionError` otherwise); its status."""
        timeout = wait_timeout(timeout, timeout)  # checked here too: the reply's deadline is timeout + 5
        return self.request("wait", {"handled": handled, "timeout": timeout}, timeout=timeout + 5).header

    def windows(self) -> list[dict[str, Any]]:
        """Every image the bridge knows: title, width, height, channels, slices, frames, dtype, axes."""
        windows: list[dict[str, Any]] = self.request("windows").header["windows"]
        return windows

    def fetch_image(self, title: str, axes: str | None = None, *, native: bool = False) -> np.ndarray:
        """The pixels of image ``title`` (see :func:`polystore_fiji.convert.from_imageplus`)."""
        params: dict[str, Any] = {"title": title, "native": native}
        if axes is not None:
            params["axes"] = axes
        return array_from_reply(self.request("fetch_image", params))

    def put_image(
        self, array: np.ndarray, title: str, axes: str | None = None, *, show: bool = True
    ) -> dict[str, Any]:
        """Show ``array`` in ImageJ as ``title`` (conversion rules of :mod:`polystore_fiji.convert`)."""
        data = np.ascontiguousarray(array)
        params: dict[str, Any] = {
            "title": title, "shape": list(data.shape), "dtype": data.dtype.str, "show": show,
        }
        if axes is not None:
            params["axes"] = axes
        reply = self.request("put_image", params, [data.data if data.nbytes else b""])
        window: dict[str, Any] = reply.header["window"]
        return window

    def fetch_rois(self, title: str | None = None, source: str = "manager") -> bytes:
        """ROIs as ``.roi.zip`` bytes: the RoiManager's (``title``: only those on that image), or an
        image's overlay (``source="overlay"``). Save them with ``fm.save(data, "cells.roi.zip", "disk")``."""
        params: dict[str, Any] = {"source": source}
        if title is not None:
            params["title"] = title
        reply = self.request("fetch_rois", params)
        return reply.buffers[0] if reply.buffers else b""

    def fetch_roifile(self, title: str | None = None, source: str = "manager") -> list[Any]:
        """The same ROIs as roifile.ImagejRoi objects."""
        from polystore.formats.roi import rois_from_zip_bytes

        return rois_from_zip_bytes(self.fetch_rois(title, source))

    def put_rois(self, rois: Any, title: str | None = None) -> int:
        """Add ROIs (``.roi.zip`` bytes or roifile.ImagejRoi objects) to the RoiManager."""
        from polystore.formats.roi import roi_zip_bytes

        params = {"title": title} if title is not None else {}
        count: int = self.request("put_rois", params, [roi_zip_bytes(rois)]).header["count"]
        return count

    def results_columns(self, title: str = "Results") -> dict[str, np.ndarray | list[str]] | None:
        """A ResultsTable's columns (float64 arrays for numbers, lists of str for text); None
        when the table has no rows. ``title``: ImageJ's main table ``Results``, another table
        window, or a table streamed to the bridge (its path, with or without ``.csv``).
        :class:`ViewerError` naming the tables there are when none has that title."""
        reply = self.request("fetch_results", {"title": title})
        if not reply.header.get("rows"):
            return None
        columns: dict[str, np.ndarray | list[str]] = {}
        for column in reply.header["columns"]:
            if "values" in column:
                columns[column["name"]] = [str(v) for v in column["values"]]
                continue
            index = column.get("buffer")
            if type(index) is not int or not 0 <= index < len(reply.buffers):
                raise ViewerError(
                    f"the bridge's reply names buffer {index!r} for column {column.get('name')!r}"
                )
            dtype = np.dtype(column["dtype"])
            columns[column["name"]] = np.frombuffer(reply.buffers[index], dtype=dtype).copy()
        return columns

    def fetch_results(self, title: str = "Results") -> Any:
        """A ResultsTable as a pandas DataFrame; None when it has no rows (nothing measured yet).
        :class:`ViewerError` naming the tables there are when none has that title."""
        from polystore.lazy import optional_import

        pandas = optional_import("pandas", extra="pandas", purpose="ImageJ results as a DataFrame")
        columns = self.results_columns(title)
        return None if columns is None else pandas.DataFrame(columns)

    def run_macro(self, code: str, arg: str = "") -> str | None:
        """Run an ImageJ macro in the bridge; what it returns. :class:`ViewerError` with its error."""
        reply = self.request("run_macro", {"code": code, "arg": arg}, timeout=max(self.timeout, 60))
        result: str | None = reply.header["result"]
        return result

    def screenshot(self, title: str) -> np.ndarray:
        """What the screen shows of window ``title``: (Y, X, 3) uint8."""
        return array_from_reply(self.request("screenshot", {"title": title}))

    def close(self, title: str) -> int:
        """Close the images titled ``title``; how many."""
        closed: int = self.request("close", {"title": title}).header["closed"]
        return closed

    def clear_rois(self) -> None:
        self.request("clear_rois")

    def quit(self) -> None:
        """Stop the bridge (it exits once its reply is sent)."""
        self.request("quit")


BRIDGE_START_TIMEOUT_S = 60.0
BRIDGE_STOP_TIMEOUT_S = 30.0


def free_port_triple(host: str = "127.0.0.1") -> int:
    """A port p with p, p+1 and p+2 free on ``host`` (stream, acks, control)."""
    return free_ports(CONTROL_PORT_OFFSET + 1, host)


@contextmanager
def launch_bridge(
    *args: str, log_path: Path | str, port: int | None = None, host: str = "127.0.0.1",
    start_timeout: float = BRIDGE_START_TIMEOUT_S, client_timeout: float = 30.0,
) -> Iterator[tuple[FijiClient, subprocess.Popen[bytes]]]:
    """Run ``python -m polystore_fiji ARGS`` on ``port`` (default: free ones) until the block ends.

    Yields a client once the bridge answers ``ping``, and the process; the bridge's output
    goes to ``log_path``. :class:`ViewerError` with the log's end if it exits or does not
    answer within ``start_timeout`` s. Afterwards it is asked to quit, and killed if it
    does not within :data:`BRIDGE_STOP_TIMEOUT_S`. Unlike ``FijiStreamingBackend(launch=True)``,
    which leaves the bridge it starts running for the user, this one is owned by the block.
    """
    port = free_port_triple(host) if port is None else port
    log_file = Path(log_path)
    with log_file.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "polystore_fiji", "--port", str(port), "--host", host, *args],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
    client = FijiClient(port, host, timeout=client_timeout)

    def ping() -> dict[str, Any] | None:
        try:
            return client.request("ping", timeout=0.5).header
        except ViewerUnavailableError:
            return None

    try:
        wait_until_answering(ping, process, start_timeout, log_file, f"The Fiji bridge on {host}:{port}")
        yield client, process
    finally:
        if process.poll() is None:
            try:
                client.quit()
                process.wait(timeout=BRIDGE_STOP_TIMEOUT_S)
            except (ViewerUnavailableError, subprocess.TimeoutExpired):
                process.kill()
                process.wait(timeout=BRIDGE_STOP_TIMEOUT_S)
