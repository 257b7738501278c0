"""How well a pre-flight number predicts a collapse (screening.py): ROC, catch-all thresholds, screens."""
import numpy as np
import pytest

from rome_collapse.studies import screening


# --------------------------------------------------------------------------------------------
# ROC helpers
# --------------------------------------------------------------------------------------------
def brute_auc(scores, labels):
    pos = [s for s, y in zip(scores, labels) if y]
    neg = [s for s, y in zip(scores, labels) if not y]
    return sum((p > n) + 0.5 * (p == n) for p in pos for n in neg) / (len(pos) * len(neg))


def test_roc_auc_counts_ties_half_and_matches_the_curve():
    scores = [0.9, 0.8, 0.8, 0.5, 0.3, 0.3, 0.1]
    labels = [1, 1, 0, 1, 0, 0, 0]
    auc = screening.roc_auc(scores, labels)
    assert auc == pytest.approx(brute_auc(scores, labels)) == pytest.approx((4 + 3.5 + 3) / 12)
    fpr, tpr, thresholds = screening.roc_curve(scores, labels)
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0, 0, 1, 1) and thresholds[0] == np.inf
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    assert np.trapezoid(tpr, fpr) == pytest.approx(auc)  # the trapezoid area is the tie-aware AUC
    assert screening.roc_auc([1, 2, 3], [0, 1, 1]) == 1.0 and screening.roc_auc([1, 2, 3], [1, 0, 0]) == 0.0
    assert np.isnan(screening.roc_auc([1, 2], [1, 1]))
    with pytest.raises(ValueError):
        screening.roc_curve([1, 2], [0, 0])


def test_roc_auc_agrees_with_scikit_learn():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    labels = rng.random(200) < 0.3
    scores = np.round(rng.normal(size=200) + labels, 1)  # rounded: many ties
    assert screening.roc_auc(scores, labels) == pytest.approx(metrics.roc_auc_score(labels, scores))


def test_catch_all_threshold_flags_every_positive_and_counts_the_false_alarms():
    found = screening.catch_all([5, 4, 3, 2, 1], [1, 0, 1, 0, 0])
    assert (found.threshold, found.positives, found.negatives, found.false_alarms) == (3, 2, 3, 1)
    assert found.false_alarm_rate == pytest.approx(1 / 3)
    none = screening.catch_all([1, 2], [0, 0])
    assert np.isnan(none.threshold) and none.false_alarms == 0


def test_screens_orient_each_predictor_and_give_the_threshold_in_its_units():
    import pandas as pd

    table = pd.DataFrame({"ppl_ratio": [500.0, 30.0, 3.0, 1.1, 1.0, float("nan")],
                          "ratio": [0.01, 0.05, 0.3, 0.9, 1.0, -0.2],
                          "subject_first_token": [True, True, False, True, False, True],
                          "cos_ku_kbar": [0.1, 0.2, 0.6, 0.9, 0.95, 0.05],
                          "unprefixed_key_norm": [0.5, 0.6, 4.0, 3.0, 5.0, 0.4]})
    found = screening.screens(table, {"> 2×": 2.0, "> 10×": 10.0}).set_index(["collapse", "predictor"])
    ratio = found.loc[("> 10×", "ratio")]
    assert ratio["risky"] == "low" and ratio["auc"] == 1.0  # the NaN perplexity counts as a collapse
    assert ratio["catch_all_threshold"] == 0.05 and ratio["false_refusals"] == 0 and ratio["collapses"] == 3
    assert found.loc[("> 2×", "ratio"), "catch_all_threshold"] == 0.3
    first = found.loc[("> 10×", "subject is the first token")]
    assert first["catch_all_threshold"] == 1.0 and first["false_refusals"] == 1 and first["false_refusal_rate"] == 1 / 3
    norm = found.loc[("> 10×", "‖kᵘ‖")]
    assert norm["risky"] == "low" and norm["auc"] == 1.0  # small ‖kᵘ‖ is the risky end here
    points = screening.roc_points(table, {"> 10×": 10.0})
    assert set(points["predictor"]) == {p.name for p in screening.PREDICTORS}
