"""The executed course copies (``make course``): figures downscaled, widgets dropped, no machine paths."""

from __future__ import annotations

import base64
import io
import json

import nbformat
import numpy as np
import pytest
from PIL import Image

from mammo_utils.course.publish import COURSE_IMAGE_WIDTH_PX, course_copy, publish_course
from mammo_utils.errors import MammoError
from mammo_utils.runs.paths import run_dir


def _png(width: int, height: int) -> str:
    buf = io.BytesIO()
    Image.new("L", (width, height), 128).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _executed(root: str) -> dict:
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("plot()")
    cell.outputs = [
        nbformat.v4.new_output("display_data", data={"image/png": _png(2000, 1000), "text/plain": "<Figure>"}),
        nbformat.v4.new_output("display_data", data={"application/vnd.jupyter.widget-view+json": {"model_id": "x"}}),
        nbformat.v4.new_output("stream", name="stdout", text=f"wrote {root}/runs/demo-synthetic/02/backbone.pt\n"),
    ]
    cell.metadata["execution"] = {"iopub.execute_input": "2026-01-01T00:00:00"}
    nb.cells = [nbformat.v4.new_markdown_cell("# 01"), cell]
    return json.loads(nbformat.writes(nb))


def test_course_copy_downscales_drops_widgets_and_scrubs_paths():
    root = "/home/someone/mammo"
    out = course_copy(_executed(root), [root])
    outputs = out["cells"][1]["outputs"]
    assert len(outputs) == 2, "the widget-only output is dropped"
    with Image.open(io.BytesIO(base64.b64decode(outputs[0]["data"]["image/png"]))) as im:
        assert im.size == (COURSE_IMAGE_WIDTH_PX, COURSE_IMAGE_WIDTH_PX // 2)
    noisy = np.random.default_rng(0).integers(0, 255, (600, 800), dtype=np.uint8)  # a photograph-like figure
    buf = io.BytesIO()
    Image.fromarray(noisy).save(buf, format="PNG")
    big = {"cells": [{"cell_type": "code", "metadata": {}, "outputs": [
        {"output_type": "display_data", "metadata": {}, "data": {"image/png": base64.b64encode(buf.getvalue()).decode()}}]}]}
    data = course_copy(big, [root])["cells"][0]["outputs"][0]["data"]
    assert list(data) == ["image/jpeg"] and len(data["image/jpeg"]) < len(base64.b64encode(buf.getvalue()))
    assert outputs[1]["text"] == "wrote runs/demo-synthetic/02/backbone.pt\n"
    assert "execution" not in out["cells"][1]["metadata"]
    nbformat.validate(nbformat.from_dict(out))


def test_publish_course_writes_every_executed_notebook(tiny_cfg, tmp_path):
    with pytest.raises(MammoError, match="make demo"):
        publish_course(tiny_cfg, tmp_path / "course")
    src = run_dir(tiny_cfg) / "notebooks"
    src.mkdir(parents=True)
    for name in ("01_a.ipynb", "02_b.ipynb"):
        (src / name).write_text(json.dumps(_executed(str(run_dir(tiny_cfg)))))
    dest = publish_course(tiny_cfg, tmp_path / "course")
    assert sorted(p.name for p in dest.iterdir()) == ["01_a.ipynb", "02_b.ipynb", "README.md"]
    text = (dest / "01_a.ipynb").read_text()
    assert str(run_dir(tiny_cfg)) not in text
    assert "(02_b.ipynb)" in (dest / "README.md").read_text()


def test_publish_course_says_which_rows_the_protocol_notebook_left_out(tiny_cfg, tmp_path):
    src = run_dir(tiny_cfg) / "notebooks"
    src.mkdir(parents=True)
    (src / "06_protocols.ipynb").write_text(json.dumps(_executed(str(run_dir(tiny_cfg)))))
    study = run_dir(tiny_cfg) / "06_protocols"
    study.mkdir(parents=True)
    (study / "protocols.json").write_text(json.dumps({"skipped": [{"features": "simclr", "reason": "no fold"}]}))
    readme = (publish_course(tiny_cfg, tmp_path / "course") / "README.md").read_text()
    assert "without the simclr rows" in readme and "demo-mias/protocols.md" in readme
    (study / "protocols.json").write_text(json.dumps({"skipped": []}))
    readme = (publish_course(tiny_cfg, tmp_path / "course") / "README.md").read_text()
    assert "without the" not in readme and "demo-mias/protocols.md" in readme
