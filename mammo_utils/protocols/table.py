"""The study's summary (``protocols.json``) and its tables (``protocols.md``, ``protocols.csv``, and the README's
short section), each generated from the summary alone so that every number can be traced to the JSON.

Wording rule: the paper states no task, split or protocol, so nothing here says it used any of these protocols;
the tables show what each protocol does to the number on the same films, beside the claimed 96.7%.
"""

from __future__ import annotations

import re
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from mammo_utils.evaluate.stage import PAPER_CLAIM, copy_sibling_accuracy
from mammo_utils.protocols.scoring import REPORTED
from mammo_utils.protocols.splits import expected_twin_share
from mammo_utils.runs.files import atomic_write_text

if TYPE_CHECKING:
    from mammo_utils.protocols.inputs import Study

MODELS = {"logistic": "logistic regression", "nearest": "1-NN", "cnn": "memorising CNN"}
INTRO = (
    "What each evaluation protocol does to the reported number on the same films: within a family only the split, "
    "and what is chosen on the test fold, change. Three kinds of model: logistic regression on frozen features, and "
    "two that memorise, 1-nearest-neighbour and a CNN trained until it fits its training set. Every arm and model "
    "runs twice: on the real labels, and on labels permuted among women (each woman keeps one label), where an "
    "honest protocol can only score chance. The paper (Saeed & Naveed 2025) reports 96.7% accuracy on INbreast and "
    "MIAS and states no task, split or protocol; nothing here says which protocol it used. A0 and A3b are the honest "
    "arms; the others leak on purpose."
)


def column(entry: dict) -> str:
    """A result's model and features, e.g. ``1-NN · pixels``."""
    return f"{MODELS[entry['model']]} · {entry['features']}"


def summary(study: Study, results: list[dict], skipped: list[dict], seconds: dict) -> dict:
    """Everything ``protocols.json`` holds (without the provenance the stage adds)."""
    cfg, p = study.cfg, study.cfg.protocols
    films, patches = study.films, study.patches
    per = films.groupby("patient_id")["label"].agg(["nunique", "size"])
    per = per[per["size"] > 1]
    return {
        "dataset": cfg.dataset, "profile": cfg.profile, "task": cfg.task, "paper_claim": PAPER_CLAIM,
        "intro": INTRO, "n_folds": study.n_folds, "seeds": study.seeds, "ci_level": cfg.evaluate.ci_level,
        "bootstrap_resamples": cfg.evaluate.bootstrap_resamples, "ci_unit": "patient", "ci_from": "first seed",
        "settings": asdict(p), "validation_share": study.val_share, "backbone": cfg.backbone,
        "arms": [{**asdict(a), "label": a.label} for a in study.arms],
        "items": {
            "films": len(films), "women": int(films.patient_id.nunique()), "positive_films": int(films.label.sum()),
            "copies": len(study.copies), "film_size_px": cfg.image_size_px, "pixels_px": p.pixels_px,
            "patches": len(patches), "lesion_patches": int(patches.label.sum()),
            "lesion_sites": int(patches.loc[patches.label == 1, "site_id"].nunique()),
            "normal_sites": int(patches.loc[patches.label == 0, "site_id"].nunique()),
            "patch_size_px": study.plan.size_px, "patch_film_size_px": cfg.crops.film_size_px,
            "jitter_px": study.plan.jitter,
        },
        "facts": {
            "women_with_discordant_films": float((per["nunique"] > 1).mean()) if len(per) else float("nan"),
            "copy_sibling_accuracy": copy_sibling_accuracy(films, study.index),
            "all_negative_accuracy": float((films.label == 0).mean()),
            "all_negative_accuracy_patches": float((patches.label == 0).mean()),
            "expected_twin_share": {str(k): expected_twin_share(k, study.n_folds, study.val_share) for k in p.copies},
        },
        "controls": {"statistic_auc": study.controls},
        "backbones": {study.ssl: [r.tag if r is not None else None for r in study.fold_refs],
                      "random": study.random_ref.tag},
        "results": results, "skipped": skipped, "seconds": seconds,
    }


def _value(entry: dict, metric: str) -> float:
    return entry["over_seeds"][metric]["mean"]


