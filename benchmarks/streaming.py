"""Cross-process streaming of 2048x2048 uint16 frames (8 MiB), next to the memory copies it is made of.

    flock /tmp/polystore-bench.lock python benchmarks/streaming.py            # 6 rounds
    flock /tmp/polystore-bench.lock python benchmarks/streaming.py --quick    # 2 rounds, a smoke check
    ... --no-figure: leave benchmarks/figures/ as it is (A/B runs of a change)

Paths (sender in this process, each receiver in a process of its own, all started once; every
round runs each path in turn, rotated, so that drift in the machine's state hits all alike):

  save -> 0-copy      StreamingBackend(transport="shm").save(frame) -> StreamReceiver(zero_copy=True):
                      the frame is copied once, into a reused shared-memory slot; the receiver's
                      array is a read-only view of the slot
  frame() -> 0-copy   the producer: ``with backend.frame(...) as buffer: np.copyto(buffer, source)``:
                      the acquisition writes into the slot itself; nothing is copied after it
  save -> receive()   StreamingBackend(mode="pull").receive(): the copying receiver (two copies)
  inline ipc / tcp    transport="inline" over ipc:// and 127.0.0.1 (ZeroMQ carries the bytes)
  pyzmq ipc           a bare PUSH/PULL pair, send(copy=False), np.frombuffer: the floor to beat
  pyzmq 8-byte notify 8 bytes over a bare PUSH/PULL ipc pair, acked: the least any notification
                      costs on this machine now (the floor of frame()'s latency)

References, measured in this process in the same rounds:

  memcpy cached       np.copyto of ONE 8 MiB pair back and forth: it stays in the last-level
                      cache, so it measures the cache, not what a stream sees
  memcpy DRAM         np.copyto over 8 rotating sources and destinations (128 MiB): every copy
                      reads and writes memory, as a stream of fresh frames does. THE reference.
                      Checked once per run against the same copy rotating over 1 GiB (and over
                      twice the last-level cache the kernel reports, where that is larger): the
                      run says so if 128 MiB was not enough to leave the cache on this machine.
  private fill        np.copyto from the same rotating sources into 4 rotating private buffers:
                      what an acquisition loop costs without any streaming (frame()'s reference)

Sources rotate over 8 frames for every path, so that the sender's copy is DRAM-bound too.
Throughput: a batch of frames back to back, from just before the first send to the receiver
holding the last (CLOCK_MONOTONIC is shared by the processes). Latency: one frame at a time,
a few milliseconds apart, from just before ``save`` (for frame(): just before the block exits)
to the receiver holding the array; the send time travels in the frame's first 8 bytes.

Goals (issue 15): save -> 0-copy p50 <= one DRAM copy + 0.15 ms and >= 0.85x DRAM memcpy's
bandwidth; frame() -> 0-copy p50 <= 0.20 ms and >= 0.9x the frames/s of the private fill;
copying receive() >= 0.60x DRAM memcpy. A script, not a test: prints numbers and exits 0.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import harness
import numpy as np
from harness import Goal, cores, last_level_cache_bytes, load_average, note_load, run_summary

SHAPE = (2048, 2048)
DTYPE = np.uint16
NBYTES = SHAPE[0] * SHAPE[1] * np.dtype(DTYPE).itemsize
SOURCES = 8
LATENCY_GAP_S = 0.004
SPAWN = mp.get_context("spawn")


def _sources() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 4096, SHAPE, dtype=DTYPE) for _ in range(SOURCES)]


def _stamp(array: np.ndarray) -> None:
    """The send time, in the frame's first 8 bytes."""
    array.reshape(-1)[:4].view(np.float64)[0] = time.monotonic()


def _stamped_at(array: np.ndarray) -> float:
    return float(np.ascontiguousarray(array.reshape(-1)[:4]).view(np.float64)[0])


def _free_port() -> int:
    from polystore.streaming.viewer import free_ports

    return free_ports(2)


# -- receivers (each in its own process) -------------------------------------------------------------


def _serve_arrivals(commands: Any, results: Any, arrivals: list[tuple[float, float]]) -> None:
    """Answer ("collect", n): the next n arrivals (time, send time) once they are there."""
    taken = 0
    while True:
        command, count = commands.get()
        if command == "stop":
            return
        deadline = time.monotonic() + 120
        while len(arrivals) < taken + count and time.monotonic() < deadline:
            time.sleep(0.0005)
        results.put(arrivals[taken : taken + count])
        taken += count


