"""Starting ImageJ: clear errors when Java, the jar or pyimagej is missing; a clean exit after
filters ran; scripting with a JVM in the user's own process. Each case runs in a subprocess
(one JVM per process, and a failure to start must be seen from outside)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from fiji_helpers import REPO, imagej_missing_reason, requires_imagej, running_bridge

from polystore.exceptions import ViewerError
from polystore_fiji.jvm import DEFAULT_IJ_JAR, IJ_JAR_ENV

SETUP_TIMEOUT_S = 60


def run_bridge(
    *args: str, env: dict[str, str] | None = None, code: str | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m polystore_fiji ARGS`` (or ``python -c CODE``) to its end; it must not hang."""
    command = [sys.executable, "-c", code] if code else [sys.executable, "-m", "polystore_fiji", *args]
    return subprocess.run(command, env={**os.environ, **(env or {})}, capture_output=True, text=True,
                          timeout=SETUP_TIMEOUT_S, cwd=REPO)


def test_importing_the_package_starts_no_java() -> None:
    result = run_bridge(code=(
        "import sys, polystore_fiji, polystore_fiji.backend, polystore_fiji.client, polystore_fiji.convert;"
        "from polystore import FileManager; FileManager().get_backend('fiji');"
        "print(sorted(m for m in ('jpype', 'scyjava', 'imagej') if m in sys.modules))"
    ))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_a_missing_java_is_named_with_what_to_install(tmp_path: Path) -> None:
    result = run_bridge("--port", "1", env={"JAVA_HOME": str(tmp_path / "no-jdk")})
    assert result.returncode == 2
    assert f"JAVA_HOME is '{tmp_path / 'no-jdk'}', which holds no Java runtime" in result.stderr
    assert "apt-get install openjdk-17-jre" in result.stderr


def test_a_missing_jar_is_named_with_what_to_install(tmp_path: Path) -> None:
    if "Java" in (imagej_missing_reason() or ""):
        pytest.skip(f"no Java here, so the jar is never looked for: {imagej_missing_reason()}")
    missing = tmp_path / "ij.jar"
    given = run_bridge("--port", "1", "--ij-jar", str(missing))
    assert given.returncode == 2
    assert f"No ImageJ jar at '{missing}' (given)" in given.stderr
    assert "apt-get install imagej" in given.stderr and "--fiji-dir" in given.stderr
    from_env = run_bridge("--port", "1", env={IJ_JAR_ENV: str(missing)})
    assert f"No ImageJ jar at '{missing}' (from ${IJ_JAR_ENV})" in from_env.stderr


def test_fiji_without_pyimagej_says_to_install_it() -> None:
    # sys.modules[name] = None is how Python itself marks a module as not importable
    result = run_bridge(code=(
        "import sys; sys.modules['imagej'] = None;"
        "from polystore_fiji.bridge import main; sys.exit(main(['--fiji', '--port', '1']))"
    ))
    assert result.returncode == 2
    assert "Starting Fiji through pyimagej needs the optional package 'imagej'" in result.stderr
    assert "pip install 'polystore[fiji]'" in result.stderr


def test_a_missing_fiji_folder_is_named(tmp_path: Path) -> None:
    result = run_bridge("--port", "1", "--fiji-dir", str(tmp_path / "Fiji.app"))
    assert result.returncode == 2
    assert f"No Fiji installation at '{tmp_path / 'Fiji.app'}'" in result.stderr


@pytest.mark.parametrize("display", [None, ":7391"], ids=["no DISPLAY", "DISPLAY nobody serves"])
def test_no_display_is_named_with_xvfb_and_headless(display: str | None) -> None:
    """Without a display ImageJ's first window failed with Java's HeadlessException traceback."""
    if display is not None and imagej_missing_reason() is not None:
        pytest.skip(f"the JVM must start to find the display unreachable: {imagej_missing_reason()}")
    env = {key: value for key, value in os.environ.items() if key != "DISPLAY"}
    if display is not None:
        env["DISPLAY"] = display
    result = subprocess.run([sys.executable, "-m", "polystore_fiji", "--port", "1"], env=env,
                            capture_output=True, text=True, timeout=SETUP_TIMEOUT_S, cwd=REPO)
    assert result.returncode == 2, result.stderr
    assert "No display to show ImageJ's windows on" in result.stderr
    assert "xvfb-run -a python -m polystore_fiji" in result.stderr and "--headless" in result.stderr
    assert "Traceback" not in result.stderr and "HeadlessException" not in result.stderr


def test_python_exits_cleanly_after_multithreaded_filters(tmp_path: Path) -> None:
    requires_imagej()
    with running_bridge(tmp_path / "bridge.log", "--allow-macros") as (client, process):
        client.put_image(np.random.default_rng(1).integers(0, 4000, (6, 256, 256), dtype=np.uint16),
                         "noisy", axes="ZYX")
        blurred = client.run_macro(
            'selectImage("noisy"); run("Gaussian Blur...", "sigma=3 stack");'
            'run("Median...", "radius=2 stack"); return "" + getPixel(100, 100);'
        )
        assert blurred is not None and float(blurred) > 0
        client.quit()
        assert process.wait(timeout=SETUP_TIMEOUT_S) == 0


SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from polystore import FileManager
    from polystore_fiji.jvm import start_imagej
    from polystore_fiji.scripting import from_imageplus, show, to_imageplus

    start_imagej(ij_jar={jar!r})            # what a user's pyimagej session has already done
    volume = np.arange(2 * 3 * 16 * 20, dtype=np.uint16).reshape(2, 3, 16, 20)
    imp = to_imageplus(volume, axes="CZYX", title="volume")
    back = from_imageplus(imp)
    fm = FileManager()
    fm.save(volume.astype(np.float32), {path!r}, backend="disk")
    shown = show(fm, {path!r}, "disk", axes="CZYX")
    print(json.dumps({{
        "equal": bool((back == volume).all()), "dtype": str(back.dtype),
        "dims": [imp.getNChannels(), imp.getNSlices(), imp.getNFrames()],
        "composite": bool(imp.isComposite()),
        "shown": [str(shown.getTitle()), shown.getBitDepth(), shown.getNChannels(), shown.getNSlices(),
                  bool(shown.getWindow() is not None and shown.getWindow().isVisible())],
        "pixel": float(shown.getStack().getProcessor(4).getf(3, 2)),
    }}))
    """
)


def test_scripting_in_a_session_that_runs_imagej(tmp_path: Path) -> None:
    requires_imagej()
    import json

    path = str(tmp_path / "volume.npy")
    jar = os.environ.get(IJ_JAR_ENV, DEFAULT_IJ_JAR)
    result = run_bridge(code=SCRIPT.format(jar=jar, path=path))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["equal"] and report["dtype"] == "uint16"
    assert report["dims"] == [2, 3, 1] and report["composite"]
    assert report["shown"] == [path, 32, 2, 3, True]
    # stack slice 4 is channel 2 of z 2 (ImageJ's order: channel fastest): volume[1, 1, 2, 3]
    assert report["pixel"] == float(np.arange(2 * 3 * 16 * 20).reshape(2, 3, 16, 20)[1, 1, 2, 3])


def test_macros_from_the_control_port_need_allow_macros(tmp_path: Path) -> None:
    """An ImageJ macro can run shell commands (exec): a bridge runs none unless told to."""
    requires_imagej()
    with (
        running_bridge(tmp_path / "bridge.log", "--headless") as (client, _process),
        pytest.raises(ViewerError, match="start it with --allow-macros"),
    ):
        client.run_macro('return exec("id");')


BUFFER_SCRIPT = textwrap.dedent(
    """
    import ctypes, gc, json, weakref
    import numpy as np
    from polystore_fiji.convert import java_pixels
    from polystore_fiji.jvm import start_imagej

    start_imagej(ij_jar={jar!r})
    memory = (ctypes.c_char * 4096)()                  # one block, as a stream's slot is reused
    writable = np.frombuffer(memory, dtype=np.uint16)
    read_only = np.frombuffer(memory, dtype=np.uint16)  # a zero-copy stream item is read-only
    read_only.flags.writeable = False
    results = {{}}
    for round_number in range(3):                     # new contents at the same address each time
        writable[:] = np.arange(2048, dtype=np.uint16) * (round_number + 1)
        results[f"round {{round_number}}"] = bool((np.array(java_pixels(read_only)).view(np.uint16)
                                                == writable).all())
    results["shorter view"] = bool((np.array(java_pixels(writable[:100])).view(np.uint16)
                                    == writable[:100]).all())
    results["bytes"] = bool((np.array(java_pixels(read_only.view(np.uint8))).view(np.uint8)
                             == writable.view(np.uint8)).all())

    class Owner(bytearray):                           # weakref-able memory, like a slot's owner
        pass

    owners = {{writeable: Owner(8192) for writeable in (False, True)}}  # alive together: 2 addresses
    alive = {{writeable: weakref.ref(owner) for writeable, owner in owners.items()}}
    for writeable, owner in owners.items():
        item = np.frombuffer(owner, dtype=np.uint16)
        item.flags.writeable = writeable
        java_pixels(item)
        del item
    del owner, owners
    gc.collect()
    for writeable, reference in alive.items():
        results[f"not kept alive by Java, writeable={{writeable}}"] = reference() is None
    print(json.dumps(results))
    """
)


def test_java_pixels_reads_live_memory_and_keeps_nothing_alive() -> None:
    """Direct buffers are cached by address (a stream reuses its slots): a buffer made for an
    earlier array must read the memory's current contents, and Java must not keep an item
    alive (that would hold the sender's shared-memory slot until Java's GC runs)."""
    requires_imagej()
    import json

    jar = os.environ.get(IJ_JAR_ENV, DEFAULT_IJ_JAR)
    result = run_bridge(code=BUFFER_SCRIPT.format(jar=jar))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report == {
        "round 0": True, "round 1": True, "round 2": True, "shorter view": True, "bytes": True,
        "not kept alive by Java, writeable=False": True, "not kept alive by Java, writeable=True": True,
    }
