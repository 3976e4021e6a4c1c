"""Where a zarr node lives: a store (a local folder, or an object-store URL), a node inside it,
and the plain key I/O (get, put, create-if-absent, delete) on both that metadata documents,
locks and repair use without a hop through zarr's event loop.

Object storage goes through obstore (``s3://``; ``gs://`` and ``az://`` as obstore reads them):
zarr-python opens it as ``zarr.storage.ObjectStore``, which the zarrs codec pipeline
accelerates, and obstore's synchronous calls serve the few documents polystore writes itself.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import os
import re
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from polystore.atomic import TEMP_SUFFIX
from polystore.exceptions import InvalidPathError, PolystoreError
from polystore.lazy import optional_import


def zarr_module() -> Any:
    return optional_import("zarr", extra="zarr", purpose="The zarr backend")


def join_key(node: str, name: str) -> str:
    """A key inside a store: ``name`` under ``node`` ('' is the store's root)."""
    return f"{node}/{name}" if node else name


class StorageCredentialsError(PolystoreError, PermissionError):
    """No credentials for an object store were found (or they were refused)."""


@dataclass(frozen=True)
class Location:
    """A node of a zarr store."""

    store: str
    """Local path or URL of the store."""
    node: str
    """Path of the node inside the store ('' for its root)."""

    @property
    def remote(self) -> bool:
        return "://" in self.store

    @property
    def name(self) -> str:
        return self.node.rsplit("/", 1)[-1]

    @property
    def parent(self) -> Location:
        return Location(self.store, self.node.rpartition("/")[0])

    @property
    def display(self) -> str:
        """How messages name the node: the store's path or URL and the node's path."""
        return f"{self.store}/{self.node}" if self.node else self.store

    def child(self, name: str) -> Location:
        return Location(self.store, join_key(self.node, name))


def _node_parts(text: str, original: object) -> list[str]:
    parts = [p for p in text.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise InvalidPathError(
            f"'{original}': '..' cannot climb out of a zarr store (nor is it taken inside one); name "
            "the node from the store's root (e.g. 'plate.zarr/A/1')."
        )
    return parts


def locate(path: str | os.PathLike[str], root: str | None, store_name: str) -> Location:
    """Split ``path`` into its store (up to the first ``*.zarr`` component) and node.

    A relative path is taken from ``root``; a path with no ``.zarr`` component lives in
    ``<root>/<store_name>``.
    """
    text = os.fspath(path).replace("\\", "/")
    if root is not None and "://" not in text and not os.path.isabs(text):
        text = f"{root.rstrip('/')}/{text}" if text not in ("", ".") else root
    scheme, sep, rest = text.partition("://")
    if not sep:
        scheme, rest = "", text
    parts = [p for p in rest.split("/") if p not in ("", ".")]
    prefix = f"{scheme}://" if sep else ("/" if rest.startswith("/") else "")
    for index, part in enumerate(parts):
        if part.lower().endswith(".zarr"):
            node_parts = _node_parts("/".join(parts[index + 1 :]), path)
            return Location(prefix + "/".join(parts[: index + 1]), "/".join(node_parts))
    if "://" in os.fspath(path):  # a URL is not a node of a local store
        raise InvalidPathError(
            f"'{path}': an object-store URL names its zarr store by a component ending in .zarr "
            "(s3://bucket/data.zarr, or s3://bucket/data.zarr/image for a node in it); this one has none."
        )
    base = root if root is not None else "."
    node_parts = _node_parts(os.fspath(path).replace("\\", "/"), path)
    return Location(f"{base.rstrip('/')}/{store_name}", "/".join(node_parts))


def beside(store: str, name_template: str) -> tuple[str, str]:
    """(parent, key) of an object next to ``store``, named from the store's name (``.{}.lock``)."""
    parent, _, name = store.rstrip("/").rpartition("/")
    return parent, name_template.format(name)


# -- plain key I/O -------------------------------------------------------------------------------
class LocalKeys:
    """Keys of a local store: files under its folder."""

    def __init__(self, root: str) -> None:
        self.root = root

    def _path(self, key: str) -> str:
        return os.path.join(self.root, key)

    def get(self, key: str) -> bytes | None:
        try:
            with open(self._path(key), "rb") as document:
                return document.read()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None

    def put(self, key: str, content: bytes) -> None:
        # as zarr's LocalStore writes a key: a temporary file beside it renamed over it (whole or
        # not at all; not fsynced, as zarr's chunks are not), with no more than that per document
        path = self._path(key)
        folder, name = os.path.split(path)
        os.makedirs(folder, exist_ok=True)
        temporary = os.path.join(folder, f".{name}.{os.getpid()}.{uuid.uuid4().hex[:8]}{TEMP_SUFFIX}")
        try:
            with open(temporary, "xb") as out:
                out.write(content)
            os.replace(temporary, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.remove(temporary)
            raise

    def create(self, key: str, content: bytes) -> bool:
        """Write ``key`` only if absent; whether this call created it."""
        path = Path(self._path(key))
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.create")
        temporary.write_bytes(content)
        try:
            os.link(temporary, path)  # atomic, and fails if the key exists: whole or not at all
        except FileExistsError:
            return False
        finally:
            temporary.unlink()
        return True

    def exists(self, key: str) -> bool:
        return os.path.isfile(self._path(key))

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.remove(self._path(key))

    def list(self, prefix: str = "") -> Iterator[str]:
        """Every key (file) under ``prefix``."""
        top = Path(self._path(prefix)) if prefix else Path(self.root)
        if not top.is_dir():
            return
        for folder, _dirs, files in os.walk(top):
            for name in files:
                yield Path(folder, name).relative_to(self.root).as_posix()


class ObjectKeys:
    """Keys of an object-store prefix, through obstore's synchronous calls."""

    def __init__(self, store: Any, display: str) -> None:
        self.store = store
        self.display = display

    def get(self, key: str) -> bytes | None:
        return None if (found := self.get_versioned(key)) is None else found[0]

    def get_versioned(self, key: str) -> tuple[bytes, str | None] | None:
        """(content, ETag) of ``key``, or None."""
        obstore = _obstore()
        try:
            result = obstore.get(self.store, key)
            return bytes(result.bytes()), result.meta.get("e_tag")
        except FileNotFoundError:
            return None
        except Exception as error:
            raise _credentials_error(error, self.display) or error from error

    def put(self, key: str, content: bytes) -> None:
        try:
            _obstore().put(self.store, key, content)
        except Exception as error:
            raise _credentials_error(error, self.display) or error from error

    def create(self, key: str, content: bytes) -> bool:
        """Write ``key`` only if absent (``If-None-Match: *``); whether this call created it."""
        obstore = _obstore()
        try:
            obstore.put(self.store, key, content, mode="create")
        except FileExistsError:
            return False
        except Exception as error:
            if type(error).__name__ in ("AlreadyExistsError", "PreconditionError"):
                return False
            raise _credentials_error(error, self.display) or error from error
        return True

    def replace(self, key: str, content: bytes, etag: str) -> bool:
        """Overwrite ``key`` only if its ETag is still ``etag``; whether it was replaced."""
        obstore = _obstore()
        try:
            obstore.put(self.store, key, content, mode={"e_tag": etag})
        except FileNotFoundError:
            return False
        except Exception as error:
            if type(error).__name__ in ("PreconditionError", "AlreadyExistsError"):
                return False
            raise
        return True

    def exists(self, key: str) -> bool:
        try:
            _obstore().head(self.store, key)
        except FileNotFoundError:
            return False
        except Exception as error:
            raise _credentials_error(error, self.display) or error from error
        return True

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            _obstore().delete(self.store, key)

    def list(self, prefix: str = "") -> Iterator[str]:
        obstore = _obstore()
        try:
            for batch in obstore.list(self.store, prefix=prefix or None):
                for meta in batch:
                    yield str(meta["path"])
        except Exception as error:
            raise _credentials_error(error, self.display) or error from error


KeyStore = LocalKeys | ObjectKeys


def delete_prefix(keys: KeyStore, prefix: str) -> None:
    """Delete every key under ``prefix`` (a node and everything below it)."""
    for key in list(keys.list(prefix.rstrip("/") + "/" if prefix else "")):
        keys.delete(key)


METADATA_DOCUMENTS = frozenset({"zarr.json", ".zarray", ".zattrs", ".zgroup"})
"""The names of a node's own metadata documents, in either format."""
NODE_DOCUMENTS = ("zarr.json", ".zgroup", ".zarray")
"""Of those, the ones that make a folder a zarr node (Zarr v3; a v2 group, a v2 array)."""
_TEMPORARY = re.compile(rf"^\.(.+)\.\d+\.(?:[0-9a-f]+{re.escape(TEMP_SUFFIX)}|\d+\.create)$")
"""A temporary file of ours beside the key it stands for (``LocalKeys.put`` and ``create``)."""


@functools.lru_cache(maxsize=16)
def _chunk_key(zarr_format: int, ndim: int) -> re.Pattern[str]:
    """The keys of the chunks of an ``ndim``-D array as polystore writes it (``array_options``):
    v3 ``c/0/0`` (any count of indices: a chunk of an earlier save of another shape is in the
    way of this one's folders), v2 nested ``0/0`` (exactly ``ndim`` indices, so that a user's
    file of digits (``2024``) beside a 2-D array's chunks is not taken for one)."""
    if zarr_format == 3:
        return re.compile(r"^c(?:/\d+)*(?:#\d+)?$")
    return re.compile(r"^\d+" + r"/\d+" * max(0, ndim - 1) + r"(?:#\d+)?$")


def written_by_zarr(relative: str, zarr_format: int, ndim: int) -> bool:
    """Whether ``relative`` (a key under a node) is one that saving an ``ndim``-D array in
    ``zarr_format`` there leaves: a metadata document, one of its chunks (v3 ``c/0/0``, v2
    ``0/0``), a chunk staged by obstore (``0#1``), a temporary file of ours beside one of these.
    A user's own file kept in that folder is none of these (``17``, ``c.1`` or ``0.1`` beside
    a v3 array's chunks are not its keys, nor is ``2024`` beside a 2-D v2 array's)."""
    folder, _, name = relative.rpartition("/")
    temporary = _TEMPORARY.match(name)
    if temporary:
        relative = f"{folder}/{temporary.group(1)}" if folder else temporary.group(1)
    return relative in METADATA_DOCUMENTS or bool(_chunk_key(zarr_format, ndim).match(relative))


_ZARR_ENTRY = re.compile(r"^(?:c|\d+(?:\.\d+)*)(?:#\d+)?$")


def zarr_entry(name: str) -> bool:
    """Whether ``name``, directly under a node's folder, is one that writing the node there
    makes (what replacing the node clears, with all below it): a chunk or its folder (v3
    ``c``; v2 ``0``, ``0.0``), a level's folder (``0``), either staged (``0#1``) or as a
    temporary file of ours. Not a metadata document, nor a user's file or another node kept
    in that folder (``notes.txt``, ``labels``)."""
    temporary = _TEMPORARY.match(name)
    return bool(_ZARR_ENTRY.match(temporary.group(1) if temporary else name))


def delete_leftovers(keys: KeyStore, node: str, folder: str | None = None, *, zarr_format: int,
                     ndim: int) -> None:
    """Delete what a zarr writer of an ``ndim``-D array in ``zarr_format`` left under ``node``
    where no node is (an interrupted save or delete, or a failed one's own levels), nothing
    else: the folder may hold its user's files, which a save must not take with it (zarr's
    overwrite would). ``folder``: the node's local folder, whose subfolders this leaves empty
    are removed with it."""
    prefix = node.rstrip("/") + "/" if node else ""
    found = [key for key in keys.list(prefix) if written_by_zarr(key[len(prefix):], zarr_format, ndim)]
    for key in found:
        keys.delete(key)
    if folder is not None and found:
        for below, _dirs, _files in os.walk(folder, topdown=False):
            relative = os.path.relpath(below, folder).replace(os.sep, "/")
            if relative == "." or all(part == "c" or part.isdigit() for part in relative.split("/")):
                with contextlib.suppress(OSError):  # not empty: others' files stay
                    os.rmdir(below)


def _obstore() -> Any:
    return optional_import("obstore", extra="s3", purpose="Zarr stores on object storage")


# -- object-store configuration -----------------------------------------------------------------
_FSSPEC_NAMES = {
    # what users of s3fs pass (and this backend took before obstore) -> obstore's S3 keys
    "key": "access_key_id",
    "secret": "secret_access_key",
    "token": "session_token",
    "endpoint_url": "endpoint",
    "anon": "skip_signature",
}
_CREDENTIAL_VARIABLES = (
    "AWS_ACCESS_KEY_ID", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
)
_NO_CREDENTIALS_HELP = (
    "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_ENDPOINT_URL for an S3-compatible "
    "server), or AWS_PROFILE with a credentials file, or pass ZarrBackend(storage_options="
    "{'key': ..., 'secret': ..., 'endpoint_url': ...}); for a public bucket "
    "storage_options={'anon': True}; on a cloud machine whose role gives access, "
    "storage_options={'instance_credentials': True}"
)


def _s3_settings(options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], Any]:
    """obstore's (config, client options, credential provider) for S3 from ``storage_options``."""
    config: dict[str, Any] = {}
    client: dict[str, Any] = dict(options.get("client_options") or {})
    provider = options.get("credential_provider")
    instance = bool(options.get("instance_credentials"))
    for name, value in options.items():
        if name in ("client_options", "credential_provider", "instance_credentials"):
            continue
        if name == "client_kwargs":  # s3fs style: {"region_name": ...}
            if isinstance(value, dict) and value.get("region_name"):
                config["region"] = value["region_name"]
            continue
        config[_FSSPEC_NAMES.get(name, name)] = value
    endpoint = (config.get("endpoint") or os.environ.get("AWS_ENDPOINT_URL_S3")
                or os.environ.get("AWS_ENDPOINT_URL"))
    if endpoint:
        config.setdefault("endpoint", endpoint)
        if str(endpoint).startswith("http://"):
            client.setdefault("allow_http", True)
    if not (os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")):
        config.setdefault("region", "us-east-1")  # obstore needs one; S3-compatible servers ignore it
    has_key = bool(config.get("access_key_id")) or any(os.environ.get(v) for v in _CREDENTIAL_VARIABLES)
    if provider is None and not has_key and not config.get("skip_signature") and not instance:
        provider = _profile_credentials()
        if provider is None:
            # Refused here: obstore would go on to ask the cloud's instance-metadata address,
            # which off the cloud waits for timeouts and then fails without saying what to set.
            raise StorageCredentialsError(f"No S3 credentials found: {_NO_CREDENTIALS_HELP}.")
    return config, client, provider


def _profile_credentials() -> Any:
    """A credential provider from the AWS profile files (through boto3), or None."""
    files = [os.environ.get("AWS_SHARED_CREDENTIALS_FILE", "~/.aws/credentials"),
             os.environ.get("AWS_CONFIG_FILE", "~/.aws/config")]
    if not (os.environ.get("AWS_PROFILE") or any(Path(f).expanduser().is_file() for f in files)):
        return None
    try:
        import boto3  # type: ignore[import-untyped]
        from obstore.auth.boto3 import Boto3CredentialProvider
    except ImportError:
        return None
    session = boto3.Session()
    if session.get_credentials() is None:
        return None
    return Boto3CredentialProvider(session)


def _credentials_error(error: Exception, display: str) -> StorageCredentialsError | None:
    """A StorageCredentialsError for an error that says the credentials were refused."""
    text = f"{type(error).__name__} {error}"
    markers = ("Unauthenticated", "PermissionDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch",
               "403 Forbidden", "credential")
    if not any(marker in text for marker in markers):
        return None
    message = f"The object store refused access to '{display}' ({error}); {_NO_CREDENTIALS_HELP}."
    return StorageCredentialsError(message)


EXIT_SETTLE_S = 0.05
"""How long the interpreter gives up the GIL at exit once an object store was opened, at least."""
EXIT_SETTLE_MAX_S = 1.0
"""At most: while another thread of the process still runs or waits for a core (a loaded
machine), the wait goes on, up to this."""


@functools.cache
def _settle_object_store_threads_at_exit() -> None:
    """Registered once: at exit, give obstore's threads the GIL a moment before the interpreter
    finalizes. zarr-python's ObjectStore awaits obstore's async calls, whose results a Rust
    thread hands to the event loop (pyo3-async-runtimes); the loop can take a result while that
    thread is still inside the hand-over, blocked on the GIL. If the interpreter starts to
    finalize then, the thread cannot take the GIL, and the pthread_exit CPython ends it with
    cannot unwind a Rust thread: the process aborts (exit -6, or a bus error) after it did all
    its work. obstore has no call to shut its runtime down, so the main thread sleeps (which
    releases the GIL) and such a thread finishes its hand-over first: for ``EXIT_SETTLE_S``,
    then for as long as another thread is still running or runnable (on a loaded machine the
    woken thread may wait for a core longer than that), up to ``EXIT_SETTLE_MAX_S``."""
    import atexit

    atexit.register(_settle)


def _settle() -> None:
    deadline = time.monotonic() + EXIT_SETTLE_MAX_S
    time.sleep(EXIT_SETTLE_S)
    while _other_threads_running() and time.monotonic() < deadline:
        time.sleep(0.01)


def _other_threads_running() -> bool:
    """Whether a thread of this process other than the caller is running or waiting for a core
    (Linux: each thread's state in /proc; False where it cannot be read)."""
    me = str(threading.get_native_id())
    try:
        threads = os.listdir("/proc/self/task")
    except OSError:
        return False
    for thread in threads:
        if thread == me:
            continue
        try:
            with open(f"/proc/self/task/{thread}/stat", encoding="ascii") as stat:
                state = stat.read().rsplit(")", 1)[1].split()[0]  # after the name, which may hold spaces
        except (OSError, IndexError):
            continue  # ended meanwhile
        if state == "R":
            return True
    return False


def _object_store(url: str, options: dict[str, Any]) -> Any:
    """An obstore store rooted at ``url`` (bucket and prefix)."""
    store_module = optional_import("obstore.store", extra="s3", purpose="Zarr stores on object storage")
    _settle_object_store_threads_at_exit()
    scheme = url.split("://", 1)[0].lower()
    if scheme in ("s3", "s3a"):
        config, client, provider = _s3_settings(options)
        bucket, _, prefix = url.split("://", 1)[1].partition("/")
        return store_module.S3Store(
            bucket, prefix=prefix.strip("/") or None, config=config, client_options=client or None,
            credential_provider=provider,
        )
    try:
        return store_module.from_url(url, **options)
    except Exception as error:
        raise InvalidPathError(
            f"'{url}': obstore cannot open this URL ({error}). Object stores: s3://, gs://, az://."
        ) from error


class Stores:
    """The stores one backend opens, each opened once: zarr stores and plain key I/O."""

    def __init__(self, storage_options: dict[str, Any]) -> None:
        self.storage_options = dict(storage_options)
        self._lock = threading.Lock()
        self._objects: dict[str, Any] = {}
        self._zarr: dict[tuple[str, bool], Any] = {}

    def object_store(self, url: str) -> Any:
        """obstore's store rooted at ``url`` (cached: it holds the HTTP connections)."""
        with self._lock:
            found = self._objects.get(url)
        if found is None:
            found = _object_store(url.rstrip("/"), self.storage_options)
            with self._lock:
                found = self._objects.setdefault(url, found)
        return found

    def zarr_store(self, store: str, *, writable: bool) -> Any:
        """zarr-python's store for a local path or object-store URL."""
        key = (store, writable)
        with self._lock:
            cached = self._zarr.get(key)
        if cached is not None:
            return cached
        storage = zarr_module().storage
        if "://" in store:
            opened = storage.ObjectStore(self.object_store(store), read_only=not writable)
        elif writable and (local := _staging_local_store(store)) is not None:
            opened = storage.ObjectStore(local)
        else:
            opened = storage.LocalStore(store, read_only=not writable)
        with self._lock:
            return self._zarr.setdefault(key, opened)

    def keys(self, store: str) -> KeyStore:
        """Plain key I/O on ``store`` (keys relative to its root)."""
        if "://" in store:
            return ObjectKeys(self.object_store(store), store)
        return LocalKeys(store)

    def exists(self, store: str) -> bool:
        """Whether anything is at ``store`` (object stores: any key under the prefix)."""
        if "://" not in store:
            return os.path.isdir(store)
        return next(iter(self.keys(store).list()), None) is not None

    def remove(self, store: str, node: str = "") -> None:
        """Delete ``node`` and everything below it (``""``: the whole store)."""
        if "://" in store:
            delete_prefix(self.keys(store), node)
        else:
            # the folder, not the keys zarr lists: that also takes a chunk's staging file left
            # by a writer killed before its rename (obstore's listing does not show those)
            shutil.rmtree(os.path.join(store, node) if node else store)


def _staging_local_store(root: str) -> Any:
    """obstore's store of a local folder (None without obstore), for writing: every key it puts
    is written to a staging file beside the key and renamed over it, whole or not at all.

    zarrs writes the chunks of zarr's own ``LocalStore`` in place (truncate, then write), so a
    writer killed in the middle of a chunk leaves it torn and the old plane lost; through
    ``zarr.storage.ObjectStore`` over this store, zarrs writes the same chunks through
    object_store's local put (stage, rename), as fast. ``automatic_cleanup``: deleting a key
    through it removes the folders it leaves empty, as zarr's LocalStore does.
    """
    try:
        store_module = importlib.import_module("obstore.store")
    except ImportError:
        return None
    _settle_object_store_threads_at_exit()  # zarr's own reads and writes through it are async too
    return store_module.LocalStore(root, mkdir=True, automatic_cleanup=True)
