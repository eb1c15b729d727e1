"""Writing the manifests committed in ``data_manifests/`` (seed 0, default split fractions, 5 folds), and the
``python -m mammo_utils.prepare.sources.<name> --write-manifest FOLDER`` command that does it."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from mammo_utils.prepare import manifest
from mammo_utils.prepare.sources.fetch import default_sources_dir

log = logging.getLogger(__name__)

Builder = Callable[..., tuple[pd.DataFrame, pd.DataFrame]]


def write_manifest(build: Builder, folder: Path, source_root: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Build with the default settings and save ``images.csv`` and ``lesions.csv`` into ``folder``."""
    from mammo_utils.config import Config

    images, lesions = build(source_root, Config())
    manifest.save_manifest(Path(folder), images, lesions)
    return images, lesions


def main(build: Builder, name: str, description: str, source_help: str, argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--write-manifest", type=Path, required=True, help="folder for images.csv, lesions.csv")
    parser.add_argument("--source", type=Path, default=None, help=source_help)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    images, _ = write_manifest(build, args.write_manifest, args.source or default_sources_dir() / name)
    log.info("wrote %d images to %s", len(images), args.write_manifest)