def _stream_receiver(host: str, port: int, zero_copy: bool, ready: Any, commands: Any, results: Any) -> None:
    from polystore.streaming import StreamReceiver

    arrivals: list[tuple[float, float]] = []

    def on_item(item: Any) -> None:
        now = time.monotonic()
        arrivals.append((now, _stamped_at(item.array)))

    with StreamReceiver(port=port, host=host, zero_copy=zero_copy).start(on_item):
        ready.set()
        _serve_arrivals(commands, results, arrivals)


def _pull_receiver(host: str, port: int, zero_copy: bool, ready: Any, commands: Any, results: Any) -> None:
    import threading

    from polystore import StreamingBackend

    arrivals: list[tuple[float, float]] = []
    stop = threading.Event()

    def loop() -> None:
        with StreamingBackend(mode="pull", port=port, host=host) as pull:
            pull.receive(timeout=0.01)  # connect
            ready.set()
            while not stop.is_set():
                item = pull.receive(timeout=0.1)
                if item is not None:
                    arrivals.append((time.monotonic(), _stamped_at(item.array)))

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    _serve_arrivals(commands, results, arrivals)
    stop.set()
    thread.join(5)


def _pyzmq_receiver(
    address: str, port: int, zero_copy: bool, ready: Any, commands: Any, results: Any
) -> None:
    import threading

    import zmq

    arrivals: list[tuple[float, float]] = []
    context = zmq.Context.instance()
    sock = context.socket(zmq.PULL)
    sock.connect(address)
    ack = context.socket(zmq.PUSH)
    ack.connect(address + ".ack")

    def loop() -> None:
        while True:
            frame = sock.recv(copy=False)
            array = np.frombuffer(frame.buffer, dtype=DTYPE).reshape(SHAPE)
            arrivals.append((time.monotonic(), _stamped_at(array)))
            ack.send(b"ok")

    ready.set()
    threading.Thread(target=loop, daemon=True).start()
    _serve_arrivals(commands, results, arrivals)


def _notify_receiver(
    address: str, port: int, zero_copy: bool, ready: Any, commands: Any, results: Any
) -> None:
    """The floor of any notification: 8 bytes (the send time) over a bare PUSH/PULL pair, acked."""
    import threading

    import zmq

    arrivals: list[tuple[float, float]] = []
    context = zmq.Context.instance()
    sock = context.socket(zmq.PULL)
    sock.connect(address)
    ack = context.socket(zmq.PUSH)
    ack.connect(address + ".ack")

    def loop() -> None:
        while True:
            sent = float(np.frombuffer(sock.recv(), dtype=np.float64)[0])
            arrivals.append((time.monotonic(), sent))
            ack.send(b"ok")

    ready.set()
    threading.Thread(target=loop, daemon=True).start()
    _serve_arrivals(commands, results, arrivals)


def _slot_receiver(
    address: str, port: int, zero_copy: bool, ready: Any, commands: Any, results: Any
) -> None:
    """The prototype's end: a slot's name arrives, the frame is read in place, the slot acked."""
    import mmap
    import threading

    import zmq

    arrivals: list[tuple[float, float]] = []
    context = zmq.Context.instance()
    sock = context.socket(zmq.PULL)
    sock.connect(address)
    ack = context.socket(zmq.PUSH)
    ack.connect(address + ".ack")
    mapped: dict[bytes, mmap.mmap] = {}

    def loop() -> None:
        while True:
            name = sock.recv()
            if name not in mapped:
                fd = os.open(f"/dev/shm/{name.decode()}", os.O_RDWR)
                mapped[name] = mmap.mmap(fd, 0)
                os.close(fd)
            array = np.ndarray(SHAPE, DTYPE, mapped[name])
            arrivals.append((time.monotonic(), _stamped_at(array)))
            del array
            ack.send(name)

    ready.set()
    threading.Thread(target=loop, daemon=True).start()
    _serve_arrivals(commands, results, arrivals)


# -- paths -------------------------------------------------------------------------------------------


