"""Frames per second into an ImageJ window: streamed from a pipeline process vs built in-process.

    xvfb-run -a -s "-screen 0 1280x1024x24" python benchmarks/fiji_stream.py   # as make bench
    xvfb-run -a -s "-screen 0 1280x1024x24" python benchmarks/fiji_stream.py --quick

(xvfb-run's own default screen is 640x480 at 8 bits a pixel; ``make bench`` and the figures
in docs/fiji.md use this 24-bit screen.)

Ours: this process is the pipeline. It streams 2048x2048 uint16 frames with
FijiStreamingBackend (shared memory on this host) to a bridge process (``python -m
polystore_fiji``), which puts each into a hyperstack window that grows along T; a sample
ends when the bridge reports every frame placed in the window (control op ``wait``) and the
window has painted the last frame sent (``windows`` reports the newest plane painted as
``drawn``: a paint of an earlier frame does not end it).

Ceiling: the same frames, already in memory in the process that runs ImageJ (a JVM started
here), copied into ImageJ processors, stacked into one ImagePlus and shown in a window, the
sample ending once the window has been painted: what the bridge's end costs with no stream
at all. (It used to close the window as soon as ``show()`` returned, before ImageJ ever
painted it, so the ceiling skipped the drawing every streamed window does.)

Also measured, once a run and without a goal: frames made in the loop, as an acquisition
or a processing step makes them. The pipeline makes each frame straight in its shared-memory
slot (``with backend.frame(...) as slot: np.add(base, i, out=slot)``), so nothing is copied
before the bridge's copy into Java; the in-process loop makes each into one reused buffer and
copies that into ImageJ, as above. Both make the same frames with the same NumPy call.

Goal: ours at least 0.9x of the ceiling's frames per second in every run (``--runs 5``
prints each). Samples alternate between the two (harness.interleaved). A script, not a
test: it reports PASS / MISS and exits 0.

Also printed, for the record (no JVM, no goal): the memory work of each side alone, with
NumPy on this machine's cores. The ceiling's is a fresh plane zeroed (as Java
zeroes every new array) and the frame copied into it; the stream's is that, on one thread,
while another copies each frame into an 8-slot ring first (the pipeline's copy into shared
memory). Both threads wait on the same memory: this is the part of the gap that no work on
the bridge can close while the stream copies every frame twice and the ceiling once.
"""

from __future__ import annotations

import argparse
import itertools
import os
import queue
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import harness
import numpy as np
from harness import Goal, cores, interleaved, note_load, paired_row, print_table, print_verdicts

from polystore_fiji.backend import FijiStreamingBackend
from polystore_fiji.client import FijiClient, launch_bridge
from polystore_fiji.convert import processor_from_plane
from polystore_fiji.jvm import on_edt, start_imagej
from polystore_fiji.window import canvas_painted

SIZE = 2048
GOAL = Goal(0.9, at_least=True)
SETTLE_S = 0.5
PAINT_TIMEOUT_S = 10.0
POLL_S = 0.005
"""How often both sides look whether their window has painted (the same for both): each look of
the streamed side is a question that the bridge's event thread answers, so looking less often
leaves that thread to the paint being waited for; 5 ms is under 2% of a sample."""


