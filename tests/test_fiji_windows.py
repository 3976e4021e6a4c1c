"""A shown hyperstack grows in its own window: same StackWindow, right C/Z/T, sliders that reach
the new positions, pixels where they belong.

ImageJ 1 replaces a shown hyperstack's window whenever its dimensions change; the bridge keeps
it (:func:`polystore_fiji.hyperstack.set_dimensions_in_place`). The assembler runs in a
subprocess with a JVM and ImageJ's jar under the test's display (one JVM per process, never
in pytest's own), and reports what ImageJ holds after each step as JSON.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from typing import Any

import pytest
from fiji_helpers import REPO, requires_imagej

from polystore_fiji.jvm import DEFAULT_IJ_JAR, IJ_JAR_ENV

SCRIPT_TIMEOUT_S = 120

# (channel, z, t) of the planes sent, one step at a time; every plane is 100*c + 10*z + t + 1
STEPS: list[list[tuple[int, int, int]]] = [
    [(0, 0, 0)],                                 # one plane: a StackWindow without sliders
    [(0, 0, 1)],                                 # T 1 -> 2: the first slider
    [(0, 0, 2), (0, 0, 3)],                      # T 2 -> 4 in one update
    [(2, 0, 3)],                                 # a channel (c 2): C 1 -> 2, composite, a slider more
    [(1, 0, 0)],                                 # a channel between the two: C 2 -> 3, inserted
    [(0, 1, 2), (1, 1, 2)],                      # a z: Z 1 -> 2, inserted between the planes
    [(0, 0, 0)],                                 # a known position: replaced, no growth
]

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from polystore_fiji.hyperstack import HyperstackAssembler
    from polystore_fiji.jvm import on_edt, start_imagej
    from scyjava import jimport

    start_imagej(ij_jar={jar!r})
    steps = json.loads({steps!r})
    assembler = HyperstackAssembler(show=True)
    scrollbar = jimport("ij.gui.ScrollbarWithLabel")
    system = jimport("java.lang.System")
    sent = {{}}

    def value(c, z, t, replaced):
        return 100 * c + 10 * z + t + 1 + (1000 if replaced else 0)

    def report():
        imp = assembler.image("grow")
        window = imp.getWindow()
        pixels = {{}}
        channels = sorted({{k[0] for k in sent}})
        slices = sorted({{k[1] for k in sent}})
        frames = sorted({{k[2] for k in sent}})
        for (c, z, t), expected in sent.items():
            index = imp.getStackIndex(channels.index(c) + 1, slices.index(z) + 1, frames.index(t) + 1)
            pixels[f"{{c}},{{z}},{{t}}"] = [int(imp.getStack().getProcessor(index).get(5, 3)), expected]
        return {{
            "window": int(system.identityHashCode(window)),
            "window_class": str(window.getClass().getName()),
            "visible": bool(window.isVisible()),
            "imp": int(system.identityHashCode(imp)),
            "dims": [int(imp.getNChannels()), int(imp.getNSlices()), int(imp.getNFrames())],
            "stack_size": int(imp.getStackSize()),
            "sliders": [int(s.getMaximum()) for s in window.getComponents() if isinstance(s, scrollbar)],
            "valid": bool(window.validDimensions()) if window.isHyperStack() else None,
            "composite_mode": int(imp.getMode()) if imp.isComposite() else None,
            "position": [int(imp.getChannel()), int(imp.getSlice()), int(imp.getFrame())],
            "pixels": pixels,
        }}

    for number, step in enumerate(steps):
        for c, z, t in step:
            replaced = (c, z, t) in sent
            sent[(c, z, t)] = value(c, z, t, replaced)
            plane = np.full((24, 32), sent[(c, z, t)], dtype=np.uint16)
            # as the bridge's receiver queues them: the last update of a step applies the step
            on_edt(lambda p=plane, c=c, z=z, t=t, last=(c, z, t) == tuple(step[-1]): assembler.place(
                "grow", assembler.prepare(p, "grow.tif", {{"channel": c, "z": z, "t": t}})[1],
                np.dtype(np.uint16), False, apply=last))
        print(json.dumps(on_edt(report)), flush=True)
    """
)


@pytest.fixture(scope="module")
def reports() -> list[dict[str, Any]]:
    """What ImageJ held after each of :data:`STEPS`."""
    requires_imagej()
    jar = os.environ.get(IJ_JAR_ENV, DEFAULT_IJ_JAR)
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(jar=jar, steps=json.dumps(STEPS))],
        capture_output=True, text=True, timeout=SCRIPT_TIMEOUT_S, cwd=REPO,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == len(STEPS), result.stdout + result.stderr[-3000:]
    return lines


