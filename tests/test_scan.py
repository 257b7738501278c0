"""The pre-flight scan (``python -m rome_collapse scan``): batched keys, the CLI, and the ROC helpers."""
import csv
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from rome_collapse import keys, rome, scan, stats
from rome_collapse.data import EditCase

FIRST = EditCase("paris", "{} is located in the country of", "Paris", "Italy", "France")
LATE = EditCase("paris-late", "The city of {} is located in the country of", "Paris", "Italy", "France")
DARRIEUX = EditCase("darrieux", "The mother tongue of {} is", "Danielle Darrieux", "English", "French")
TEMPLATES = ["{}", "The weather is nice. {}", "I went home. {}", "Because it rained, the match was cancelled. {}"]


def record(case: EditCase) -> dict:
    return case.to_counterfact()


def assert_same_keys(expected: keys.CaseKeys, got: keys.CaseKeys) -> None:
    for field in ("unprefixed_key", "prefixed_key", "template_keys"):
        a, b = getattr(expected, field), getattr(got, field)
        assert a.shape == b.shape, field
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5 * a.abs().max().item(), msg=field)


@pytest.mark.parametrize("share_prefix", [True, False])
def test_batched_keys_equal_per_case_keys_on_any_weights(tiny, share_prefix):
    cases = [FIRST, LATE, DARRIEUX]
    batched = scan.case_keys_batch(tiny, cases, TEMPLATES, token_budget=64, share_prefix=share_prefix)
    for case, got in zip(cases, batched):
        assert_same_keys(keys.case_keys(tiny, case.prompt, case.subject, TEMPLATES), got)


@pytest.mark.parametrize("share_prefix", [True, False])
def test_batched_keys_equal_per_case_keys_on_the_real_model(smol, smol_templates, curated, share_prefix):
    cases = curated[:3] + curated[-3:] + [LATE, DARRIEUX]  # subject-first and later subjects
    batched = scan.case_keys_batch(smol, cases, smol_templates, share_prefix=share_prefix)
    for case, got in zip(cases, batched):
        assert_same_keys(keys.case_keys(smol, case.prompt, case.subject, smol_templates), got)


def test_scan_puts_subject_first_and_later_subjects_on_either_side_of_the_threshold(smol, smol_templates):
    paper = smol.with_setting("paper")
    covariance = stats.covariance(paper)
    rows, summary = scan.scan_cases(paper, [FIRST, LATE, DARRIEUX], smol_templates, covariance, progress=False)
    first, late, darrieux = rows
    assert first.subject_first_token and first.subject_position == 0 and first.ratio < 0.1 and first.at_risk
    for row in (late, darrieux):
        assert not row.subject_first_token and row.subject_position > 0 and row.ratio > 0.1 and not row.at_risk
    assert darrieux.subject_tokens > 1
    assert first.cos_ku_kbar < late.cos_ku_kbar
    for row, case in zip(rows, [FIRST, LATE, DARRIEUX]):  # the same number as the one-case pre-flight check
        assert row.ratio == pytest.approx(rome.collapse_risk(paper, case, smol_templates, covariance).ratio, rel=1e-4)
    assert summary.cases == 3 and summary.at_risk == 1 and summary.subject_first == 1 and summary.setting == "paper"
    assert summary.tokens < summary.text_tokens  # the templates' shared openings ran once
    assert summary.cases_per_s > 0 and summary.tokens_per_s > 0


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "rome_collapse", "scan", *args], capture_output=True, text=True,
                          timeout=900)


def test_cli_scan_writes_one_row_per_case_and_a_json_summary(tmp_path):
    cases, templates, out = tmp_path / "cases.json", tmp_path / "templates.json", tmp_path / "scan.csv"
    cases.write_text(json.dumps([record(FIRST), record(LATE)]))
    templates.write_text(json.dumps(TEMPLATES))
    result = run_cli("--cases", str(cases), "--templates", str(templates), "--out", str(out), "--json")
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1  # --json: the summary alone
    summary = json.loads(lines[0])
    assert summary["cases"] == 2 and summary["at_risk"] == 1 and summary["setting"] == "paper"
    for key in ("seconds", "tokens_per_s", "cases_per_s", "counterfact_projected_s"):
        assert summary[key] > 0
    assert "scanning" not in result.stderr and "Loading weights" not in result.stderr  # no progress bars
    rows = list(csv.DictReader(out.open()))
    assert [r["case_id"] for r in rows] == ["paris", "paris-late"]
    for column in ("subject", "subject_position", "subject_first_token", "ratio", "cos_ku_kbar", "at_risk"):
        assert column in rows[0]
    assert rows[0]["at_risk"] == "True" and rows[1]["at_risk"] == "False"
    assert float(rows[0]["ratio"]) < 0.1 < float(rows[1]["ratio"])


