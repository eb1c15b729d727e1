"""Stages 01–04 end to end on a tiny synthetic run, plus the clear messages when a stage is missing."""

import json
from dataclasses import asdict

import numpy as np
import pandas as pd
import pytest
import pytorch_lightning as pl
import torch
from PIL import Image
from sklearn.metrics import accuracy_score, balanced_accuracy_score, roc_auc_score

from mammo_utils.__main__ import main
from mammo_utils.course.publish import publish_run
from mammo_utils.errors import MissingStageOutput
from mammo_utils.evaluate.stage import run_evaluate
from mammo_utils.finetune.stage import run_finetune
from mammo_utils.models import load_backbone
from mammo_utils.prepare.cache import verify_cache
from mammo_utils.prepare.stage import run_prepare
from mammo_utils.pretrain.stage import run_pretrain
from mammo_utils.runs.paths import run_dir


def tiny_cfg_dir(cfg):
    return run_dir(cfg).parent


def test_missing_earlier_stage_names_what_to_run(tiny_cfg):
    with pytest.raises(MissingStageOutput, match="python -m mammo_utils prepare --dataset synthetic --profile smoke"):
        run_pretrain(tiny_cfg)


def _youden(y, p) -> float:
    """Youden's threshold written out (the highest cut maximising sensitivity + specificity - 1)."""
    y, p = np.asarray(y).astype(int), np.asarray(p, dtype=float)
    cuts = np.unique(p)[::-1]
    j = [((p >= c) & (y == 1)).sum() / (y == 1).sum() - ((p >= c) & (y == 0)).sum() / (y == 0).sum() for c in cuts]
    return float(cuts[int(np.argmax(j))])


def _table(markdown: str, first_cell: str) -> dict[str, list[str]]:
    """The rows of the markdown table in ``markdown`` whose header starts with ``first_cell``."""
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_cell} |"))
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip().strip("|").split("|")])
    return {r[0]: dict(zip(rows[0][1:], r[1:], strict=True)) for r in rows[2:]}


def _png(path) -> np.ndarray:
    with Image.open(path) as im:
        assert im.format == "PNG" and im.width >= 300 and im.height >= 200, path
        return np.asarray(im.convert("L"), dtype=float)


class _FinalWeights(pl.Callback):
    """The backbone's weights when training starts and when it ends."""

    def on_train_start(self, trainer, pl_module):
        self.initial = {k: v.detach().clone() for k, v in pl_module.backbone.state_dict().items()}

    def on_train_end(self, trainer, pl_module):
        self.state = {k: v.detach().clone() for k, v in pl_module.backbone.state_dict().items()}


