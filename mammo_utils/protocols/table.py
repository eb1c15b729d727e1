"""The study's summary (``protocols.json``) and its table (``protocols.md``, ``protocols.csv``).

Wording rule: the paper states no task, split or protocol, so nothing here says it used any of these protocols;
the table shows what each protocol does to the number on the same films, beside the claimed 96.7%.
"""

from __future__ import annotations

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

MODELS = {"logistic": "frozen features + logistic regression", "cnn": "fine-tuned CNN (small)"}
INTRO = (
    "What each evaluation protocol does to the reported number on the same films, with the same backbones and the "
    "same classifier: only the split, and what is chosen on the test fold, change within a family. The paper "
    "(Saeed & Naveed 2025) reports 96.7% accuracy on INbreast and MIAS and states no task, split or protocol; "
    "nothing here says which protocol it used. A0 and A3b are the honest arms; the others leak on purpose."
)


def _women_with_discordant_films(films: pd.DataFrame) -> float:
    """Share of women (with two or more films) whose films do not all carry the same label."""
    per = films.groupby("patient_id")["label"].agg(["nunique", "size"])
    per = per[per["size"] > 1]
    return float((per["nunique"] > 1).mean()) if len(per) else float("nan")


def summary(study: Study, results: list[dict], skipped: list[dict], seconds: dict) -> dict:
    """Everything ``protocols.json`` holds (without the provenance the stage adds)."""
    cfg, p = study.cfg, study.cfg.protocols
    films, patches = study.films, study.patches
    sibling = copy_sibling_accuracy(films, study.index)
    return {
        "dataset": cfg.dataset, "profile": cfg.profile, "task": cfg.task, "paper_claim": PAPER_CLAIM,
        "intro": INTRO, "n_folds": study.n_folds, "seeds": study.seeds, "ci_level": cfg.evaluate.ci_level,
        "bootstrap_resamples": cfg.evaluate.bootstrap_resamples, "ci_unit": "patient",
        "settings": asdict(p), "validation_share": study.val_share,
        "arms": [{**asdict(a), "label": a.label} for a in study.arms],
        "items": {
            "films": len(films), "women": int(films.patient_id.nunique()),
            "positive_films": int(films.label.sum()), "copies": len(study.copies),
            "patches": len(patches), "lesion_patches": int(patches.label.sum()),
            "lesion_sites": int(patches.loc[patches.label == 1, "site_id"].nunique()),
            "normal_sites": int(patches.loc[patches.label == 0, "site_id"].nunique()),
            "patch_size_px": p.patch_size_px, "jitter_px": study.plan.jitter,
        },
        "facts": {
            "women_with_discordant_films": _women_with_discordant_films(films),
            "copy_sibling_accuracy": sibling,
            "all_negative_accuracy": float((films.label == 0).mean()),
            "expected_twin_share": {str(k): expected_twin_share(k, study.n_folds, study.val_share) for k in p.copies},
        },
        "controls": {"centre_contrast_auc": study.controls},
        "backbones": {f: [r.tag if r is not None else None for r in refs] for f, refs in study.fold_refs.items()},
        "results": results, "skipped": skipped, "seconds": seconds,
        "findings": findings(results),
    }


def _metric_cell(entry: dict, metric: str) -> str:
    s = entry["over_seeds"][metric]
    if not np.isfinite(s["mean"]):
        return "n/a"
    if "pooled" in entry:
        v = entry["pooled"][metric]
        spread = f" (folds sd {s['sd']:.3f})" if np.isfinite(s["sd"]) else " (one fold)"
        return f"{v['value']:.3f} [{v['low']:.3f}, {v['high']:.3f}]{spread}"
    sd = f" ± {s['sd']:.3f}" if np.isfinite(s["sd"]) else ""
    return f"{s['mean']:.3f}{sd} [{s['low']:.3f}, {s['high']:.3f}]"


def leak_cell(entry: dict) -> str:
    """The one number that shows an arm's leak."""
    leak, name = entry["leak"], entry["arm"]
    parts = []
    if leak.get("women_in_train_and_test", 0) > 0:
        parts.append(f"{leak['women_in_train_and_test']:.1f} women in train and test per fold")
    if name.startswith(("A2", "A5")):
        parts.append(f"{leak['test_share_film_in_train']:.0%} of test copies have a twin in training")
    if name == "A3a":
        parts.append(f"{leak['test_share_overlapping_train']:.0%} of test patches overlap a training patch")
    if entry["chosen_on"] == "test":
        parts.append(f"epoch, seed and threshold chosen on test among N = {entry['n_configurations']}")
    return "; ".join(parts) or "none"


def rows(summary_: dict) -> pd.DataFrame:
    """One row per (model, arm, init): the flat table ``protocols.csv`` holds."""
    out = []
    for e in summary_["results"]:
        row = {"model": e["model"], "arm": e["arm"], "family": e["family"], "init": e["init"], "honest": e["honest"],
               "leak": e["leak_description"], "chosen_on": e["chosen_on"], "n_configurations": e["n_configurations"],
               "n_seeds": e["over_seeds"]["accuracy"]["n_seeds"], **e["leak"]}
        for m in REPORTED:
            s = e["over_seeds"][m]
            row.update({f"{m}_mean": s["mean"], f"{m}_sd": s["sd"], f"{m}_low": s["low"], f"{m}_high": s["high"]})
            if "pooled" in e:
                row.update({f"{m}_pooled": e["pooled"][m]["value"], f"{m}_pooled_low": e["pooled"][m]["low"],
                            f"{m}_pooled_high": e["pooled"][m]["high"]})
        row["fingerprint_median"] = (e.get("fingerprint") or {}).get("median")
        out.append(row)
    return pd.DataFrame(out)


