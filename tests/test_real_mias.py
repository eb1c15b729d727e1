"""Real mammograms: notebook 01 on mini-MIAS at the smoke profile, and lesions that follow the preprocessing.

Runs when the MIAS archive is available (``MAMMO_SOURCES_DIR/mias/all-mias.tar.gz``, as in CI).
"""

import json

import numpy as np
import pandas as pd
import papermill as pm
import pytest

from mammo_utils.config import load_config
from mammo_utils.preprocess import Transform

from .conftest import REPO, sources_dir

SOURCES = sources_dir()
pytestmark = pytest.mark.skipif(
    SOURCES is None or not (SOURCES / "mias" / "all-mias.tar.gz").exists(),
    reason="mini-MIAS archive not available (set MAMMO_SOURCES_DIR)",
)


@pytest.fixture(scope="module")
def mias_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("mias")
    data = base / "data"
    import os

    data = os.environ.get("MAMMO_TEST_DATA_DIR") or os.environ.get("MAMMO_DATA_DIR") or str(data)
    params = dict(profile="smoke", dataset="mias")
    env = {"MAMMO_DATA_DIR": data, "MAMMO_RUNS_DIR": str(base / "runs"), "MAMMO_SOURCES_DIR": str(SOURCES)}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        pm.execute_notebook(REPO / "notebooks" / "01_data_preparation.ipynb", base / "01.ipynb", parameters=params,
                            cwd=str(REPO / "notebooks"), progress_bar=False, kernel_name="python3")
        cfg = load_config("smoke", "mias")
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return cfg, base / "runs" / "smoke-mias" / "01_data_preparation", base / "01.ipynb"


def test_notebook_01_on_real_mias(mias_run):
    _, out, executed = mias_run
    images = pd.read_csv(out / "images.csv")
    assert len(images) == 322 and images.patient_id.nunique() == 161
    assert (images.abnormal == 0).sum() == 207 and images.malignant.sum() == 52
    assert (images.groupby("patient_id")["split"].nunique() == 1).all()
    text = json.dumps(json.loads(executed.read_text())["cells"])
    assert "women in more than one split" in text and (out / "gallery.png").stat().st_size > 10_000


def test_mias_lesion_centres_land_inside_the_breast_after_preprocessing(mias_run):
    _, out, _ = mias_run
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
