"""``polystore info PATH``: what a file, folder or zarr node holds, from its metadata only.

A file is never loaded whole: NumPy files are memory-mapped (their header read), TIFFs are read
by tifffile's page and series index, zarr nodes by their metadata documents; a 512 MB file
costs a few kilobytes of reading.
"""

from __future__ import annotations

import argparse
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from polystore.cli._common import add_backend_option, file_manager, place

HELP = "describe a file, folder, zarr image or plate from its metadata (never loads the data)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_backend_option(parser)
    parser.add_argument("path")


def describe_array(shape: Any, dtype: Any) -> str:
    return f"shape={tuple(int(n) for n in shape)} dtype={dtype}"


def _npy(path: Path) -> list[str]:
    from polystore.formats.npy import read_header

    with open(path, "rb") as handle:  # the header; the data stay on disk
        shape, _fortran, dtype, _size = read_header(handle, str(path))
    return [f"NumPy array: {describe_array(shape, dtype)}"]


def _npz(path: Path) -> list[str]:
    import numpy as np

    lines = []
    with zipfile.ZipFile(path) as archive:
        for member in archive.namelist():
            with archive.open(member) as stream:
                version = np.lib.format.read_magic(stream)
                read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                               else np.lib.format.read_array_header_2_0)
                shape, _fortran, dtype = read_header(stream)
            lines.append(f"{member.removesuffix('.npy')}: {describe_array(shape, dtype)}")
    return [f"NumPy archive, {len(lines)} array(s)", *lines]


def _tiff(path: Path) -> list[str]:
    import tifffile

    with tifffile.TiffFile(path) as tiff:
        lines = []
        kind = "ImageJ hyperstack" if tiff.is_imagej else "OME-TIFF" if tiff.is_ome else "TIFF"
        lines.append(f"{kind}, {len(tiff.pages)} page(s), {len(tiff.series)} series")
        for index, series in enumerate(tiff.series):
            lines.append(f"series {index}: {describe_array(series.shape, series.dtype)} axes={series.axes}"
                         + (f", {len(series.levels)} levels" if len(series.levels) > 1 else ""))
    return lines


def _csv(path: Path) -> list[str]:
    import pandas as pd

    columns = pd.read_csv(path, nrows=5).columns  # the header line and a few rows for the types
    return [f"CSV table, {len(columns)} column(s): {', '.join(map(str, columns))}"]


def _roi_zip(path: Path) -> list[str]:
    with zipfile.ZipFile(path) as archive:
        return [f"ImageJ ROI set, {len(archive.namelist())} ROI(s)"]


DESCRIBERS: dict[str, Callable[[Path], list[str]]] = {
    ".npy": _npy,
    ".npz": _npz,
    ".tif": _tiff,
    ".tiff": _tiff,
    ".ome.tif": _tiff,
    ".ome.tiff": _tiff,
    ".csv": _csv,
    ".roi.zip": _roi_zip,
}
"""Extension -> what the file holds, read from its header (disk files)."""


def describer(path: str) -> Callable[[Path], list[str]] | None:
    lowered = path.lower()
    for suffix in sorted(DESCRIBERS, key=len, reverse=True):  # .ome.tif before .tif
        if lowered.endswith(suffix):
            return DESCRIBERS[suffix]
    return None


def zarr_lines(backend: object, path: str) -> list[str]:
    from polystore.cli._zarr import (
        array_line,
        image_lines,
        plate_plane,
        plate_summary,
        well_fields,
        zarr_node,
    )

    plane = plate_plane(backend, path)
    if plane is not None:
        field, what = plane
        return [what, *zarr_lines(backend, field)]
    node = zarr_node(backend, path)
    if node.kind == "plate":
        return [plate_summary(node)]
    if node.kind == "well":
        return [f"OME-Zarr well, fields {' '.join(well_fields(node))}"]
    if node.kind == "image":
        return image_lines(backend, path, node)
    if node.kind == "array":
        return [array_line(node.node)]
    return [f"zarr group, {len(list(node.node.keys()))} member(s)"]


def run(args: argparse.Namespace) -> None:
    where = place(args.path, args.backend)
    fm = file_manager()
    stat = fm.stat(where.path, where.backend)
    size = f", {stat.size} bytes" if stat.size is not None else ""
    print(f"{stat.path}: {stat.kind}{size}")
    if where.backend == "zarr":
        lines = zarr_lines(fm.get_backend("zarr"), where.path)
    elif where.backend == "disk" and stat.is_file and (describe := describer(where.path)):
        lines = describe(Path(where.path))  # the command's disk backend has no root: paths as given
    else:
        lines = []
    for line in lines:
        print(f"  {line}")