class StreamPath:
    """One way of getting frames to another process: a sender here, a receiver process there."""

    def __init__(self, name: str, receiver: Callable[..., None], host: str, zero_copy: bool) -> None:
        self.name = name
        self.port = _free_port()
        self.host = host
        self.commands, self.results, ready = SPAWN.Queue(), SPAWN.Queue(), SPAWN.Event()
        self.process = SPAWN.Process(
            target=receiver, args=(host, self.port, zero_copy, ready, self.commands, self.results)
        )
        self.process.start()
        if not ready.wait(60):
            raise RuntimeError(f"the receiver of {name} did not start")
        self.frames_s: list[float] = []
        self.latencies: list[float] = []

    def send(self, source: np.ndarray) -> None:
        raise NotImplementedError

    def flush(self) -> None:
        """Wait until what was sent is back (slots given back), untimed."""

    def collect(self, count: int) -> list[tuple[float, float]]:
        self.commands.put(("collect", count))
        arrivals: list[tuple[float, float]] = self.results.get(timeout=180)
        if len(arrivals) != count:
            raise RuntimeError(f"{self.name}: {len(arrivals)} of {count} frames arrived")
        return arrivals

    def round(self, sources: list[np.ndarray], frames: int, samples: int) -> None:
        start = time.monotonic()
        for index in range(frames):
            self.send(sources[index % SOURCES])
        arrivals = self.collect(frames)
        self.frames_s.append((arrivals[-1][0] - start) / frames)
        self.flush()
        for index in range(samples):
            time.sleep(LATENCY_GAP_S)
            self.send(sources[index % SOURCES])
        self.latencies += [now - sent for now, sent in self.collect(samples)]
        self.flush()

    def close(self) -> None:
        self.commands.put(("stop", 0))
        self.process.join(10)
        if self.process.is_alive():
            self.process.kill()


class SavePath(StreamPath):
    def __init__(self, name: str, receiver: Callable[..., None], host: str, zero_copy: bool,
                 transport: str) -> None:
        super().__init__(name, receiver, host, zero_copy)
        from polystore import StreamingBackend

        self.backend = StreamingBackend(port=self.port, host=host, transport=transport,  # type: ignore[arg-type]
                                        send_timeout=60)
        self.backend.save(np.zeros(4), "warmup", wait_for_ack=True, transport="inline")

    def send(self, source: np.ndarray) -> None:
        _stamp(source)
        self.backend.save(source, "bench/frame.tif")

    def flush(self) -> None:
        self.backend.sender.wait_delivered(60)

    def close(self) -> None:
        self.backend.close(5)
        super().close()


class FramePath(SavePath):
    def send(self, source: np.ndarray) -> None:
        with self.backend.frame(SHAPE, DTYPE, "bench/frame.tif") as buffer:
            np.copyto(buffer, source)
            _stamp(buffer)


class PyzmqPath(StreamPath):
    def __init__(self, name: str, address: str, receiver: Callable[..., None] | None = None) -> None:
        import zmq

        context = zmq.Context.instance()
        self.out = context.socket(zmq.PUSH)
        self.out.bind(address)
        self.acks = context.socket(zmq.PULL)
        self.acks.bind(address + ".ack")
        self.outstanding = 0
        super().__init__(name, receiver or _pyzmq_receiver, address, False)
        self.address = address

    def send(self, source: np.ndarray) -> None:
        _stamp(source)
        self.out.send(source, copy=False)
        self.outstanding += 1

    def flush(self) -> None:
        while self.outstanding:
            self.acks.recv()
            self.outstanding -= 1

    def close(self) -> None:
        super().close()
        self.out.close(0)
        self.acks.close(0)
        for suffix in ("", ".ack"):
            Path(self.address.removeprefix("ipc://") + suffix).unlink(missing_ok=True)


class NotifyPath(PyzmqPath):
    """Only the notification: what frame() costs at the least once the frame is in its slot."""

    def __init__(self, name: str, address: str) -> None:
        self.stamp = np.zeros(1, np.float64)
        super().__init__(name, address, _notify_receiver)

    def send(self, source: np.ndarray) -> None:
        self.stamp[0] = time.monotonic()
        self.out.send(self.stamp.tobytes())
        self.outstanding += 1


class SlotPath(PyzmqPath):
    """The 60-line prototype: reused SharedMemory slots filled in place (as with frame()), the
    slot's name as the notification, the name back as the ack. No header, no checks: the floor
    of frame() on this machine, its caches as cold as frame()'s after an 8 MiB fill."""

    def __init__(self, name: str, address: str) -> None:
        from multiprocessing import shared_memory

        self.slots = [shared_memory.SharedMemory(create=True, size=NBYTES) for _ in range(4)]
        self.views = [np.ndarray(SHAPE, DTYPE, slot.buf) for slot in self.slots]
        self.free = list(range(4))
        super().__init__(name, address, _slot_receiver)

    def send(self, source: np.ndarray) -> None:
        while self.acks.poll(0) or not self.free:
            self.free.append([slot.name.encode() for slot in self.slots].index(self.acks.recv()))
            self.outstanding -= 1
        index = self.free.pop()
        np.copyto(self.views[index], source)
        _stamp(self.views[index])
        self.out.send(self.slots[index].name.encode())
        self.outstanding += 1

    def flush(self) -> None:
        super().flush()
        self.free = list(range(4))

    def close(self) -> None:
        super().close()
        del self.views
        for slot in self.slots:
            slot.close()
            slot.unlink()


