"""The protocol study: each arm's split has exactly the leak it is meant to have and no other (and a split broken
on purpose is caught), the choices on validation and on test, the metrics against scikit-learn, the copies, the
random labels, the models that memorise, a positive control (a leak that must pay on random labels while the
honest arm stays at chance), the patches and their statistics, and the stage end to end on a tiny synthetic run."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import accuracy_score, balanced_accuracy_score, roc_auc_score

from mammo_utils.config import load_config
from mammo_utils.prepare.split import assign_splits
from mammo_utils.protocols import probe, splits
from mammo_utils.protocols.arms import plan_arms, split_arm
from mammo_utils.protocols.cnn import CnnSettings, fit_until_memorised, run_cnn
from mammo_utils.protocols.crossval import ProbeSettings, run_logistic
from mammo_utils.protocols.items import OfflineAugment, augmented_copies, offline_copy, with_copies
from mammo_utils.protocols.labels import permuted_women_labels, with_labels, women_labels
from mammo_utils.protocols.nearest import nearest_scores, run_nearest
from mammo_utils.protocols.patches import PatchPlan, bright_spots, site_patches, statistics
from mammo_utils.protocols.scoring import nearest_train_similarity, over_seeds, pooled_metrics

N_FOLDS, VAL_SHARE = 5, 0.25
ARMS = {a.name: a for a in plan_arms((1, 2, 4, 8), ("finetune", "offline"))}


def films(n_women: int = 60, seed: int = 0) -> pd.DataFrame:
    """Two films per woman (left, right) with labels that often differ, folds dealt by woman as `prepare` does."""
    rng = np.random.default_rng(seed)
    rows = []
    for w in range(n_women):
        for side in "LR":
            label = int(rng.random() < 0.35)
            rows.append({"image_id": f"w{w:03d}{side}", "patient_id": f"w{w:03d}", "abnormal": label,
                         "malignant": 0, "split": "", "fold": -1})
    table = assign_splits(pd.DataFrame(rows), n_folds=N_FOLDS, seed=seed)
    return table.assign(item_id=table.image_id, label=table.abnormal)


def copies(table: pd.DataFrame, k: int) -> pd.DataFrame:
    return pd.concat([table.assign(item_id=table.image_id + f"~{c}", copy=c) for c in range(k)], ignore_index=True)


def patches(table: pd.DataFrame, per_site: int = 4, size: int = 32) -> pd.DataFrame:
    """``per_site`` overlapping patches (shifted by up to a quarter side) around one site of each film."""
    rng = np.random.default_rng(1)
    rows = []
    for r in table.itertuples():
        for j in range(per_site):
            dx, dy = rng.uniform(-size / 4, size / 4, 2)
            rows.append({"item_id": f"{r.image_id}-p{j}", "image_id": r.image_id, "patient_id": r.patient_id,
                         "label": r.label, "fold": r.fold, "x": 500 + dx, "y": 500 + dy, "size_px": size})
    return pd.DataFrame(rows)


def profiles(arm_name: str, items: pd.DataFrame, seeds=(0, 1)) -> list[dict]:
    arm = ARMS[arm_name]
    out = []
    for seed in seeds:
        split = split_arm(arm, items, N_FOLDS, seed)
        for k in range(N_FOLDS):
            out.append(splits.leak_profile(split, splits.fold_roles(split, k, arm.unit, seed, VAL_SHARE)))
    return out


def leak_free_of_women(ps: list[dict]) -> bool:
    return all(p["women_in_train_and_test"] == 0 and p["test_share_woman_in_train"] == 0 for p in ps)


# --- each arm's split: exactly its leak, no other -------------------------------------------------------------


def test_a0_no_woman_in_two_folds_and_every_woman_tested_once():
    table = films()
    ps = profiles("A0", table)
    assert leak_free_of_women(ps) and all(p["test_share_film_in_train"] == 0 for p in ps)
    split = split_arm(ARMS["A0"], table, N_FOLDS, 0)
    assert split.groupby("patient_id")["fold"].nunique().max() == 1
    assert sorted(split.fold.unique()) == list(range(N_FOLDS))
    assert sum(p["n_test"] for p in ps[:N_FOLDS]) == len(table)  # each film tested once per seed


def test_a1_splits_by_film_so_women_straddle_but_no_film_is_in_two_places():
    ps = profiles("A1", films())
    assert np.mean([p["women_in_train_and_test"] for p in ps]) > 3
    assert all(p["test_share_film_in_train"] == 0 for p in ps)  # one item per film: no twin
    split = split_arm(ARMS["A1"], films(), N_FOLDS, 0)
    assert split.image_id.is_unique and split.groupby("fold").size().between(23, 25).all()


@pytest.mark.parametrize("k", [1, 2, 4, 8])
def test_a2_twin_share_matches_its_construction(k):
    table = copies(films(100), k)
    ps = profiles(f"A2 K={k} offline", table, seeds=(0, 1, 2))
    measured = np.average([p["test_share_film_in_train"] for p in ps], weights=[p["n_test"] for p in ps])
    expected = splits.expected_twin_share(k, N_FOLDS, VAL_SHARE)
    assert measured == pytest.approx(expected, abs=0.05)
    if k == 1:
        assert measured == 0


def test_a3a_puts_overlapping_patches_of_one_spot_in_train_and_test():
    ps = profiles("A3a", patches(films()))
    assert np.mean([p["test_share_overlapping_train"] for p in ps]) > 0.9
    assert np.mean([p["women_in_train_and_test"] for p in ps]) > 0


def test_a3b_keeps_each_womans_patches_in_one_fold():
    items = patches(films())
    ps = profiles("A3b", items)
    assert leak_free_of_women(ps) and all(p["test_share_overlapping_train"] == 0 for p in ps)
    assert split_arm(ARMS["A3b"], items, N_FOLDS, 3).groupby("patient_id")["fold"].nunique().max() == 1


def test_a4_and_a5_choose_on_test_and_only_there():
    table = films(30)
    assert (split_arm(ARMS["A4"], table, N_FOLDS, 7).fold == split_arm(ARMS["A0"], table, N_FOLDS, 7).fold).all()
    assert leak_free_of_women(profiles("A4", table))
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(len(table), 16)) + table.label.to_numpy()[:, None] * 0.5
    settings = ProbeSettings(1.0, (2, 10), n_configurations=4)
    for name, chosen_on in (("A0", "validation"), ("A4", "test")):
        run = run_logistic(ARMS[name], split_arm(ARMS[name], table, N_FOLDS, 0), lambda k: feats, 0, N_FOLDS,
                           VAL_SHARE, settings)
        assert {f["chosen_on"] for f in run.folds} == {chosen_on}
        assert {f["n_configurations"] for f in run.folds} == {4 if chosen_on == "test" else 2}
        assert sorted(run.rows.item_id) == sorted(table.item_id)
    for strength in ("finetune", "offline"):
        a5 = ARMS[f"A5 {strength}"]
        assert a5.select_on_test and a5.copies == 8 and a5.unit == "item_id" and a5.strength == strength


# --- a split broken on purpose is caught by the same measurements --------------------------------------------


def test_a_broken_split_fails_the_property_its_arm_is_held_to():
    table = films()
    broken_a0 = splits.folds_by(table, "image_id", N_FOLDS, 0)  # "by woman" done by film
    ps = [splits.leak_profile(broken_a0, splits.fold_roles(broken_a0, k, "patient_id", 0, VAL_SHARE))
          for k in range(N_FOLDS)]
    assert not leak_free_of_women(ps)
    items = patches(table)
    broken_a3b = splits.folds_by(items, "item_id", N_FOLDS, 0)  # "by woman" done by patch
    ps = [splits.leak_profile(broken_a3b, splits.fold_roles(broken_a3b, k, "patient_id", 0, VAL_SHARE))
          for k in range(N_FOLDS)]
    assert np.mean([p["test_share_overlapping_train"] for p in ps]) > 0.5
    twins = copies(table, 4)
    broken_a2 = splits.folds_by(twins, "image_id", N_FOLDS, 0)  # copies kept together: no twin leak at all
    ps = [splits.leak_profile(broken_a2, splits.fold_roles(broken_a2, k, "image_id", 0, VAL_SHARE))
          for k in range(N_FOLDS)]
    assert np.mean([p["test_share_film_in_train"] for p in ps]) < splits.expected_twin_share(4, N_FOLDS, VAL_SHARE) / 2


def test_validation_is_drawn_by_unit_from_the_other_folds():
    table = copies(films(), 4)
    split = split_arm(ARMS["A0"], table, N_FOLDS, 0)
    role = splits.fold_roles(split, 2, "patient_id", 5, VAL_SHARE)
    assert set(split.fold[role == "test"]) == {2}
    val_women = set(split.patient_id[role == "val"])
    assert not val_women & set(split.patient_id[role != "val"])
    assert len(val_women) == pytest.approx(0.25 * split.patient_id[role != "test"].nunique(), abs=2)
    assert not role.equals(splits.fold_roles(split, 2, "patient_id", 6, VAL_SHARE))  # the seed draws anew


# --- choices, metrics, fingerprint -------------------------------------------------------------------------------


def test_best_accuracy_threshold_is_the_best_of_every_cut():
    rng = np.random.default_rng(3)
    for _ in range(20):
        y = rng.integers(0, 2, 40)
        p = np.round(rng.random(40), 1)  # ties
        threshold, acc = probe.best_accuracy_threshold(y, p)
        brute = max(accuracy_score(y, p >= t) for t in np.r_[np.unique(p), 2.0])
        assert acc == pytest.approx(brute) and accuracy_score(y, p >= threshold) == pytest.approx(acc)


def test_validation_choice_uses_validation_only_and_test_choice_uses_test():
    y_val, y_test = np.array([0, 0, 1, 1]), np.array([0, 1, 0, 1])
    path = {2: {"val": np.array([0.4, 0.3, 0.6, 0.7]), "test": np.array([0.9, 0.1, 0.8, 0.2])},
            5: {"val": np.array([0.6, 0.3, 0.4, 0.7]), "test": np.array([0.1, 0.9, 0.2, 0.8])}}
    assert probe.choose_on_validation(path, y_val, seed=0).iterations == 2  # val AUC 1.0 vs 0.75
    choice = probe.choose_on_test({0: path}, y_test)
    assert choice.iterations == 5 and choice.chosen_on == "test" and choice.n_configurations == 2


def test_pooled_metrics_are_scikit_learns_with_each_folds_threshold():
    rng = np.random.default_rng(0)
    rows = pd.DataFrame({"patient_id": np.repeat(np.arange(30), 2).astype(str), "label": rng.integers(0, 2, 60),
                         "probability": rng.random(60), "threshold": np.repeat([0.3, 0.5, 0.6], 20)})
    m = pooled_metrics(rows, n_resamples=50, level=0.95, seed=0)
    pred = rows.probability >= rows.threshold
    assert m["accuracy"]["value"] == pytest.approx(accuracy_score(rows.label, pred))
    assert m["balanced_accuracy"]["value"] == pytest.approx(balanced_accuracy_score(rows.label, pred))
    assert m["roc_auc"]["value"] == pytest.approx(roc_auc_score(rows.label, rows.probability))
    assert all(m[k]["low"] <= m[k]["value"] <= m[k]["high"] for k in m)
    summary = over_seeds([m, m])
    assert summary["accuracy"]["mean"] == pytest.approx(m["accuracy"]["value"]) and summary["accuracy"]["sd"] == 0


def test_a_twin_sits_at_similarity_one_in_the_fingerprint():
    rng = np.random.default_rng(0)
    train = rng.normal(size=(20, 8))
    test = np.vstack([train[3] * 2.0, rng.normal(size=(1, 8))])  # a scaled copy, and a stranger
    s = nearest_train_similarity(train, test)
    assert s[0] == pytest.approx(1.0) and s[1] < 0.95


def test_logistic_path_stops_where_asked_and_learns_a_separable_task():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 30)
    x = rng.normal(size=(60, 10)) + y[:, None]
    path = probe.logistic_path(x, y, {"test": x}, 1.0, (1, 50), seed=0)
    assert set(path) == {1, 50} and roc_auc_score(y, path[50]["test"]) > 0.9


# --- patches and controls -----------------------------------------------------------------------------------------


def test_patches_stay_in_the_film_and_are_shifted_at_most_the_jitter():
    pixels = np.ones((200, 300), np.float32)
    plan = PatchPlan(size_px=40, patches_per_site=20)
    for patch, x, y in site_patches(pixels, 100, 100, plan, np.random.default_rng(0)):
        assert patch.shape == (40, 40) and abs(x - 100) <= 11 and abs(y - 100) <= 11
    (patch, x, y), = site_patches(pixels, 5, 195, PatchPlan(size_px=40, patches_per_site=1), np.random.default_rng(0))
    assert patch.shape == (40, 40) and (x, y) == (20, 180)  # at a corner: moved inside


def test_bright_spots_lie_on_bright_tissue_and_the_statistics_see_a_centred_blob():
    yy, xx = np.mgrid[:256, :256]
    film = np.where((xx - 128) ** 2 + (yy - 128) ** 2 < 110**2, 0.3, 0.0).astype(np.float32)
    film += 0.6 * np.exp(-((xx - 150) ** 2 + (yy - 120) ** 2) / 50.0) * (film > 0)
    (x, y), = bright_spots(film, 1, 32)
    assert abs(x - 150) <= 3 and abs(y - 120) <= 3
    centred, off = film[104:136, 134:166], film[118:150, 148:180]
    stats = statistics(np.stack([centred, off]))
    assert stats["centre"][0] > stats["centre"][1] and stats["sd"][0] > 0
    assert stats["mean"] == pytest.approx(np.stack([centred, off]).mean(axis=(1, 2)))


# --- copies, random labels, models that memorise ------------------------------------------------------------------


def textured_films(table: pd.DataFrame, size: int = 32, seed: int = 0) -> pd.DataFrame:
    """``table`` with ``array_path`` to a smooth random texture per film (no two films alike), written to a temp
    folder: films a pixel model can tell apart, and nothing in them about their label."""
    import tempfile

    from scipy import ndimage

    from mammo_utils.protocols.items import save_npy

    folder = tempfile.mkdtemp(prefix="films-")
    rng = np.random.default_rng(seed)
    paths = []
    for image_id in table.image_id:
        x = ndimage.gaussian_filter(rng.random((size, size)), 2.0)
        save_npy(f"{folder}/{image_id}.npy", (x - x.min()) / (x.max() - x.min() + 1e-9))
        paths.append(f"{folder}/{image_id}.npy")
    return table.assign(array_path=paths)


def test_offline_copies_are_near_duplicates_and_nested(tmp_path):
    table = textured_films(films(3))
    image, *others = (np.load(p).astype(np.float32) for p in table.array_path)
    offline = OfflineAugment(flip_prob=0.5, shift=0.03, noise_sd=0.02)
    for seed in range(10):
        copy = offline_copy(image, seed, offline)
        assert copy.shape == image.shape and copy.min() >= 0 and copy.max() <= 1
        plain = min(np.abs(copy - image).mean(), np.abs(copy[:, ::-1] - image).mean())  # the flip undone
        assert plain < 0.6 * min(np.abs(o - image).mean() for o in others)  # nearer its film than any other film
    assert np.array_equal(offline_copy(image, 3, offline), offline_copy(image, 3, offline))
    from mammo_utils.config import AugmentConfig

    eight = augmented_copies(table, 8, tmp_path / "c", 32, AugmentConfig(), 0, "offline", offline)
    assert len(eight) == 8 * len(table) and set(eight.strength) == {"offline"}
    assert eight.item_id.str.contains("~o").all() and with_copies(eight, 2, "offline")["copy"].max() == 1
    again = augmented_copies(table, 2, tmp_path / "c", 32, AugmentConfig(), 0, "offline", offline)
    assert list(again.item_id) == list(with_copies(eight, 2).sort_values(["image_id", "copy"]).item_id) or \
        set(again.item_id) == set(with_copies(eight, 2).item_id)  # K = 2 is the first two of the K = 8 set


def test_random_labels_keep_one_label_per_woman_and_as_many_positive_women():
    table = copies(films(50), 4)
    random = with_labels(table, "random", seed=3)
    assert random.groupby("patient_id")["label"].nunique().max() == 1
    assert women_labels(random).sum() == women_labels(table).sum()
    assert not permuted_women_labels(table, 3).equals(permuted_women_labels(table, 4))
    assert with_labels(table, "real", seed=3) is table


def test_nearest_neighbour_copies_the_label_of_the_nearest_memory_item():
    memory = np.eye(4, dtype=np.float32)
    score, nearest, similarity = nearest_scores(memory, np.array([1, 0, 0, 1]), memory[[3, 1]] * 5)
    assert list(nearest) == [3, 1] and similarity == pytest.approx([1, 1])
    assert score[0] > 0 > score[1]  # positive where the nearest memory item is positive


def test_the_cnn_fits_random_labels_and_says_how_long_it_took():
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.random((48, 1, 16, 16)).astype(np.float32))
    y = rng.integers(0, 2, 48)
    fit = fit_until_memorised(x, y, x[:4], x[:8], CnnSettings(width=8, max_epochs=60, batch_size=16, lr=3e-3), 0)
    assert fit.train_accuracy >= 0.99 and 1 <= fit.epochs < 60 and fit.steps == fit.epochs * 3
    assert len(fit.test_path) == fit.epochs and fit.test_path[-1].shape == (8,)


def test_the_cnns_a2_row_is_one_cross_validation_every_copy_tested_once():
    items = split_arm(ARMS["A2 K=2 offline"], copies(films(20), 2), N_FOLDS, 0)
    pixels = np.random.default_rng(0).random((len(items), 16, 16)).astype(np.float32)
    a2, a5 = ARMS["A2 K=2 offline"], ARMS["A5 offline"]
    runs = run_cnn([a2, a5], items, pixels, 0, N_FOLDS, VAL_SHARE, CnnSettings(width=4, max_epochs=2))
    for run in runs.values():
        assert sorted(run.rows.item_id) == sorted(items.item_id)  # each copy exactly once
        assert len(run.folds) == N_FOLDS and all(f["epochs"] >= 1 for f in run.folds)
    assert {f["chosen_on"] for f in runs[a5.name].folds} == {"test"}


def _control(arm_name: str, broken: bool = False) -> dict:
    """1-NN on raw pixels under ``arm_name`` with random labels, on textured synthetic films and 8 offline
    copies of each."""
    import tempfile

    from mammo_utils.config import AugmentConfig

    table = textured_films(films(40, seed=5), size=24, seed=5)
    eight = augmented_copies(table, 8, tempfile.mkdtemp(prefix="copies-"), 24, AugmentConfig(), 0, "offline",
                             OfflineAugment())
    arm = ARMS[arm_name]
    items = table if not arm.copies else eight
    items = with_labels(items.drop(columns=["copy", "strength"], errors="ignore"), "random", seed=11)
    split = split_arm(arm, items, N_FOLDS, 0) if not broken else splits.folds_by(items, "image_id", N_FOLDS, 0)
    pixels = np.stack([np.load(p).astype(np.float32).ravel() for p in split.array_path])
    run = run_nearest(arm, split, lambda k: pixels, 0, N_FOLDS, VAL_SHARE)
    assert sorted(run.rows.item_id) == sorted(items.item_id)
    return pooled_metrics(run.rows, n_resamples=300, level=0.95, seed=0)


def test_positive_control_a_leak_pays_on_random_labels_and_the_honest_arm_stays_at_chance():
    leaky = _control("A2 K=8 offline")
    assert leaky["accuracy"]["value"] >= 0.9  # the protocol alone, on labels that mean nothing
    honest = _control("A0")
    assert honest["balanced_accuracy"]["low"] <= 0.5 <= honest["balanced_accuracy"]["high"]


def test_the_positive_control_can_tell_a_leak_that_pays_from_one_that_does_not():
    # The same copies and model with A2's split broken (a film's copies dealt together, as if split by film): no
    # test copy has a twin in training, and the random labels fall back to chance.
    broken = _control("A2 K=8 offline", broken=True)
    assert broken["accuracy"]["value"] < 0.75
    assert broken["balanced_accuracy"]["low"] <= 0.5 <= broken["balanced_accuracy"]["high"]


# --- configuration and the stage --------------------------------------------------------------------------------


def test_reproduce_runs_the_study_at_smoke_where_the_dataset_is_cross_validated_and_otherwise_when_asked():
    # CI's real-MIAS reproduction runs it at smoke; at demo it runs on its own (`make protocols`), which keeps
    # `reproduce` within its budget.
    assert load_config("smoke", "mias").protocols.enabled and not load_config("smoke", "synthetic").protocols.enabled
    assert not load_config("demo", "mias").protocols.enabled
    assert not load_config("smoke", "cbis-ddsm").protocols.enabled
    demo = load_config("demo", "mias").protocols
    assert demo.seeds >= 5 and demo.copies == (1, 2, 4, 8) and demo.cnn_copies == demo.copies
    assert demo.copy_strengths == ("finetune", "offline") and demo.label_sets == ("real", "random")
    cfg = load_config("smoke", "synthetic", overrides=["protocols.copies=8,2", "protocols.enabled=true"])
    assert cfg.protocols.copies == (2, 8) and cfg.protocols.enabled
    with pytest.raises(Exception, match="copy_strengths"):
        load_config("smoke", "synthetic", overrides=["protocols.copy_strengths=rotate"])
    assert load_config("smoke", "synthetic", overrides=["protocols.cnn_seeds=2"]).protocols.cnn_seeds == 2
    with pytest.raises(Exception, match="cnn_seeds"):
        load_config("smoke", "synthetic", overrides=["protocols.cnn_seeds=3"])  # more than protocols.seeds


def test_the_stage_writes_its_table_figures_and_strict_json(tiny_cfg):
    from dataclasses import replace

    from mammo_utils.prepare.stage import run_prepare
    from mammo_utils.protocols.study import run_protocols

    cfg = replace(tiny_cfg, protocols=replace(tiny_cfg.protocols, seeds=2, copies=(1, 2), cnn_copies=(2,),
                                              cnn_max_epochs=3, cnn_seeds=2))
    run_prepare(cfg, workers=1)
    out = run_protocols(cfg)  # stage 02 has not run: the self-supervised rows are left out, with the reason
    for name in ("protocols.json", "protocols.md", "protocols.csv", "protocols.png", "fingerprint.png",
                 "predictions.csv.gz", "readme_section.md"):
        assert (out / name).stat().st_size > 100, name
    summary = json.loads((out / "protocols.json").read_text(), parse_constant=lambda c: pytest.fail(c))
    keys = {(r["model"], r["features"], r["arm"], r["labels"]) for r in summary["results"]}
    film_arms = ("A0", "A1", "A2 K=1 finetune", "A2 K=2 offline", "A4", "A5 finetune", "A5 offline")
    for labels in ("real", "random"):
        assert {("logistic", "random", a, labels) for a in (*film_arms, "A3a", "A3b")} <= keys
        assert {("nearest", "pixels", a, labels) for a in (*film_arms, "A3a", "A3b")} <= keys
        assert {("logistic", stat, "A3b", labels) for stat in ("mean", "sd", "centre")} <= keys
        assert {("cnn", "pixels", a, labels) for a in ("A0", "A4", "A1", "A2 K=2 offline", "A5 offline")} <= keys
    assert {s["features"] for s in summary["skipped"]} == {"simclr"} and summary["skipped"][0]["reason"]
    a0 = next(r for r in summary["results"] if r["arm"] == "A0" and r["model"] == "logistic")
    assert a0["leak"]["women_in_train_and_test"] == 0 and len(a0["seeds"]) == 2
    n_copies = 2 * summary["items"]["films"]
    for labels in ("real", "random"):
        # The CNN's A2 row: one cross-validation per seed, each of its seeds testing all 2 x films copies.
        cnn = next(r for r in summary["results"] if r["arm"] == "A2 K=2 offline" and r["model"] == "cnn"
                   and r["labels"] == labels)
        assert [s["seed"] for s in cnn["seeds"]] == summary["seeds"][:2]
        assert all(sum(f["n_test"] for f in s["folds"]) == n_copies for s in cnn["seeds"])
        assert all(e >= 1 for e in cnn["fit"]["epochs"]) and all(s >= 1 for s in cnn["fit"]["steps"])
    predictions = pd.read_csv(out / "predictions.csv.gz", dtype={"item_id": str})
    assert {"item_id", "fold", "score", "threshold", "labels"} <= set(predictions.columns)
    cnn_a2 = predictions.query("model == 'cnn' and arm == 'A2 K=2 offline'")
    assert cnn_a2.groupby("labels").item_id.agg(lambda ids: ids.is_unique and len(ids) == n_copies).all()
    assert "CNN trained" in (out / "protocols.md").read_text()  # its epochs and steps, stated
    assert "all-negative" in (out / "protocols.md").read_text() or "floor" in (out / "protocols.md").read_text()
    assert "| arm | leak |" in (out / "readme_section.md").read_text()
    stamp = (out / "stage.json").stat().st_mtime_ns
    run_protocols(cfg)
    assert (out / "stage.json").stat().st_mtime_ns == stamp  # unchanged settings: not run again


def test_readme_headline_names_the_highest_leaky_score_and_the_honest_range():
    from mammo_utils.protocols.table import _headline

    def entry(arm, model, features, labels, accuracy, honest=False):
        return {"arm": arm, "model": model, "features": features, "labels": labels, "honest": honest,
                "over_seeds": {"accuracy": {"mean": accuracy}}, "first_seed": {"accuracy": {"value": accuracy}}}

    films = [entry("A0", "nearest", "pixels", "real", 0.55, honest=True),
             entry("A0", "nearest", "pixels", "random", 0.51, honest=True),
             entry("A2 K=8 offline", "nearest", "simclr", "real", 0.93),
             entry("A5 offline", "nearest", "pixels", "real", 0.90),
             entry("A5 offline", "nearest", "simclr", "random", 0.96),
             entry("A0", "cnn", "pixels", "random", 0.99, honest=True)]  # honest: never the leaky headline
    text = _headline(films)
    assert "real labels 0.930 (A2 K=8 offline, 1-NN on simclr)" in text
    assert "random labels 0.960 (A5 offline, 1-NN on simclr)" in text
    assert "0.550-0.550 on real labels and 0.510-0.990 on random labels" in text
