"""The wire protocol: one JSON header per item, then the item's raw bytes (or a shared-memory slot).

A message is a ZeroMQ multipart message:

* frame 0: the header, UTF-8 JSON (see :func:`make_header` and ``docs/streaming.md``);
* frame 1 (``"transport": "inline"`` only): the array's bytes, exactly ``nbytes`` of them.

The back channel carries acknowledgements (:func:`encode_ack`, :func:`decode_ack`), JSON too.
Nothing is ever pickled. :func:`decode` checks every field before a byte is interpreted and
raises :class:`ProtocolError` (with the reason) for anything it does not accept.

Version 2 (this one): shared-memory segments begin with a stamp the sender wrote (see
:mod:`polystore.streaming.shm`), so ``shm.offset`` is at least the stamp's size; every inline
item is acknowledged on receipt (the sender bounds the bytes it has in flight). A header's
``shm.release: true`` (added within version 2: receivers that do not know it ignore it and
acknowledge as before) says the segment has a control block after the stamp: the receiver
gives the slot back by writing the item's id at :data:`RELEASE_AT`, and sends an
acknowledgement only when the sender wrote that id at :data:`WAKE_AT` (it waits for a slot).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

import numpy as np

from polystore.exceptions import InvalidOptionError
from polystore.streaming.errors import ProtocolError
from polystore.streaming.payloads import decode_rois, decode_table

__all__ = [
    "DEFAULT_SHM_PREFIX",
    "PROTOCOL_VERSION",
    "Ack",
    "AckReader",
    "HeaderReader",
    "HeaderWriter",
    "Limits",
    "ProtocolError",
    "StreamItem",
    "decode",
    "decode_ack",
    "encode_ack",
    "encode_header",
    "make_header",
    "path_metadata",
]

PROTOCOL_VERSION = 2
SUPPORTED_VERSIONS = frozenset({2})
KINDS = frozenset({"image", "labels", "shapes", "points", "roi_set", "table"})
TRANSPORTS = frozenset({"inline", "shm"})
ALLOWED_DTYPE_KINDS = frozenset("biufc")
"""bool, signed and unsigned integers, floats, complex: never object, void, strings or datetimes."""
DEFAULT_MAX_BYTES = 2 * 1024**3
MAX_HEADER_BYTES = 64 * 1024
MAX_ACK_BYTES = 1024
MAX_NDIM = 32
MAX_DIMENSION = 2**48
MAX_PATH_CHARS = 4096
MAX_PID = 2**22
"""Linux's largest possible pid (``PID_MAX_LIMIT``): a name with a larger one is not ours."""
MAX_ID = 2**64
"""Item ids fit the control block's little-endian uint64 words (``RELEASE_AT``, ``WAKE_AT``)."""
DEFAULT_SHM_PREFIX = "polystore_"
REPLY_TO = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")

# a segment: the stamp, the control block of ``shm.release`` (two little-endian uint64), the frame
STAMP_BYTES = 64
"""The stamp at a segment's start: magic and the sending stream's id."""
RELEASE_AT = 64
"""Where a receiver writes the id of the item whose slot it gives back."""
WAKE_AT = 72
"""Where the sender writes the id of an item whose release it waits for (then a message is sent too)."""
FRAME_AT = 128
"""Where a frame starts in a segment with a control block (on a cache line of its own)."""

Transport = Literal["inline", "shm"]