# -- the copies a stream is made of ------------------------------------------------------------------------


class Copies:
    """memcpy references: each sample is one 8 MiB copy."""

    def __init__(self, sources: list[np.ndarray]) -> None:
        self.sources = sources
        self.targets = [np.empty_like(s) for s in sources]
        self.private = [np.empty_like(s) for s in sources[:4]]
        self.pair = (np.array(sources[0]), np.empty_like(sources[0]))
        for target, source in zip(self.targets, sources, strict=True):
            np.copyto(target, source)  # touch every page once
        self.samples: dict[str, list[float]] = {"memcpy cached": [], "memcpy DRAM": [], "private fill": []}

    def round(self, copies: int) -> None:
        a, b = self.pair
        cases: dict[str, Callable[[int], None]] = {
            "memcpy cached": lambda i: np.copyto(*((b, a) if i % 2 else (a, b))),
            "memcpy DRAM": lambda i: np.copyto(self.targets[(i + 3) % SOURCES], self.sources[i % SOURCES]),
            "private fill": lambda i: np.copyto(self.private[i % 4], self.sources[i % SOURCES]),
        }
        for name, copy in cases.items():
            for index in range(copies):
                started = time.perf_counter()
                copy(index)
                self.samples[name].append(time.perf_counter() - started)


