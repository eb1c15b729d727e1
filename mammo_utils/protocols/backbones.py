"""The backbones of the study: one self-supervised backbone per fold that never saw that fold's test women, and a
random initialisation per seed.

- **Whole films**: stage 02 already pretrained, per cross-validation fold k, a backbone on fold k's training
  women only (``02_pretrain/cv<k>/backbone.pt``). It is reused when its record proves it (the ids
  of the films it trained on, in its ``stage.json``, include none of fold k); otherwise, when the study may
  pretrain (``protocols.pretrain_folds``), it pretrains one the same way, into ``06_protocols/backbones``.
- **Patches** (A3): SimCLR pretrained, per fold, on the unlabelled patches of that fold's training women
  (:func:`mammo_utils.pretrain.stage.pretraining_images` on the patch table: not fold k, which tests, nor fold k+1,
  whose labels monitor it), at the patches' native size.

A leaky arm (whose test fold is not a set of women) uses the same backbone for its fold k as the honest arm of its
family: only the split differs. Its test items then include films or patches of women that backbone saw without
labels, which is part of what such a protocol leaks; a random initialisation has no such leak.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import replace
from pathlib import Path

import pandas as pd

from mammo_utils.config import Config
from mammo_utils.pretrain.stage import pretrain_one, pretraining_images
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


def patch_config(cfg: Config) -> Config:
    """The settings of a patch pretraining: the run's, at the patches' size, for ``protocols`` epochs."""
    p = cfg.protocols
    return replace(cfg, image_size_px=p.patch_size_px, pretrain=replace(cfg.pretrain, epochs=p.patch_pretrain_epochs))


def fold_backbones(cfg: Config, table: pd.DataFrame, family: str, out: Path, pretrain_key: str
                   ) -> list[BackboneRef | None]:
    """One backbone per fold for ``family`` (``films`` or ``patches``); None where none exists and the study may
    not pretrain one.

    Args:
        cfg: the run. table: the family's items with ``fold`` (by woman) and ``array_path``; films need
            ``image_id``. out: the stage folder. pretrain_key: what the study's own pretrainings depend on (one
            is trained again when it changes).
    """
    n = cfg.split.n_folds
    stage02 = stage_dir(cfg, "pretrain", create=False)
    refs: list[BackboneRef | None] = []
    rows = table.assign(**{cfg.task: table["label"]})
    for k in range(n):
        tested = set(table.loc[table["fold"] == k, "image_id"].astype(str))
        reused = stage02 / f"cv{k}"
        if family == "films" and (reused / "backbone.pt").exists() and saw_none_of(reused, tested):
            refs.append(checkpoint_backbone(f"films-cv{k}", reused / "backbone.pt", how_to_run(cfg, "pretrain")))
            continue
        if not cfg.protocols.pretrain_folds:
            refs.append(None)
            continue
        folder = out / "backbones" / f"{family}-cv{k}"
        train, val = pretraining_images(rows, k, n)
        run_cfg = cfg if family == "films" else patch_config(cfg)
        log.info("stage 06: pretraining %s on %d %s of fold %d's training women (%d women)", cfg.pretrain.method,
                 len(train), family, k, train.patient_id.nunique())
        pretrain_one(run_cfg, train, val, folder, f"{pretrain_key}-{family}-cv{k}")
        shutil.rmtree(folder / "checkpoints", ignore_errors=True)  # 300 MB each, kept only to resume
        refs.append(checkpoint_backbone(f"{family}-cv{k}", folder / "backbone.pt"))
    return refs
