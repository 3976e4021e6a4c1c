"""``convert``: a folder of plate images, or an image larger than memory, into OME-Zarr, on a
dask cluster or local threads. A plan, then owned writes, then done.

1. **Plan** (client): the plate layout from the files' names (or the image's shape), every
   field image's shape, the chunks, shards and pyramid levels; requests that do not fit the
   arrays planned are refused before anything is written. Local paths are made absolute here:
   workers run elsewhere, in other folders.
2. **Metadata** (client): every array's and image's metadata (each image marked incomplete),
   then the wells' and plate's, from the plan (no lock: nothing else writes them). From here
   on a reader sees a valid plate or image whose pixels read as 0 until written: a live
   viewer watches it fill.
3. **Owned writes** (cluster): one task per field of a plate, or per block of whole shards of
   each pyramid level of an image (a level's blocks computed from the level above, block by
   block, so memory per task is bounded by the block). A task writes only its own keys: no
   locks, no leases, nothing read-modify-written by two tasks.
4. **Done**: a field's task marks its image whole and leaves a done-marker beside the store
   (an image is marked whole when every block is written); a conversion resumed with
   ``resume=True`` skips the tasks marked done and redoes the others, producing the bytes an
   uninterrupted run would, and refuses a plan other than the stopped run's. The progress
   goes when every task succeeded.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from polystore.arrays import as_plain_array
from polystore.backends.zarr import ZarrBackend
from polystore.backends.zarr.config import ZarrConfig
from polystore.backends.zarr.image import ImageSpec, is_lazy
from polystore.backends.zarr.location import Location
from polystore.distributed.chunking import check_chunking, image_config, write_unit_bytes
from polystore.distributed.image_job import convert_image, image_digest
from polystore.distributed.job import Job
from polystore.distributed.journal import Journal
from polystore.distributed.layout import PathOrPaths, PlatePlan, plan_plate
from polystore.distributed.plate_job import convert_plate, plate_digest
from polystore.distributed.report import ConversionReport
from polystore.distributed.sources import FileImage, Header
from polystore.distributed.tasks import Target
from polystore.exceptions import (
    ChunkingError,
    InvalidOptionError,
    InvalidPathError,
    NotADirectoryStorageError,
    UnsupportedDataError,
)
from polystore.lazy import optional_import
from polystore.ome import ngff

DEFAULT_REGION_BYTES = 32 * 2**20
"""About how many bytes of an image one task writes at full resolution (whole shards, or whole
chunks): with the block of the level above it reads for a pyramid level, what bounds a
worker's memory (a few times this). A shard (or chunk) larger than this is refused."""


