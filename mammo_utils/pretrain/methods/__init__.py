"""Self-supervised pretraining methods: one module per method, one line per method in :data:`METHODS`.

Each method is a LightningModule over :class:`~mammo_utils.pretrain.methods.base.ContrastiveModule` (the one-channel
ResNet-50 backbone, the kNN monitor and the optimiser they share) that defines its heads and its loss. Stage
02 trains the method named by ``pretrain.method``; stage 03 fine-tunes from its backbone as the
initialisation of the same name. Adding a method: a module here and a line below.
"""

from __future__ import annotations

import importlib

from mammo_utils.errors import ConfigError

# name -> "module:class" (imported when used, so that reading the names costs nothing)
METHODS = {
    "simclr": "simclr:SimCLRModule",  # Chen et al. 2020; the paper's method
    "moco": "moco:MoCoModule",  # MoCo v2: He et al. 2020, Chen et al. 2020
}
# Initialisations of a fine-tuning run, in the order every table and figure shows them: each method's
# pretrained backbone, then the baselines.
BASELINE_INITS = ("random", "imagenet")
INITS = (*METHODS, *BASELINE_INITS)


def get_method(name: str) -> type:
    """The LightningModule class of method ``name``."""
    if name not in METHODS:
        raise ConfigError(f"Unknown pretrain.method {name!r}. Choose one of: {', '.join(METHODS)}.")
    module, cls = METHODS[name].split(":")
    return getattr(importlib.import_module(f".{module}", __name__), cls)
