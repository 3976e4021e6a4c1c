"""A virtual X display for napari on machines without a screen (the demo, the benchmark).

napari needs an X server with OpenGL (Mesa's software renderer does): under Xvfb it runs and
draws for real; ``QT_QPA_PLATFORM=offscreen`` does not work (no OpenGL context, black
screenshots). :func:`virtual_display` starts ``Xvfb`` only when ``DISPLAY`` is unset.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import subprocess
import sys
from collections.abc import Iterator

from polystore.exceptions import ViewerUnavailableError


@contextlib.contextmanager
def virtual_display(size: str = "1280x1024x24", timeout: float = 10.0) -> Iterator[str]:
    """Yield the display to use: ``$DISPLAY`` when set, else a fresh Xvfb's."""
    existing = os.environ.get("DISPLAY")
    if existing:
        yield existing
        return
    xvfb = shutil.which("Xvfb")
    if xvfb is None:
        raise ViewerUnavailableError(
            "No display and no Xvfb: install it (Debian: apt-get install xvfb, see the Makefile's "
            "system packages) or run on a machine with a screen."
        )
    # -displayfd: Xvfb picks a free display number itself and writes it to us (no race with
    # other Xvfbs on the machine); -terminate: it exits when its last client disconnects
    read_end, write_end = os.pipe()
    server = subprocess.Popen(
        [xvfb, "-displayfd", str(write_end), "-screen", "0", size, "-nolisten", "tcp", "-terminate"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, pass_fds=(write_end,),
    )
    os.close(write_end)
    try:
        ready, _, _ = select.select([read_end], [], [], timeout)
        number = os.read(read_end, 64).decode().strip() if ready else ""
        if not number.isdigit():
            raise ViewerUnavailableError(
                f"Xvfb did not start within {timeout:g} s (exit status {server.poll()}); run it by "
                "hand (Xvfb :99) to see why, or set DISPLAY to a running X server."
            )
        display = f":{number}"
        os.environ["DISPLAY"] = display
        yield display
    finally:
        os.close(read_end)
        os.environ.pop("DISPLAY", None)
        # Qt keeps its X connection until the interpreter exits, and stopping the server under
        # it makes Qt abort at exit ("X11 connection broke"): then -terminate ends it after us
        if not _qt_application_alive():
            server.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                server.wait(5)
            if server.poll() is None:
                server.kill()


def _qt_application_alive() -> bool:
    widgets = sys.modules.get("qtpy.QtWidgets")
    return widgets is not None and widgets.QApplication.instance() is not None