def dram_bound_check(dram_copy_s: float) -> str:
    """Whether the 128 MiB rotation of "memcpy DRAM" really leaves the cache here: the same 8 MiB
    copies over a working set of 1 GiB or twice the last-level cache, whichever is larger (a
    cache as large as some servers' would hold 128 MiB), timed once, compared."""
    cache = last_level_cache_bytes()
    working_set = max(1 << 30, 2 * (cache or 0))
    count = working_set // (2 * NBYTES)
    sources = [np.ones(SHAPE, DTYPE) for _ in range(count)]  # ones, not empty: pages touched
    targets = [np.ones(SHAPE, DTYPE) for _ in range(count)]
    times = []
    for index in range(2 * count):
        started = time.perf_counter()
        np.copyto(targets[(index + 3) % count], sources[index % count])
        times.append(time.perf_counter() - started)
    large_s = statistics.median(times[count:])  # the second pass: every page faulted in already
    ratio = large_s / dram_copy_s
    cache_text = f"{cache >> 20} MiB" if cache else "not reported"
    verdict = "DRAM-bound" if ratio < 1.15 else (
        "NOT DRAM-bound here: the 128 MiB reference is cache-assisted (every ratio against it is stricter)")
    return (f"memcpy DRAM (128 MiB rotation) {dram_copy_s * 1e3:.3f} ms a copy; over {working_set >> 20} MiB "
            f"{large_s * 1e3:.3f} ms ({ratio:.2f}x; last-level cache {cache_text}): {verdict}")


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--frames", type=int, default=24, help="frames per throughput batch")
    parser.add_argument("--samples", type=int, default=12, help="latency samples per round")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no-figure", action="store_true",
                        help="write no figure (A/B runs: benchmarks/figures/ holds the final run's)")
    args = parser.parse_args()
    rounds, frames, samples = (2, 12, 8) if args.quick else (args.rounds, args.frames, args.samples)
    ipc = f"ipc://{tempfile.gettempdir()}/polystore-bench-{os.getpid()}"
    load_before = note_load()
    started = time.monotonic()
    sources = _sources()
    copies = Copies(sources)
    paths: list[StreamPath] = [
        SavePath("save -> 0-copy", _stream_receiver, "127.0.0.1", True, "shm"),
        FramePath("frame() -> 0-copy", _stream_receiver, "127.0.0.1", True, "shm"),
        SavePath("save -> receive()", _pull_receiver, "127.0.0.1", False, "shm"),
        SavePath("inline ipc", _stream_receiver, ipc, False, "inline"),
        SavePath("inline tcp", _stream_receiver, "127.0.0.1", False, "inline"),
        PyzmqPath("pyzmq ipc", ipc + "-raw"),
        NotifyPath("pyzmq 8-byte notify", ipc + "-notify"),
        SlotPath("prototype slot", ipc + "-slot"),
    ]
    loads = []
    try:
        for round_ in range(rounds):
            order = paths[round_ % len(paths):] + paths[: round_ % len(paths)]
            for path in order:
                path.round(sources, frames, samples)
            copies.round(frames)
            loads.append(load_average())
    finally:
        for path in paths:
            path.close()
        for suffix in ("", ".ack"):
            Path(ipc.removeprefix("ipc://") + suffix).unlink(missing_ok=True)

    print(f"{rounds} rounds x {frames} frames (+{samples} latency samples) of {SHAPE[0]}x{SHAPE[1]} "
          f"{np.dtype(DTYPE).name} (8 MiB), {cores()}; load average during the rounds "
          f"{min(loads):.2f}-{max(loads):.2f}")
    print(f"{'path':<20} {'frames/s':>9} {'GB/s':>7} {'p50 ms':>8} {'p90 ms':>8}"
          "   (latency: send -> array in hand)")
    per_frame: dict[str, float] = {}
    p50: dict[str, float] = {}
    for name, values in copies.samples.items():
        per_frame[name] = statistics.median(values)
        p50[name] = statistics.median(values)
        print(f"{name:<20} {1 / per_frame[name]:>9.1f} {NBYTES / per_frame[name] / 1e9:>7.2f} "
              f"{p50[name] * 1e3:>8.3f} {_percentile(values, 0.9) * 1e3:>8.3f}   (one copy)")
    for path in paths:
        per_frame[path.name] = statistics.median(path.frames_s)
        p50[path.name] = statistics.median(path.latencies)
        gbps = "-" if isinstance(path, NotifyPath) else f"{NBYTES / per_frame[path.name] / 1e9:.2f}"
        print(f"{path.name:<20} {1 / per_frame[path.name]:>9.1f} {gbps:>7} "
              f"{p50[path.name] * 1e3:>8.3f} {_percentile(path.latencies, 0.9) * 1e3:>8.3f}")
    print(dram_bound_check(per_frame["memcpy DRAM"]))
    print()

    def bandwidth_ratio(name: str, reference: str) -> float:
        return per_frame[reference] / per_frame[name]

    dram = "memcpy DRAM"
    # every goal as a ratio against its bound, so that one table (and one figure) holds them all
    save_bound_ms = p50[dram] * 1e3 + 0.15
    verdicts: list[tuple[str, float, str, Goal | None]] = [
        (f"save -> 0-copy p50 / (one DRAM copy + 0.15 ms = {save_bound_ms:.3f} ms)",
         p50["save -> 0-copy"] * 1e3 / save_bound_ms, f"{p50['save -> 0-copy'] * 1e3:.3f} ms", Goal(1.0)),
        ("save -> 0-copy bandwidth / DRAM memcpy", bandwidth_ratio("save -> 0-copy", dram), "",
         Goal(0.85, at_least=True)),
        ("frame() -> 0-copy p50 / 0.20 ms", p50["frame() -> 0-copy"] * 1e3 / 0.20,
         f"{p50['frame() -> 0-copy'] * 1e3:.3f} ms", Goal(1.0)),
        ("frame() -> 0-copy frames/s / private fill",
         bandwidth_ratio("frame() -> 0-copy", "private fill"), "", Goal(0.90, at_least=True)),
        ("save -> receive() bandwidth / DRAM memcpy", bandwidth_ratio("save -> receive()", dram), "",
         Goal(0.60, at_least=True)),
        ("DRAM / cached memcpy", bandwidth_ratio(dram, "memcpy cached"), "", None),
        ("pyzmq ipc / DRAM memcpy", bandwidth_ratio("pyzmq ipc", dram), "", None),
        ("inline ipc / pyzmq ipc", bandwidth_ratio("inline ipc", "pyzmq ipc"), "", None),
        ("frame() -> 0-copy p50 / an 8-byte pyzmq notification's", p50["frame() -> 0-copy"]
         / p50["pyzmq 8-byte notify"], f"{p50['pyzmq 8-byte notify'] * 1e3:.3f} ms", None),
        ("frame() -> 0-copy p50 / the prototype's (slot + notification)", p50["frame() -> 0-copy"]
         / p50["prototype slot"], f"{p50['prototype slot'] * 1e3:.3f} ms", None),
        ("frame() -> 0-copy frames/s / the prototype's",
         bandwidth_ratio("frame() -> 0-copy", "prototype slot"), "", None),
    ]
    for label, ratio, value, goal in verdicts:
        result = "info" if goal is None else ("PASS" if goal.met(ratio) else "MISS")
        print(f"{label:<62} {ratio:6.3f}x {value:>10}  goal {str(goal) if goal else '-':<9} {result}")
    print(run_summary(time.monotonic() - started, load_before))
    if args.no_figure:
        return
    harness.save_figure("streaming", [(label, ratio, goal) for label, ratio, _, goal in verdicts],
                        title="streaming, 2048x2048 uint16 (benchmarks/streaming.py)",
                        load_before=load_before)


if __name__ == "__main__":
    main()
