"""The recipe search: each variant changes what it says, sees no test woman, and is not trained twice."""

import json
import math

import pandas as pd

from mammo_utils.prepare.stage import load_crops, load_index, run_prepare
from mammo_utils.pretrain.recipe import VARIANTS, Variant, run_recipe, variant_config


def test_every_variant_changes_a_setting_of_the_run():
    seen = set()
    for v in VARIANTS:
        assert v.name not in seen and v.change
        seen.add(v.name)
    assert VARIANTS[0].name == "base" and not VARIANTS[0].overrides
    assert all(v.overrides for v in VARIANTS[1:])


def test_a_search_scores_validation_women_only_and_resumes(tiny_cfg):
    cfg = variant_config(tiny_cfg, Variant("short", "4 steps", ("pretrain.steps=4", "pretrain.epochs=2")))
    run_prepare(cfg)
    out = run_recipe(cfg, ["base", "batch 64"])
    table = pd.read_csv(out / "recipe_search.csv")
    assert list(table.variant) == ["pixels", "mean_sd", "sd", "random init", "base", "batch 64"]
    by = table.set_index("variant")
    assert by.loc["base", "loss_constant_output"] == round(math.log(2 * cfg.pretrain.batch_size - 1), 3)
    assert by.loc["batch 64", "loss_constant_output"] == round(math.log(2 * 64 - 1), 3)  # the setting took
    assert by.loc["base", "steps"] == 4 and by.loc["batch 64", "batch"] == 64
    assert table.filter(like="auc_").notna().all().all()
    index, (crops, _) = load_index(cfg), load_crops(cfg)
    test_women = set(index.loc[index.split == "test", "patient_id"].astype(str))
    assert test_women
    summary = json.loads((out / "recipe.json").read_text())
    assert summary["n_crops"] == int((~crops.patient_id.astype(str).isin(test_women)).sum())
    done = out / "base" / "result.json"
    stamp = done.stat().st_mtime_ns
    run_recipe(cfg, ["base"])
    assert done.stat().st_mtime_ns == stamp  # finished with the same settings: read back, not trained again