def _cell(entry: dict | None, metric: str = "accuracy") -> str:
    if entry is None or not np.isfinite(_value(entry, metric)):
        return "–"
    return f"{_value(entry, metric):.3f}"


def grid(s: dict, family: str, label_set: str, metric: str) -> tuple[list[str], list[list[str]]]:
    """A family's table for one label set: one row per arm, one column per model · features (mean over seeds)."""
    results = [e for e in s["results"] if e["family"] == family and e["labels"] == label_set]
    columns = list(dict.fromkeys(column(e) for e in results))
    arms = list(dict.fromkeys(e["arm"] for e in results))
    at = {(e["arm"], column(e)): e for e in results}
    rows = [[f"**{a}** (honest)" if at[next(k for k in at if k[0] == a)]["honest"] else a]
            + [_cell(at.get((a, c)), metric) for c in columns] for a in arms]
    return columns, rows


def _markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


def leak_cell(entry: dict) -> str:
    """The numbers that show an arm's leak."""
    leak, name, parts = entry["leak"], entry["arm"], []
    if leak.get("women_in_train_and_test", 0) > 0:
        parts.append(f"{leak['women_in_train_and_test']:.1f} women in train and test per fold")
    if name.startswith(("A2", "A5")):
        parts.append(f"{leak['test_share_film_in_train']:.0%} of test copies have a twin in training")
    if "nearest_is_twin" in leak and name.startswith(("A1", "A2", "A5", "A3a")):
        parts.append(f"nearest item is a twin for {leak['nearest_is_twin']:.0%}, the same woman for "
                     f"{leak['nearest_is_same_woman']:.0%}")
    if name == "A3a":
        parts.append(f"{leak['test_share_overlapping_train']:.0%} of test patches overlap a training patch")
    if entry["chosen_on"] == "test":
        parts.append(f"chosen on test among N = {entry['n_configurations']}")
    return "; ".join(parts) or "none"


def rows(summary_: dict) -> pd.DataFrame:
    """One row per (model, features, arm, labels): the flat table ``protocols.csv`` holds."""
    out = []
    for e in summary_["results"]:
        row = {k: e[k] for k in ("model", "features", "arm", "labels", "family", "honest", "copies", "strength",
                                 "chosen_on", "n_configurations")}
        row.update(n_seeds=e["over_seeds"]["accuracy"]["n_seeds"], n_test_items=e["n_test_items_per_seed"],
                   **e["leak"])
        for m in REPORTED:
            s, first = e["over_seeds"][m], e["first_seed"][m]
            row.update({f"{m}_mean": s["mean"], f"{m}_sd": s["sd"], f"{m}_first_seed": first["value"],
                        f"{m}_low": first["low"], f"{m}_high": first["high"]})
        if "fit" in e:
            row.update(cnn_epochs_max=max(e["fit"]["epochs"]), cnn_steps_max=max(e["fit"]["steps"]),
                       cnn_train_accuracy_min=min(e["fit"]["train_accuracy"]))
        row["fingerprint_median"] = (e.get("fingerprint") or {}).get("median")
        out.append(row)
    return pd.DataFrame(out)


def _detail(e: dict) -> str:
    parts = []
    for m in REPORTED:
        s, f = e["over_seeds"][m], e["first_seed"][m]
        sd = f" ± {s['sd']:.3f}" if np.isfinite(s["sd"]) else ""
        ci = f" [{f['low']:.3f}, {f['high']:.3f}]" if np.isfinite(f["low"]) else ""
        parts.append(f"{s['mean']:.3f}{sd}{ci}" if np.isfinite(s["mean"]) else "n/a")
    return " | ".join(parts)


