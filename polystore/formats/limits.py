"""How much memory reading one file may take beyond the file's own size, and how to raise it.

A compressed archive can expand a thousandfold (a 1.2 MiB ``.npz`` to 1.2 GiB of zeros), and a
header can claim any size. Loaders check the sizes an archive declares against these limits
*before* decompressing anything (and the standard library's ``zipfile`` never returns more
than a member declares), so a forged file costs at most the limit, not what it claims.

Raise a limit for one call with the load option ``max_decompressed_bytes=...``, or for the
whole process by assigning the constant here (``polystore.formats.limits.NPZ_DECOMPRESSED_BYTES
= 8 * 2**30``); loaders read it at call time.
"""

from __future__ import annotations

from polystore.exceptions import LimitExceededError

NPZ_DECOMPRESSED_BYTES = 2**30
"""``.npz``: bytes that compressed members may expand to, all members together (1 GiB)."""

ROI_ZIP_DECOMPRESSED_BYTES = 2**28
"""``.roi.zip`` (files, and ROI sets received as bytes): expanded bytes of all ROIs (256 MiB)."""


def check_expansion(declared: int, limit: int, what: str, option: str, constant: str) -> None:
    """Refuse to expand ``what`` to ``declared`` bytes when that is above ``limit``."""
    if declared > limit:
        raise LimitExceededError(
            f"{what} would expand to {declared:,} bytes, above the limit of {limit:,} bytes "
            f"(a guard against decompression bombs). If you trust the file, pass "
            f"{option}={declared} to load it, or raise polystore.formats.limits.{constant}."
        )
