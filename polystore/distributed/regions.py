"""The geometry of an image's tasks: each pyramid level cut into a regular grid of blocks of
whole write units (shards, else chunks), and which blocks of the level above a block is
computed from. Blocks are found by index arithmetic, never by scanning a level's blocks,
so planning an image of millions of blocks costs a pass over them, not their square.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

Region = tuple[tuple[int, int], ...]
"""Per axis, [start, stop) of a block of an array."""
BlockIndex = tuple[int, ...]


def region_shape(
    shape: Sequence[int], unit: Sequence[int], itemsize: int, target_bytes: int
) -> tuple[int, ...]:
    """A block shape made of whole write units (shards, else chunks), about ``target_bytes``:
    grown along the innermost axes first (whole rows of tiles), never past the array."""
    block = [min(u, s) if s else u for u, s in zip(unit, shape, strict=True)]
    for axis in reversed(range(len(block))):
        while block[axis] < shape[axis]:
            grown = min(block[axis] * 2, math.ceil(shape[axis] / unit[axis]) * unit[axis])
            if math.prod(block) // block[axis] * grown * itemsize > target_bytes:
                break
            block[axis] = grown
        if block[axis] < shape[axis]:
            break
    return tuple(min(b, s) if s else b for b, s in zip(block, shape, strict=True))


@dataclass(frozen=True)
class Grid:
    """An array of ``shape`` cut into blocks of ``block`` (the last ones cut short)."""

    shape: tuple[int, ...]
    block: tuple[int, ...]

    @property
    def counts(self) -> tuple[int, ...]:
        """Blocks along each axis."""
        return tuple(max(1, math.ceil(s / b)) for s, b in zip(self.shape, self.block, strict=True))

    def __len__(self) -> int:
        return math.prod(self.counts)

    def indices(self) -> Iterator[BlockIndex]:
        """Every block's index, in C order."""
        return itertools.product(*(range(n) for n in self.counts))

    def region(self, index: BlockIndex) -> Region:
        return tuple((i * b, min((i + 1) * b, s))
                     for i, b, s in zip(index, self.block, self.shape, strict=True))

    def overlapping(self, region: Region) -> Iterator[BlockIndex]:
        """The indices of the blocks that share at least one element with ``region``."""
        spans = [range(a // b, max(a // b, math.ceil(e / b)))
                 for (a, e), b in zip(region, self.block, strict=True)]
        return itertools.product(*spans)


def source_region(region: Region, axes: str, source_shape: Sequence[int]) -> Region:
    """The block of the level above that ``region`` of a level is computed from (y, x doubled)."""
    return tuple(
        (min(2 * a, n), min(2 * b, n)) if axis in "yx" and n >= 2 else (a, b)
        for (a, b), axis, n in zip(region, axes, source_shape, strict=True)
    )


def region_name(level: int, region: Region) -> str:
    return f"{level}/" + "_".join(str(a) for a, _ in region)