def test_cli_scan_bad_record_exits_2_naming_the_case(tmp_path):
    bad = record(LATE)
    bad["case_id"] = "broken-case"
    del bad["requested_rewrite"]["target_new"]
    path = tmp_path / "cases.json"
    path.write_text(json.dumps([record(FIRST), bad]))
    result = run_cli("--cases", str(path), "--json")
    assert result.returncode == 2
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "broken-case" in result.stderr and "target_new" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("content, message", [(None, "No such file"), ("{not json", "Expecting"),
                                              ("[]", "no records"), ('{"a": 1}', "expected a JSON list")])
def test_cli_scan_bad_file_exits_2_in_one_line(tmp_path, content, message):
    path = tmp_path / "cases.json"
    if content is not None:
        path.write_text(content)
    result = run_cli("--cases", str(path))
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr


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
    auc = scan.roc_auc(scores, labels)
    assert auc == pytest.approx(brute_auc(scores, labels)) == pytest.approx((4 + 3.5 + 3) / 12)
    fpr, tpr, thresholds = scan.roc_curve(scores, labels)
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0, 0, 1, 1) and thresholds[0] == np.inf
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    assert np.trapezoid(tpr, fpr) == pytest.approx(auc)  # the trapezoid area is the tie-aware AUC
    assert scan.roc_auc([1, 2, 3], [0, 1, 1]) == 1.0 and scan.roc_auc([1, 2, 3], [1, 0, 0]) == 0.0
    assert np.isnan(scan.roc_auc([1, 2], [1, 1]))
    with pytest.raises(ValueError):
        scan.roc_curve([1, 2], [0, 0])


def test_roc_auc_agrees_with_scikit_learn():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    labels = rng.random(200) < 0.3
    scores = np.round(rng.normal(size=200) + labels, 1)  # rounded: many ties
    assert scan.roc_auc(scores, labels) == pytest.approx(metrics.roc_auc_score(labels, scores))


def test_catch_all_threshold_flags_every_positive_and_counts_the_false_alarms():
    found = scan.catch_all([5, 4, 3, 2, 1], [1, 0, 1, 0, 0])
    assert (found.threshold, found.positives, found.negatives, found.false_alarms) == (3, 2, 3, 1)
    assert found.false_alarm_rate == pytest.approx(1 / 3)
    none = scan.catch_all([1, 2], [0, 0])
    assert np.isnan(none.threshold) and none.false_alarms == 0


def test_screens_orient_each_predictor_and_give_the_threshold_in_its_units():
    import pandas as pd

    table = pd.DataFrame({"blowup": [500.0, 30.0, 3.0, 1.1, 1.0, float("nan")],
                          "ratio": [0.01, 0.05, 0.3, 0.9, 1.0, -0.2],
                          "subject_first_token": [True, True, False, True, False, True],
                          "cos_ku_kbar": [0.1, 0.2, 0.6, 0.9, 0.95, 0.05],
                          "unprefixed_key_norm": [0.5, 0.6, 4.0, 3.0, 5.0, 0.4]})
    found = scan.screens(table, {"> 2×": 2.0, "> 10×": 10.0}).set_index(["collapse", "predictor"])
    ratio = found.loc[("> 10×", "ratio")]
    assert ratio["risky"] == "low" and ratio["auc"] == 1.0  # the NaN perplexity counts as a collapse
    assert ratio["catch_all_threshold"] == 0.05 and ratio["false_refusals"] == 0 and ratio["collapses"] == 3
    assert found.loc[("> 2×", "ratio"), "catch_all_threshold"] == 0.3
    first = found.loc[("> 10×", "subject is the first token")]
    assert first["catch_all_threshold"] == 1.0 and first["false_refusals"] == 1 and first["false_refusal_rate"] == 1 / 3
    norm = found.loc[("> 10×", "‖kᵘ‖")]
    assert norm["risky"] == "low" and norm["auc"] == 1.0  # small ‖kᵘ‖ is the risky end here
    points = scan.roc_points(table, {"> 10×": 10.0})
    assert set(points["predictor"]) == {p.name for p in scan.PREDICTORS}
