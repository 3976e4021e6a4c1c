"""A long table streamed to the bridge does not freeze ImageJ's event thread while it is filled
and shown: windows keep drawing and answering (``ResultsTable.show`` turns every row into a
line of text; on the event thread, 300 000 rows froze every window for about a second).

A real bridge (:class:`polystore_fiji.bridge.FijiBridge`, its real stream and receiver) runs in
a subprocess with a JVM and ImageJ's jar under the test's display, and a pipeline in the same
script streams it a DataFrame. The bridge's own table functions are wrapped, not replaced:
while each runs, another thread asks the event thread for a small answer and the wrapper waits
for that answer before going on. The answer comes while the table is being filled (and again
while it is shown) only if that work leaves the event thread free; where it ran on the event
thread, the question could only be answered after it, and the log says so. The wait is bounded
only so that such a failure ends (the test asserts the order of events, never a duration).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
from fiji_helpers import REPO, requires_imagej

from polystore_fiji.jvm import DEFAULT_IJ_JAR, IJ_JAR_ENV

pytest.importorskip("pandas")

SCRIPT_TIMEOUT_S = 180
ROWS = 200_000

SCRIPT = textwrap.dedent(
    """
    import json, threading
    import numpy as np
    import pandas
    from polystore_fiji import bridge as bridge_module
    from polystore_fiji.backend import FijiStreamingBackend
    from polystore_fiji.client import free_port_triple
    from polystore_fiji.jvm import on_edt, start_imagej

    DEADLOCK_BREAK_S = 20.0  # ends a failing run; a passing one never waits for it
    runtime = start_imagej(ij_jar={jar!r})
    port = free_port_triple()
    bridge = bridge_module.FijiBridge(runtime, port).start()
    events = []
    real_fill, real_show = bridge_module.table_from_columns, bridge_module.show_table

    def event_thread_answers_during(stage):
        answered = threading.Event()

        def ask():
            on_edt(lambda: events.append("event thread answered during " + stage))
            answered.set()

        threading.Thread(target=ask, daemon=True).start()
        if not answered.wait(DEADLOCK_BREAK_S):
            events.append("event thread blocked during " + stage)

    def fill(columns):
        events.append("fill started")
        event_thread_answers_during("fill")
        table = real_fill(columns)
        events.append("fill done")
        return table

    def show(table, title):
        events.append("show started")
        event_thread_answers_during("show")
        real_show(table, title)
        events.append("show done")

    bridge_module.table_from_columns, bridge_module.show_table = fill, show
    rows = {rows}
    frame = pandas.DataFrame({{"area": np.arange(rows, dtype=np.float64),
                              "kind": np.where(np.arange(rows) % 2, "round", "long")}})
    backend = FijiStreamingBackend(port=port)
    backend.save(frame, "results/long.csv")
    shown = bridge.progress.wait(1, 120.0)
    rows_shown = int(bridge.on_edt(lambda: bridge.tables["results/long"].table.size()))
    backend.close()
    bridge.stop()
    print(json.dumps({{"events": events, "shown": shown, "rows": rows_shown,
                      "failed": bridge.progress.snapshot()["failed"]}}), flush=True)
    """
)


def test_the_event_thread_answers_while_a_long_table_is_filled_and_shown() -> None:
    requires_imagej()
    jar = os.environ.get(IJ_JAR_ENV, DEFAULT_IJ_JAR)
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(jar=jar, rows=ROWS)],
        capture_output=True, text=True, timeout=SCRIPT_TIMEOUT_S, cwd=REPO,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["shown"] and report["failed"] == 0 and report["rows"] == ROWS
    assert report["events"] == [
        "fill started", "event thread answered during fill", "fill done",
        "show started", "event thread answered during show", "show done",
    ]