class StreamItem:
    """One validated item: the array and the header it came with.

    A receiver shares the header it validated among the items that came with it (a camera
    sends the same one again and again); ``header`` is this item's own copy, made when first
    asked for, so that changing it changes nothing else.
    """

    __slots__ = ("_header", "_id", "_shared", "array")

    def __init__(self, array: np.ndarray, header: dict[str, Any] | None = None) -> None:
        self.array = array
        self._header: dict[str, Any] | None = {} if header is None else header
        self._shared: Mapping[str, Any] = self._header
        self._id = 0

    @classmethod
    def received(cls, array: np.ndarray, shared: Mapping[str, Any], msg_id: int) -> StreamItem:
        """An item whose header is ``shared`` (never changed; copied on demand) with id ``msg_id``."""
        item = cls.__new__(cls)  # one per frame: the fields set once, not through __init__
        item.array, item._header, item._shared, item._id = array, None, shared, msg_id
        return item

    @property
    def header(self) -> dict[str, Any]:
        if self._header is None:
            header: dict[str, Any] = _json_copy(self._shared)
            header["id"] = self._id
            self._header = header
        return self._header

    @header.setter
    def header(self, header: dict[str, Any]) -> None:
        self._header = self._shared = header

    def __repr__(self) -> str:
        array = self.array
        return f"StreamItem(path={self.path!r}, kind={self.kind!r}, shape={array.shape}, dtype={array.dtype})"

    @property
    def path(self) -> str:
        return str(self._shared.get("path", ""))

    @property
    def kind(self) -> str:
        return str(self._shared.get("kind", "image"))

    @property
    def metadata(self) -> dict[str, Any]:
        meta = self._shared.get("metadata")
        return _json_copy(meta) if isinstance(meta, dict) else {}

    def rois(self) -> list[Any]:
        """A ``roi_set`` item's ROIs (``roifile.ImagejRoi``), decoded from its ``.roi.zip`` bytes."""
        self._require_kind("roi_set")
        return decode_rois(self.array)

    def table(self) -> Any:
        """A ``table`` item as a pandas DataFrame."""
        self._require_kind("table")
        return decode_table(self.array, self.metadata, self.path)

    def _require_kind(self, kind: str) -> None:
        if self.kind != kind:
            raise ProtocolError(f"item {self.path!r} is a {self.kind!r}, not a {kind}")


def shm_name_pattern(prefixes: Sequence[str]) -> re.Pattern[str]:
    """Names we create: ``{prefix}{pid}_{index}``, nothing else (no ``/``, no foreign segments)."""
    alternatives = "|".join(re.escape(p) for p in prefixes)
    return re.compile(rf"^(?:{alternatives})(?P<pid>[0-9]{{1,10}})_(?P<index>[0-9]{{1,10}})$")


def owner_pid(name: str, pattern: re.Pattern[str]) -> int | None:
    """The pid in a segment name of ours, or None: not our pattern, or a pid no process can have."""
    match = pattern.match(name)
    if match is None:
        return None
    pid = int(match["pid"])
    return pid if 0 < pid <= MAX_PID else None


def path_metadata(path: str) -> dict[str, Any]:
    """What ``path`` says about its place on a plate, as the header's plate keys: the plate
    model's one key set (:meth:`polystore.plates.Components.to_header`), for every naming
    convention it knows (``A01_s1_w2.tif``, ``plate1/A01/s1_w1.tif``, ``B/03/0``, Phenix,
    Yokogawa, ...); empty for a path with no plate meaning. A name that is ambiguous or out of
    its convention's range raises :class:`polystore.plates.PlateNameError`.
    """
    from polystore.plates import parse_components

    components = parse_components(path)
    return {} if components is None else components.to_header()


@lru_cache(maxsize=4096)
def _metadata_of(path: str) -> tuple[tuple[str, Any], ...]:
    # paths repeat from frame to frame: parse each once (values are JSON scalars)
    return tuple(path_metadata(path).items())


def checked_dtype(dtype: Any) -> np.dtype[Any]:
    """``dtype`` if the protocol carries it (bool and numeric); :class:`ProtocolError` otherwise."""
    try:
        checked: np.dtype[Any] = np.dtype(dtype)
    except TypeError as error:
        message = f"{dtype!r} is not a NumPy dtype: pass one such as np.uint16 or '<u2'"
        raise InvalidOptionError(message) from error
    if checked.kind not in ALLOWED_DTYPE_KINDS or checked.fields is not None or checked.subdtype is not None:
        raise ProtocolError(f"dtype {checked} cannot be streamed: only bool and numeric dtypes are carried")
    return checked


def header_for(
    shape: Sequence[int],
    dtype: np.dtype[Any],
    order: Literal["C", "F"],
    path: str,
    *,
    kind: str = "image",
    metadata: Mapping[str, Any] | None = None,
    transport: Transport = "inline",
    shm: Mapping[str, Any] | None = None,
    msg_id: int = 0,
    ack: bool = False,
    sender: int | None = None,
    reply_to: str | None = None,
    stream: str | None = None,
) -> dict[str, Any]:
    """The header of an item of ``shape`` and ``dtype`` (bytes in ``order``) sent as ``path``."""
    if kind not in KINDS:
        raise ProtocolError(f"unknown kind {kind!r}; known kinds: {', '.join(sorted(KINDS))}")
    dims = [int(n) for n in shape]
    meta = dict(_metadata_of(path))
    if metadata:
        meta.update(metadata)
    header: dict[str, Any] = {
        "v": PROTOCOL_VERSION,
        "kind": kind,
        "path": path,
        "shape": dims,
        "dtype": dtype.str,
        "order": order,
        "nbytes": math.prod(dims) * dtype.itemsize,
        "metadata": meta,
        "transport": transport,
        "ack": ack,
    }
    if sender is not None:
        header["sender"] = sender
    if reply_to is not None:
        header["reply_to"] = reply_to
    if stream is not None:
        header["stream"] = stream
    if transport == "shm":
        header["shm"] = dict(shm or {})
    header["id"] = msg_id  # last: see HeaderWriter and HeaderReader
    return header


