"""Stages 01–04 end to end on a tiny synthetic run, plus the clear messages when a stage is missing."""

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from mammo_utils.__main__ import main
from mammo_utils.cache import verify_cache
from mammo_utils.errors import MissingStageOutput
from mammo_utils.evaluate import run_evaluate
from mammo_utils.finetune import run_finetune
from mammo_utils.paths import run_dir
from mammo_utils.prepare import run_prepare
from mammo_utils.pretrain import run_pretrain
from mammo_utils.publish import publish_run


def tiny_cfg_dir(cfg):
    return run_dir(cfg).parent


def test_missing_earlier_stage_names_what_to_run(tiny_cfg):
    with pytest.raises(MissingStageOutput, match="python -m mammo_utils prepare --dataset synthetic --profile smoke"):
        run_pretrain(tiny_cfg)


def test_stages_run_end_to_end_and_skip_when_unchanged(tiny_cfg):
    out = run_prepare(tiny_cfg, workers=1)
    index = pd.read_csv(out / "preprocessed.csv", keep_default_na=False)
    assert len(index) == 48 and not verify_cache(index)
    assert (index.lesion_path != "").sum() == index.abnormal.sum()
    assert (out / "gallery.png").stat().st_size > 1000
    stamp = (out / "stage.json").stat().st_mtime_ns
    run_prepare(tiny_cfg, workers=1)
    assert (out / "stage.json").stat().st_mtime_ns == stamp  # unchanged settings: not run again

    pre = run_pretrain(tiny_cfg)
    history = pd.read_csv(pre / "history.csv")
    assert np.isfinite(history["train_loss_epoch"]).all()
    assert (pre / "backbone.pt").exists() and (pre / "checkpoints" / "last.ckpt").exists()

    ft = run_finetune(tiny_cfg)
    pred = pd.read_csv(ft / "predictions.csv")
    assert set(pred.init) == {"simclr", "random"}
    assert set(pred.split) == {"val", "test"} and pred.probability.between(0, 1).all()

    ev = run_evaluate(tiny_cfg)
    metrics = json.loads((ev / "metrics.json").read_text())
    for init in ("simclr", "random"):
        m = metrics["models"][init]["metrics"]["roc_auc"]
        assert m["low"] <= m["value"] <= m["high"]
    assert metrics["paper_claim"]["accuracy"] == 0.967 and metrics["versions"]["torch"]
    report = (run_dir(tiny_cfg) / "report.md").read_text()
    assert "| simclr init" in report and "## Provenance" in report and '"pretrain"' in report

    # publish: the report and downscaled figures only, links rewritten to the folder's own files
    dest = publish_run(tiny_cfg, tiny_cfg_dir(tiny_cfg) / "published")
    files = {p.name for p in dest.iterdir()}
    assert {"report.md", "roc.png", "label_efficiency.png", "pretrain_curves.png"} <= files
    assert all(name.endswith((".png", ".md")) for name in files)
    text = (dest / "report.md").read_text()
    assert "![roc.png](roc.png)" in text and "(label_efficiency.png)" in text
    assert all(Image.open(dest / n).width <= 1400 for n in files if n.endswith(".png"))
    assert str(tiny_cfg_dir(tiny_cfg).parent) not in text  # no machine paths in what gets committed


def test_cli_prints_one_line_not_a_traceback(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("MAMMO_RUNS_DIR", str(tmp_path))
    assert main(["finetune", "--profile", "smoke", "--dataset", "synthetic"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: No backbone.pt") or err.startswith("error: No preprocessed.csv")
    assert "Traceback" not in err and len(err.splitlines()) == 1
    assert main(["pretrain", "--profile", "nope"]) == 2
    assert "Unknown profile 'nope'" in capsys.readouterr().err


def test_publish_without_a_finished_run_says_what_to_run(tiny_cfg):
    from mammo_utils.errors import MammoError

    with pytest.raises(MammoError, match="reproduce --profile smoke --dataset synthetic"):
        publish_run(tiny_cfg)


def test_missing_runs_directory_is_named(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MAMMO_RUNS_DIR", str(tmp_path / "nowhere"))
    assert main(["evaluate", "--profile", "smoke"]) == 2
    err = capsys.readouterr().err
    assert "runs directory" in err and "nowhere" in err and "python -m mammo_utils finetune" in err


def test_prepare_stops_on_a_missing_file_unless_asked_to_keep_going(tiny_cfg):
    from mammo_utils.datasets.synthetic import locate
    from mammo_utils.errors import DataError

    root = locate(tiny_cfg)
    (root / "images" / "S0003_L_CC.png").unlink()
    with pytest.raises(DataError, match="S0003_L_CC"):
        run_prepare(tiny_cfg, workers=1)
    out = run_prepare(tiny_cfg, keep_going=True, workers=1)
    skipped = pd.read_csv(out / "skipped.csv")
    assert skipped.image_id.tolist() == ["S0003_L_CC"] and "file missing" in skipped.reason[0]
    assert "S0003_L_CC" not in set(pd.read_csv(out / "preprocessed.csv").image_id)
