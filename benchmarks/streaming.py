"""Cross-process streaming of 2048x2048 uint16 frames (8 MiB): polystore next to plain pyzmq.

    python benchmarks/streaming.py             # 100 frames per transport, 40 latency samples
    python benchmarks/streaming.py --quick     # fewer frames, for a smoke check

Rows (sender in this process, receiver in a spawned one; 127.0.0.1 / ipc on this host):
  shm           StreamingBackend, transport="shm" (ring of reused shared-memory slots); the
                receiver copies each frame out of its slot (StreamReceiver's default)
  shm 0-copy    the same with StreamReceiver(zero_copy=True): the receiver's array is a
                read-only view of the slot, given back when the array is collected
  inline ipc    StreamingBackend(host="ipc://..."), transport="inline"
  inline tcp    StreamingBackend on 127.0.0.1, transport="inline"
  pyzmq ipc     a bare PUSH/PULL pair over ipc://, send(copy=False), np.frombuffer on the
                receiving side: the floor to beat
  pyzmq tcp     the same over 127.0.0.1
  np.copyto     one in-process copy of the frame: the memory-bandwidth ceiling

Goals (issue 4): shm at least 40% of np.copyto's bandwidth and at least 2x pyzmq over ipc;
p50 latency from ``save`` to the array in the receiver's hands under 2 ms.

Throughput: N frames sent back to back; time from the first save to the receiver holding the
last array (CLOCK_MONOTONIC is shared by the processes). Latency: one frame at a time
(the next is sent when the previous one is acknowledged), from just before ``save`` to the
receiver holding the array; p50 reported. A script, not a test: prints numbers and exits 0.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import harness
import numpy as np
from harness import Goal, cores, note_load, run_summary

SHAPE = (2048, 2048)
DTYPE = np.uint16
SPAWN = mp.get_context("spawn")


def _free_port() -> int:
    from polystore.streaming.viewer import free_ports

    return free_ports(2)  # data and acknowledgements


def _polystore_receiver(host: str, port: int, total: int, zero_copy: bool, results: Any) -> None:
    from polystore.streaming import StreamReceiver

    arrivals: list[float] = []
    latencies: list[float] = []

    def on_item(item: Any) -> None:
        now = time.monotonic()
        assert item.array.shape == SHAPE
        arrivals.append(now)
        latencies.append(now - float(item.metadata["t0"]))

    with StreamReceiver(port=port, host=host, zero_copy=zero_copy).start(on_item):
        deadline = time.monotonic() + 120
        while len(arrivals) < total and time.monotonic() < deadline:
            time.sleep(0.001)
    results.put((arrivals, latencies))


def _pyzmq_endpoints(host: str, port: int) -> tuple[str, str]:
    if host.startswith("ipc://"):
        return host, host + ".ack"
    return f"tcp://{host}:{port}", f"tcp://{host}:{port + 1}"


def _pyzmq_receiver(host: str, port: int, total: int, ready: Any, results: Any) -> None:
    import zmq

    data_endpoint, ack_endpoint = _pyzmq_endpoints(host, port)
    sock = zmq.Context.instance().socket(zmq.PULL)
    sock.connect(data_endpoint)
    ack = zmq.Context.instance().socket(zmq.PUSH)
    ack.connect(ack_endpoint)
    ready.set()
    arrivals: list[float] = []
    latencies: list[float] = []
    for _ in range(total):
        t0_frame, data = sock.recv_multipart(copy=False)
        array = np.frombuffer(data.buffer, dtype=DTYPE).reshape(SHAPE)
        now = time.monotonic()
        assert array.shape == SHAPE
        arrivals.append(now)
        latencies.append(now - float(bytes(t0_frame.buffer)))
        ack.send(b"ok")
    results.put((arrivals, latencies))
    sock.close(0)
    ack.close(1000)


def _run_polystore(
    name: str, transport: str, host: str, frames: int, samples: int, zero_copy: bool = False
) -> dict[str, float]:
    from polystore import StreamingBackend

    port = _free_port()
    results = SPAWN.Queue()
    receiver = SPAWN.Process(
        target=_polystore_receiver, args=(host, port, 1 + frames + samples, zero_copy, results)
    )
    receiver.start()
    frame = np.random.default_rng(0).integers(0, 4096, SHAPE, dtype=DTYPE)
    with StreamingBackend(port=port, host=host, transport=transport, send_timeout=60) as sender:  # type: ignore[arg-type]
        sender.save(frame, "warmup", metadata={"t0": time.monotonic()}, wait_for_ack=True)
        start = time.monotonic()
        for i in range(frames):
            sender.save(frame, f"f{i}", metadata={"t0": time.monotonic()})
        for i in range(samples):
            sender.save(frame, f"l{i}", metadata={"t0": time.monotonic()}, wait_for_ack=True)
        arrivals, latencies = results.get(timeout=180)
    receiver.join(30)
    elapsed = arrivals[frames] - start  # arrival of the last throughput frame
    return _row(name, frames, elapsed, latencies[1 + frames :])


def _run_pyzmq(name: str, host: str, frames: int, samples: int) -> dict[str, float]:
    import zmq

    port = _free_port()
    results = SPAWN.Queue()
    ready = SPAWN.Event()
    context = zmq.Context.instance()
    data_endpoint, ack_endpoint = _pyzmq_endpoints(host, port)
    out = context.socket(zmq.PUSH)
    out.bind(data_endpoint)
    acks = context.socket(zmq.PULL)
    acks.bind(ack_endpoint)
    receiver = SPAWN.Process(target=_pyzmq_receiver, args=(host, port, 1 + frames + samples, ready, results))
    receiver.start()
    ready.wait(60)
    frame = np.random.default_rng(0).integers(0, 4096, SHAPE, dtype=DTYPE)
    out.send_multipart([str(time.monotonic()).encode(), frame], copy=False)
    acks.recv()
    start = time.monotonic()
    for _ in range(frames):
        out.send_multipart([str(time.monotonic()).encode(), frame], copy=False)
    for _ in range(frames):
        acks.recv()
    for _ in range(samples):
        out.send_multipart([str(time.monotonic()).encode(), frame], copy=False)
        acks.recv()
    arrivals, latencies = results.get(timeout=180)
    receiver.join(30)
    out.close(0)
    acks.close(0)
    return _row(name, frames, arrivals[frames] - start, latencies[1 + frames :])


def _run_copyto(frames: int) -> dict[str, float]:
    source = np.random.default_rng(0).integers(0, 4096, SHAPE, dtype=DTYPE)
    target = np.empty_like(source)
    np.copyto(target, source)
    start = time.monotonic()
    for _ in range(frames):
        np.copyto(target, source)
    elapsed = time.monotonic() - start
    return _row("np.copyto", frames, elapsed, [elapsed / frames])


def _row(name: str, frames: int, elapsed: float, latencies: list[float]) -> dict[str, Any]:
    nbytes = int(np.prod(SHAPE)) * np.dtype(DTYPE).itemsize
    return {
        "name": name,
        "fps": frames / elapsed,
        "gbps": frames * nbytes / elapsed / 1e9,
        "p50_ms": statistics.median(latencies) * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--samples", type=int, default=40)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    frames, samples = (20, 10) if args.quick else (args.frames, args.samples)
    ipc = f"ipc://{tempfile.gettempdir()}/polystore-bench-{os.getpid()}"
    load_before = note_load()
    started = time.monotonic()
    rows = {
        row["name"]: row for row in (
            _run_polystore("shm", "shm", "127.0.0.1", frames, samples),
            _run_polystore("shm 0-copy", "shm", "127.0.0.1", frames, samples, zero_copy=True),
            _run_polystore("inline ipc", "inline", ipc, frames, samples),
            _run_polystore("inline tcp", "inline", "127.0.0.1", frames, samples),
            _run_pyzmq("pyzmq ipc", ipc + "-raw", frames, samples),
            _run_pyzmq("pyzmq tcp", "127.0.0.1", frames, samples),
            _run_copyto(frames),
        )
    }
    for path in (ipc, ipc + "-raw"):
        for suffix in ("", ".ack"):
            Path(path.removeprefix("ipc://") + suffix).unlink(missing_ok=True)
    print(f"{frames} frames of {SHAPE[0]}x{SHAPE[1]} {np.dtype(DTYPE).name}, {cores()}")
    print(f"{'transport':<12} {'frames/s':>10} {'GB/s':>8} {'p50 latency ms':>16}")
    for row in rows.values():
        print(f"{row['name']:<12} {row['fps']:>10.1f} {row['gbps']:>8.2f} {row['p50_ms']:>16.2f}")
    print()
    at_least = Goal(0.40, at_least=True), Goal(2.0, at_least=True)
    def ratio(ours: str, reference: str, unit: str) -> float:
        return float(rows[ours][unit] / rows[reference][unit])

    verdicts = [
        ("shm bandwidth / np.copyto", ratio("shm", "np.copyto", "gbps"), at_least[0]),
        ("shm frames/s / pyzmq ipc", ratio("shm", "pyzmq ipc", "fps"), at_least[1]),
        ("shm 0-copy bandwidth / np.copyto", ratio("shm 0-copy", "np.copyto", "gbps"), at_least[0]),
        ("shm 0-copy frames/s / pyzmq ipc", ratio("shm 0-copy", "pyzmq ipc", "fps"), at_least[1]),
        ("inline ipc frames/s / pyzmq ipc", ratio("inline ipc", "pyzmq ipc", "fps"), None),
        ("inline tcp frames/s / pyzmq tcp", ratio("inline tcp", "pyzmq tcp", "fps"), None),
    ]
    for label, value, goal in verdicts:
        result = "info" if goal is None else ("PASS" if goal.met(value) else "MISS")
        print(f"{label:<34} {value:6.2f}x  goal {str(goal) if goal else '-':<9} {result}")
    for name in ("shm", "shm 0-copy"):
        p50 = rows[name]["p50_ms"]
        verdict = "PASS" if p50 < 2 else "MISS"
        print(f"{name + ' p50 latency, save -> array':<34} {p50:6.2f} ms goal < 2 ms    {verdict}")
    print(run_summary(time.monotonic() - started, load_before))
    harness.save_figure("streaming", verdicts, title="streaming, 2048x2048 uint16 (benchmarks/streaming.py)",
                        load_before=load_before)


if __name__ == "__main__":
    main()