def make_header(
    array: np.ndarray,
    path: str,
    *,
    kind: str = "image",
    metadata: Mapping[str, Any] | None = None,
    transport: Transport = "inline",
    shm: Mapping[str, Any] | None = None,
    msg_id: int = 0,
    ack: bool = False,
    sender: int | None = None,
    reply_to: str | None = None,
    stream: str | None = None,
) -> dict[str, Any]:
    """The header for ``array`` (C- or Fortran-contiguous) sent as ``path``."""
    return header_for(
        array.shape, checked_dtype(array.dtype), "C" if array.flags.c_contiguous else "F", path, kind=kind,
        metadata=metadata, transport=transport, shm=shm, msg_id=msg_id, ack=ack, sender=sender,
        reply_to=reply_to, stream=stream,
    )


def encode_header(header: Mapping[str, Any]) -> bytes:
    """The header as frame 0; metadata that JSON cannot carry is an error here, not on the wire."""
    try:
        raw = json.dumps(header, separators=(",", ":"), allow_nan=False).encode()
    except (TypeError, ValueError) as error:
        raise ProtocolError(f"header cannot be written as JSON ({error}); metadata must be JSON") from error
    if len(raw) > MAX_HEADER_BYTES:
        raise ProtocolError(f"header of {len(raw)} bytes is over the {MAX_HEADER_BYTES}-byte limit: "
                            "send less metadata")
    return raw


def _int(value: Any, name: str, minimum: int = 0) -> int:
    if type(value) is not int or value < minimum:
        raise ProtocolError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


@dataclass(frozen=True)
class Limits:
    """What a receiver accepts."""

    max_bytes: int = DEFAULT_MAX_BYTES
    shm_prefixes: tuple[str, ...] = (DEFAULT_SHM_PREFIX,)

    def shm_pattern(self) -> re.Pattern[str]:
        return shm_name_pattern(self.shm_prefixes)


def decode(frames: Sequence[Any], limits: Limits, pattern: re.Pattern[str] | None = None) -> dict[str, Any]:
    """Validate a received multipart message and return its header; :class:`ProtocolError` if bad.

    ``frames`` are ``bytes``, ``memoryview`` or ``zmq.Frame`` (anything with ``.buffer``).
    For ``inline`` messages the caller then reads the array with :func:`array_from_buffer`.
    """
    if len(frames) not in (1, 2):
        raise ProtocolError(f"expected 1 or 2 frames, got {len(frames)}")
    header = _validated(_buffer(frames[0]), limits, pattern)
    check_frames(header, frames)
    return header


