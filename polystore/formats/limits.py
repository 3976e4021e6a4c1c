"""How much memory reading one file may take beyond the file's own size, and how to raise it.

A compressed archive can expand a thousandfold (a 1.2 MiB ``.npz`` to 1.2 GiB of zeros), and a
header can claim any size. Loaders check the sizes a file declares against these limits
*before* decompressing anything (and the standard library's ``zipfile`` never returns more
than a member declares), so a forged file costs at most the limit, not what it claims. Data
stored as it is costs at most the file's size: zip members whose bytes overlap (one member's
data holding the next ones, so a small file holds many large members) are refused whatever
the limit.

Raise a limit for one call with the load option ``max_decompressed_bytes=...``, or for the
whole process by assigning the constant here (``polystore.formats.limits.NPZ_DECOMPRESSED_BYTES
= 8 * 2**30``); loaders read it at call time.
"""

from __future__ import annotations

import struct
import zipfile
from typing import IO

from polystore.exceptions import CorruptDataError, LimitExceededError

NPZ_DECOMPRESSED_BYTES = 2**30
"""``.npz``: bytes that compressed members may expand to, all members together (1 GiB)."""

ROI_ZIP_DECOMPRESSED_BYTES = 2**28
"""``.roi.zip`` (files, and ROI sets received as bytes): expanded bytes of all ROIs (256 MiB)."""

PT_DECOMPRESSED_BYTES = 2**30
"""``.pt``: bytes that compressed records may expand to, all together (1 GiB; ``torch.save``
itself never compresses)."""

TIFF_DECODED_BYTES = 2**30
"""TIFF: bytes of pixels a read may decode beyond the file's own size (1 GiB)."""

OPTION = "max_decompressed_bytes"
"""The load option that raises a limit for one call."""


def check_expansion(declared: int, limit: int, what: str, option: str, constant: str) -> None:
    """Refuse to expand ``what`` to ``declared`` bytes when that is above ``limit``."""
    if declared > limit:
        raise LimitExceededError(
            f"{what} would expand to {declared:,} bytes, above the limit of {limit:,} bytes "
            f"(a guard against decompression bombs). If you trust the file, pass "
            f"{option}={declared} to load it, or raise polystore.formats.limits.{constant}."
        )


_LOCAL_HEADER = struct.Struct("<4s2B4HL2L2H")
"""A zip member's local header: signature ... name length, extra length (the last two)."""


def checked_zip_members(
    archive: zipfile.ZipFile,
    handle: IO[bytes],
    shown: str,
    wanted: list[zipfile.ZipInfo],
    limit: int,
    constant: str,
) -> None:
    """Refuse an archive whose members' bytes overlap, a stored member that claims more than it
    stores, and ``wanted`` members whose compressed data declares more than ``limit`` bytes.

    The overlap check is what Python 3.12's zipfile does (CVE-2024-0450, which 3.11 lacks):
    without it a stored member may quote the members after it, so that a file of 1 MiB holds
    2,000 members of 0.7 MiB each. Every member's range runs from its local header to the end
    of its data; no two may share a byte, and none may reach the central directory.
    """
    spans: list[tuple[int, int, str]] = []
    for info in archive.infolist():
        handle.seek(info.header_offset)
        header = handle.read(_LOCAL_HEADER.size)
        if len(header) != _LOCAL_HEADER.size or header[:4] != b"PK\x03\x04":
            raise CorruptDataError(
                f"{shown}: member '{info.filename}' has no local header where the archive's "
                "directory says: the archive is damaged or forged."
            )
        fields = _LOCAL_HEADER.unpack(header)
        data_start = info.header_offset + _LOCAL_HEADER.size + fields[-2] + fields[-1]
        spans.append((info.header_offset, data_start + info.compress_size, info.filename))
        if info.compress_type == zipfile.ZIP_STORED and info.file_size > info.compress_size:
            raise CorruptDataError(
                f"{shown}: member '{info.filename}' claims {info.file_size:,} bytes but stores "
                f"{info.compress_size:,}: the archive is damaged or forged."
            )
    spans.sort()
    # each member ends before the next one starts, the last before the directory (an archive
    # of no members, as .npz of an empty dict, has nothing to check)
    ends = [(start, f"member '{name}'") for start, _, name in spans[1:]]
    ends += [(archive.start_dir, "the archive's directory")] if spans else []
    for (_, end, name), (next_start, what) in zip(spans, ends, strict=True):
        if end > next_start:
            raise CorruptDataError(
                f"{shown}: the data of member '{name}' runs into {what}: members overlap, "
                "which no zip writer does (a forged archive that holds more than its size, a "
                "'zip bomb'). It is refused whatever the limits."
            )
    expanding = sum(info.file_size for info in wanted if info.compress_type != zipfile.ZIP_STORED)
    check_expansion(expanding, limit, shown, OPTION, constant)