def markdown(s: dict) -> str:
    """``protocols.md``: the tables (real and random labels), every row in detail, the controls, what was left out."""
    claim, facts, items, p = s["paper_claim"]["accuracy"], s["facts"], s["items"], s["settings"]
    lines = [f"# Protocol study: {s['dataset']}, profile {s['profile']}", "", s["intro"], "",
             f"Whole films: task `{s['task']}`, {items['films']} films of {items['women']} women "
             f"({items['positive_films']} positive), at {items['film_size_px']} px; **answering negative for every "
             f"film scores {facts['all_negative_accuracy']:.3f}** (the floor). Copies: K = "
             f"{', '.join(map(str, p['copies']))} per film, of two strengths: `finetune` (the project's fine-tuning "
             "augmentation: a crop of 80-100% with the aspect changed, a flip half the time, up to 10 degrees) and "
             f"`offline` (the offline augmentation of public pre-augmented mammography sets: a flip half the time, a "
             f"shift of up to {p['offline_shift']:.0%} of the side, noise of SD {p['offline_noise_sd']}). Patches: "
             f"lesion vs normal tissue, {items['patch_size_px']} px of the films at {items['patch_film_size_px']} px, "
             f"{items['lesion_sites']} lesion sites and {items['normal_sites']} normal sites, {items['patches']} "
             f"patches (all-negative floor {facts['all_negative_accuracy_patches']:.3f}). {s['n_folds']}-fold "
             f"cross-validation, {len(s['seeds'])} seeds (each deals the leaky splits and the random labels anew); "
             f"the memorising CNN runs one cross-validation per seed on {p['cnn_seeds']} of them (every item tested "
             "exactly once in each), "
             f"on {items['pixels_px']} px pixels, until its training accuracy reaches {p['cnn_fit_accuracy']}.", ""]
    for family, metric, title in (("films", "accuracy", "Whole films: accuracy (mean over seeds)"),
                                  ("patches", "roc_auc", "Patches: ROC AUC (mean over seeds)")):
        for label_set in ("real", "random"):
            header, body = grid(s, family, label_set, metric)
            if not body:
                continue
            lines += [f"## {title}, {label_set} labels", ""] + _markdown_table(["arm", *header], body) + [""]
    lines += [f"The paper's claim: {claim:.3f} accuracy, no interval, task, split and protocol not stated.", "",
              "## Every row", "",
              "Mean ± SD over seeds, with the first seed's 95% patient-bootstrap interval "
              f"({s['bootstrap_resamples']} resamples of women).", "",
              "| arm | model · features | labels | accuracy | balanced accuracy | ROC AUC | leak measured |",
              "|---|---|---|---|---|---|---|"]
    for e in s["results"]:
        arm = f"**{e['arm']}** (honest)" if e["honest"] else e["arm"]
        fit = ""
        if "fit" in e:
            reached = min(e["fit"]["train_accuracy"])
            fit = (f"; CNN trained {min(e['fit']['epochs'])}-{max(e['fit']['epochs'])} epochs "
                   f"({min(e['fit']['steps'])}-{max(e['fit']['steps'])} steps) per fold, training accuracy ≥ "
                   f"{reached:.3f}" + ("" if reached >= p["cnn_fit_accuracy"] else
                                       f", short of {p['cnn_fit_accuracy']} (it did not fit every fold)"))
        lines.append(f"| {arm} | {column(e)} | {e['labels']} | {_detail(e)} | {leak_cell(e)}{fit} |")
    disc, sib = facts["women_with_discordant_films"], facts["copy_sibling_accuracy"]
    lines += ["", "## Reading it", "",
              f"- A4 can never fall below the floor ({facts['all_negative_accuracy']:.3f}): among the thresholds it "
              "chooses on test is one above every score, which calls every film negative. Its accuracy above 0.5 is "
              "a property of the arm, not a finding.",
              f"- A1: {disc:.0%} of the women with two or more films have films with different labels"
              + (f"; copying each film's label from another film of the woman (the other view of the same breast where "
                 f"there is one) scores {sib:.3f} accuracy" if sib is not None
                 else "") + ". With random labels every woman's films share one label, so A1 leaks as much as a model "
              "recognises a woman from her other film.",
              "- Single statistics (patches): " + "; ".join(
                  f"{k} ROC AUC " + ", ".join(f"{v:.3f} {c.replace('_', ' ')}" for c, v in d.items())
                  for k, d in s["controls"]["statistic_auc"].items()) + ". A model that does no better than one "
              "statistic has learnt nothing more. A3 is an easier task than screening whole films: the patch is cut "
              "where the lesion is, so the location is given.", ""]
    if s["skipped"]:
        lines += ["Left out: " + "; ".join(sorted({f"{x['model']} · {x['features']} ({x['reason']})"
                                                    for x in s["skipped"]})) + ".", ""]
    lines += [f"Wall time: {s['seconds']['total'] / 60:.1f} min (" + ", ".join(
        f"{k} {v:.0f} s" for k, v in s["seconds"].items() if k != "total") + "). Figures: `protocols.png`, "
              "`fingerprint.png`; every first-seed prediction: `predictions.csv.gz`.", ""]
    return "\n".join(lines)


