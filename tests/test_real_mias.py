"""Real mammograms: the whole reproduction (five notebooks) on mini-MIAS at the smoke profile, as
``make reproduce DATASET=mias PROFILE=smoke`` runs it, and lesions that follow the preprocessing.

Every number is checked against a computation written out here from the stages' tables (scikit-learn on the
predictions, the manifest's own ``fold`` column), never against a summary the package computed itself.

Runs when the MIAS archive is available (``MAMMO_SOURCES_DIR/mias/all-mias.tar.gz``, as in CI).
"""

import html
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from sklearn.metrics import accuracy_score, balanced_accuracy_score, roc_auc_score

from mammo_utils.config import load_config
from mammo_utils.course.reproduce import NOTEBOOKS, run_reproduce
from mammo_utils.models import load_backbone
from mammo_utils.prepare.preprocess import Transform

from .conftest import sources_dir
from .test_datasets_mias import HAND_CHECKED_MASSES

SOURCES = sources_dir()
REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(
    SOURCES is None or not (SOURCES / "mias" / "all-mias.tar.gz").exists(),
    reason="mini-MIAS archive not available (set MAMMO_SOURCES_DIR)",
)
TASKS = ("abnormal", "malignant")
N_FOLDS = 5


@pytest.fixture(scope="module")
def mias_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("mias")
    data = os.environ.get("MAMMO_TEST_DATA_DIR") or os.environ.get("MAMMO_DATA_DIR") or str(base / "data")
    # As `make test` runs the notebooks: every exercise is left as committed, so each must say NOT YET (the
    # summary cell of each notebook fails otherwise, and with it the reproduction).
    env = {"MAMMO_DATA_DIR": data, "MAMMO_RUNS_DIR": str(base / "runs"), "MAMMO_SOURCES_DIR": str(SOURCES),
           "MAMMO_PROGRESS": "0", "MAMMO_EXPECT_CHECKS": "NOT YET"}
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
    yield cfg, root
    shutil.rmtree(base, ignore_errors=True)  # six backbones and twenty classifiers: pytest would keep them


def _youden(y, p) -> float:
    """Youden's threshold written out (the highest cut maximising sensitivity + specificity - 1); 0.5 when the
    labels hold one class (as the package does)."""
    y, p = np.asarray(y).astype(int), np.asarray(p, dtype=float)
    if len(np.unique(y)) < 2:
        return 0.5
    cuts = np.unique(p)[::-1]
    j = [((p >= c) & (y == 1)).sum() / (y == 1).sum() - ((p >= c) & (y == 0)).sum() / (y == 0).sum() for c in cuts]
    return float(min(cuts[int(np.argmax(j))], 1.0))


def _scored(test: pd.DataFrame, threshold) -> dict[str, float]:
    """The reported metrics, recomputed with scikit-learn on test rows at ``threshold`` (a number or per row)."""
    decision = (test.probability.to_numpy() >= np.asarray(threshold)).astype(int)
    y = test.label.to_numpy().astype(int)
    out = {"accuracy": accuracy_score(y, decision)}
    if len(np.unique(y)) == 2:
        out |= {"balanced_accuracy": balanced_accuracy_score(y, decision),
                "roc_auc": roc_auc_score(y, test.probability)}
    return out


def _assert_metrics(reported: dict, expected: dict[str, float], what) -> None:
    for name, value in expected.items():
        shown = reported[name]["value"] if isinstance(reported[name], dict) else reported[name]
        assert shown == pytest.approx(value, abs=1e-9), (what, name)


def _copy_sibling(rows: pd.DataFrame) -> float:
    """What copying the label of the woman's other film scores. On MIAS each woman has two films, her left and
    right breasts, so the copied film is simply the other one (counted where both are in ``rows``)."""
    pairs = [w.label.to_numpy() for _, w in rows.groupby("patient_id") if len(w) == 2]
    return float(np.mean([a == b for a, b in pairs]))


