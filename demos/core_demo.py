"""A short tour of polystore's core: what `make demo` runs (until the live-viewer demo lands).

A tiny screening "pipeline": images of a few wells are made and processed in memory (the
fast intermediate store), the results are materialised to disk as ImageJ hyperstacks with
one cross-backend copy, listed, loaded back as PyTorch tensors, and summarised in a JSON
written atomically. Everything lands in ./demo-output/.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np

from polystore import BackendRegistry, DiskBackend, FileManager, atomic_write_json

OUT = Path("demo-output")
WELLS = ["A01", "A02", "B01", "B02"]
CHANNELS = 2
SITES = 3


def synthetic_site(rng: np.random.Generator, well: str, site: int) -> np.ndarray:
    """Two channels of 256x256 uint16 with a few bright blobs (our fake nuclei)."""
    yy, xx = np.mgrid[0:256, 0:256]
    image = rng.poisson(100, size=(CHANNELS, 256, 256)).astype(np.float32)
    for _ in range(8):
        cy, cx = rng.integers(20, 236, size=2)
        blob = 2000 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 60.0)
        image[0] += blob
        image[1] += 0.5 * blob
    return image.astype(np.uint16)


def main() -> None:
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir()
    registry = BackendRegistry({"results": DiskBackend(root=OUT)})
    fm = FileManager(registry)
    rng = np.random.default_rng(0)
    started = time.perf_counter()

    # 1. Raw images and a processing step, all in memory.
    for well in WELLS:
        for site in range(1, SITES + 1):
            raw = synthetic_site(rng, well, site)
            fm.save(raw, f"/plate/{well}/s{site}.npy", backend="memory")
            background = np.percentile(raw, 10, axis=(1, 2), keepdims=True)
            cleaned = np.clip(raw.astype(np.int32) - background, 0, None).astype(np.uint16)
            fm.save(cleaned, f"/processed/{well}/s{site}.tif", backend="memory")
    in_memory = fm.list_files("/processed", backend="memory", recursive=True)
    print(f"processed {len(in_memory)} images in memory, e.g. {in_memory[0]}")

    # 2. Materialise: one cross-backend copy writes every image as an ImageJ hyperstack.
    fm.copy("/processed", "processed", backend="memory", dest_backend="results", imagej=True, axes="CYX")
    on_disk = fm.list_files("processed", backend="results", extensions=[".tif"], recursive=True)
    print(f"materialised {len(on_disk)} ImageJ TIFFs under {OUT}/processed (Fiji shows C as channels)")

    # 3. Load back as PyTorch tensors, in parallel, and summarise.
    tensors = fm.load_batch(on_disk, backend="results", framework="torch")
    summary = {
        path: {"shape": list(t.shape), "dtype": str(t.dtype), "mean_ch0": float(t[0].float().mean())}
        for path, t in zip(on_disk, tensors, strict=True)
    }
    atomic_write_json(summary, OUT / "summary.json")
    print(f"loaded back {len(tensors)} tensors ({tensors[0].dtype}, shape {tuple(tensors[0].shape)})")
    print(f"summary written atomically to {OUT / 'summary.json'}")
    print(f"done in {time.perf_counter() - started:.2f} s; files: {fm.list_dir('.', backend='results')}")


if __name__ == "__main__":
    main()
