"""Preprocessing throughput (images per second): read → breast mask → crop → orient → resize → cache, on real
mini-MIAS films and the real DICOM samples, with one process and with all cores, measured in one run.

    python benchmarks/preprocess_throughput.py [--size 224] [--sources ../shared/datasets]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import pandas as pd

from mammo_utils.config import load_config
from mammo_utils.prepare.cache import cache_images
from mammo_utils.prepare.manifest import IMAGE_COLUMNS
from mammo_utils.prepare.sources import get_dataset


def dicom_manifest(folder: Path) -> pd.DataFrame:
    """The DICOM samples that hold pixel data, as a minimal manifest."""
    files = sorted(p.name for p in folder.glob("*.dcm") if p.name != "test-SR.dcm")
    rows = [dict(image_id=Path(f).stem, patient_id=Path(f).stem, dataset="dicom-samples", path=f, laterality="L",
                 view="CC", density="", abnormal=0, malignant=0, birads="", source_label="", split="train", fold=0,
                 width=-1, height=-1) for f in files]
    return pd.DataFrame(rows, columns=IMAGE_COLUMNS)


def timed(images: pd.DataFrame, root: Path, size: int, workers: int) -> float:
    cache = Path(tempfile.mkdtemp(prefix="mammo-cache-"))
    try:
        start = time.perf_counter()
        cache_images(images, pd.DataFrame(), root, cache, size, workers=workers, keep_going=True)
        return len(images) / (time.perf_counter() - start)
    finally:
        shutil.rmtree(cache, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--sources", default=os.environ.get("MAMMO_SOURCES_DIR", "../shared/datasets"))
    args = parser.parse_args()
    sources = Path(args.sources).resolve()
    tmp = Path(tempfile.mkdtemp(prefix="mammo-bench-"))
    cfg = load_config("demo", "mias", data_dir=str(tmp / "data"), runs_dir=str(tmp / "runs"), sources_dir=str(sources))
    mias = get_dataset("mias")
    mias_root = mias.locate(cfg)
    mias_images, _ = mias.build_manifest(mias_root, cfg)
    cores = os.cpu_count() or 1
    print(f"cores={cores} size={args.size}px   images/s (one process | {cores} processes | speed-up)")
    for name, images, root in (("mini-MIAS (1024x1024 PGM)", mias_images, mias_root),
                               ("DICOM samples (19 files, up to 4736x2624)", dicom_manifest(sources / "dicom-samples"),
                                sources / "dicom-samples")):
        one = timed(images, root, args.size, 1)
        many = timed(images, root, args.size, cores)
        print(f"{name:<44} {one:8.1f} | {many:8.1f} | {many / one:5.2f}x  ({len(images)} images)", flush=True)
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