def test_stage_01_prepares_every_film_with_the_committed_split_by_woman(mias_run):
    _, root = mias_run
    out = root / "01_prepare"
    images = pd.read_csv(out / "images.csv")
    assert len(images) == 322 and images.patient_id.nunique() == 161
    assert (images.abnormal == 0).sum() == 207 and images.malignant.sum() == 52
    assert (images.groupby("patient_id")[["split", "fold"]].nunique() == 1).all().all()  # one woman, one place
    committed = pd.read_csv(REPO / "data_manifests" / "mias" / "images.csv").set_index("image_id")
    ours = images.set_index("image_id").loc[committed.index]
    assert (ours.split == committed.split).all() and (ours.fold == committed.fold).all()
    with Image.open(out / "gallery.png") as im:
        assert im.format == "PNG" and im.width >= 400 and im.height >= 300
        gallery = np.asarray(im.convert("L"), dtype=float)
    assert gallery.std() > 20  # films on a background, not an empty canvas


def test_every_notebook_ran_to_its_summary_with_each_exercise_not_yet(mias_run):
    _, root = mias_run
    timings = json.loads((root / "notebooks" / "timings.json").read_text())
    assert set(timings) == set(NOTEBOOKS) and all(v > 0 for v in timings.values())
    assert json.loads((root / "notebooks" / "reused.json").read_text()) == []  # a fresh run reuses no stage
    for name in NOTEBOOKS:
        nb = json.loads((root / "notebooks" / name).read_text())
        code = [c for c in nb["cells"] if c["cell_type"] == "code"]
        assert all(c.get("execution_count") for c in code), name  # every cell ran
        assert not [o for c in code for o in c.get("outputs", []) if o["output_type"] == "error"], name
        printed = "".join("".join(o.get("text", "")) for o in code[-1].get("outputs", []))
        found = re.search(r"(\d+) exercises checked: (\d+) PASS, (\d+) NOT YET, (\d+) FAIL", printed)
        assert found, f"{name}: no summary of the exercises in its last cell"
        n, passed, not_yet, failed = map(int, found.groups())
        n_exercises = sum("exercise" in c.get("metadata", {}).get("tags", []) for c in code)
        assert n >= n_exercises > 0 and (passed, not_yet, failed) == (0, n, 0), name
        # The HTML copy is the executed notebook: it shows what the cells printed.
        page = (root / "notebooks" / name.replace(".ipynb", ".html")).read_text()
        assert html.escape(found.group(0)) in page, name
        streams = [line.strip() for c in code for o in c.get("outputs", []) if o["output_type"] == "stream"
                   for line in "".join(o["text"]).splitlines() if re.fullmatch(r"[\w .,:;()%=+/-]{20,}", line)]
        assert streams and all(line in page for line in streams[:20]), name


def test_pretraining_is_per_fold_and_never_sees_that_folds_test_women(mias_run):
    _, root = mias_run
    images = pd.read_csv(root / "01_prepare" / "images.csv")
    fold_of = dict(zip(images.image_id, images.fold, strict=True))  # the manifest's own column
    pre = root / "02_pretrain"
    backbones = [load_backbone(pre / f"cv{k}" / "backbone.pt").state_dict() for k in range(N_FOLDS)]
    assert not torch.equal(backbones[0]["conv1.weight"], backbones[1]["conv1.weight"])  # one pretraining per fold
    for k in range(N_FOLDS):
        seen = json.loads((pre / f"cv{k}" / "stage.json").read_text())["train_image_ids"]
        tested = set(images.image_id[images.fold == k])
        assert seen and not set(seen) & tested, k
        # exactly the training women of fold k: not fold k (tested) nor fold k+1 (chooses the weights)
        assert {fold_of[i] for i in seen} == set(range(N_FOLDS)) - {k, (k + 1) % N_FOLDS}
        assert set(seen) == set(images.image_id[~images.fold.isin([k, (k + 1) % N_FOLDS])])


