"""The chunks and shards a conversion writes, decided and checked on the client against the
planned shape and axes before anything is written: a request zarr would refuse half way, or
that would let one task touch another's keys, is refused up front with what to give instead.

Images default to tiles (:data:`DEFAULT_TILE` in y and x, one plane deep), so that a task
writes and holds a few tiles, never a whole plane of an image larger than memory; plate
fields keep the zarr backend's default (a chunk per plane: a field is read plane by plane).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from polystore.backends.zarr.config import ZarrConfig
from polystore.backends.zarr.image import array_options, level_shape
from polystore.exceptions import ChunkingError

DEFAULT_TILE = 1024
"""An image's default chunk in y and x (2 MiB of uint16)."""


def image_config(config: ZarrConfig, shape: Sequence[int], axes: str) -> ZarrConfig:
    """``config`` with an image's default chunks where none were given: tiles of the shards if
    any, else of :data:`DEFAULT_TILE`."""
    if config.chunks is not None:
        return config
    if config.shards is not None:
        _check_lengths(config, shape, axes, "image")
        shards = tuple(config.shards)
        tiles = tuple(min(DEFAULT_TILE, s) if a in "yx" else 1 for a, s in zip(axes, shards, strict=True))
        bad = [a for a, t, s in zip(axes, tiles, shards, strict=True) if s % t]
        if bad:
            example = tuple(math.gcd(DEFAULT_TILE, s) if a in "yx" else 1
                            for a, s in zip(axes, shards, strict=True))
            raise ChunkingError(
                f"shards {shards} without chunks: the default chunk ({DEFAULT_TILE} in y and x) does not "
                f"tile them along {', '.join(bad)}. Give chunks= too, e.g. chunks={example}."
            )
        return config.replace(chunks=tiles)
    return config.replace(chunks=tuple(DEFAULT_TILE if a in "yx" else 1 for a in axes))


def _check_lengths(config: ZarrConfig, shape: Sequence[int], axes: str, what: str) -> None:
    for name in ("chunks", "shards"):
        given = getattr(config, name)
        if given is None:
            continue
        if len(given) != len(shape):
            raise ChunkingError(
                f"{name}={tuple(given)} gives {len(given)} sizes; the {what} arrays have {len(shape)} axes "
                f"({axes}, shape {tuple(shape)}): give one size per axis."
            )
        if any(not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1 for n in given):
            raise ChunkingError(f"{name}={tuple(given)}: every size is a whole number of at least 1.")


def check_chunking(config: ZarrConfig, shape: Sequence[int], dtype: Any, axes: str, levels: int,
                   what: str) -> None:
    """Refuse chunks or shards that do not fit the ``shape`` and ``axes`` planned, at any level:
    a size per axis, and shards that are whole multiples of the chunks (zarr would store chunks
    across shard boundaries, and a task writing one shard would touch its neighbours')."""
    _check_lengths(config, shape, axes, what)
    if config.chunks is not None and config.shards is not None:
        bad = [a for a, c, s in zip(axes, config.chunks, config.shards, strict=True) if s % c]
        if bad:
            raise ChunkingError(
                f"shards {tuple(config.shards)} are not whole multiples of chunks {tuple(config.chunks)} "
                f"(axis {', '.join(bad)}): a shard holds whole chunks. Give shards that the chunks "
                "tile, e.g. shards = chunks x 4."
            )
    dtype = np.dtype(dtype)
    for level in range(levels):
        options = array_options(level_shape(tuple(shape), axes, level), dtype, config)
        chunks, shards = options["chunks"], options.get("shards")
        if shards is None:
            continue
        if chunks == "auto" or any(s % c for s, c in zip(shards, chunks, strict=True)):
            raise ChunkingError(
                f"shards {tuple(config.shards or ())} with chunks {chunks} (the {what}'s default: one per "
                f"plane): a shard must hold whole chunks. Give chunks= that tile the shards."
            )


def write_unit_bytes(config: ZarrConfig, shape: Sequence[int], dtype: Any, axes: str) -> int:
    """Bytes of the largest unit a task writes whole at full resolution (a shard, else a chunk)."""
    options = array_options(level_shape(tuple(shape), axes, 0), np.dtype(dtype), config)
    unit = options.get("shards") or options["chunks"]
    return math.prod(unit) * np.dtype(dtype).itemsize if unit != "auto" else math.prod(shape)