def expected_dims(step: int) -> list[int]:
    sent = {key for planes in STEPS[: step + 1] for key in planes}
    return [len({key[axis] for key in sent}) for axis in range(3)]


def test_the_window_is_never_replaced(reports: list[dict[str, Any]]) -> None:
    assert {r["window"] for r in reports} == {reports[0]["window"]}
    assert {r["imp"] for r in reports} == {reports[0]["imp"]}
    assert all(r["window_class"] == "ij.gui.StackWindow" and r["visible"] for r in reports)


def test_dimensions_follow_the_positions_sent(reports: list[dict[str, Any]]) -> None:
    for step, report in enumerate(reports):
        channels, slices, frames = expected_dims(step)
        assert report["dims"] == [channels, slices, frames], step
        assert report["stack_size"] == channels * slices * frames, step


def test_sliders_reach_the_new_positions(reports: list[dict[str, Any]]) -> None:
    # ImageJ's sliders run from 1 to size + 1 (exclusive), one per dimension above 1, C Z T
    for step, report in enumerate(reports):
        assert report["sliders"] == [n + 1 for n in expected_dims(step) if n > 1], step
        assert report["valid"] in (True, None), step  # a hyperstack window agrees with its image
    assert reports[-1]["valid"] is True


def test_the_window_shows_the_last_plane_placed(reports: list[dict[str, Any]]) -> None:
    # step 4 placed c=1 (the second of channels 0, 1, 2) at t=0; step 5 ended with c=1, z=1, t=2
    assert reports[4]["position"] == [2, 1, 1]
    assert reports[5]["position"] == [2, 2, 3]


def test_pixels_are_at_their_positions_after_each_growth(reports: list[dict[str, Any]]) -> None:
    for step, report in enumerate(reports):
        for where, (found, expected) in report["pixels"].items():
            assert found == expected, (step, where)
    assert reports[-1]["pixels"]["0,0,0"] == [1001, 1001]  # replaced in place, no growth


def test_new_channels_make_the_window_composite(reports: list[dict[str, Any]]) -> None:
    composite = 1  # ij.CompositeImage.COMPOSITE
    assert reports[2]["composite_mode"] != composite  # one channel: grayscale
    assert all(r["composite_mode"] == composite for r in reports[3:])


# -- planes of a well arriving in any order ------------------------------------------------------

# Orders in which the two converting threads handed over the eight planes (channel, z, site) of
# one well, one update per group; each put a position's pixels into another (found by a
# shuffled search: ImagePlus.setSlice writes the shown processor back at its old index).
ORDERS: list[list[list[tuple[int, int, int]]]] = [
    [[(1, 0, 1)], [(0, 0, 0)], [(1, 1, 0)], [(1, 0, 0)], [(0, 1, 1)], [(0, 0, 1), (1, 1, 1), (0, 1, 0)]],
    [[(1, 0, 1), (1, 1, 0)], [(1, 0, 0), (0, 0, 1), (0, 1, 0)], [(0, 1, 1)], [(1, 1, 1)], [(0, 0, 0)]],
    [[(0, 1, 0)], [(1, 1, 0), (1, 1, 1)], [(0, 0, 0), (1, 0, 1), (0, 1, 1)], [(1, 0, 0)], [(0, 0, 1)]],
    [[(1, 1, 1)], [(0, 1, 1), (0, 0, 0)], [(1, 0, 1)], [(0, 1, 0), (1, 1, 0), (1, 0, 0)], [(0, 0, 1)]],
]

