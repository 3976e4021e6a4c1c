"""Starting ImageJ inside this Python process: Fiji through pyimagej, or ImageJ 1 from a jar.

Two ways in, one code path after: once the JVM runs, the bridge uses only ImageJ 1 classes
(``ij.ImagePlus``, ``ij.plugin.frame.RoiManager``, ...), which are the same inside Fiji and
inside a bare ``ij.jar``.

* **Fiji** (``fiji_dir=...`` or ``fiji=True``): pyimagej's ``imagej.init(fiji_dir or
  "sc.fiji:fiji", mode="interactive")``; pyimagej may download a JDK and Fiji's jars from
  Maven the first time.
* **ImageJ 1** (the default): scyjava + JPype start a JVM with one jar on the class path:
  ``ij_jar=``, else ``$POLYSTORE_IJ_JAR``, else Debian's ``/usr/share/java/ij.jar``.

Every way of failing (no Java, no jar, no pyimagej) raises an error that says what to
install; nothing here waits on the network except Fiji's first download.
"""

from __future__ import annotations

import atexit
import functools
import itertools
import logging
import os
import shlex
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from polystore.exceptions import MissingDependencyError, PolystoreError

logger = logging.getLogger(__name__)

DEFAULT_IJ_JAR = "/usr/share/java/ij.jar"
IJ_JAR_ENV = "POLYSTORE_IJ_JAR"
JVM_OPTIONS_ENV = "POLYSTORE_JVM_OPTIONS"
FIJI_DIR_ENV = "POLYSTORE_FIJI_DIR"
FIJI_ENDPOINT = "sc.fiji:fiji"

# Where a Java runtime keeps the library JPype loads, relative to JAVA_HOME (Linux, older
# JDK 8 layouts, macOS, Windows).
JVM_LIBRARY_PATHS = (
    "lib/server/libjvm.so",
    "jre/lib/server/libjvm.so",
    "lib/server/libjvm.dylib",
    "bin/server/jvm.dll",
)
INSTALL_JAVA = (
    "Install a Java runtime (11 or later), e.g. 'apt-get install openjdk-17-jre' on Debian/Ubuntu "
    "or 'conda install -c conda-forge openjdk=17', and set JAVA_HOME to it "
    "(e.g. JAVA_HOME=/usr/lib/jvm/java-17-openjdk-amd64)."
)
INSTALL_IMAGEJ = (
    "Install ImageJ ('apt-get install imagej' gives /usr/share/java/ij.jar on Debian/Ubuntu, or "
    "download ij.jar from https://imagej.net/ij/download.html) and pass its path with --ij-jar "
    f"or ${IJ_JAR_ENV}; or use Fiji with --fiji-dir /path/to/Fiji.app."
)

Flavor = Literal["fiji", "imagej", "attached"]
T = TypeVar("T")


class ImageJStartError(PolystoreError, RuntimeError):
    """ImageJ could not be started in this process; the message says what to install or set."""


class JavaNotFoundError(ImageJStartError):
    """No Java runtime where JAVA_HOME (or the system) says one is."""


class ImageJNotFoundError(ImageJStartError):
    """No ImageJ jar (or Fiji folder) where one was expected."""


class NoDisplayError(ImageJStartError):
    """ImageJ's windows were asked for, and there is no display to show them on."""


NO_DISPLAY_FIX = (
    "Run it under a virtual display (xvfb-run -a python -m polystore_fiji ...; "
    "'apt-get install xvfb' on Debian/Ubuntu), or start it with --headless to keep images "
    "without windows (no RoiManager, no screenshots)."
)


@dataclass(frozen=True)
class ImageJRuntime:
    """The ImageJ this process runs."""

    flavor: Flavor
    """``fiji`` (pyimagej), ``imagej`` (ImageJ 1 from a jar), ``attached`` (a JVM started elsewhere)."""
    version: str
    source: str
    """The jar, the Fiji folder or Maven endpoint, or ``"running JVM"``."""
    headless: bool
    gateway: Any = None
    """pyimagej's gateway (Fiji only)."""