def test_stages_run_end_to_end_and_skip_when_unchanged(tiny_cfg):
    out = run_prepare(tiny_cfg, workers=1)
    index = pd.read_csv(out / "preprocessed.csv", keep_default_na=False)
    assert len(index) == 48 and not verify_cache(index)
    assert (index.lesion_path != "").sum() == index.abnormal.sum()
    assert _png(out / "gallery.png").std() > 20  # mammograms on a background, not an empty canvas
    stamp = (out / "stage.json").stat().st_mtime_ns
    run_prepare(tiny_cfg, workers=1)
    assert (out / "stage.json").stat().st_mtime_ns == stamp  # unchanged settings: not run again

    final = _FinalWeights()
    pre = run_pretrain(tiny_cfg, callbacks=[final])
    history = pd.read_csv(pre / "history.csv")
    assert list(history.epoch) == list(range(tiny_cfg.pretrain.epochs + 1))  # epoch 0: the untrained network
    assert np.isfinite(history.loss.iloc[1:]).all() and np.isfinite(history.knn).all()
    summary = json.loads((pre / "pretraining.json").read_text())
    pd.testing.assert_frame_equal(pd.DataFrame(summary["backbones"]["main"])[history.columns].astype(float),
                                  history.astype(float), rtol=1e-6)
    # backbone.pt holds the weights training ended with, not the initial ones.
    saved = load_backbone(pre / "backbone.pt").state_dict()
    assert final.state.keys() == saved.keys() and all(torch.equal(saved[k], v) for k, v in final.state.items())
    assert not all(torch.equal(final.initial[k], v) for k, v in final.state.items())
    # Lightning's resume checkpoint (~290 MB) goes once the run has finished: it serves only an interrupted run.
    assert not (pre / "checkpoints").exists() and (pre / "logs").is_dir()

    ft = run_finetune(tiny_cfg)
    pred = pd.read_csv(ft / "predictions.csv")
    assert set(pred.init) == {"simclr", "random"}
    assert set(pred.split) == {"val", "test"} and pred.probability.between(0, 1).all()
    headline = pred[pred.headline & (pred.task == tiny_cfg.task)]  # the main task's headline run per init
    for _, rows in headline.groupby("init"):
        for split in ("val", "test"):  # every image of the split, once, with its own label
            part = rows[rows.split == split].set_index("image_id")
            truth = index[index.split == split].set_index("image_id")[tiny_cfg.task]
            assert sorted(part.index) == sorted(truth.index)
            assert (part.label == truth.loc[part.index]).all()

    ev = run_evaluate(tiny_cfg)
    metrics = json.loads((ev / "metrics.json").read_text())
    report = (run_dir(tiny_cfg) / "report.md").read_text()
    table = _table(report, "model")
    for init in ("simclr", "random"):
        # metrics.json: scikit-learn on the test predictions at the validation split's Youden threshold
        rows = headline[headline.init == init]
        val, test = rows[rows.split == "val"], rows[rows.split == "test"]
        threshold = _youden(val.label, val.probability)
        decision = (test.probability >= threshold).astype(int)
        m = metrics["models"][init]
        assert m["threshold"] == pytest.approx(threshold)
        expected = {"accuracy": accuracy_score(test.label, decision),
                    "balanced_accuracy": balanced_accuracy_score(test.label, decision),
                    "roc_auc": roc_auc_score(test.label, test.probability),
                    "sensitivity": decision[test.label == 1].mean(),
                    "specificity": 1 - decision[test.label == 0].mean()}
        for name, value in expected.items():
            entry = m["metrics"][name]
            assert entry["value"] == pytest.approx(value) and entry["low"] <= entry["value"] <= entry["high"], name
            # report.md prints the same numbers, to three decimals
            assert table[f"{init} init, fine-tuned"][name] == (
                f"{entry['value']:.3f} [{entry['low']:.3f}, {entry['high']:.3f}]"), name
    assert metrics["paper_claim"]["accuracy"] == 0.967 and metrics["versions"]["torch"]
    # The configuration printed in the report is the run's own (folders made relative to the project).
    config = json.loads(report.split("```json", 1)[1].split("```", 1)[0])
    assert config["pretrain"] == metrics["config"]["pretrain"] == json.loads(json.dumps(asdict(tiny_cfg.pretrain)))
    assert config["seed"] == tiny_cfg.seed and config["task"] == tiny_cfg.task
    assert not [k for k, v in config.items() if k.endswith("_dir") and str(v).startswith("/")]  # no machine paths

    # publish: the report and downscaled figures only, links rewritten to the folder's own files
    dest = publish_run(tiny_cfg, tiny_cfg_dir(tiny_cfg) / "published")
    files = {p.name for p in dest.iterdir()}
    assert {"report.md", "roc.png", "label_efficiency.png", "pretrain_curves.png", "ssl_gain.json",
            "pretraining.json"} <= files
    assert all(name.endswith((".png", ".md", ".json", ".csv")) for name in files)
    text = (dest / "report.md").read_text()
    assert "![roc.png](roc.png)" in text and "(label_efficiency.png)" in text
    assert all(Image.open(dest / n).width <= 1400 for n in files if n.endswith(".png"))
    assert str(tiny_cfg_dir(tiny_cfg).parent) not in text  # no machine paths in what gets committed
    assert "protocols.md" not in files  # stage 06 did not run
    study = run_dir(tiny_cfg) / "06_protocols"
    study.mkdir()
    (study / "protocols.md").write_text("# Protocol study\n\n| arm |\n|---|\n| A0 |\n\nFigures: `protocols.png`\n")
    dest = publish_run(tiny_cfg, tiny_cfg_dir(tiny_cfg) / "published")
    assert "| A0 |" in (dest / "protocols.md").read_text() and "(protocols.md)" in (dest / "report.md").read_text()


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
    from mammo_utils.errors import DataError
    from mammo_utils.prepare.sources.synthetic import locate

    root = locate(tiny_cfg)
    (root / "images" / "S0003_L_CC.png").unlink()
    with pytest.raises(DataError, match="S0003_L_CC"):
        run_prepare(tiny_cfg, workers=1)
    out = run_prepare(tiny_cfg, keep_going=True, workers=1)
    skipped = pd.read_csv(out / "skipped.csv")
    assert skipped.image_id.tolist() == ["S0003_L_CC"] and "file missing" in skipped.reason[0]
    assert "S0003_L_CC" not in set(pd.read_csv(out / "preprocessed.csv").image_id)
