"""The backbones of the study: stage 02's self-supervised backbone of each fold, and one random initialisation.

Stage 02 pretrains, per cross-validation fold k, a backbone on random regions of the breast of fold k's training
women only, cut from the films at ``crops.film_size_px`` (``02_pretrain/cv<k>/backbone.pt``). The study reads
whole films and patches with it: the films at ``image_size_px``, the patches at their own size (``crops.size_px``,
the size the backbone pretrained on). A backbone is used only when its record proves it never saw fold k (the ids
of the films it trained on, ``train_image_ids`` in its ``stage.json``, include none of fold k's films); where no
such backbone exists (a dataset stage 02 does not cross-validate), the rows that need it are left out, with the
reason.

A leaky arm (whose test fold is not a set of women) uses the same backbone for its fold k as the honest arm of its
family: only the split differs. Its test items then include films or patches of women that backbone saw without
labels, which is part of what such a protocol leaks; a random initialisation has no such leak.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd

from mammo_utils.config import Config
from mammo_utils.protocols.features import BackboneRef, checkpoint_backbone
from mammo_utils.runs.paths import how_to_run, stage_dir

log = logging.getLogger(__name__)


def saw_none_of(folder: Path, image_ids: set[str]) -> bool:
    """True when the pretraining recorded in ``folder/stage.json`` trained on none of ``image_ids``."""
    try:
        seen = set(map(str, json.loads((Path(folder) / "stage.json").read_text())["train_image_ids"]))
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return not (seen & image_ids)


def fold_backbones(cfg: Config, films: pd.DataFrame) -> list[BackboneRef | None]:
    """Stage 02's backbone of each fold, or None where there is none that never saw the fold's films.

    Args:
        cfg: the run. films: the study's films with ``fold`` (by woman) and ``image_id``.
    """
    stage02 = stage_dir(cfg, "pretrain", create=False)
    refs: list[BackboneRef | None] = []
    for k in range(cfg.split.n_folds):
        tested = set(films.loc[films["fold"] == k, "image_id"].astype(str))
        folder = stage02 / f"cv{k}"
        if (folder / "backbone.pt").exists() and saw_none_of(folder, tested):
            refs.append(checkpoint_backbone(f"cv{k}", folder / "backbone.pt", how_to_run(cfg, "pretrain")))
        else:
            refs.append(None)
    if any(r is None for r in refs):
        log.info("stage 06: stage 02 has no per-fold backbone for %d of %d folds; the %s rows are left out",
                 sum(r is None for r in refs), len(refs), cfg.pretrain.method)
    return refs


def no_backbone_reason(cfg: Config) -> str:
    """Why the self-supervised rows are missing, and how to get them."""
    return (f"no per-fold {cfg.pretrain.method} backbone from stage 02 (it pretrains one per fold where the dataset "
            "is cross-validated, e.g. MIAS; run `pretrain` first)")
