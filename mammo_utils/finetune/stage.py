"""Stage 03: classifiers trained on the labels, from each initialisation (self-supervised, random, ImageNet).

Two parts, one stage:

- **whole films** (:mod:`mammo_utils.finetune.films`): the headline classifier of each initialisation and task,
  and its cross-validation by woman where the run cross-validates; stages 04 and 05 report and explain these;
- **the crop task** (:mod:`mammo_utils.finetune.crops`), the label-efficiency experiment: is there a lesion in this
  crop, learnt from 5% to 100% of the training women's labels by a linear probe and by full fine-tuning, from each
  initialisation and beside baselines without a network; and whole films read by the crop classifier.

Each run writes its own folder and is skipped when it already finished with the same settings, so an interrupted
stage continues where it stopped. Test images are only predicted, after the weights are chosen on validation.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from mammo_utils.config import Config
from mammo_utils.errors import MammoError
from mammo_utils.finetune import figures
from mammo_utils.finetune.backbones import BackboneCache
from mammo_utils.finetune.crops import run_crop_task
from mammo_utils.finetune.films import cost, plan_runs, run_one
from mammo_utils.models import make_backbone
from mammo_utils.prepare.split import uses_cross_validation
from mammo_utils.prepare.stage import load_index
from mammo_utils.runs.files import atomic_write_text
from mammo_utils.runs.stage import StageRun
from mammo_utils.runs.trainer import Progress

log = logging.getLogger(__name__)

SECTIONS = ("dataset", "seed", "task", "backbone", "image_size_px", "split", "crops", "augment", "finetune",
            "precision")
OUTPUTS = ["predictions.csv", "runs.csv", "crop_predictions.csv", "film_predictions.csv"]


def available_inits(cfg: Config) -> tuple[list[str], list[dict]]:
    """The initialisations of ``finetune.inits`` that can run here, and the skipped ones with their reason
    (ImageNet weights absent from the local torch cache are not a failure of the stage)."""
    inits, skipped = [], []
    for init in cfg.finetune.inits:
        if init == "imagenet":
            try:
                make_backbone(cfg.backbone, "imagenet")
            except MammoError as exc:
                log.warning("skipping init imagenet: %s", exc)
                skipped.append({"init": "imagenet", "reason": str(exc)})
                continue
        inits.append(init)
    return inits, skipped


def run_finetune(cfg: Config, force: bool = False) -> Path:
    """Train every film run of :func:`~mammo_utils.finetune.films.plan_runs` and the crop task (skipping what is
    already done) and write the stage's tables.

    Outputs in ``03_finetune/``:

    - ``<run>/``: one folder per film run (``<init>``: the headline run of the main task, with ``model.pt``;
      ``<init>-<task>``: of another task; ``<init>[-<task>]-cv<k>``: a cross-validation fold);
    - ``predictions.csv``: the validation and test predictions of the headline film runs (image_id, patient_id,
      split, fold, label, probability, task, init, classifier, label_fraction, seed, run, headline);
      ``cv_predictions.csv``: those of the folds, with ``cv_fold``; ``runs.csv``: one record per film run;
    - ``crops/<split>/``: the crop task of one split; ``crop_predictions.csv``: every crop classifier's validation and
      test predictions (crop_id, image_id, patient_id, split, cv_fold, label, init, classifier, label_fraction,
      draw, probability); ``film_predictions.csv``: whole films read by the crop classifiers;
    - ``finetune_curves.png``, and ``skipped.csv`` for initialisations that could not run.
    """
    cv = uses_cross_validation(cfg)
    run = StageRun(cfg, "finetune", SECTIONS, OUTPUTS + (["cv_predictions.csv"] if cv else []), force)
    if run.up_to_date:
        return run.folder
    index = load_index(cfg)
    out = run.begin()
    inits, skipped = available_inits(cfg)
    specs = [s for s in plan_runs(cfg) if s.init in inits]
    crop_runs = (cfg.split.n_folds if cv else 1) * bool(cfg.finetune.classifiers)
    progress = Progress("stage 03", [cost(cfg, index, s) for s in specs] + [cfg.finetune.crop_steps] * crop_runs)
    backbones = BackboneCache(cfg)
    frames, cv_frames, records = [], [], []
    for i, spec in enumerate(specs):
        progress.begin(i, f"film run {spec.run} ({spec.task}, {spec.classifier}, {spec.label_fraction:.0%} of the "
                          "labels)")
        rows, record = run_one(cfg, index, spec, backbones, run)
        (cv_frames if spec.role == "cv" else frames).append(rows)
        records.append(record)
    done = iter(range(len(specs), len(specs) + crop_runs))
    crops, films = run_crop_task(cfg, run, index, backbones, inits, lambda what: progress.begin(next(done), what))
    progress.end()
    _write_tables(cfg, out, frames, cv_frames, records, skipped)
    atomic_write_text(out / "crop_predictions.csv", crops.to_csv(index=False))
    atomic_write_text(out / "film_predictions.csv", films.to_csv(index=False))
    return run.finish()


def _write_tables(cfg: Config, out: Path, frames: list, cv_frames: list, records: list, skipped: list) -> None:
    atomic_write_text(out / "predictions.csv", pd.concat(frames, ignore_index=True).to_csv(index=False))
    if cv_frames:
        atomic_write_text(out / "cv_predictions.csv", pd.concat(cv_frames, ignore_index=True).to_csv(index=False))
    else:  # an earlier run's folds must not be evaluated as this run's
        (out / "cv_predictions.csv").unlink(missing_ok=True)
    runs = pd.DataFrame(records)
    atomic_write_text(out / "runs.csv", runs.to_csv(index=False))
    atomic_write_text(out / "skipped.csv", pd.DataFrame(skipped, columns=["init", "reason"]).to_csv(index=False))
    headline = runs[(runs.role == "headline") & (runs.task == cfg.task)] if len(runs) else runs
    histories = [pd.read_csv(out / r / "history.csv") for r in headline.get("run", [])
                 if (out / r / "history.csv").exists()]
    if histories:
        figures.finetune_curves(pd.concat(histories, ignore_index=True), out / "finetune_curves.png")
