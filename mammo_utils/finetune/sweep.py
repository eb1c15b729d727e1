"""The label-efficiency sweep of stage 03: the experiment behind the paper's claim that contrastive
pretraining "excels with smaller labelled datasets".

For each initialisation, each protocol (``finetune.protocols``) and each fraction of the training women
(``finetune.label_fractions``), ``finetune.sweep_seeds`` runs with seeds ``seed, seed + 1, ...``. A seed
chooses the labelled women (stratified by each woman's worst label; nested: 10% ⊂ 25% ⊂ 50% ⊂ 100%, see
:func:`~mammo_utils.prepare.split.subsample_patients`), the data order, the augmentation and the new head's
initialisation. The pretrained backbone is the same for every seed (one pretraining).

So that a point measures labels and not compute, **every point gets the same number of optimisation steps**:
full fine-tuning runs ``finetune.sweep_steps`` steps (0: as many as the headline recipe takes on all the
training women) and validates ``finetune.epochs`` times, evenly spaced, at every fraction; a smaller labelled
set is seen more often, not for less time. The linear probe trains ``finetune.linear_epochs`` full-batch
steps at every fraction. Validation and test are the whole validation and test splits at every fraction.
"""

from __future__ import annotations

import pandas as pd

from mammo_utils.config import Config
from mammo_utils.finetune.full import steps_per_epoch

SWEEP_COLUMNS = ["run", "init", "protocol", "label_fraction", "seed", "task", "n_train_patients", "n_train_images",
                 "n_train_positive", "steps", "best_step", "best_val_auc", "seconds"]


def run_name(init: str, protocol: str, fraction: float, seed: int) -> str:
    """Folder and ``run`` name of a sweep point, e.g. ``simclr-linear-f0.25-s1``."""
    return f"{init}-{protocol}-f{float(fraction):g}-s{seed}"


def fractions_for(cfg: Config, protocol: str) -> tuple[float, ...]:
    """The label fractions the sweep runs for ``protocol`` (``finetune.full_fractions`` may narrow ``full``)."""
    f = cfg.finetune
    return tuple(f.full_fractions) if protocol == "full" and f.full_fractions else tuple(f.label_fractions)


def sweep_seeds(cfg: Config) -> list[int]:
    """The seeds of every sweep point: ``seed, seed + 1, ...`` (``finetune.sweep_seeds`` of them)."""
    return [cfg.seed + i for i in range(max(1, cfg.finetune.sweep_seeds))]


def headline_steps(cfg: Config, n_train_images: int) -> int:
    """Optimisation steps of the headline recipe: ``finetune.epochs`` passes over the training images."""
    f = cfg.finetune
    return f.epochs * steps_per_epoch(n_train_images, min(f.batch_size, n_train_images), f.limit_batches)


def sweep_steps(cfg: Config, n_train_images: int) -> int:
    """Optimisation steps of every full fine-tuning point of the sweep (the same at every fraction)."""
    return cfg.finetune.sweep_steps or headline_steps(cfg, n_train_images)


def sweep_table(records: list[dict]) -> pd.DataFrame:
    """The records of the sweep's runs as ``sweep.csv`` holds them (the columns exist even when it is empty)."""
    extra = [k for r in records for k in r if k not in SWEEP_COLUMNS]
    return pd.DataFrame(records, columns=SWEEP_COLUMNS + list(dict.fromkeys(extra)))