def test_cross_validation_tests_each_woman_once_with_models_that_never_saw_her(mias_run):
    _, root = mias_run
    images = pd.read_csv(root / "01_prepare" / "images.csv").set_index("image_id")
    cv = pd.read_csv(root / "03_finetune" / "cv_predictions.csv")
    runs = pd.read_csv(root / "03_finetune" / "runs.csv")
    assert "cv_fold" in cv and set(cv.task) == set(TASKS) and set(cv.init) == {"simclr", "random"}
    for (task, init), rows in cv.groupby(["task", "init"]):
        test = rows[rows.split == "test"]
        assert test.image_id.is_unique and set(test.image_id) == set(images.index)  # each film tested once
        assert (test.cv_fold.to_numpy() == images.fold.loc[test.image_id].to_numpy()).all()
        assert (test.label.to_numpy() == images[task].loc[test.image_id].to_numpy()).all()
        for k, fold in rows.groupby("cv_fold"):
            val_women = set(fold.patient_id[fold.split == "val"])
            assert set(images.fold.loc[fold.image_id[fold.split == "val"]]) == {(k + 1) % N_FOLDS}
            assert not val_women & set(fold.patient_id[fold.split == "test"])
            record = runs[(runs.role == "cv") & (runs.task == task) & (runs.init == init) & (runs.cv_fold == k)]
            trained_on = images[~images.fold.isin([k, (k + 1) % N_FOLDS])]
            assert int(record.n_train_images.iloc[0]) == len(trained_on), (task, init, k)


def test_metrics_are_what_the_predictions_give_and_the_report_prints_them(mias_run):
    cfg, root = mias_run
    assert cfg.finetune.cv and cfg.split.n_folds == N_FOLDS  # MIAS has no official split: 5 folds by woman
    metrics = json.loads((root / "04_evaluate" / "metrics.json").read_text())
    assert metrics["dataset"] == "mias" and list(metrics["tasks"]) == list(TASKS)
    pred = pd.read_csv(root / "03_finetune" / "predictions.csv")
    cv = pd.read_csv(root / "03_finetune" / "cv_predictions.csv")
    report = (root / "report.md").read_text()
    for task, entry in metrics["tasks"].items():
        assert set(entry["models"]) == {"simclr", "random"}
        for init, m in entry["models"].items():
            rows = pred[pred.headline & (pred.task == task) & (pred.init == init)]
            val, test = rows[rows.split == "val"], rows[rows.split == "test"]
            assert m["threshold"] == pytest.approx(_youden(val.label, val.probability)), (task, init)
            _assert_metrics(m["metrics"], _scored(test, m["threshold"]), (task, init))
        test = pred[pred.headline & (pred.task == task) & (pred.init == "random") & (pred.split == "test")]
        assert entry["all_negative_accuracy"] == pytest.approx((test.label == 0).mean())
        assert entry["copy_sibling_accuracy"] == pytest.approx(_copy_sibling(test))
        everyone = cv[(cv.task == task) & (cv.init == "random") & (cv.split == "test")]
        assert entry["cv_copy_sibling_accuracy"] == pytest.approx(_copy_sibling(everyone))
        for init, c in entry["cross_validation"].items():
            rows = cv[(cv.task == task) & (cv.init == init)]
            thresholds = {k: _youden(f.label[f.split == "val"], f.probability[f.split == "val"])
                          for k, f in rows.groupby("cv_fold")}
            assert c["n_folds"] == N_FOLDS and len(c["per_fold"]) == N_FOLDS
            for f in c["per_fold"]:
                assert f["threshold"] == pytest.approx(thresholds[f["cv_fold"]]), (task, init, f["cv_fold"])
                fold_test = rows[(rows.cv_fold == f["cv_fold"]) & (rows.split == "test")]
                _assert_metrics(f["metrics"], _scored(fold_test, f["threshold"]), (task, init, f["cv_fold"]))
            pooled = rows[rows.split == "test"]
            _assert_metrics(c["pooled"], _scored(pooled, pooled.cv_fold.map(thresholds)), (task, init, "pooled"))
            assert c["n_test_patients"] == pooled.patient_id.nunique() == 161
            assert c["all_negative_accuracy"] == pytest.approx((pooled.label == 0).mean())
            # report.md's table beside the paper's claim prints these numbers
            cells = [f"{c['pooled'][k]['value']:.3f} [{c['pooled'][k]['low']:.3f}, {c['pooled'][k]['high']:.3f}]"
                     for k in ("accuracy", "balanced_accuracy", "roc_auc")]
            row = f"| {task} | {init} init | {N_FOLDS}-fold CV, 161 women | " + " | ".join(cells)
            assert row in report, row

    # the crop task: every woman tested once over the folds, at every fraction, the gain table recomputed
    crops = pd.read_csv(root / "03_finetune" / "crop_predictions.csv")
    test = crops[crops.split == "test"]
    for key, rows in test.groupby(["init", "classifier", "label_fraction", "draw"]):
        assert rows.crop_id.value_counts().eq(1).all() and rows.cv_fold.nunique() == N_FOLDS, key
    gain = json.loads((root / "04_evaluate" / "ssl_gain.json").read_text())
    for r in (r for r in gain if r["task"].startswith("lesion")):
        rows = test[(test.classifier == r["classifier"]) & np.isclose(test.label_fraction, r["label_fraction"])]
        for init in ("simclr", "random"):
            mine = rows[rows.init == init]
            aucs = [roc_auc_score(d.label, d.probability) for _, d in mine.groupby("draw")]
            assert r[init] == pytest.approx(np.mean(aucs)), (init, r["classifier"], r["label_fraction"])
        assert r["n_test_women"] == rows.patient_id.nunique()
    assert metrics["git_revision"] and metrics["versions"]["torch"]
    json.loads((root / "04_evaluate" / "metrics.json").read_text(), parse_constant=_no_nan)  # valid JSON


