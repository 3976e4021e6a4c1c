"""A minimal viewer for the launch tests: a ViewerService that keeps what it receives.

Run as ``python viewer_process.py --port N --host H [--viewer-type T]``; its control channel
answers ``ping``, ``received_paths`` (what arrived so far) and ``load`` (the last array
received under a path).
"""

from __future__ import annotations

import argparse
import signal
import threading
from typing import Any

from polystore.streaming.protocol import StreamItem
from polystore.streaming.viewer import ViewerService
from polystore.streaming.viewer.control import array_reply


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--viewer-type", default="testviewer")
    parser.add_argument("--shm-prefix", default="pstest_viewer_")
    args = parser.parse_args()
    items: dict[str, StreamItem] = {}
    order: list[str] = []
    lock = threading.Lock()

    def keep(item: StreamItem) -> None:
        with lock:
            items[item.path] = item
            order.append(item.path)

    def received_paths(params: dict[str, Any], buffers: list[memoryview]) -> dict[str, Any]:
        with lock:
            return {"paths": list(order), "kinds": {p: items[p].kind for p in items}}

    def load(params: dict[str, Any], buffers: list[memoryview]) -> Any:
        with lock:
            item = items.get(params["path"])
        if item is None:
            raise KeyError(f"nothing was received as {params['path']!r}")
        return array_reply(item.array, metadata=item.metadata)

    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    service = ViewerService(
        args.viewer_type, args.port, args.host, on_item=keep, shm_prefixes=(args.shm_prefix,),
        handlers={"received_paths": received_paths, "load": load},
    )
    with service:
        stopped.wait()


if __name__ == "__main__":
    main()