def _headline(films: list[dict]) -> str:
    """One sentence read off the results: the highest leaky accuracy on each label set (arm and model), and the
    range of the honest arm's accuracies, so that the README's prose is generated, not typed."""
    words = []
    for labels in ("real", "random"):
        leaky = [e for e in films if e["labels"] == labels and not e["honest"]
                 and np.isfinite(_value(e, "accuracy"))]
        if leaky:
            top = max(leaky, key=lambda e: _value(e, "accuracy"))
            words.append(f"on {labels} labels {_value(top, 'accuracy'):.3f} ({top['arm']}, {MODELS[top['model']]} "
                         f"on {top['features']})")
    ranges = []
    for labels in ("real", "random"):
        honest = [_value(e, "accuracy") for e in films
                  if e["honest"] and e["labels"] == labels and np.isfinite(_value(e, "accuracy"))]
        if honest:
            ranges.append(f"{min(honest):.3f}-{max(honest):.3f} on {labels} labels")
    if not words or not ranges:
        return ""
    return f"The highest leaky score is {' and '.join(words)}; the honest arm A0 scores {' and '.join(ranges)}."


README_MODELS = (("nearest", "pixels"), ("nearest", None), ("cnn", "pixels"), ("logistic", None))


def readme_section(s: dict, figure: str = "docs/results/demo-mias/protocols.png", heading: bool = True) -> str:
    """The README's section "Where a 96.7% can come from": the film arms' accuracy under the memorising models and
    the logistic regression (real / random labels), generated from ``protocols.json`` (``heading=False``: the
    body only, as the README's generated block holds it)."""
    films = [e for e in s["results"] if e["family"] == "films"]
    backbone = next((f for f in ("simclr", "random")
                     if any(e["model"] == "logistic" and e["features"] == f for e in films)), "random")
    at = {(e["model"], e["features"], e["arm"], e["labels"]): e for e in films}
    header = ["arm", "leak"] + [f"{MODELS[m]} · {f or backbone}" for m, f in README_MODELS]
    body = []
    for arm in dict.fromkeys(e["arm"] for e in films):
        first = next(e for e in films if e["arm"] == arm)
        cells = [f"**{arm}**" if first["honest"] else arm, _singular(first["leak_description"])]
        for m, f in README_MODELS:
            real, rand = at.get((m, f or backbone, arm, "real")), at.get((m, f or backbone, arm, "random"))
            cells.append(f"{_cell(real)} / {_cell(rand)}")
        body.append(cells)
    floor = s["facts"]["all_negative_accuracy"]
    return "\n".join([
        *(["## Where a 96.7% can come from", ""] if heading else []),
        f"Accuracy on whole {s['dataset'].upper()} films ({s['profile']}; mean over {len(s['seeds'])} seeds; real "
        f"labels / labels permuted among women). Answering \"no finding\" for every film scores {floor:.3f}; the "
        f"paper claims {s['paper_claim']['accuracy']:.3f} and states no split. {_headline(films)}", "",
        *_markdown_table(header, body), "",
        f"![The protocol study]({figure})", "",
        "Generated from `protocols.json` (`mammo_utils.protocols.table.readme_section`); every arm, model, copy "
        "strength and interval: [`protocols.md`](docs/results/demo-mias/protocols.md).", ""])


def write(out: Path, summary_: dict) -> None:
    """Write ``protocols.md``, ``protocols.csv`` and ``readme_section.md``."""
    atomic_write_text(Path(out) / "protocols.md", markdown(summary_))
    atomic_write_text(Path(out) / "protocols.csv", rows(summary_).to_csv(index=False))
    atomic_write_text(Path(out) / "readme_section.md", readme_section(summary_))


def _singular(leak: str) -> str:
    """"1 finetune copy", where a study run before the arms said so themselves wrote "1 finetune copies"."""
    return re.sub(r"^1 (\w+) copies\b", r"1 \1 copy", leak)
