"""CPU time per streamed frame on each side: a measure that a busy machine disturbs far less than
wall-clock latency (benchmarks/streaming.py measures those).

    python benchmarks/streaming_cpu.py                 # every path, 300 frames each
    python benchmarks/streaming_cpu.py --paths save frame --frames 500

Each path sends 2048x2048 uint16 frames one at a time, a few milliseconds apart (nothing
queues: the latency path), from this process to a receiver process. Per frame it prints:

  send us     CPU of the calling thread inside save() / the frame() block's exit
              (thread_time; the copy into the slot included for save)
  proc us     CPU of the whole sending process (every thread: ZeroMQ's I/O thread, the pump)
  recv us     CPU of the whole receiving process (its loop, ZeroMQ's I/O thread, the callback)
  csw         voluntary + involuntary context switches per frame, sender + receiver
  minflt      minor page faults per frame, sender + receiver

and the same for references: ``np.copyto`` of a frame over 8 rotating buffers (the one copy
save() cannot avoid) and a bare pyzmq ipc notification of 8 bytes with an 8-byte ack (the
least any notification costs). Sleeping between frames costs no CPU, so idle time is not counted.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

SHAPE = (2048, 2048)
DTYPE = np.uint16
SOURCES = 8
GAP_S = 0.003
WARM = 20
"""Frames sent before counting: slots made, pages touched, sockets connected."""
SPAWN = mp.get_context("spawn")


def _usage() -> tuple[float, int, int]:
    """(process CPU seconds, context switches, minor faults) of this process so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return time.process_time(), usage.ru_nvcsw + usage.ru_nivcsw, usage.ru_minflt


def _delta(before: tuple[float, int, int]) -> tuple[float, int, int]:
    after = _usage()
    return after[0] - before[0], after[1] - before[1], after[2] - before[2]


# -- receivers: count frames, report their own usage between the first and the last --------------


def _measure_receiver(count: int, results: Any) -> Callable[[], None]:
    state: dict[str, Any] = {"n": 0}

    def seen() -> None:
        state["n"] += 1
        if state["n"] == WARM:
            state["start"] = _usage()
        elif state["n"] == count:
            results.put(_delta(state["start"]))

    return seen


def _zero_copy(host: str, port: int, count: int, ready: Any, results: Any, stop: Any) -> None:
    from polystore.streaming import StreamReceiver

    seen = _measure_receiver(count, results)
    with StreamReceiver(port=port, host=host, zero_copy=True).start(lambda item: seen()):
        ready.set()
        stop.wait(600)


def _copying(host: str, port: int, count: int, ready: Any, results: Any, stop: Any) -> None:
    from polystore import StreamingBackend

    seen = _measure_receiver(count, results)
    with StreamingBackend(mode="pull", port=port, host=host) as pull:
        pull.receive(timeout=0.01)
        ready.set()
        while not stop.is_set():
            if pull.receive(timeout=0.1) is not None:
                seen()


def _notify(host: str, port: int, count: int, ready: Any, results: Any, stop: Any) -> None:
    import zmq

    seen = _measure_receiver(count, results)
    context: Any = zmq.Context.instance()
    pull, ack = context.socket(zmq.PULL), context.socket(zmq.PUSH)
    from polystore.streaming.endpoints import Endpoints

    endpoints = Endpoints(host, port)
    pull.connect(endpoints.data)
    ack.connect(endpoints.ack)
    ready.set()
    while not stop.is_set():
        if pull.poll(100):
            ack.send(pull.recv())
            seen()


# -- senders -------------------------------------------------------------------------------------------


class Probe:
    def __init__(self, name: str, receiver: Callable[..., None], host: str, count: int) -> None:
        self.name, self.host, self.count = name, host, count
        from polystore.streaming.viewer import free_ports

        self.port = free_ports(2) if "://" not in host else 0
        ready, self.stop, self.results = SPAWN.Event(), SPAWN.Event(), SPAWN.Queue()
        self.process = SPAWN.Process(
            target=receiver, args=(host, self.port, count, ready, self.results, self.stop)
        )
        self.process.start()
        if not ready.wait(60):
            raise RuntimeError(f"{name}: the receiver did not start")

    def open(self) -> None: ...

    def send(self, source: np.ndarray) -> None: ...

    def settle(self) -> None: ...

    def close(self) -> None:
        self.stop.set()
        self.process.join(10)
        if self.process.is_alive():
            self.process.kill()

    def run(self, sources: list[np.ndarray]) -> dict[str, float]:
        self.open()
        for index in range(WARM):
            self.send(sources[index % SOURCES])
            time.sleep(GAP_S)
        self.settle()
        send = 0.0
        before = _usage()
        for index in range(self.count - WARM):
            time.sleep(GAP_S)
            started = time.thread_time()
            self.send(sources[index % SOURCES])
            send += time.thread_time() - started
        self.settle()
        proc, csw, flt = _delta(before)
        rproc, rcsw, rflt = self.results.get(timeout=120)
        n = self.count - WARM
        return {"send us": send / n * 1e6, "proc us": proc / n * 1e6, "recv us": rproc / n * 1e6,
                "csw": (csw + rcsw) / n, "minflt": (flt + rflt) / n}


