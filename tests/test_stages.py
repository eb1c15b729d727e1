"""Stage bookkeeping: a change upstream re-runs everything downstream, every stage can be forced, and the
temporary files a killed run leaves behind are cleaned up when the stage starts again."""

import json
from dataclasses import replace
from pathlib import Path

from mammo_utils.evaluate.stage import run_evaluate
from mammo_utils.finetune.stage import run_finetune
from mammo_utils.prepare.stage import run_prepare
from mammo_utils.pretrain.stage import run_pretrain
from mammo_utils.runs.files import atomic_write_bytes
from mammo_utils.runs.paths import stage_dir


def _key(cfg, stage):
    return json.loads((stage_dir(cfg, stage, create=False) / "stage.json").read_text())["key"]


def _small(cfg):
    return replace(cfg, finetune=replace(cfg.finetune, inits=("simclr",), classifiers=(), tasks=("abnormal",)))


def test_a_change_upstream_reruns_every_stage_downstream_and_only_those(tiny_cfg):
    cfg = _small(tiny_cfg)
    run_prepare(cfg, workers=1)
    for run in (run_pretrain, run_finetune, run_evaluate):
        run(cfg)
    before = {s: _key(cfg, s) for s in ("prepare", "pretrain", "finetune", "evaluate")}
    model = stage_dir(cfg, "finetune", create=False) / "simclr" / "model.pt"
    stamp = model.stat().st_mtime_ns
    for run in (run_pretrain, run_finetune, run_evaluate):  # nothing changed: nothing re-runs
        run(cfg)
    assert model.stat().st_mtime_ns == stamp
    assert {s: _key(cfg, s) for s in before} == before

    warmer = replace(cfg, pretrain=replace(cfg.pretrain, temperature=0.5))
    for run in (run_pretrain, run_finetune, run_evaluate):
        run(warmer)
    after = {s: _key(warmer, s) for s in before}
    assert after["prepare"] == before["prepare"]
    assert all(after[s] != before[s] for s in ("pretrain", "finetune", "evaluate"))
    assert model.stat().st_mtime_ns != stamp  # fine-tuned again from the new backbone


def test_force_reruns_a_stage_and_stale_temporaries_are_removed(tiny_cfg):
    cfg = _small(tiny_cfg)
    out = run_prepare(cfg, workers=1)
    cache = next(Path(cfg.cache_dir).rglob("*.npy")).parent
    stale = [cache / ".P000_L_CC.npy.k3j2.tmp", out / ".images.csv.x9.tmp"]
    for path in stale:
        atomic_write_bytes(path, b"half a file")
    stamp = (out / "stage.json").stat().st_mtime_ns
    run_prepare(cfg, workers=1)  # up to date: not rebuilt, but the leftovers of a killed run are gone
    assert (out / "stage.json").stat().st_mtime_ns == stamp and not any(p.exists() for p in stale)
    run_prepare(cfg, workers=1, force=True)
    assert (out / "stage.json").stat().st_mtime_ns != stamp


def test_the_epoch_log_counts_steps_when_a_run_has_no_epoch_bound(caplog):
    import logging
    from types import SimpleNamespace

    from mammo_utils.runs.trainer import LogEpochs

    callback = LogEpochs()
    for max_epochs, expected in ((6, "epoch 2 of 6 ("), (-1, "epoch 2 (step 500 of 2000) (")):
        trainer = SimpleNamespace(current_epoch=1, max_epochs=max_epochs, global_step=500, max_steps=2000,
                                  callback_metrics={})
        callback.on_train_epoch_start(trainer, None)
        with caplog.at_level(logging.INFO, logger="mammo_utils.runs.trainer"):
            callback.on_train_epoch_end(trainer, None)
        assert expected in caplog.records[-1].getMessage()