def _validated(raw: memoryview | bytes, limits: Limits, pattern: re.Pattern[str] | None) -> dict[str, Any]:
    """The header in ``raw``, every field checked (what :func:`decode` does, less the frames)."""
    if len(raw) > MAX_HEADER_BYTES:
        raise ProtocolError(f"header of {len(raw)} bytes is over the {MAX_HEADER_BYTES}-byte limit")
    try:
        header = json.loads(bytes(raw).decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise ProtocolError(f"header is not UTF-8 JSON ({type(error).__name__})") from None
    if not isinstance(header, dict):
        raise ProtocolError("header is not a JSON object")
    version = header.get("v")
    if type(version) is not int or version not in SUPPORTED_VERSIONS:
        raise ProtocolError(f"unsupported protocol version {version!r} (this receiver speaks "
                            f"{', '.join(map(str, sorted(SUPPORTED_VERSIONS)))}: update the sender)")
    if header.get("kind") not in KINDS:
        raise ProtocolError(f"unknown kind {header.get('kind')!r}")
    path = header.get("path")
    if not isinstance(path, str) or len(path) > MAX_PATH_CHARS:
        raise ProtocolError("path must be a string of at most 4096 characters")
    shape = header.get("shape")
    if not isinstance(shape, list) or len(shape) > MAX_NDIM:
        raise ProtocolError(f"shape must be a list of at most {MAX_NDIM} integers")
    dims = [_int(n, "shape entry") for n in shape]
    # bound each dimension before multiplying: NumPy refuses dimensions >= 2**63, and a
    # product of huge ints would be slow to compute and to print in the message
    if any(n > MAX_DIMENSION for n in dims):
        raise ProtocolError(f"a shape entry is over {MAX_DIMENSION}")
    dtype_text = header.get("dtype")
    if not isinstance(dtype_text, str) or len(dtype_text) > 8:
        raise ProtocolError(f"dtype must be a short string, got {dtype_text!r}")
    try:
        dtype = np.dtype(dtype_text)
    except (TypeError, ValueError):
        raise ProtocolError(f"dtype {dtype_text!r} is not a NumPy dtype") from None
    if dtype.kind not in ALLOWED_DTYPE_KINDS or dtype.fields is not None or dtype.subdtype is not None:
        raise ProtocolError(f"dtype {dtype_text!r} is not allowed (bool and numeric only)")
    if header.get("order", "C") not in ("C", "F"):
        raise ProtocolError(f"order must be 'C' or 'F', got {header.get('order')!r}")
    nbytes = _int(header.get("nbytes"), "nbytes")
    elements = 0 if 0 in dims else math.prod(dims)
    if elements > limits.max_bytes:
        raise ProtocolError(f"shape {dims} is over this receiver's limit of {limits.max_bytes} bytes")
    expected = elements * dtype.itemsize
    if expected != nbytes:
        raise ProtocolError(f"shape {dims} of {dtype} is {expected} bytes, header says {nbytes}")
    if nbytes > limits.max_bytes:
        raise ProtocolError(f"{nbytes} bytes is over this receiver's limit of {limits.max_bytes}")
    if not isinstance(header.get("metadata", {}), dict):
        raise ProtocolError("metadata must be a JSON object")
    # every sender numbers its items (header_for writes "id" last): one without is not ours.
    # A slot's release is the id as 8 bytes in the control block: a larger one cannot be written
    if _int(header.get("id"), "id") >= MAX_ID:
        raise ProtocolError(f"id must be an integer below 2**64, got {header['id']}")
    for field_name in ("reply_to", "stream"):
        value = header.get(field_name)
        if value is not None and (not isinstance(value, str) or not REPLY_TO.match(value)):
            raise ProtocolError(f"{field_name} {value!r} is not an id of ours ([A-Za-z0-9_.:-], 1 to 64)")
    transport = header.get("transport")
    if transport == "shm":
        if header.get("stream") is None:
            raise ProtocolError("a shared-memory message names its sender's stream")
        shm = header.get("shm")
        if not isinstance(shm, dict):
            raise ProtocolError("shm transport without an 'shm' object")
        name = shm.get("name")
        if not isinstance(name, str) or owner_pid(name, pattern or limits.shm_pattern()) is None:
            raise ProtocolError(f"shared-memory name {name!r} is not one of ours")
        offset = _int(shm.get("offset"), "shm.offset")
        _int(shm.get("slot"), "shm.slot")
        release = shm.get("release", False)
        if type(release) is not bool:
            raise ProtocolError(f"shm.release must be true or false, got {release!r}")
        if release and offset < FRAME_AT:
            raise ProtocolError(f"shm.release with the frame at {offset}: the control block takes bytes "
                                f"{RELEASE_AT}..{FRAME_AT}")
        if _int(shm.get("size"), "shm.size") != nbytes:
            raise ProtocolError(f"shm.size {shm.get('size')!r} differs from nbytes {nbytes}")
    elif transport != "inline":
        raise ProtocolError(f"unknown transport {transport!r}")
    return header


def check_frames(header: Mapping[str, Any], frames: Sequence[Any]) -> None:
    """Refuse a message whose frames do not match its (validated) header."""
    if header["transport"] == "inline":
        if len(frames) != 2:
            raise ProtocolError("an inline message has exactly 2 frames (header, data)")
        received = len(_buffer(frames[1]))
        if received != header["nbytes"]:
            raise ProtocolError(f"header says {header['nbytes']} bytes, {received} bytes arrived")
    elif len(frames) != 1:
        raise ProtocolError("a shared-memory message has exactly 1 frame (the header)")


_ID_FIELD = b',"id":'
_MAX_ID_DIGITS = 18
_KNOWN_HEADERS = 64
_KNOWN_HEADER_BYTES = 4096


ShmPlace = tuple[str, int, int, int]
"""Where a shared-memory item's bytes are: the header's ``shm`` (segment name, offset, size, slot)."""


class HeaderWriter:
    """Frame 0 of one sender's items, encoded once per distinct header.

    A camera loop sends the same path, shape and slot again and again: everything before the
    trailing ``"id"`` (:func:`header_for` puts it last) is kept by those values, and each item
    appends its id. Items with ``metadata`` are encoded whole (a caller's dict may change).
    """

    def __init__(self, *, sender: int, stream: str, reply_to: str | None, size: int = 256) -> None:
        self.sender, self.stream, self.reply_to, self.size = sender, stream, reply_to, size
        self._prefixes: dict[tuple[Any, ...], bytes] = {}

    def encode(
        self, shape: tuple[int, ...], dtype: np.dtype[Any], order: Literal["C", "F"], path: str, *,
        kind: str, metadata: Mapping[str, Any] | None, ack: bool, shm: ShmPlace | None, msg_id: int,
    ) -> bytes:
        """Frame 0 of an item; ``shm``: where its bytes are, (segment name, offset, size, slot)."""
        if metadata:
            return encode_header(self._header(shape, dtype, order, path, kind, metadata, ack, shm, msg_id))
        return with_id(self.prefix(shape, dtype, order, path, kind=kind, ack=ack, shm=shm), msg_id)

    def prefix(
        self, shape: tuple[int, ...], dtype: np.dtype[Any], order: Literal["C", "F"], path: str, *,
        kind: str, ack: bool, shm: ShmPlace | None,
    ) -> bytes:
        """The bytes before the id of an item without metadata (:func:`with_id` completes them):
        worked out once per distinct header, so that a producer can have them ready before its
        frame is (``Sender.frame``)."""
        key = (path, shape, dtype, order, kind, ack, shm)
        prefix = self._prefixes.get(key)
        if prefix is None:
            raw = encode_header(self._header(shape, dtype, order, path, kind, None, ack, shm, 0))
            prefix = raw[: -len(_ID_FIELD) - 2]  # less ',"id":0}'
            if len(self._prefixes) >= self.size:
                self._prefixes.clear()
            self._prefixes[key] = prefix
        return prefix

    def _header(
        self, shape: tuple[int, ...], dtype: np.dtype[Any], order: Literal["C", "F"], path: str, kind: str,
        metadata: Mapping[str, Any] | None, ack: bool, shm: ShmPlace | None, msg_id: int,
    ) -> dict[str, Any]:
        place: dict[str, Any] | None = None
        if shm is not None:
            place = dict(zip(("name", "offset", "size", "slot"), shm, strict=True))
            if place["offset"] >= FRAME_AT:  # the segment has a control block: give the slot back there
                place["release"] = True
        return header_for(shape, dtype, order, path, kind=kind, metadata=metadata, ack=ack,
                          transport="inline" if shm is None else "shm", shm=place, msg_id=msg_id,
                          sender=self.sender, reply_to=self.reply_to, stream=self.stream)


def with_id(prefix: bytes, msg_id: int) -> bytes:
    """Frame 0 of an item: the bytes :meth:`HeaderWriter.prefix` worked out, and its id."""
    raw = b'%b,"id":%d}' % (prefix, msg_id)
    if len(raw) > MAX_HEADER_BYTES:
        raise ProtocolError(f"header of {len(raw)} bytes is over the {MAX_HEADER_BYTES}-byte limit: "
                            "send less metadata")
    return raw


def split_id(raw: bytes) -> tuple[bytes, int] | None:
    """``raw`` as (everything before a trailing ``,"id":<digits>}``, the id), or None when it does
    not end so (digits only, no leading zero, at most 18 of them)."""
    cut = raw.rfind(_ID_FIELD)
    if cut <= 0 or raw[-1:] != b"}":
        return None
    digits = raw[cut + len(_ID_FIELD) : -1]
    if not (digits.isdigit() and len(digits) <= _MAX_ID_DIGITS and (digits[0] != 0x30 or digits == b"0")):
        return None
    return raw[:cut], int(digits)


class HeaderReader:
    """:func:`decode` for one receiver, remembering the headers it validated.

    A header whose bytes, up to a trailing ``,"id":<digits>}``, equal those of one validated
    before is that header with another id: JSON gives the same object, so only the id (digits,
    no leading zero) and the frames are checked again. At most 64 headers of at most 4 KiB are
    kept, and only those whose metadata holds no nested objects (each item gets its own copy).
    """

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._pattern = limits.shm_pattern()
        self._known: dict[bytes, dict[str, Any]] = {}

    def decode(self, frames: Sequence[Any]) -> tuple[Mapping[str, Any], int]:
        """The validated header (shared with other items: never change it) and the item's id."""
        if len(frames) not in (1, 2):
            raise ProtocolError(f"expected 1 or 2 frames, got {len(frames)}")
        raw = frames[0] if type(frames[0]) is bytes else bytes(_buffer(frames[0]))
        split = split_id(raw)
        if split is None:
            header = decode(frames, self.limits, self._pattern)
            return header, header["id"]
        known = self._known.get(split[0])
        if known is None:
            header = decode(frames, self.limits, self._pattern)
            self._remember(split[0], header)
            return header, header["id"]
        check_frames(known, frames)
        return known, split[1]

    def known(self, prefix: bytes) -> Mapping[str, Any] | None:
        """The header validated before for the bytes ``prefix`` (see :func:`split_id`), if kept."""
        return self._known.get(prefix)

    def _remember(self, key: bytes, header: dict[str, Any]) -> None:
        if len(key) > _KNOWN_HEADER_BYTES:
            return
        if len(self._known) >= _KNOWN_HEADERS:
            self._known.pop(next(iter(self._known)))
        self._known[key] = _json_copy(header)


def _json_copy(value: Any) -> Any:
    """A copy of a JSON value (dicts, lists, scalars): copy.deepcopy's result, several times faster."""
    if type(value) is dict:
        return {key: _json_copy(item) for key, item in value.items()}
    if type(value) is list:
        return [_json_copy(item) for item in value]
    return value


def array_from_buffer(header: Mapping[str, Any], buffer: Any) -> np.ndarray:
    """The array a validated header describes, over ``buffer`` (no copy)."""
    return np.ndarray(header["shape"], np.dtype(header["dtype"]), buffer, order=header.get("order", "C"))


def _buffer(frame: Any) -> memoryview:
    buf = getattr(frame, "buffer", frame)
    view = memoryview(buf)
    return view.cast("B") if view.ndim != 1 or view.format != "B" else view


# -- the back channel -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ack:
    """An acknowledgement: item ``id`` of ``stream`` arrived, and/or shared-memory ``slot`` (holding
    segment ``name``) may be written again."""

    stream: str
    id: int | None = None
    slot: int | None = None
    name: str | None = None


def encode_ack(ack: Ack) -> bytes:
    return json.dumps({"v": PROTOCOL_VERSION, "stream": ack.stream, "ack": ack.id,
                       "slot": ack.slot, "name": ack.name}, separators=(",", ":")).encode()


class AckReader:
    """:func:`decode_ack`, remembering the acks that give slots back: a receiver sends the same
    bytes for a slot every time (at most 256 kept)."""

    def __init__(self) -> None:
        self._known: dict[bytes, Ack] = {}

    def decode(self, raw: bytes) -> Ack | None:
        ack = self._known.get(raw)
        if ack is not None:
            return ack
        ack = decode_ack(raw)
        if ack is not None and ack.id is None:
            if len(self._known) >= 256:
                self._known.clear()
            self._known[raw] = ack
        return ack


def decode_ack(raw: bytes) -> Ack | None:
    """The acknowledgement in ``raw``, or None when it is not a well-formed one."""
    if len(raw) > MAX_ACK_BYTES:
        return None
    try:
        message = json.loads(raw)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    if not isinstance(message, dict) or message.get("v") != PROTOCOL_VERSION:
        return None
    stream, msg_id, slot, name = (message.get(key) for key in ("stream", "ack", "slot", "name"))
    if not isinstance(stream, str) or not all(
        value is None or type(value) is int for value in (msg_id, slot)
    ) or not (name is None or isinstance(name, str)):
        return None
    return Ack(stream, msg_id, slot, name)