def convert(
    source: PathOrPaths | Any,
    destination: str | os.PathLike[str],
    *,
    client: Any = None,
    backend: ZarrBackend | None = None,
    convention: str | None = None,
    resume: bool = False,
    overwrite: bool = False,
    levels: int | None = None,
    chunks: Sequence[int] | None = None,
    shards: Sequence[int] | None = None,
    axes: str | None = None,
    channel_names: Sequence[str] | None = None,
    labels: bool = False,
    cast: bool = False,
    workers: int | None = None,
    progress: bool = False,
    region_bytes: int = DEFAULT_REGION_BYTES,
    storage_options: dict[str, Any] | None = None,
    **zarr_options: Any,
) -> ConversionReport:
    """Convert a plate's image files, or one large image, to OME-Zarr: planned on the client,
    written by tasks that each own their keys, on a dask cluster (``client``) or on local
    threads (``client=None``: ``workers`` threads).

    ``source``: a folder of image files (recursively; any naming convention of the plate
    model, or ``convention=`` a name or a pattern with named groups), a list of image files,
    an image file (read region by region, never whole), or an array (NumPy, any framework, or
    a dask array larger than memory). ``destination``: a store (``plate.zarr``,
    ``s3://bucket/plate.zarr``) or, for an image, a node in one. ``levels`` pyramid levels,
    ``chunks``/``shards`` (shards must be whole multiples of chunks; an image's default chunks
    are 1024 x 1024 tiles), and any ``ZarrConfig`` option (``compressor="blosc-lz4"``) or a
    ``backend`` to take them from. ``axes``: an image's axes (a plate's come from its files'
    names); ``channel_names``: one per channel (a plate's otherwise as its files name them).
    ``resume=True`` finishes a conversion that was stopped; ``overwrite=True`` replaces the
    destination.

    Returns a :class:`ConversionReport`; raises :class:`ConversionError` (a ``BatchError``)
    naming each field or block that failed, with the file and why, after writing all others.
    """
    target_backend = backend if backend is not None else ZarrBackend(storage_options=storage_options)
    config = _config(target_backend.config, levels, chunks, shards, zarr_options)
    options = {**target_backend.storage_options, **(storage_options or {})}
    location = _absolute_location(target_backend.locate(destination))
    if not location.remote and os.path.isfile(location.store):
        # refused before the journal is made beside it: obstore would say only "File exists"
        raise NotADirectoryStorageError(
            f"'{location.store}' is a file, not a zarr store (a folder): move that file away, or "
            "convert to another destination."
        )
    _refuse_source_in_destination(source, location)
    if workers is not None and (not isinstance(workers, int) or isinstance(workers, bool) or workers < 1):
        # dask's thread pool would raise a bare ValueError for -1, and take 0 as one per core
        raise InvalidOptionError(f"workers={workers!r}: give a whole number of threads, at least 1 "
                                 "(or leave it out: one per core).")
    level_count = config.pyramid_levels
    if _is_plate_source(source):
        if location.node:
            raise UnsupportedDataError(
                f"A plate is a whole store: give '{location.store}' as the destination, not a node in it."
            )
        if axes is not None:
            raise InvalidOptionError(
                f"axes={axes!r} is for one image: a plate's field axes come from its files' names "
                "(channel, z, time) and images. Leave axes= out for a folder or a list of files."
            )
        plan = _named_channels(plan_plate(source, convention), channel_names)
        check_chunking(config, plan.shape, plan.dtype, plan.axes, level_count, "plate's field image")
        job = _job(target_backend, config, options, location, client, workers, progress, resume)
        plan_digest, summary = plate_digest(job, plan, labels, cast)
        job.start(plan_digest, summary, overwrite=overwrite)
        return convert_plate(job, plan, labels, cast)
    colors = scale = units = None
    if isinstance(source, (str, os.PathLike)):
        file_image = FileImage.open(os.path.abspath(source))
        image: Any = file_image
        if axes is None:
            image, axes, channel_names, colors = _as_the_file_says(file_image, channel_names, region_bytes)
            scale, units = _pixel_sizes(file_image.header, axes)
    else:
        image = source if is_lazy(source) else as_plain_array(source, "Zarr")
    if any(not isinstance(n, (int, np.integer)) for n in image.shape):  # a dask array's nan
        raise UnsupportedDataError(
            f"The array's shape {tuple(image.shape)} is not known before it is computed (a dask array "
            "whose chunk sizes depend on its data, as after boolean indexing): call "
            "array.compute_chunk_sizes() first, then convert it."
        )
    image_axes = ngff.infer_axes(image.ndim, axes)
    if image_axes is None or not image_axes.endswith("yx"):
        raise UnsupportedDataError(
            f"A {image.ndim}-D array is not an OME-Zarr image (2-D to 5-D, ending in y, x); give axes=."
        )
    shape, dtype = tuple(int(n) for n in image.shape), np.dtype(image.dtype)
    config = image_config(config, shape, image_axes)
    check_chunking(config, shape, dtype, image_axes, level_count, "image")
    unit = write_unit_bytes(config, shape, dtype, image_axes)
    if unit > region_bytes:
        raise ChunkingError(
            f"A task writes whole shards (or chunks); these are {unit / 2**20:.0f} MiB each, more than "
            f"region_bytes ({region_bytes / 2**20:.0f} MiB), which bounds a task's memory. Give smaller "
            f"shards or chunks, or region_bytes={unit} (a task then holds a few times that)."
        )
    job = _job(target_backend, config, options, location, client, workers, progress, resume)
    spec = ImageSpec(image_axes, level_count, channel_names, colors, scale, units, labels)
    plan_digest, summary = image_digest(job, image, shape, dtype, image_axes, spec)
    job.start(plan_digest, summary, overwrite=overwrite)
    return convert_image(job, image, spec, region_bytes, plan_digest)


