"""One module per dataset. Each exposes ``NAME``, ``HAS_OFFICIAL_SPLIT``, ``locate(cfg) -> Path`` (the
dataset's root folder, ready to read) and ``build_manifest(root, cfg) -> (images, lesions)``."""

from __future__ import annotations

import importlib
from types import ModuleType

from ..config import DATASETS
from ..errors import ConfigError

_MODULES = {
    "synthetic": "synthetic",
    "mias": "mias",
    "cbis-ddsm": "cbis_ddsm",
    "inbreast": "inbreast",
    "vindr": "vindr",
    "cmmd": "cmmd",
}


def get_dataset(name: str) -> ModuleType:
    """The module that builds the manifest of dataset ``name``."""
    if name not in _MODULES:
        raise ConfigError(f"Unknown dataset {name!r}. Choose one of: {', '.join(DATASETS)}.")
    try:
        return importlib.import_module(f".{_MODULES[name]}", __name__)
    except ModuleNotFoundError as exc:
        raise ConfigError(f"Dataset {name!r} is not supported yet ({exc.name} is missing).") from None