class SavePath(Probe):
    def open(self) -> None:
        from polystore import StreamingBackend

        self.backend = StreamingBackend(port=self.port, host=self.host, transport="shm", send_timeout=60)

    def send(self, source: np.ndarray) -> None:
        self.backend.save(source, "bench/frame.tif")

    def settle(self) -> None:
        self.backend.sender.wait_delivered(60)

    def close(self) -> None:
        self.backend.close(5)
        super().close()


class FramePath(SavePath):
    def send(self, source: np.ndarray) -> None:
        with self.backend.frame(SHAPE, DTYPE, "bench/frame.tif") as buffer:
            buffer[0, 0] = 1  # no fill: the producer's own work is not the stream's


class NotifyPath(Probe):
    def open(self) -> None:
        import zmq

        context: Any = zmq.Context.instance()
        self.out, self.acks = context.socket(zmq.PUSH), context.socket(zmq.PULL)
        from polystore.streaming.endpoints import Endpoints

        endpoints = Endpoints(self.host, self.port)
        self.out.bind(endpoints.data)
        self.acks.bind(endpoints.ack)
        self.outstanding = 0

    def send(self, source: np.ndarray) -> None:
        while self.acks.poll(0):
            self.acks.recv()
            self.outstanding -= 1
        self.out.send(b"\0" * 8)
        self.outstanding += 1

    def settle(self) -> None:
        while self.outstanding:
            self.acks.recv()
            self.outstanding -= 1

    def close(self) -> None:
        super().close()
        self.out.close(0)
        self.acks.close(0)
        for suffix in ("", ".ack") if "://" in self.host else ():
            Path(self.host.removeprefix("ipc://") + suffix).unlink(missing_ok=True)


def _copy_reference(sources: list[np.ndarray], count: int) -> dict[str, float]:
    targets = [np.empty_like(s) for s in sources]
    for target, source in zip(targets, sources, strict=True):
        np.copyto(target, source)
    spent = 0.0
    for index in range(count):
        started = time.thread_time()
        np.copyto(targets[(index + 3) % SOURCES], sources[index % SOURCES])
        spent += time.thread_time() - started
    return {"send us": spent / count * 1e6}


PATHS: dict[str, Callable[[int, str], Probe]] = {
    "save": lambda n, ipc: SavePath("save -> 0-copy", _zero_copy, "127.0.0.1", n),
    "frame": lambda n, ipc: FramePath("frame() -> 0-copy", _zero_copy, "127.0.0.1", n),
    "receive": lambda n, ipc: SavePath("save -> receive()", _copying, "127.0.0.1", n),
    "save-ipc": lambda n, ipc: SavePath("save -> 0-copy ipc", _zero_copy, ipc + "-s", n),
    "notify": lambda n, ipc: NotifyPath("pyzmq 8-byte notify", _notify, ipc + "-n", n),
    "notify-tcp": lambda n, ipc: NotifyPath("pyzmq notify tcp", _notify, "127.0.0.1", n),
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--paths", nargs="*", default=["copy", *PATHS], choices=["copy", *PATHS])
    parser.add_argument("--frames", type=int, default=300)
    args = parser.parse_args()
    import os

    ipc = f"ipc://{tempfile.gettempdir()}/polystore-cpu-{os.getpid()}"
    rng = np.random.default_rng(0)
    sources = [rng.integers(0, 4096, SHAPE, dtype=DTYPE) for _ in range(SOURCES)]
    print(f"load average {os.getloadavg()[0]:.2f}; {args.frames} frames per path, "
          f"one every {GAP_S * 1e3:g} ms")
    print(f"{'path':<22} {'send us':>8} {'proc us':>8} {'recv us':>8} {'csw':>6} {'minflt':>7}")
    if "copy" in args.paths:
        row = _copy_reference(sources, args.frames)
        print(f"{'np.copyto DRAM':<22} {row['send us']:>8.0f}")
    for key in (key for key in args.paths if key != "copy"):
        path = PATHS[key](args.frames, ipc)
        try:
            row = path.run(sources)
        finally:
            path.close()
        print(f"{path.name:<22} {row['send us']:>8.0f} {row['proc us']:>8.0f} {row['recv us']:>8.0f} "
              f"{row['csw']:>6.1f} {row['minflt']:>7.1f}")
    print(f"load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
