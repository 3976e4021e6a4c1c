"""``polystore convert SRC DST``: a file into the format of another extension (or into a zarr
plate by its name), or a folder of plate images (any naming convention, recursively) into an
OME-Zarr plate, on local threads, a LocalCluster (``--workers N``) or a running dask cluster
(``--scheduler ADDRESS``); ``--resume`` finishes one that was stopped."""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from polystore.cli._common import add_backend_option, file_manager, infer_backend
from polystore.exceptions import InvalidOptionError, InvalidPathError
from polystore.lazy import optional_import

HELP = "convert a file to another format, or a folder of plate images to an OME-Zarr plate (dask)"

def _shape(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(n) for n in text.split(","))
    except ValueError:
        message = f"'{text}': give integers separated by commas, e.g. 1,1024,1024"
        raise argparse.ArgumentTypeError(message) from None


def _count(text: str) -> int:
    """A count of workers, threads or levels: 0 or less would run on nothing (a cluster of -2
    workers never starts), so it is refused here with the option's name."""
    try:
        number = int(text)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"'{text}': give a whole number of at least 1")
    return number


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_backend_option(parser)
    parser.add_argument("source", help="a file, or a folder of plate images")
    parser.add_argument("destination", help="a file, a zarr path (plate.zarr/A01_s1_w1.tif), or a store")
    parser.add_argument("--imagej", action="store_true", help="write an ImageJ hyperstack TIFF")
    parser.add_argument("--axes", help="axis letters, e.g. TZCYX (TIFF) or czyx (OME-Zarr image)")
    zarr = parser.add_argument_group(
        "to OME-Zarr", "a folder (or, with these options, an image file) into an OME-Zarr store"
    )
    where = zarr.add_mutually_exclusive_group()
    where.add_argument("--workers", type=_count, metavar="N",
                       help="start a local dask cluster of N processes")
    where.add_argument("--scheduler", metavar="ADDRESS", help="run on this dask cluster (tcp://host:8786)")
    zarr.add_argument("--threads", type=_count, metavar="N",
                      help="threads without a cluster (default: cores)")
    zarr.add_argument("--resume", action="store_true", help="finish a conversion that was stopped")
    zarr.add_argument("--overwrite", action="store_true", help="replace the destination")
    names = zarr.add_mutually_exclusive_group()
    names.add_argument("--convention", metavar="NAME", help="the files' naming convention (docs/plates.md)")
    names.add_argument("--pattern", metavar="REGEX", help="a regex with named groups: well (or row, column), "
                       "site/field, channel, z, t")
    zarr.add_argument("--levels", type=_count, metavar="N", help="pyramid levels (default 1)")
    zarr.add_argument("--chunks", type=_shape, metavar="A,B,..", help="chunk shape of the arrays")
    zarr.add_argument("--shards", type=_shape, metavar="A,B,..", help="shard shape (whole chunks)")


def _to_zarr_store(args: argparse.Namespace) -> bool:
    """Whether this is a conversion to OME-Zarr (a folder, any of its options given, or an
    image file into a zarr image)."""
    asked = any(getattr(args, name) for name in ("workers", "scheduler", "resume", "overwrite", "convention",
                                                  "pattern", "levels", "chunks", "shards", "threads"))
    if not (os.path.isdir(args.source) or asked):
        return _image_to_zarr_image(args)
    if infer_backend(args.destination, args.backend) != "zarr":
        raise InvalidPathError(
            f"'{args.destination}': a folder (or an image, with these options) converts to an OME-Zarr "
            "store; give a destination ending in .zarr (plate.zarr, s3://bucket/plate.zarr)."
        )
    for option, given in (("--axes", args.axes), ("--imagej", args.imagej)):
        if given and os.path.isdir(args.source):  # the conversion of a plate would drop it
            raise InvalidOptionError(
                f"{option} does not apply to a folder: a plate's axes come from its files' names "
                "(channel, z, t) and it is written as OME-Zarr. Leave it out."
            )
    return True