def frames_for(count: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    base = rng.integers(100, 4000, (SIZE, SIZE), dtype=np.uint16)
    return [base + np.uint16(i) for i in range(count)]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer frames and repeats")
    parser.add_argument("--runs", type=int, default=1,
                        help="whole runs, each printed (PASS only if every one meets the goal)")
    args = parser.parse_args()
    if not os.environ.get("DISPLAY"):
        sys.exit("needs a display: run under xvfb-run -a (ImageJ windows are part of what is measured)")
    count = 16 if args.quick else 48
    frames = frames_for(count)
    mib = count * frames[0].nbytes / 2**20
    print(f"fiji_stream: {count} frames of {SIZE}x{SIZE} uint16 ({mib:.0f} MiB) per sample; {cores()}")
    load_before = note_load()
    started = time.perf_counter()

    # Both JVMs (the ceiling's, here, and the bridge's, which inherits the environment) with
    # the same fixed heap, allocated and touched up front: otherwise the ceiling, which keeps
    # every frame of a sample, measures the JVM growing its heap (from 4 to 28 ms per frame
    # between runs) more than ImageJ; and a heap that may still grow (-Xmx above -Xms) is
    # grown and pre-touched inside a collection pause, which stalled the stream 0.5-2.8 s
    # once or twice a run (seen in -Xlog:gc*: "Running G1 PreTouch ... 956301312B").
    os.environ.setdefault("POLYSTORE_JVM_OPTIONS", "-Xms4g -Xmx4g -XX:+AlwaysPreTouch")
    start_imagej()  # the ceiling's JVM, in this process
    from scyjava import jimport

    image_stack, image_plus = jimport("ij.ImageStack"), jimport("ij.ImagePlus")

    def until(condition: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + PAINT_TIMEOUT_S
        while not condition():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what} was not painted within {PAINT_TIMEOUT_S:g} s")
            time.sleep(POLL_S)

    def ceiling_of(made: bool) -> Callable[[], None]:
        """The in-process sample: the frames as they are, or each made first into one buffer."""
        buffer = np.empty_like(frames[0])

        def ceiling() -> None:
            stack = image_stack(SIZE, SIZE)
            for index, frame in enumerate(frames):
                if made:
                    make_frame(frames[0], index, buffer)
                    frame = buffer
                stack.addSlice("", processor_from_plane(frame))
            imp = image_plus("ceiling", stack)
            imp.setDimensions(1, 1, count)
            imp.setOpenAsHyperStack(True)
            on_edt(imp.show)
            # read from this thread (a flag the event thread sets): polling through the event
            # thread would queue events between the paint and its own work
            until(lambda: canvas_painted(imp.getCanvas()), "the ceiling's window")

            def close() -> None:
                imp.changes = False
                imp.close()

            on_edt(close)

        return ceiling

    # one bridge for every run, as one JVM does the ceiling: both stay as warm (JIT) run after run
    with (
        tempfile.TemporaryDirectory() as folder,
        launch_bridge(log_path=Path(folder) / "bridge.log") as (client, _),
    ):
        backend = FijiStreamingBackend(port=client.port)
        streamed = streamer(client, backend, frames, until, made=False)
        rows = [measure(streamed, ceiling_of(made=False), len(frames)) for _ in range(args.runs)]
        made_row = measure(streamer(client, backend, frames, until, made=True), ceiling_of(made=True),
                           len(frames), case=MADE_CASE, goal=None)
        backend.close()
    print_table(rows, units=("ms",), per_round=True)
    for number, row in enumerate(rows, start=1):
        print(f"  run {number}: streamed {1 / row.ours_s:.1f} frames/s, in-process ceiling "
              f"{1 / row.reference_s:.1f} frames/s: {row.ratio:.2f}x (goal {GOAL}) {row.result}")
    print_table([made_row], units=("ms",), per_round=True)
    print(f"  frames made in the loop: streamed with frame() {1 / made_row.ours_s:.1f} frames/s, "
          f"in-process {1 / made_row.reference_s:.1f} frames/s: {made_row.ratio:.2f}x (no goal)")
    print_memory_floor(frames)
    print_verdicts(rows, time.perf_counter() - started, load_before)
    bars: list[harness.Row | harness.Bar] = [*rows, made_row]
    harness.save_figure("fiji_stream", bars, title="Fiji: streamed / in-process (benchmarks/fiji_stream.py)",
                        load_before=load_before)


def make_frame(base: np.ndarray, index: int, out: np.ndarray) -> None:
    """Frame ``index`` of :func:`frames_for`, made into ``out``: an acquisition's own write."""
    np.add(base, np.uint16(index), out=out)


def streamer(client: FijiClient, backend: FijiStreamingBackend, frames: list[np.ndarray],
             until: Callable[[Callable[[], bool], str], None], *, made: bool) -> Callable[[], None]:
    """One streamed sample: the frames sent (``made``: each made in its shared-memory slot with
    ``frame()``, else the existing ones with ``save()``), every one placed, the last one painted,
    closed."""
    rounds = itertools.count()
    handled = [int(client.status()["handled"])]

    def painted(title: str, path: str) -> bool:
        return any(w["title"] == title and w.get("drawn") == path for w in client.windows())

    def streamed() -> None:
        plate = f"run{next(rounds)}"
        paths = [f"{plate}/A01_s1_w1_t{index + 1}.tif" for index in range(len(frames))]
        for index, (frame, path) in enumerate(zip(frames, paths, strict=True)):
            if made:
                with backend.frame(frame.shape, frame.dtype, path) as slot:
                    make_frame(frames[0], index, slot)
            else:
                backend.save(frame, path)
        handled[0] += len(frames)
        client.wait(handled[0], timeout=120)
        until(lambda: painted(f"{plate}/A01", paths[-1]), "the streamed window's last frame")
        client.close(f"{plate}/A01")

    return streamed


MADE_CASE = "frames made in the loop: in the slot (frame()) / in-process"

RING_SLOTS = 8
"""The sender's shared-memory slots (FijiStreamingBackend.DEFAULT_SHM_SLOTS)."""


def print_memory_floor(frames: list[np.ndarray]) -> None:
    """The memory work of each side alone (see the module's docstring), median per frame."""
    planes = [np.ones_like(frame) for frame in frames]  # touched: no page faults in the timings
    ring = [np.ones_like(frames[0]) for _ in range(RING_SLOTS)]

    def ceiling() -> None:
        for frame, plane in zip(frames, planes, strict=True):
            plane.fill(0)
            np.copyto(plane, frame)

    def streamed() -> None:
        free: queue.SimpleQueue[int] = queue.SimpleQueue()
        full: queue.SimpleQueue[int] = queue.SimpleQueue()
        for slot in range(RING_SLOTS):
            free.put(slot)

        def pipeline() -> None:
            for frame in frames:
                slot = free.get()
                np.copyto(ring[slot], frame)
                full.put(slot)

        sender = threading.Thread(target=pipeline)
        sender.start()
        for plane in planes:  # the bridge: NumPy's copies, like Java's, run without the GIL
            slot = full.get()
            plane.fill(0)
            np.copyto(plane, ring[slot])
            free.put(slot)
        sender.join()

    samples = interleaved({"streamed": streamed, "ceiling": ceiling}, repeat=9, warmup=1)
    ours, reference = (sorted(samples[name])[len(samples[name]) // 2] / len(frames)
                       for name in ("streamed", "ceiling"))
    print(f"  memory work alone (NumPy, no JVM): the stream's copies {ours * 1e3:.2f} ms a frame, "
          f"the ceiling's {reference * 1e3:.2f} ms: {reference / ours:.2f}x")


def measure(streamed: Callable[[], None], ceiling: Callable[[], None], count: int, *,
            case: str = "streamed into a window, per frame", goal: Goal | None = GOAL) -> harness.Row:
    """One run: interleaved samples of both sides; the row of their ratio."""
    # each sample starts on quiet cores: both JVMs free the previous sample's 384 MiB and
    # close its window in the background, which would otherwise land in the next sample
    samples = interleaved({"streamed": streamed, "ceiling": ceiling}, repeat=3 if count < 48 else 9,
                          warmup=1, before=lambda _name: time.sleep(SETTLE_S))
    # frames per second: the ratio of times, inverted (ours is "at least 0.9x" the ceiling's rate)
    per_frame = {name: [s / count for s in values] for name, values in samples.items()}
    row = paired_row("1", case, per_frame, "streamed", "ceiling", "in-process ImagePlus", None)
    return harness.row("1", case, row.ours_s, "in-process ImagePlus", row.reference_s, goal, speedup=True,
                       round_ratios=[1 / r for r in row.round_ratios], samples=row.samples)


if __name__ == "__main__":
    main()
