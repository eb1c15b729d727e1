"""Checks of notebook 04's exercises (evaluation), and the small tables they are checked on.

Each check compares the learner's answer with the package's own implementation: :func:`~mammo_utils.evaluate.metrics.
binary_metrics` (and scikit-learn's scores), :func:`~mammo_utils.evaluate.metrics.choose_threshold`, :func:`~mammo_utils.
metrics.bootstrap_ci` and :func:`~mammo_utils.evaluate.stage.copy_sibling_accuracy`. Where a typical mistake gives a
recognisable answer (decisions with ``>`` instead of ``>=``, a threshold that maximises accuracy, a bootstrap of
images instead of women), the check says which one it is.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pandas as pd

from mammo_utils.course import check

# ---------------------------------------------------------------------------------------------------------------
# 4.1 Sensitivity, specificity, balanced accuracy


def _metric_cases() -> list[tuple[str, np.ndarray, np.ndarray, float]]:
    """(name, labels, scores, threshold): random tables whose scores include the threshold itself, and the edges."""
    rng = np.random.default_rng(0)
    cases = []
    for n, prevalence in ((40, 0.3), (57, 0.15), (200, 0.5), (9, 0.6)):
        y = (rng.random(n) < prevalence).astype(int)
        y[:2] = [0, 1]  # both classes
        p = np.round(1 / (1 + np.exp(-rng.normal(1.0 * y, 1.0))), 2)  # rounded: several films share a score
        cases.append((f"{n} films, {y.sum()} positive", y, p, float(np.median(p))))
    y = np.array([0, 1, 1, 0, 1, 0, 0])
    p = np.array([0.2, 0.7, 0.4, 0.4, 0.9, 0.1, 0.6])
    cases += [("7 films, threshold 0.0 (everything positive)", y, p, 0.0),
              ("7 films, threshold 0.95 (everything negative)", y, p, 0.95),
              ("6 films, all negative", np.zeros(6, int), np.array([0.1, 0.6, 0.3, 0.8, 0.2, 0.5]), 0.5),
              ("5 films, all positive", np.ones(5, int), np.array([0.9, 0.4, 0.7, 0.5, 0.3]), 0.5)]
    return cases


def _same(got: float, expected: float) -> bool:
    return (math.isnan(expected) and math.isnan(got)) or (not math.isnan(got) and math.isclose(got, expected,
                                                                                                abs_tol=1e-9))


def _three(y, p, threshold, strict: bool = False) -> tuple[float, float, float]:
    """Sensitivity, specificity, balanced accuracy of ``p >= threshold`` (or ``p > threshold``) for diagnoses."""
    from mammo_utils.evaluate.metrics import binary_metrics

    m = binary_metrics(y, p, float(np.nextafter(threshold, np.inf)) if strict else threshold)
    return m["sensitivity"], m["specificity"], (m["sensitivity"] + m["specificity"]) / 2


@check("4.1 Sensitivity, specificity, balanced accuracy", hint="Decide first (a film whose probability equals the "
       "threshold is called positive), then ask two questions: of the positive films, what share did we call "
       "positive; of the negative films, what share did we call negative. A share of nothing does not exist.",
       recipe="decision = p >= threshold; count TP, FN (positives called positive / negative) and TN, FP; "
       "sensitivity = TP / (TP + FN), specificity = TN / (TN + FP), balanced accuracy their mean; a ratio whose "
       "denominator is 0 is float('nan'), not 0. Return the three as a tuple.")
def check_sensitivity_specificity(fn: Callable) -> str:
    """Compare ``fn(y, p, threshold)`` with :func:`~mammo_utils.evaluate.metrics.binary_metrics` (and scikit-learn's
    ``recall_score`` / ``balanced_accuracy_score`` where both classes are present) on random tables and edges."""
    from sklearn.metrics import balanced_accuracy_score, recall_score

    from mammo_utils.evaluate.metrics import binary_metrics

    names = ("sensitivity", "specificity", "balanced accuracy")
    for case, y, p, threshold in _metric_cases():
        got = fn(y.copy(), p.copy(), threshold)
        if got is None:
            raise NotImplementedError
        got = tuple(float(v) for v in got)
        assert len(got) == 3, f"return three numbers (sensitivity, specificity, balanced accuracy), not {len(got)}"
        m = binary_metrics(y, p, threshold)
        expected = (m["sensitivity"], m["specificity"], (m["sensitivity"] + m["specificity"]) / 2)
        if len(np.unique(y)) == 2:  # the library agrees with the package where everything is defined
            pred = (p >= threshold).astype(int)
            assert np.allclose(expected, (recall_score(y, pred, pos_label=1, zero_division=np.nan),
                                          recall_score(y, pred, pos_label=0, zero_division=np.nan),
                                          balanced_accuracy_score(y, pred)), equal_nan=True)
        if all(_same(g, e) for g, e in zip(got, expected, strict=True)):
            continue
        said = f"on {case} at threshold {threshold:g} you got " + ", ".join(
            f"{n} {g:.4g}" for n, g in zip(names, got, strict=True)) + "; binary_metrics: " + ", ".join(
            f"{n} {e:.4g}" for n, e in zip(names, expected, strict=True))
        accuracy = float(np.mean((p >= threshold) == y))
        if _same(got[0], expected[1]) and _same(got[1], expected[0]):
            said += " (sensitivity and specificity are swapped: sensitivity is about the POSITIVE films)"
        elif all(_same(g, e) for g, e in zip(got, _three(y, p, threshold, strict=True), strict=True)):
            said += (" (that is what p > threshold gives: a film whose probability equals the threshold counts as "
                     "positive, p >= threshold, as in binary_metrics and scikit-learn's roc_curve)")
        elif any(math.isnan(e) and g == 0 for g, e in zip(got, expected, strict=True)):
            said += (" (a metric with nothing to count is undefined, NaN, not 0: with no positive film there is no "
                     "sensitivity to speak of, and 0 would read as 'missed every cancer')")
        elif _same(got[2], accuracy) and not _same(got[2], expected[2]):
            said += " (your balanced accuracy is the plain accuracy: average sensitivity and specificity instead)"
        raise AssertionError(said)
    return (f"matches binary_metrics (and scikit-learn) on {len(_metric_cases())} tables, ties at the threshold and "
            "one-class edges (NaN) included.")


# ---------------------------------------------------------------------------------------------------------------
# 4.2 Youden's J on validation


def _threshold_cases() -> list[tuple[str, np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(1)
    cases = []
    for n, prevalence, separation in ((120, 0.15, 1.2), (60, 0.2, 1.5), (30, 0.5, 1.0)):
        y = (rng.random(n) < prevalence).astype(int)
        y[:2] = [0, 1]
        p = np.round(1 / (1 + np.exp(-rng.normal(separation * y - 1.0, 1.0))), 2)
        cases.append((f"{n} validation films, {y.sum()} positive", y, p))
    cases += [("4 films with two equally good thresholds", np.array([0, 1, 0, 1]), np.array([0.1, 0.2, 0.3, 0.4])),
              ("5 films, all negative (one class only)", np.zeros(5, int), np.array([0.1, 0.4, 0.3, 0.8, 0.2]))]
    return cases


def _youden(y: np.ndarray, p: np.ndarray, t: float) -> float:
    d = p >= t
    return float(d[y == 1].mean() - d[y == 0].mean())


def _best_accuracy_threshold(y: np.ndarray, p: np.ndarray) -> float:
    accuracies = [(np.mean((p >= t) == y), t) for t in np.unique(p)[::-1]]
    return float(max(accuracies, key=lambda a: a[0])[1])


@check("4.2 Youden's J on validation", hint="Youden's J = sensitivity + specificity - 1 weighs the two RATES "
       "equally, whatever the class balance (accuracy does not: on a mostly negative split it rewards calling "
       "everything negative). The threshold is one of the validation scores, and without both classes there is "
       "no J.",
       recipe="Try every distinct validation score t, highest first, as a threshold (p >= t is positive), compute "
       "J for each and keep the first best (so a tie keeps the highest score); return that score itself, not a "
       "point between two scores; with one class only return 0.5.")
def check_youden_threshold(fn: Callable) -> str:
    """Compare ``fn(y_val, p_val)`` with :func:`~mammo_utils.evaluate.metrics.choose_threshold` (Youden's J on scikit-learn's
    ROC curve, the highest threshold on a tie, 0.5 for one class)."""
    from mammo_utils.evaluate.metrics import choose_threshold

    for case, y, p in _threshold_cases():
        got = fn(y.copy(), p.copy())
        if got is None:
            raise NotImplementedError
        got, expected = float(got), choose_threshold(y, p)
        if math.isclose(got, expected, abs_tol=1e-9):
            continue
        said = f"on {case} you chose {got:.4g}, choose_threshold {expected:.4g}"
        if len(np.unique(y)) < 2:
            raise AssertionError(said + " (with one class only, sensitivity or specificity does not exist: "
                                 "return 0.5, as the package does)")
        said += f" (J {_youden(y, p, got):.3f} at yours, {_youden(y, p, expected):.3f} at the package's)"
        if math.isclose(got, _best_accuracy_threshold(y, p)) and not math.isclose(got, expected):
            acc = np.mean((p >= got) == y), np.mean((p >= expected) == y)
            said += (f": your threshold maximises ACCURACY ({acc[0]:.3f} vs {acc[1]:.3f}); on a split that is "
                     f"{1 - y.mean():.0%} negative that buys specificity with sensitivity "
                     f"({_three(y, p, got)[0]:.2f} vs {_three(y, p, expected)[0]:.2f}). Maximise J instead")
        elif math.isclose(_youden(y, p, got), _youden(y, p, expected)) and not np.isclose(p, got).any():
            said += (": the same decisions, but a threshold between two scores; return the validation score "
                     "itself (the lowest score called positive), as roc_curve does")
        elif math.isclose(_youden(y, p, got), _youden(y, p, expected)) and got < expected:
            said += ": two scores give the same J; on a tie keep the highest threshold"
        raise AssertionError(said)
    return f"matches choose_threshold on {len(_threshold_cases())} validation sets, ties and one class included."


# ---------------------------------------------------------------------------------------------------------------
# 4.3 Patient bootstrap


def correlated_women(n_women: int = 40, images_per_woman: int = 4, seed: int = 0) -> pd.DataFrame:
    """A test table whose films are strongly correlated within each woman: one label and one score per woman,
    the films' scores differing by a little noise (as the views of one breast do)."""
    rng = np.random.default_rng(seed)
    label = (rng.random(n_women) < 0.35).astype(int)
    label[:2] = [0, 1]
    score = rng.normal(1.0 * label, 1.0)
    rows = [{"image_id": f"W{w:03d}-{k}", "patient_id": f"W{w:03d}", "label": int(label[w]),
             "probability": float(1 / (1 + np.exp(-(score[w] + rng.normal(0, 0.1)))))}
            for w in range(n_women) for k in range(images_per_woman)]
    return pd.DataFrame(rows)


