"""What the Fiji bridge tests share: whether a JVM and ImageJ exist here, a bridge process.

Starting a bridge process on free ports and stopping it is
:func:`polystore_fiji.client.launch_bridge`'s job (benchmarks use it too).

The JVM never runs in the pytest process itself: one JVM per process, started with flags
chosen once, does not mix well with TensorFlow and pytest's faulthandler in the same
process. Every test that needs ImageJ talks to a bridge subprocess (or runs a script in one).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

from polystore.exceptions import ViewerError
from polystore_fiji.client import FijiClient, launch_bridge
from polystore_fiji.jvm import ImageJStartError, find_ij_jar, find_jvm_library

BRIDGE_START_TIMEOUT_S = 60.0
REPO = Path(__file__).resolve().parent.parent


def imagej_missing_reason() -> str | None:
    """Why ImageJ cannot run on this machine (no Java, no jar), or None."""
    try:
        find_jvm_library()
        find_ij_jar()
    except ImageJStartError as error:
        return str(error)
    return None


def requires_imagej() -> None:
    """Skip the calling test where no JVM or ImageJ jar exists, or no display for windows."""
    reason = imagej_missing_reason()
    if reason is not None:
        pytest.skip(f"ImageJ cannot run here: {reason}")
    if not os.environ.get("DISPLAY"):
        pytest.skip("the Fiji bridge tests need a display: run under Xvfb (pytest-xvfb provides one)")


@contextmanager
def running_bridge(log_path: Path, *extra_args: str) -> Iterator[tuple[FijiClient, subprocess.Popen[bytes]]]:
    """A bridge subprocess (``python -m polystore_fiji``) and a client for it; stopped afterwards."""
    with ExitStack() as stack:
        try:
            client, process = stack.enter_context(
                launch_bridge(*extra_args, log_path=log_path, start_timeout=BRIDGE_START_TIMEOUT_S)
            )
        except ViewerError as error:  # a failure to start fails the test; the test's own errors pass
            pytest.fail(str(error))
        yield client, process