def findings(results: list[dict]) -> list[str]:
    """Each leaky arm against the honest arm of its family, same model and init: the change in mean accuracy and
    ROC AUC, and whether it exceeds twice the larger of the two spreads over seeds."""
    honest = {(e["model"], e["family"], e["init"]): e for e in results if e["honest"]}
    lines = []
    for e in results:
        ref = honest.get((e["model"], e["family"], e["init"]))
        if e["honest"] or ref is None:
            continue
        parts = []
        for m in ("accuracy", "roc_auc"):
            a, b = e["over_seeds"][m], ref["over_seeds"][m]
            if not (np.isfinite(a["mean"]) and np.isfinite(b["mean"])):
                continue
            spread = np.nanmax([a["sd"], b["sd"], 0.0])
            verdict = "beyond" if abs(a["mean"] - b["mean"]) > 2 * spread else "within"
            parts.append(f"{m.replace('_', ' ')} {a['mean'] - b['mean']:+.3f} ({verdict} twice the seeds' spread)")
        if parts:
            lines.append(f"{e['arm']} vs {ref['arm']} ({MODELS[e['model']]}, {e['init']} init): " + ", ".join(parts))
    return lines


def markdown(s: dict) -> str:
    """``protocols.md``: the table, what each leak measured, the controls and what was left out."""
    claim = s["paper_claim"]["accuracy"]
    facts, items = s["facts"], s["items"]
    lines = [f"# Protocol study: {s['dataset']}, profile {s['profile']}", "", s["intro"], "",
             f"Whole films: task `{s['task']}`, {items['films']} films of {items['women']} women "
             f"({items['positive_films']} positive; answering negative for every film scores "
             f"{facts['all_negative_accuracy']:.3f}). Patches: lesion vs normal tissue, {items['patch_size_px']} px "
             f"at the films' native resolution, {items['lesion_sites']} lesion sites and {items['normal_sites']} "
             f"normal sites, {items['patches']} patches. {s['n_folds']}-fold cross-validation; "
             f"{len(s['seeds'])} seeds; values are means ± SD over seeds with the 95% patient-bootstrap interval "
             f"({s['bootstrap_resamples']} resamples of women) averaged over seeds. The fine-tuned CNN trains once per "
             "seed (seed s tests fold s): its value is the seeds' pooled test predictions with their interval, and "
             "the SD is over folds.", "",
             "| arm | model | init | accuracy | balanced accuracy | ROC AUC | leak measured |",
             "|---|---|---|---|---|---|---|"]
    for e in s["results"]:
        arm = f"**{e['arm']}** (honest)" if e["honest"] else e["arm"]
        lines.append(f"| {arm} | {MODELS[e['model']]} | {e['init']} | " + " | ".join(
            _metric_cell(e, m) for m in REPORTED) + f" | {leak_cell(e)} |")
    lines.append(f"| paper's claim | not stated | not stated | {claim:.3f} (no interval) | not reported | "
                 "not reported | task, split and protocol not stated |")
    lines += ["", "## What each leak did", ""] + [f"- {f}" for f in s["findings"]]
    disc, sib = facts["women_with_discordant_films"], facts["copy_sibling_accuracy"]
    lines += ["", f"A1: {disc:.0%} of the women with two or more films have films with different labels; copying each "
              f"film's label from the woman's other film scores {sib:.3f} accuracy" if sib is not None else "",
              "(where a woman's films usually differ, recognising her does not give her label away, so A1 can move "
              "the number little).", "",
              "A3 is an easier task than screening whole films: the patch is cut where the lesion is (or at a bright "
              "spot of a normal film), so the location is given. Controls: lesion patches are shifted off-centre "
              f"by up to {items['jitter_px']} px and normal patches are centred on bright spots; the ROC AUC of "
              "\"centre brighter than the patch\" alone is " + ", ".join(
                  f"{v:.3f} {k.replace('_', ' ')}" for k, v in s["controls"]["centre_contrast_auc"].items()) + ".", ""]
    if s["skipped"]:
        lines += ["Left out: " + "; ".join(sorted({f"{x['model']} {x['init']} ({x['reason']})" for x in s["skipped"]}))
                  + ".", ""]
    lines += [f"Wall time: {s['seconds']['total'] / 60:.1f} min (" + ", ".join(
        f"{k} {v:.0f} s" for k, v in s["seconds"].items() if k != "total") + "). Figures: `protocols.png`, "
              "`fingerprint.png`; every prediction: `predictions.csv`.", ""]
    return "\n".join(lines)


def write(out: Path, summary_: dict) -> None:
    """Write ``protocols.md`` and ``protocols.csv``."""
    atomic_write_text(Path(out) / "protocols.md", markdown(summary_))
    atomic_write_text(Path(out) / "protocols.csv", rows(summary_).to_csv(index=False))