def roc_auc_or_nan(df: pd.DataFrame) -> float:
    """ROC AUC of a table (``label``, ``probability``); NaN when it holds one class only.

    Equal to scikit-learn's ``roc_auc_score`` (the Mann-Whitney form: the chance that a positive film scores above
    a negative one, ties counting half), written with ranks so that a bootstrap of it takes a second, not ten.
    """
    from scipy.stats import rankdata

    y, p = df["label"].to_numpy().astype(bool), df["probability"].to_numpy(dtype=float)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if not n_pos or not n_neg:
        return float("nan")
    return float((rankdata(p)[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


@check("4.3 Patient bootstrap", hint="The women, not the films, are the independent draws: a resample is a new "
       "set of as many women as the test set holds, drawn with replacement, each bringing all her films. The "
       "interval is where the middle 95% of the resampled metrics fall.",
       recipe="rng = np.random.default_rng(seed); n_resamples times: draw len(women) women with rng.integers "
       "(repeats allowed), take ALL the rows of every woman drawn (a woman drawn twice comes twice), compute the "
       "metric on that table; return np.quantile of the finite values at 0.025 and 0.975.")
def check_patient_bootstrap(fn: Callable, n_resamples: int = 400) -> str:
    """Run ``fn(df, metric, n_resamples, seed)`` on a table whose films are strongly correlated within each woman,
    with a ``metric`` that records every table it is given: each must be a resample of whole women (every film
    of a drawn woman, as many times as she is drawn), as many draws as there are women, with repeats; and the
    interval must be the 2.5th and 97.5th percentiles of the metric over those resamples. The interval is also
    set beside :func:`~mammo_utils.evaluate.metrics.bootstrap_ci`'s over women and over images."""
    from mammo_utils.evaluate.metrics import bootstrap_ci

    df = correlated_women()
    seen: list[pd.DataFrame] = []

    def metric(table: pd.DataFrame) -> float:
        seen.append(table)
        return roc_auc_or_nan(table)

    got = fn(df.copy(), metric, n_resamples, 0)
    if got is None:
        raise NotImplementedError
    low, high = (float(v) for v in got)
    assert low <= high, f"you returned ({low:.3f}, {high:.3f}): the low end first"
    statistic = lambda d: {"auc": roc_auc_or_nan(d)}  # noqa: E731
    ref = bootstrap_ci(df, statistic, n_resamples, seed=0)["auc"]
    by_image = bootstrap_ci(df, statistic, n_resamples, seed=0, group="image_id")["auc"]
    width, ref_width, image_width = high - low, ref[1] - ref[0], by_image[1] - by_image[0]
    said = (f"on 40 women x 4 correlated films your interval is [{low:.3f}, {high:.3f}] (width {width:.3f}); "
            f"bootstrap_ci over women gives [{ref[0]:.3f}, {ref[1]:.3f}] (width {ref_width:.3f}), over images "
            f"[{by_image[0]:.3f}, {by_image[1]:.3f}] (width {image_width:.3f})")
    assert len(seen) >= n_resamples, (f"the metric was computed on {len(seen)} tables for {n_resamples} resamples: "
                                      "compute it once on every resample")
    _require_resamples_of_women(seen, df)
    values = np.array([roc_auc_or_nan(t) for t in seen])
    values = np.sort(values[np.isfinite(values)])
    for name, mine, q in (("low", low, 0.025), ("high", high, 0.975)):
        k = q * (len(values) - 1)  # between the order statistics around this rank, whatever the interpolation
        lo, hi = values[max(0, int(np.floor(k)) - 1)], values[min(len(values) - 1, int(np.ceil(k)) + 1)]
        assert lo - 1e-9 <= mine <= hi + 1e-9, (
            f"{said}. Your resamples are right, but your {name} end {mine:.3f} is not the {q:.1%} quantile of "
            f"their metrics ({np.quantile(values, q):.3f}): a 95% interval cuts 2.5% from each end")
    again = fn(df.copy(), roc_auc_or_nan, 50, 3), fn(df.copy(), roc_auc_or_nan, 50, 3)
    assert np.allclose(again[0], again[1]), (
        "two calls with the same seed gave different intervals: draw from np.random.default_rng(seed)")
    return (f"every resample is {df.patient_id.nunique()} women drawn with replacement, each with all her films; "
            f"your interval [{low:.3f}, {high:.3f}] is as wide as the patient bootstrap's ({ref_width:.3f}) and "
            f"{width / image_width:.1f} times as wide as an image bootstrap's on films correlated within each woman.")


def _require_resamples_of_women(tables: list[pd.DataFrame], df: pd.DataFrame) -> None:
    """Each table a metric was given must be whole women drawn with replacement, as many draws as women."""
    films_of = df.groupby("patient_id")["image_id"].nunique()
    n_women, totals, repeated = len(films_of), [], 0
    for table in tables:
        assert {"patient_id", "image_id"} <= set(table.columns), (
            "the metric was given a table without the patient_id and image_id columns: give it the rows of the "
            "test table (df.iloc[...]) that the resample drew")
        per_film = table.groupby(["patient_id", "image_id"]).size()  # how often each film came
        films = per_film.groupby(level=0).size()
        partial = films[films.to_numpy() < films_of.reindex(films.index).to_numpy()]
        assert partial.empty, (
            f"in a resample woman {partial.index[0]} brought {partial.iloc[0]} of her "
            f"{films_of[partial.index[0]]} films: a drawn woman brings ALL her films (a woman's films move "
            "together, so they are one piece of evidence, not several); resampling films makes the interval too "
            "narrow")
        draws = per_film.groupby(level=0).agg(["min", "max"])
        assert (draws["min"] == draws["max"]).all(), (
            "in a resample some films of a woman came more often than her others: draw women, then take all the "
            "films of each woman drawn, once per draw")
        totals.append(int(draws["min"].sum()))
        repeated += int((draws["min"] > 1).sum())
    if repeated == 0:
        assert min(totals) == max(totals) == n_women, (
            f"no woman was ever drawn twice, and the resamples hold {min(totals)}-{max(totals)} of the "
            f"{n_women} women: draw WITH replacement, {n_women} draws each time, and keep the repeated draws (a "
            "woman drawn twice counts twice)")
        raise AssertionError(f"every resample holds each of the {n_women} women exactly once, the test table "
                             "itself: draw WITH replacement (rng.integers), so that a resample repeats some women "
                             "and leaves others out")
    assert min(totals) == max(totals) == n_women, (
        f"the resamples hold {min(totals)}-{max(totals)} draws of women; each should draw as many women as the "
        f"test set holds ({n_women}), with replacement")


# ---------------------------------------------------------------------------------------------------------------
# 4.4 Copy a sibling's label


def sibling_tables() -> list[tuple[str, pd.DataFrame]]:
    """(name, films) tables of ``image_id, patient_id, laterality, view, label``: a screening set (both views of
    each breast, one label per breast), a MIAS-like set (one film per breast), and a small set of awkward cases."""
    rng = np.random.default_rng(2)
    screening = pd.DataFrame([{"patient_id": f"S{w}", "laterality": side, "view": view,
                               "label": int(breast_label[side])}
                              for w in range(12) for breast_label in [{"L": rng.random() < 0.3, "R": rng.random() < 0.3}]
                              for side in "LR" for view in ("CC", "MLO")])
    mias = pd.DataFrame([{"patient_id": f"M{w}", "laterality": side, "view": "MLO", "label": int(rng.random() < 0.35)}
                         for w in range(15) for side in "LR"])
    awkward = pd.DataFrame([
        {"patient_id": "A1", "laterality": "L", "view": "CC", "label": 0},  # no film of her left breast: a tie
        {"patient_id": "A1", "laterality": "R", "view": "CC", "label": 1},
        {"patient_id": "A1", "laterality": "R", "view": "MLO", "label": 0},
        {"patient_id": "A2", "laterality": "L", "view": "MLO", "label": 1},  # a single film: no sibling
        {"patient_id": "A3", "laterality": "L", "view": "CC", "label": 1},
        {"patient_id": "A3", "laterality": "L", "view": "MLO", "label": 1},
        {"patient_id": "A3", "laterality": "R", "view": "CC", "label": 0},
        {"patient_id": "A3", "laterality": "R", "view": "MLO", "label": 0}])
    lonely = pd.DataFrame([{"patient_id": f"L{w}", "laterality": "L", "view": "CC", "label": w % 2} for w in range(3)])
    tables = [("a screening set (both views of each breast)", screening), ("a MIAS-like set (one film per breast)",
              mias), ("a tie and a woman with one film", awkward), ("three women with one film each", lonely)]
    return [(name, t.assign(image_id=[f"{t.patient_id[i]}-{i}" for i in range(len(t))])[
        ["image_id", "patient_id", "laterality", "view", "label"]]) for name, t in tables]


def _copy_variant(films: pd.DataFrame, same_breast_first: bool = True, include_self: bool = False,
                  tie_positive: bool = True) -> float | None:
    """The typical wrong answers, to name them when a learner's number equals one."""
    hits = []
    for _, woman in films.groupby("patient_id"):
        for i, film in woman.iterrows():
            others = woman if include_self else woman.drop(index=i)
            if len(woman) < 2:
                continue
            same = others[others.laterality == film.laterality]
            copied = same if same_breast_first and len(same) else others
            mean = copied.label.mean()
            hits.append(int(mean >= 0.5 if tie_positive else mean > 0.5) == film.label)
    return float(np.mean(hits)) if hits else None


@check("4.4 Copy a sibling's label", hint="A film's best-informed sibling is the other view of the same breast: it "
       "shows the same lesion. Copy from the woman's other films only, never from the film itself.",
       recipe="For each film, take the OTHER films of the same woman: those of the same breast when there are any, "
       "else all her other films; copy their majority label (a tie says positive) and count how often it equals "
       "the film's own label. Films of a woman with one film are left out; return None when no film has a "
       "sibling.")
def check_copy_sibling(fn: Callable[[pd.DataFrame], float | None]) -> str:
    """Compare ``fn(films)`` with :func:`~mammo_utils.evaluate.stage.copy_sibling_accuracy` on a screening-like set, a
    MIAS-like set and awkward cases (a tie, a woman with one film, nobody with a sibling)."""
    from mammo_utils.evaluate.stage import copy_sibling_accuracy

    scores = []
    for name, films in sibling_tables():
        expected = copy_sibling_accuracy(films[["image_id", "patient_id", "label"]],
                                         films[["image_id", "laterality", "view"]])
        got = fn(films.copy())
        if expected is None:
            assert got is None, (
                f"on {name} no film has a sibling, so there is nothing to copy: return None (you returned {got!r})")
            continue
        if got is None:
            raise NotImplementedError
        got = float(got)
        if math.isclose(got, expected, abs_tol=1e-9):
            scores.append(f"{got:.2f} on {name.split(' (')[0]}")
            continue
        said = f"on {name} you got {got:.3f}, copy_sibling_accuracy {expected:.3f}"
        for variant, why in (
                (dict(same_breast_first=False), "you copied the majority of ALL her other films; copy the other view "
                 "of the SAME breast first (it shows the same lesion), the other breast only when there is none"),
                (dict(include_self=True), "the film's own label was among those you copied: leave the film out"),
                (dict(tie_positive=False), "a tie (as many positive films as negative) should say positive")):
            v = _copy_variant(films, **variant)
            if v is not None and math.isclose(got, v, abs_tol=1e-9):
                said += f" ({why})"
                break
        raise AssertionError(said)
    return "matches copy_sibling_accuracy: " + ", ".join(scores) + "; None where no film has a sibling."