def _as_the_file_says(image: FileImage, channel_names: Sequence[str] | None, region_bytes: int
                      ) -> tuple[Any, str | None, Sequence[str] | None, Sequence[str] | None]:
    """(the image in OME-NGFF's axis order, its axes, channel names, colours) where its file
    says what its axes are: an ImageJ hyperstack's ZCYX is not the CZYX a 4-D array is taken
    for, nor an RGB picture's YXS (colour samples last) a ZYX stack. Its colour samples become
    channels named and coloured as an RGB picture's (``ngff.RGB_CHANNELS``: napari opens them as
    one colour image). Otherwise as given: the axes inferred from the number of dimensions."""
    header = image.header
    file_axes = header.axes if header is not None else None
    ordered = "".join(letter for letter in "tczyx" if file_axes and letter in file_axes)
    if header is None or file_axes is None or not ordered.endswith("yx"):
        return image, None, channel_names, None
    if channel_names is None and header.channel_names:  # as an OME-TIFF names them
        channel_names = list(header.channel_names)
    colors = None
    count = image.shape[file_axes.index("c")] if "c" in file_axes else 0
    rgb = header.samples and count in (3, 4) and image.dtype in (np.uint8, np.uint16)
    if rgb and channel_names is None:
        channel_names = [label for label, _ in ngff.RGB_CHANNELS[:count]]
        colors = [color for _, color in ngff.RGB_CHANNELS[:count]]
    if ordered == file_axes:
        return image, ordered, channel_names, colors
    dask_array = optional_import("dask.array", extra="zarr", purpose="Converting images")
    # read in file order by pieces of about region_bytes, then transposed: a task's block of the
    # image reads the few pieces it covers, never the whole file
    pieces = dask_array.core.normalize_chunks("auto", image.shape, limit=region_bytes, dtype=image.dtype)
    lazy = dask_array.from_array(image, chunks=pieces, asarray=True, fancy=False,
                                 meta=np.empty((0,) * image.ndim, image.dtype))
    return lazy.transpose([file_axes.index(letter) for letter in ordered]), ordered, channel_names, colors


def _pixel_sizes(header: Header | None, axes: str | None) -> tuple[list[float] | None, dict[str, str] | None]:
    """(scale, units) of an image file's axes as its file states them (OME-XML's physical sizes,
    ImageJ's calibration), 1 for the others; (None, None) where it states none."""
    sizes = header.pixel_sizes if header is not None and axes is not None else {}
    if not sizes:
        return None, None
    assert axes is not None
    scale = [sizes[letter][0] if letter in sizes else 1.0 for letter in axes]
    return scale, {letter: unit for letter, (_, unit) in sizes.items() if letter in axes}


def _named_channels(plan: PlatePlan, channel_names: Sequence[str] | None) -> PlatePlan:
    """``plan`` with its channels named ``channel_names`` (one name per channel the files
    number), not as the instrument's names in the files say."""
    if channel_names is None:
        return plan
    names = tuple(str(name) for name in channel_names)
    count = plan.shape[plan.axes.index("c")] if "c" in plan.axes else 0
    if len(names) != count:
        has = f"{count} channels" if count else "no channel axis"
        raise InvalidOptionError(
            f"channel_names gives {len(names)} names, but the plate's field images have {has} "
            f"(axes {plan.axes!r}, shape {plan.shape}): give one name per channel, or leave it out."
        )
    return dataclasses.replace(plan, channel_names=names)


def _config(config: ZarrConfig, levels: int | None, chunks: Sequence[int] | None,
            shards: Sequence[int] | None, zarr_options: dict[str, Any]) -> ZarrConfig:
    changes: dict[str, Any] = dict(zarr_options)
    if levels is not None:
        changes["pyramid_levels"] = levels
    if chunks is not None:
        changes["chunks"] = tuple(chunks)
    if shards is not None:
        changes["shards"] = tuple(shards)
    return config.replace(**changes) if changes else config


def _absolute_location(location: Location) -> Location:
    """A local store as an absolute path: the workers resolve paths in their own folders."""
    if location.remote:
        return location
    return Location(os.path.abspath(location.store), location.node)


def _refuse_source_in_destination(source: Any, location: Location) -> None:
    """Refuse a local source that is the destination store or inside it: overwrite=True would
    delete its files before they are read (and the conversion would write among them)."""
    if location.remote:
        return
    paths: list[str | os.PathLike[str]]
    if isinstance(source, (str, os.PathLike)):
        paths = [source]
    elif _is_plate_source(source):
        paths = list(source)
    else:
        return
    store = os.path.realpath(location.store)
    for path in paths:
        if os.path.commonpath([os.path.realpath(path), store]) == store:
            raise InvalidPathError(
                f"The source '{os.fspath(path)}' is inside the destination '{location.store}': the "
                "conversion would write among the files it reads (and overwrite=True would delete "
                "them first). Convert to a store outside the source."
            )


def _is_plate_source(source: Any) -> bool:
    if isinstance(source, (str, os.PathLike)):
        return os.path.isdir(source)
    return isinstance(source, (list, tuple)) and all(isinstance(s, (str, os.PathLike)) for s in source)


def _job(backend: ZarrBackend, config: ZarrConfig, options: dict[str, Any], location: Location, client: Any,
         workers: int | None, progress: bool, resume: bool) -> Job:
    target = Target(location.store, config, options, type(backend), location.node)
    writer = target.backend()  # the client's own, with the same stores and config as the workers'
    if client is not None:
        from polystore.distributed.worker import set_up_workers

        set_up_workers(client, config)
    journal = Journal(writer.stores, location.store, location.node)
    return Job(target, writer, journal, location, client, workers, progress, resume)
