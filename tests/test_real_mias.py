"""Real mammograms: the whole reproduction (five notebooks) on mini-MIAS at the smoke profile, as
``make reproduce DATASET=mias PROFILE=smoke`` runs it, and lesions that follow the preprocessing.

Runs when the MIAS archive is available (``MAMMO_SOURCES_DIR/mias/all-mias.tar.gz``, as in CI).
"""

import json
import os

import numpy as np
import pandas as pd
import pytest

from mammo_utils.config import load_config
from mammo_utils.preprocess import Transform
from mammo_utils.reproduce import run_reproduce

from .conftest import sources_dir

SOURCES = sources_dir()
pytestmark = pytest.mark.skipif(
    SOURCES is None or not (SOURCES / "mias" / "all-mias.tar.gz").exists(),
    reason="mini-MIAS archive not available (set MAMMO_SOURCES_DIR)",
)


@pytest.fixture(scope="module")
def mias_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("mias")
    data = os.environ.get("MAMMO_TEST_DATA_DIR") or os.environ.get("MAMMO_DATA_DIR") or str(base / "data")
    env = {"MAMMO_DATA_DIR": data, "MAMMO_RUNS_DIR": str(base / "runs"), "MAMMO_SOURCES_DIR": str(SOURCES),
           "MAMMO_PROGRESS": "0"}
    old = {k: os.environ.get(k) for k in [*env, "MAMMO_OVERRIDES", "MAMMO_TASK"]}
    os.environ.update(env)
    for k in ("MAMMO_OVERRIDES", "MAMMO_TASK"):
        os.environ.pop(k, None)
    try:
        cfg = load_config("smoke", "mias")
        root = run_reproduce(cfg)
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return cfg, root


def test_notebook_01_on_real_mias(mias_run):
    _, root = mias_run
    out = root / "01_data_preparation"
    images = pd.read_csv(out / "images.csv")
    assert len(images) == 322 and images.patient_id.nunique() == 161
    assert (images.abnormal == 0).sum() == 207 and images.malignant.sum() == 52
    assert (images.groupby("patient_id")["split"].nunique() == 1).all()
    text = json.dumps(json.loads((root / "notebooks" / "01_data_preparation.ipynb").read_text())["cells"])
    assert "women in more than one split" in text and (out / "gallery.png").stat().st_size > 10_000


def test_mias_reproduction_cross_validates_both_tasks_and_reports_them_beside_the_claim(mias_run):
    cfg, root = mias_run
    assert cfg.finetune.cv and cfg.split.n_folds == 5  # MIAS has no official split: 5 folds by woman
    metrics = json.loads((root / "04_evaluation" / "metrics.json").read_text())
    assert metrics["dataset"] == "mias" and list(metrics["tasks"]) == ["abnormal", "malignant"]
    images = pd.read_csv(root / "01_data_preparation" / "images.csv")
    for task, entry in metrics["tasks"].items():
        assert set(entry["models"]) == {"simclr", "random"}
        for init, cv in entry["cross_validation"].items():
            assert cv["n_folds"] == 5 and cv["each_patient_tested_once"], (task, init)
            assert cv["n_test_patients"] == images.patient_id.nunique()
        test = images[images.split == "test"]
        assert entry["all_negative_accuracy"] == pytest.approx((test[task] == 0).mean())
    report = (root / "report.md").read_text()
    assert "## Beside the paper's claim" in report and "| malignant | simclr init | 5-fold CV, 161 women |" in report
    assert metrics["label_efficiency"]["runs"] and metrics["git_revision"] and metrics["versions"]["torch"]
    loc = json.loads((root / "05_gradcam" / "localization.json").read_text())
    assert loc["dataset"] == "mias" and loc["n_with_lesion"] > 0
    for name in ("01_data_preparation", "02_contrastive_pretraining", "03_fine_tuning", "04_evaluation",
                 "05_gradcam"):
        assert (root / "notebooks" / f"{name}.html").stat().st_size > 10_000, name
    assert set(json.loads((root / "notebooks" / "timings.json").read_text())) == {
        f"{n}.ipynb" for n in ("01_data_preparation", "02_contrastive_pretraining", "03_fine_tuning",
                               "04_evaluation", "05_gradcam")}


def test_mias_lesion_centres_land_inside_the_breast_after_preprocessing(mias_run):
    _, root = mias_run
    out = root / "01_data_preparation"
    index = pd.read_csv(out / "preprocessed.csv", keep_default_na=False).set_index("image_id")
    lesions = pd.read_csv(out / "lesions.csv", keep_default_na=False)
    located = lesions[lesions["shape"] == "circle"]
    assert len(located) == 119
    inside = []
    for les in located.itertuples():
        row = index.loc[les.image_id]
        t = Transform.from_dict(row.to_dict())
        (x, y), = t.to_output([[float(les.cx), float(les.cy)]])
        image = np.load(row.array_path)
        r, c = int(np.clip(round(y), 0, t.out_size - 1)), int(np.clip(round(x), 0, t.out_size - 1))
        inside.append(image[r, c] > 0)
    fraction = float(np.mean(inside))
    print(f"MIAS lesion centres inside the breast after preprocessing: {sum(inside)}/{len(inside)} = {fraction:.3f}")
    assert fraction >= 0.95
