"""The datasets: one module per dataset that builds its manifest, and one line per dataset in :data:`REGISTRY`.

A module exposes ``NAME``, ``locate(cfg) -> Path`` (the dataset's root folder, ready to read) and
``build_manifest(root, cfg) -> (images, lesions)``. What the rest of the package needs to know about a dataset
(whether its test split is its own, whether it is small enough to cross-validate by default, its licence) is
its :class:`DatasetInfo` here, and nowhere else. Adding a dataset: a module and a line.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType

from mammo_utils.errors import ConfigError


@dataclass(frozen=True)
class DatasetInfo:
    """What the pipeline needs to know about a dataset.

    Attributes:
        name: the name settings and folders use (``MAMMO_DATASET``).
        module: the module of this package that builds its manifest.
        official_split: its publisher fixed a test split; that split is the only honest test, so the
            dataset is never cross-validated (``finetune.cv`` is ignored there, with a message).
        cross_validate: no official split and few women: stage 03 cross-validates by patient in every profile
            (``finetune.cv`` defaults to this).
        licence: what its licence allows, in a few words (``data_manifests/README.md`` has the whole story).
    """

    name: str
    module: str
    official_split: bool
    cross_validate: bool
    licence: str


REGISTRY: dict[str, DatasetInfo] = {info.name: info for info in (
    DatasetInfo("synthetic", "synthetic", False, False, "generated here; no restriction"),
    DatasetInfo("mias", "mias", False, True, "research use only; cite; do not sell"),
    DatasetInfo("cbis-ddsm", "cbis_ddsm", True, False, "CC BY 3.0 (TCIA)"),
    DatasetInfo("inbreast", "inbreast", False, True, "on request from its authors; do not redistribute"),
    DatasetInfo("vindr", "vindr", True, False, "PhysioNet credentialed access; do not redistribute"),
    DatasetInfo("cmmd", "cmmd", False, False, "CC BY 4.0 (TCIA)"),
)}
DATASETS = tuple(REGISTRY)


def dataset_info(name: str) -> DatasetInfo:
    """The :class:`DatasetInfo` of dataset ``name``."""
    if name not in REGISTRY:
        raise ConfigError(f"Unknown dataset {name!r}. Choose one of: {', '.join(DATASETS)} (MAMMO_DATASET).")
    return REGISTRY[name]


def get_dataset(name: str) -> ModuleType:
    """The module that builds the manifest of dataset ``name``."""
    module = dataset_info(name).module
    try:
        return importlib.import_module(f".{module}", __name__)
    except ModuleNotFoundError as exc:
        raise ConfigError(f"Dataset {name!r} is not supported yet ({exc.name} is missing).") from None
