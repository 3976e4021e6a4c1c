"""ZarrConfig: how the zarr backend lays out, chunks and compresses what it writes."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal

import numpy as np

from polystore.exceptions import ChunkingError, InvalidOptionError
from polystore.lazy import optional_import
from polystore.ome.ngff import NgffVersion

_NGFF_FORMATS = {"0.4": 2, "0.5": 3, "0.6": 3}
"""The Zarr format each OME-NGFF version lives on."""


class ZarrCompressor(StrEnum):
    ZSTD = "zstd"
    BLOSC_LZ4 = "blosc-lz4"
    BLOSC_ZSTD = "blosc-zstd"
    GZIP = "gzip"
    NONE = "none"


class ZarrChunkStrategy(StrEnum):
    PLANE = "plane"
    """One chunk per 2-D (y, x) plane: reading one plane reads one chunk."""
    SINGLE = "single"
    """The whole array in one chunk."""
    AUTO = "auto"
    """zarr-python's own heuristic."""


@dataclass(frozen=True)
class ZarrConfig:
    """Settings of a :class:`~polystore.backends.zarr.ZarrBackend`; every field can also be
    given to its constructor.

    Defaults were measured on microscopy-like uint16 data (``benchmarks/zarr.py --defaults``):
    zstd level 1 with byte shuffle compresses about as well as higher levels at a fraction of
    the time, and one chunk per plane makes single-plane reads cheap.
    """

    store_name: str = "images.zarr"
    """Store used for paths that name none (no ``.zarr`` component)."""
    compressor: ZarrCompressor | str = ZarrCompressor.ZSTD
    compression_level: int = 1
    shuffle: bool = True
    chunk_strategy: ZarrChunkStrategy | str = ZarrChunkStrategy.PLANE
    chunks: tuple[int, ...] | None = None
    """Explicit chunk shape (overrides ``chunk_strategy``)."""
    shards: tuple[int, ...] | None = None
    """Shard shape (Zarr v3 only): many chunks in one stored object, for object stores."""
    zarr_format: Literal[2, 3] = 3
    ome_zarr_metadata: bool = True
    write_plate_metadata: bool = True
    pyramid_levels: int = 1
    """Resolution levels written for images (1: no pyramid); each halves y and x."""
    overwrite: bool = True
    """Replace an existing node on save (False: refuse with StorageExistsError, a FileExistsError)."""
    name_pattern: str | None = None
    """A naming convention's name, or a regex with named groups (well or row + column, field,
    channel, z, t), tried before the plate model's conventions (None: those alone)."""
    codec_pipeline: str = "auto"
    """Chunk encoding: "auto" (the zarrs Rust pipeline where installed, for the stores it
    supports: local and obstore's), "zarrs" (required), "zarr" (zarr-python's own). Per
    process: zarr has one setting for all its arrays."""
    threads: int | None = None
    """Threads zarr and zarrs may use for chunks (None: zarr's setting, the cores there are)."""
    ngff_version: str | None = None
    """OME-NGFF version written: None follows ``zarr_format`` (3: "0.5", 2: "0.4"); "0.6"
    (Zarr v3, RFC-5 coordinate systems) on request."""

    def __post_init__(self) -> None:
        # Checked here, so a typo fails where the config is made, not at the first save.
        for name, kind in (("compressor", ZarrCompressor), ("chunk_strategy", ZarrChunkStrategy)):
            value = getattr(self, name)
            try:
                kind(value)
            except ValueError:
                choices = ", ".join(member.value for member in kind)
                raise InvalidOptionError(f"ZarrConfig {name}={value!r}: choose one of {choices}.") from None
        if self.zarr_format not in (2, 3):
            raise InvalidOptionError(
                f"ZarrConfig zarr_format={self.zarr_format!r}: choose 3 (NGFF 0.5) or 2 (NGFF 0.4)."
            )
        if self.pyramid_levels < 1:
            raise InvalidOptionError(
                f"ZarrConfig pyramid_levels={self.pyramid_levels}: give 1 (no pyramid) or more."
            )
        for name in ("chunks", "shards"):  # 0 divided zarr's chunk grid (a bare ZeroDivisionError)
            sizes = getattr(self, name)
            if sizes is not None and not all(isinstance(n, int) and n >= 1 for n in sizes):
                raise ChunkingError(
                    f"ZarrConfig {name}={tuple(sizes)!r}: give a whole number of 1 or more per axis."
                )
        if self.shards is not None and self.zarr_format != 3:
            raise InvalidOptionError(
                f"ZarrConfig shards={self.shards!r} with zarr_format={self.zarr_format}: shards need "
                "Zarr v3; pass zarr_format=3, or leave shards out."
            )
        wanted = _NGFF_FORMATS.get(self.ngff_version or self.ngff)
        if wanted != self.zarr_format:
            raise InvalidOptionError(
                f"ZarrConfig ngff_version={self.ngff_version!r} with zarr_format={self.zarr_format}: "
                "OME-NGFF 0.4 lives on Zarr v2 (zarr_format=2), 0.5 and 0.6 on Zarr v3 (zarr_format=3)."
            )

    @property
    def ngff(self) -> NgffVersion:
        """The OME-NGFF version written: the one asked for, else 0.5 on Zarr v3 and 0.4 on v2."""
        if self.ngff_version is not None:
            return self.ngff_version  # type: ignore[return-value]  # checked in __post_init__
        return "0.5" if self.zarr_format == 3 else "0.4"

    def replace(self, **changes: Any) -> ZarrConfig:
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise InvalidOptionError(
                f"Unknown zarr option(s): {', '.join(sorted(unknown))}. "
                f"Known: {', '.join(f.name for f in dataclasses.fields(self))}."
            )
        return dataclasses.replace(self, **changes)

    def chunk_shape(self, shape: tuple[int, ...]) -> tuple[int, ...] | Literal["auto"]:
        if self.chunks is not None:
            if len(self.chunks) != len(shape):
                # zip would cut the longer one: (1, 64, 64) for a 2-D image became (1, 64)
                raise InvalidOptionError(
                    f"chunks={self.chunks} has {len(self.chunks)} sizes for a {len(shape)}-D array of "
                    f"shape {shape}: give one size per axis (chunks=, --chunks), or leave chunks out."
                )
            return tuple(min(c, s) if s else c for c, s in zip(self.chunks, shape, strict=True))
        strategy = ZarrChunkStrategy(self.chunk_strategy)
        if strategy is ZarrChunkStrategy.AUTO or len(shape) < 2:
            return "auto"
        if strategy is ZarrChunkStrategy.SINGLE:
            return tuple(max(1, s) for s in shape)
        return (1,) * (len(shape) - 2) + tuple(max(1, s) for s in shape[-2:])

    def compressors(self, dtype: np.dtype[Any]) -> Any:
        """The codec(s) for ``create_array(compressors=...)`` in this config's zarr format."""
        kind = ZarrCompressor(self.compressor)
        if kind is ZarrCompressor.NONE:
            return None
        level = self.compression_level
        blosc_name = {
            ZarrCompressor.BLOSC_LZ4: "lz4",
            ZarrCompressor.BLOSC_ZSTD: "zstd",
            # zstd with shuffle is Blosc's zstd: the one standard way to shuffle in Zarr v3
            ZarrCompressor.ZSTD: "zstd" if self.shuffle and dtype.itemsize > 1 else None,
        }.get(kind)
        if self.zarr_format == 2:
            numcodecs = optional_import("numcodecs", extra="zarr", purpose="Zarr v2 compression")
            if blosc_name:
                shuffle = numcodecs.Blosc.SHUFFLE if self.shuffle else numcodecs.Blosc.NOSHUFFLE
                return numcodecs.Blosc(cname=blosc_name, clevel=level, shuffle=shuffle)
            return numcodecs.Zstd(level=level) if kind is ZarrCompressor.ZSTD else numcodecs.GZip(level=level)
        codecs = optional_import("zarr.codecs", extra="zarr", purpose="Zarr compression")
        if blosc_name:
            return codecs.BloscCodec(
                cname=blosc_name, clevel=level, shuffle="shuffle" if self.shuffle else "noshuffle",
                typesize=dtype.itemsize,
            )
        if kind is ZarrCompressor.ZSTD:
            return codecs.ZstdCodec(level=level)
        return codecs.GzipCodec(level=level)