ORDER_SCRIPT = textwrap.dedent(
    """
    import json
    import numpy as np
    from polystore_fiji.convert import from_imageplus
    from polystore_fiji.hyperstack import HyperstackAssembler
    from polystore_fiji.jvm import on_edt, start_imagej

    start_imagej(ij_jar={jar!r})
    assembler = HyperstackAssembler(show=True)

    def value(c, z, s, version=0):
        return 1000 + 100 * s + 10 * c + z + 1000 * version

    def send(title, batch, version=0):
        for number, (c, z, s) in enumerate(batch):
            plane = np.full((24, 32), value(c, z, s, version), np.uint16)
            _, planes, (dtype, signed16) = assembler.prepare(
                plane, "x.tif", {{"well": title, "channel": c, "z": z, "site": s}})
            on_edt(lambda: assembler.place(title, planes, dtype, signed16, apply=number == len(batch) - 1))

    def shown(title):
        # what the window shows: the main processor, and each channel's processor at its z and t
        imp = assembler.image(title)
        return {{"position": [int(imp.getChannel()), int(imp.getSlice()), int(imp.getFrame())],
                 "processor": int(imp.getProcessor().get(0, 0)),
                 "channels": [int(imp.getProcessor(c).get(0, 0)) for c in range(1, imp.getNChannels() + 1)]}}

    report = {{"orders": []}}
    for number, batches in enumerate(json.loads({orders!r})):
        title = f"A{{number + 1:02d}}"  # a well: its planes' sites are the window's T
        for batch in batches:
            send(title, batch)
        on_edt(assembler.flush)
        on_edt(lambda: assembler.image(title).setPosition(1, 1, 1))  # moving writes back: harmless now
        hyperstack = on_edt(lambda: from_imageplus(assembler.image(title), "TZCYX"))
        report["orders"].append({{f"{{c}},{{z}},{{s}}": [int(hyperstack[s, z, c, 0, 0]), value(c, z, s)]
                                 for c in (0, 1) for z in (0, 1) for s in (0, 1)}})
    # a live position sent again and again: the window shows (and keeps) the newest frame
    send("B01", [(0, 0, 0), (1, 0, 0)])
    for version in range(1, 4):
        send("B01", [(1, 0, 0)], version)
        on_edt(assembler.flush)
    report["live"] = on_edt(lambda: shown("B01"))
    print(json.dumps(report), flush=True)
    """
)


def test_planes_arriving_in_any_order_land_and_show_where_they_belong() -> None:
    requires_imagej()
    jar = os.environ.get(IJ_JAR_ENV, DEFAULT_IJ_JAR)
    result = subprocess.run(
        [sys.executable, "-c", ORDER_SCRIPT.format(jar=jar, orders=json.dumps(ORDERS))],
        capture_output=True, text=True, timeout=SCRIPT_TIMEOUT_S, cwd=REPO,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    for number, pixels in enumerate(report["orders"]):
        wrong = {where: found for where, (found, expected) in pixels.items() if found != expected}
        assert not wrong, (number, wrong)
    # channel 2 (value 3000 + 1010) was sent last, at C=2: the window shows it, channel 1 stays
    assert report["live"] == {"position": [2, 1, 1], "processor": 4010, "channels": [1000, 4010]}


CLOSE_SCRIPT = textwrap.dedent(
    """
    import json
    import numpy as np
    from polystore_fiji.convert import to_imageplus
    from polystore_fiji.hyperstack import HyperstackAssembler
    from polystore_fiji.jvm import on_edt, start_imagej

    start_imagej(ij_jar={jar!r})
    assembler = HyperstackAssembler(show=True)
    report = {{}}

    def released(stack):
        return [stack.getPixels(index) is None for index in range(1, int(stack.getSize()) + 1)]

    for title, planes in (("one", [(0, 0)]), ("grown", [(0, 0), (0, 1), (1, 1)])):
        for c, t in planes:
            plane = np.full((24, 32), 10 * c + t + 1, np.uint16)
            _, prepared, (dtype, signed16) = assembler.prepare(plane, "x.tif", {{"channel": c, "t": t}})
            on_edt(lambda: assembler.place(title, prepared, dtype, signed16))
        on_edt(assembler.flush)
        stack = assembler.image(title).getStack()
        before = released(stack)
        on_edt(lambda: assembler.close(title))
        report[title] = [before, released(stack)]
    composite = to_imageplus(np.ones((2, 24, 32), np.uint16), "CYX", "made")
    on_edt(composite.show)
    stack = composite.getStack()
    before = released(stack)

    def close():
        composite.changes = False
        composite.close()

    on_edt(close)
    report["made"] = [before, released(stack)]
    print(json.dumps(report), flush=True)
    """
)


def test_closing_a_window_gives_its_planes_back() -> None:
    """ImageJ frees a stack's planes when the last image viewing it closes; the plain image a
    CompositeImage was made from counted as a viewer forever, so a closed window's planes stayed
    in the heap (a 48-frame 2048x2048 window, 384 MiB, per window closed)."""
    requires_imagej()
    jar = os.environ.get(IJ_JAR_ENV, DEFAULT_IJ_JAR)
    result = subprocess.run(
        [sys.executable, "-c", CLOSE_SCRIPT.format(jar=jar)],
        capture_output=True, text=True, timeout=SCRIPT_TIMEOUT_S, cwd=REPO,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report == {
        "one": [[False], [True]],
        "grown": [[False] * 4, [True] * 4],
        "made": [[False] * 2, [True] * 2],
    }