_runtime: ImageJRuntime | None = None
_start_lock = threading.Lock()


def current_runtime() -> ImageJRuntime | None:
    """The runtime :func:`start_imagej` started or attached to, if any."""
    return _runtime


def find_jvm_library() -> str:
    """The JVM library JPype will load: under ``$JAVA_HOME`` when set, else JPype's default."""
    java_home = os.environ.get("JAVA_HOME")
    if java_home:
        # JAVA_HOME=/usr (as scyjava sets it from /usr/bin/java) names the runtime through its
        # `java` link: follow it to the real installation
        homes = [Path(java_home), Path(java_home, "bin", "java").resolve().parent.parent]
        for home, relative in itertools.product(homes, JVM_LIBRARY_PATHS):
            candidate = home / relative
            if candidate.is_file():
                return str(candidate)
        raise JavaNotFoundError(
            f"JAVA_HOME is {java_home!r}, which holds no Java runtime (no lib/server/libjvm.so "
            f"there). {INSTALL_JAVA}"
        )
    jpype = _import_jpype()
    try:
        return str(jpype.getDefaultJVMPath())
    except Exception as error:  # JVMNotFoundException, or a broken `java` on PATH
        raise JavaNotFoundError(f"No Java runtime found ({error}). {INSTALL_JAVA}") from None


def find_ij_jar(ij_jar: str | os.PathLike[str] | None = None) -> Path:
    """The ImageJ jar to use: ``ij_jar``, else ``$POLYSTORE_IJ_JAR``, else Debian's."""
    chosen = ij_jar or os.environ.get(IJ_JAR_ENV) or DEFAULT_IJ_JAR
    where = "given" if ij_jar else (f"from ${IJ_JAR_ENV}" if os.environ.get(IJ_JAR_ENV) else "the default")
    path = Path(chosen)
    if not path.is_file():
        raise ImageJNotFoundError(f"No ImageJ jar at {str(path)!r} ({where}). {INSTALL_IMAGEJ}")
    return path


def start_imagej(
    *,
    ij_jar: str | os.PathLike[str] | None = None,
    fiji_dir: str | os.PathLike[str] | None = None,
    fiji: bool = False,
    headless: bool = False,
) -> ImageJRuntime:
    """Start ImageJ in this process once (later calls return the same runtime).

    A JVM started before (a user's pyimagej session) is used as it is, provided ImageJ's
    classes are on its class path. ``fiji_dir`` (or ``$POLYSTORE_FIJI_DIR``) or ``fiji=True``
    start Fiji through pyimagej; otherwise ImageJ 1 runs from a jar (see :func:`find_ij_jar`).
    ``headless`` starts the JVM with ``-Djava.awt.headless=true``: no windows, no RoiManager.
    """
    global _runtime
    with _start_lock:
        if _runtime is not None:
            return _runtime
        jpype = _import_jpype()
        fiji_dir = fiji_dir or os.environ.get(FIJI_DIR_ENV) or None
        if jpype.isJVMStarted():
            runtime = _attach(headless)
        elif fiji or fiji_dir:
            runtime = _start_fiji(fiji_dir, headless)
        else:
            runtime = _start_jar(find_ij_jar(ij_jar), headless)
        _install_thread_pool_shutdown()
        _runtime = runtime
        logger.info("ImageJ %s running (%s, %s)", runtime.version, runtime.flavor, runtime.source)
        return runtime


def _import_jpype() -> Any:
    try:
        import jpype
        import scyjava  # noqa: F401  (checked here so that the error names both)
    except ImportError:
        raise MissingDependencyError("scyjava", "fiji", "Running ImageJ from Python") from None
    return jpype


def jvm_options() -> list[str]:
    """Options for the JVM from ``$POLYSTORE_JVM_OPTIONS`` (e.g. ``-Xmx16g`` for large stacks)."""
    return shlex.split(os.environ.get(JVM_OPTIONS_ENV, ""))


def _add_jvm_options(headless: bool) -> None:
    import scyjava

    for option in jvm_options():
        scyjava.config.add_option(option)
    if headless:
        scyjava.config.add_option("-Djava.awt.headless=true")


