"""Shared fixtures: the backend class table restored after a test, and a real S3-protocol
server (moto's standalone server) on 127.0.0.1.

The server is a separate process speaking HTTP, so the code under test goes through its
ordinary client stack (zarr's FsspecStore -> s3fs -> aiobotocore) exactly as it would
against AWS or MinIO; nothing in the client is patched.
"""

from __future__ import annotations

import http.client
import itertools
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from typing import IO

import pytest

from polystore.registry import (
    register_backend_class,
    registered_backend_classes,
    unregister_backend_class,
)

S3_CREDENTIALS = {"key": "testing", "secret": "testing"}
"""Dummy credentials: moto accepts any."""
S3_REGION = "us-east-1"
_SERVER_START_TIMEOUT_S = 30.0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _answers(host: str, port: int) -> bool:
    """Whether an HTTP server answers a request at ``host:port`` (any status will do)."""
    connection = http.client.HTTPConnection(host, port, timeout=2)
    try:
        connection.request("GET", "/")
        connection.getresponse().read()
    except OSError:
        return False
    finally:
        connection.close()
    return True


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Terminate ``process``; kill it if it does not go within ten seconds."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def _start_moto(host: str, port: int, stderr: IO[bytes]) -> tuple[subprocess.Popen[bytes], str | None]:
    """Start moto's server on ``host:port`` and wait until it answers.

    Returns the process and ``None``, or the (stopped) process and why it failed.
    """
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", host, "-p", str(port)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=stderr,
    )
    deadline = time.monotonic() + _SERVER_START_TIMEOUT_S
    while not _answers(host, port):
        if process.poll() is not None:
            return process, f"exited with status {process.returncode} before answering"
        if time.monotonic() > deadline:
            _stop(process)
            return process, f"did not answer within {_SERVER_START_TIMEOUT_S:.0f} s"
        time.sleep(0.1)
    return process, None


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """The endpoint URL of a moto S3 server, a subprocess on 127.0.0.1, for this test session."""
    pytest.importorskip("moto.server", reason="the S3 tests need moto[server] (pip install polystore[test])")
    pytest.importorskip("s3fs", reason="the S3 tests need s3fs (pip install polystore[s3])")
    host = "127.0.0.1"
    with tempfile.TemporaryFile() as stderr:
        failures = []
        for _attempt in range(3):  # the free port can be taken before the server binds it
            port = _free_port()
            process, failure = _start_moto(host, port, stderr)
            if failure is None:
                break
            failures.append(f"port {port}: {failure}")
        else:
            stderr.seek(0)
            output = stderr.read().decode(errors="replace")[-4000:]
            pytest.fail(
                f"The moto S3 server did not start on {host} ({'; '.join(failures)}). "
                f"Its stderr:\n{output}",
                pytrace=False,
            )
        try:
            yield f"http://{host}:{port}"
        finally:
            _stop(process)


_bucket_numbers = itertools.count()


@pytest.fixture
def s3_bucket(s3_server: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh, empty bucket on the session's S3 server; the AWS_* variables point at it.

    ZarrBackend (through s3fs/botocore) finds the endpoint and credentials in the standard
    variables, as it would on a machine configured for a real object store.
    """
    boto3 = pytest.importorskip("boto3")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", S3_CREDENTIALS["key"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", S3_CREDENTIALS["secret"])
    monkeypatch.setenv("AWS_DEFAULT_REGION", S3_REGION)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server)
    for variable in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(variable, raising=False)
    for variable in ("NO_PROXY", "no_proxy"):  # a proxy configured for the machine must not see these
        existing = os.environ.get(variable)
        monkeypatch.setenv(variable, f"{existing},127.0.0.1" if existing else "127.0.0.1")
    bucket = f"polystore-test-{next(_bucket_numbers)}-{uuid.uuid4().hex[:8]}"
    client = boto3.client(
        "s3",
        endpoint_url=s3_server,
        region_name=S3_REGION,
        aws_access_key_id=S3_CREDENTIALS["key"],
        aws_secret_access_key=S3_CREDENTIALS["secret"],
    )
    try:
        client.create_bucket(Bucket=bucket)
    finally:
        client.close()
    yield bucket  # left on the server: it goes with the session, and every test has its own


@pytest.fixture
def restore_backend_classes() -> Iterator[None]:
    """Put the global backend class table back as it was (tests define backends freely)."""
    before = dict(registered_backend_classes())
    yield
    for name, cls in list(registered_backend_classes().items()):
        if before.get(name) is not cls:
            unregister_backend_class(name)
    for name, cls in before.items():
        if name not in registered_backend_classes():
            register_backend_class(name, cls)