def _no_nan(name: str):
    raise AssertionError(f"metrics.json holds {name}, which is not JSON")


def test_gradcam_scores_the_test_films_that_have_a_located_lesion(mias_run):
    _, root = mias_run
    loc = json.loads((root / "05_gradcam" / "localization.json").read_text())
    index = pd.read_csv(root / "01_prepare" / "preprocessed.csv", keep_default_na=False)
    lesions = pd.read_csv(root / "01_prepare" / "lesions.csv", keep_default_na=False)
    located = set(lesions.image_id[lesions["shape"] == "circle"])
    test = index[index.split == "test"]
    assert loc["dataset"] == "mias" and loc["n_test_images"] == len(test)
    # Every located lesion of a test film is scored, unless it vanished in the resize (a mask of no pixel at
    # this size: a few of MIAS's smallest calcification circles at 64 px); those are few.
    marked = test[test.image_id.isin(located)]
    visible = [bool(p) and np.load(p).any() for p in marked.lesion_path]
    assert loc["n_with_lesion"] == sum(visible) > 0
    assert sum(visible) >= 0.9 * len(marked), f"{len(marked) - sum(visible)} of {len(marked)} lesions lost"
    for init, entry in loc["inits"].items():
        for method, m in entry["methods"].items():
            for score in ("pointing_game", "energy_inside"):
                v = m[score]
                if v["n"] == 0:  # every map flat (a smoke model's Grad-CAM can be): no value, and none invented
                    assert m["n_flat"] == m["n"] and v["estimate"] is v["ci_low"] is v["ci_high"] is None
                    continue
                assert 0 <= v["ci_low"] <= v["estimate"] <= v["ci_high"] <= 1, (init, method, score)


def test_mias_lesion_centres_land_inside_the_breast_after_preprocessing(mias_run):
    _, root = mias_run
    out = root / "01_prepare"
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
    # Decisive, lesion by lesion: each mass seen by eye on the original film lies inside the lesion mask the stage
    # drew on the network's input, and that spot of the input is brighter than three quarters of the breast.
    for image_id, points in HAND_CHECKED_MASSES.items():
        row = index.loc[image_id]
        t = Transform.from_dict(row.to_dict())
        image, mask = np.load(row.array_path), np.load(row.lesion_path)
        for (x, y), in (t.to_output([[float(px), float(py)]]) for px, py in points):
            r, c = int(round(y)), int(round(x))
            assert mask[max(r - 1, 0):r + 2, max(c - 1, 0):c + 2].any(), (image_id, r, c)
            breast = image[image > 0]
            assert (breast < image[r, c]).mean() > 0.75, (image_id, r, c)