def _start_jar(jar: Path, headless: bool) -> ImageJRuntime:
    import scyjava

    jvm_library = find_jvm_library()  # checked before JPype tries, for a clear message
    scyjava.config.set_java_constraints(fetch="never")  # never download a JDK for a bare jar
    scyjava.config.endpoints.clear()  # no Maven: the jar is the whole class path
    scyjava.config.add_classpath(str(jar))
    _add_jvm_options(headless)
    scyjava.config.add_kwargs(jvmpath=jvm_library)
    try:
        scyjava.start_jvm()
    except Exception as error:
        raise JavaNotFoundError(
            f"The JVM at {jvm_library} did not start ({error}). {INSTALL_JAVA}"
        ) from error
    version = _imagej_version(f"the jar {str(jar)!r}")
    return ImageJRuntime("imagej", version, str(jar), headless)


def _start_fiji(fiji_dir: str | os.PathLike[str] | None, headless: bool) -> ImageJRuntime:
    try:
        import imagej
        import scyjava
    except ImportError:
        raise MissingDependencyError("imagej", "fiji", "Starting Fiji through pyimagej") from None
    if fiji_dir is not None and not Path(fiji_dir).is_dir():
        raise ImageJNotFoundError(
            f"No Fiji installation at {os.fspath(fiji_dir)!r}. Download Fiji from https://fiji.sc "
            "and pass its Fiji.app folder with --fiji-dir, or leave --fiji-dir out to run ImageJ "
            "from a jar."
        )
    # pyimagej 1.8 crashes with fetch="never"; "auto" fetches a JDK only when none is found
    scyjava.config.set_java_constraints(fetch="auto")
    for option in jvm_options():  # pyimagej sets headless itself from its mode
        scyjava.config.add_option(option)
    endpoint = os.fspath(fiji_dir) if fiji_dir is not None else FIJI_ENDPOINT
    gateway = imagej.init(endpoint, mode="headless" if headless else "interactive")
    version = _imagej_version(f"Fiji ({endpoint})")
    return ImageJRuntime("fiji", version, endpoint, headless, gateway)


def _attach(headless: bool) -> ImageJRuntime:
    graphics = java_class("java.awt.GraphicsEnvironment")
    version = _imagej_version("the running JVM's class path")
    return ImageJRuntime("attached", version, "running JVM", bool(graphics.isHeadless()) or headless)


def _imagej_version(where: str) -> str:
    try:
        return str(java_class("ij.IJ").getFullVersion())
    except Exception as error:
        raise ImageJNotFoundError(
            f"ImageJ's classes (ij.IJ) are not in {where} ({error}). {INSTALL_IMAGEJ}"
        ) from None


def check_display(headless: bool) -> None:
    """:class:`NoDisplayError`, saying what to do, unless ImageJ can open windows here (or
    ``headless`` says it need not): before the JVM starts, from ``$DISPLAY`` (Linux); once
    it runs, from Java, which also finds a display that is set but cannot be reached.

    Without this the first window ImageJ opens fails with Java's HeadlessException traceback.
    """
    if headless:
        return
    if sys.platform.startswith("linux") and not os.environ.get("DISPLAY"):
        raise NoDisplayError(f"No display to show ImageJ's windows on: DISPLAY is not set. {NO_DISPLAY_FIX}")
    jpype = _import_jpype()
    if not jpype.isJVMStarted():
        return
    graphics = java_class("java.awt.GraphicsEnvironment")
    if graphics.isHeadless():
        raise NoDisplayError(f"No display to show ImageJ's windows on: Java runs headless. {NO_DISPLAY_FIX}")
    try:
        graphics.getLocalGraphicsEnvironment().getScreenDevices()
    except Exception as error:  # java.awt.AWTError: the X server named by DISPLAY does not answer
        raise NoDisplayError(
            f"No display to show ImageJ's windows on: Java cannot open {os.environ.get('DISPLAY')!r} "
            f"({error}). {NO_DISPLAY_FIX}"
        ) from error