def _image_to_zarr_image(args: argparse.Namespace) -> bool:
    """Whether the source is an image file the conversion reads region by region (TIFF, .npy)
    going to a zarr image (a store, or a node no plate convention names): converted, so that
    memory stays bounded by a region as for a folder, instead of loaded whole and saved."""
    if not os.path.isfile(args.source) or infer_backend(args.destination, args.backend) != "zarr":
        return False
    from polystore.backends.zarr import ZarrBackend
    from polystore.backends.zarr.addresses import address_of
    from polystore.distributed.sources import image_format, read_header
    from polystore.ome import ngff
    from polystore.plates import PlateNameError

    if image_format(args.source) is None:
        return False
    axes = ngff.infer_axes(len(read_header(args.source).shape), args.axes)
    if axes is None or not axes.endswith("yx"):
        return False  # not an NGFF image: saved as a bare array, as before
    backend = ZarrBackend()
    try:
        node = backend.locate(args.destination).node
        return address_of(node, backend.config) is None  # a plate's plane: saved into its field
    except (PlateNameError, InvalidPathError):
        return False  # saving it says what is wrong with the name


def _connected(distributed: Any, address: str) -> Any:
    """A client of the scheduler at ``address``; ClusterError when it cannot be reached (dask
    says only 'Timed out trying to connect', or a bare ValueError for a malformed address)."""
    from polystore.distributed.cluster import ClusterError

    try:
        return distributed.Client(address)
    except (OSError, ValueError) as error:  # TimeoutError and refused connections are OSErrors
        raise ClusterError(
            f"Cannot connect to the dask scheduler at '{address}' ({error}): check that it is running "
            "and its address (tcp://host:8786), or give --workers N to start a cluster on this machine."
        ) from error


@contextmanager
def _client(args: argparse.Namespace) -> Iterator[Any]:
    """The dask client asked for: a running cluster's, a LocalCluster's, or None (threads)."""
    if not (args.scheduler or args.workers):
        yield None
        return
    distributed = optional_import("distributed", extra="distributed", purpose="--workers and --scheduler")
    if args.scheduler:
        with _connected(distributed, args.scheduler) as client:
            yield client
        return
    from polystore.distributed.cluster import local_cluster

    with local_cluster(args.workers) as cluster, distributed.Client(cluster) as client:
        yield client


def _naming(args: argparse.Namespace) -> str | None:
    """The --pattern or --convention given, checked before any file is read: file by file, a
    pattern the convention refuses (or an unknown name) read as no convention's name."""
    from polystore.plates import Convention, named_convention

    pattern: str | None = args.pattern
    convention: str | None = args.convention
    if pattern:
        Convention("pattern", pattern, anchored=False)  # PlateNameError saying what is wrong
        return pattern
    if convention:
        named_convention(convention)
    return convention


def _convert_to_zarr(args: argparse.Namespace) -> int:
    from polystore.distributed import convert

    naming = _naming(args)
    with _client(args) as client:
        report = convert(
            args.source, args.destination, client=client, convention=naming,
            resume=args.resume, overwrite=args.overwrite, levels=args.levels, chunks=args.chunks,
            shards=args.shards, axes=args.axes, workers=args.threads, progress=True,
        )
    print(report.summary())
    return 0


def run(args: argparse.Namespace) -> int:
    if _to_zarr_store(args):
        return _convert_to_zarr(args)
    options: dict[str, Any] = {}
    if args.imagej:
        options["imagej"] = True
    if args.axes:
        options["axes"] = args.axes
    fm = file_manager()
    source = infer_backend(args.source, args.backend)  # .zarr paths and s3:// URLs are zarr
    destination = infer_backend(args.destination, args.backend)
    fm.save(fm.load(args.source, source), args.destination, destination, **options)
    print(f"{args.source} -> {args.destination}")
    return 0