_stop_hooks_installed = False
CLOSE_WINDOWS_TIMEOUT_S = 5.0


def _close_image_windows() -> None:
    """Close ImageJ's image windows the way ImageJ does (not just dispose them).

    A StackWindow runs a non-daemon slice-selector thread that only its ``close()`` ends;
    ``Window.dispose()`` (what scyjava does at exit) leaves it running and Python hangs.
    """
    window_manager = java_class("ij.WindowManager")
    done = threading.Event()

    def close_all() -> None:
        try:
            for image_id in window_manager.getIDList() or []:
                imp = window_manager.getImage(image_id)
                if imp is not None:
                    imp.changes = False  # no "save changes?" dialog at exit
                    imp.close()
        finally:
            done.set()

    if is_headless() or not window_manager.getIDList():
        return  # no windows: nothing to close, and AWT may have no display to start on
    java_class("java.awt.EventQueue").invokeLater(_python_runnable()(close_all))
    if not done.wait(CLOSE_WINDOWS_TIMEOUT_S):  # a blocked event thread must not block exit
        logger.warning("ImageJ's event thread did not close the windows within %g s", CLOSE_WINDOWS_TIMEOUT_S)


def _shutdown_thread_pool() -> None:
    """Stop ImageJ's filter thread pool: its threads are not daemons and would keep Python alive."""
    pool = java_class("ij.util.ThreadUtil").threadPoolExecutor
    if pool is not None:
        pool.shutdownNow()


def release_imagej() -> None:
    """What lets the JVM stop: image windows closed, ImageJ's thread pool shut down. Safe to call twice."""
    jpype = _import_jpype()
    if not jpype.isJVMStarted():
        return
    for step in (_close_image_windows, _shutdown_thread_pool):
        try:
            step()
        except Exception:  # at exit: log, and carry on with the next step
            logger.exception("%s failed while the JVM stops", step.__name__)


def _install_thread_pool_shutdown() -> None:
    global _stop_hooks_installed
    if _stop_hooks_installed:
        return
    import scyjava

    scyjava.when_jvm_stops(release_imagej)
    # scyjava runs its stop callbacks only for a JVM it started; a JVM started by JPype
    # directly gets the same cleanup at interpreter exit
    atexit.register(release_imagej)
    _stop_hooks_installed = True


@functools.cache  # a class stays valid for the JVM's life (JPype cannot restart one)
def java_class(name: str) -> Any:
    """The Java class ``name`` (``"ij.ImagePlus"``), through scyjava; the JVM must be running."""
    from scyjava import jimport

    return jimport(name)


def is_headless() -> bool:
    """Whether this JVM has no display (``java.awt.headless``): no windows, no RoiManager."""
    return bool(java_class("java.awt.GraphicsEnvironment").isHeadless())


_runnable_class: Any = None


def _python_runnable() -> Any:
    """A java.lang.Runnable that runs a Python callable (defined once the JVM runs)."""
    global _runnable_class
    if _runnable_class is None:
        import jpype

        @jpype.JImplements("java.lang.Runnable")
        class PythonRunnable:
            def __init__(self, function: Callable[[], None]) -> None:
                self.function = function

            @jpype.JOverride  # type: ignore[untyped-decorator]
            def run(self) -> None:
                self.function()

        _runnable_class = PythonRunnable
    return _runnable_class


def on_edt(function: Callable[[], T]) -> T:
    """Run ``function`` on AWT's event thread and return its result (or raise its error).

    Swing is single-threaded: windows, stacks on display and the RoiManager are touched only
    there. Headless JVMs (no event thread to protect) and calls already on it run directly.
    """
    event_queue = java_class("java.awt.EventQueue")
    if is_headless() or event_queue.isDispatchThread():
        return function()
    outcome: dict[str, Any] = {}

    def capture() -> None:
        try:
            outcome["result"] = function()
        except BaseException as error:  # handed to the calling thread, raised there
            outcome["error"] = error

    event_queue.invokeAndWait(_python_runnable()(capture))
    if "error" in outcome:
        raise outcome["error"]
    result: T = outcome["result"]
    return result
