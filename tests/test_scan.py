"""The pre-flight scan (``python -m rome_collapse scan``): batched keys, the CLI, and the ROC helpers."""
import csv
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from rome_collapse import keys, rome, scan, stats, strata
from rome_collapse.data import EditCase, load_cases
from rome_collapse.tokens import subject_token_span
from rome_collapse.strata import FIRST_MULTI, FIRST_SINGLE, LATER
from tolerances import assert_agree, forward_rounding

FIRST = EditCase("paris", "{} is located in the country of", "Paris", "Italy", "France")
LATE = EditCase("paris-late", "The city of {} is located in the country of", "Paris", "Italy", "France")
DARRIEUX = EditCase("darrieux", "The mother tongue of {} is", "Danielle Darrieux", "English", "French")
TEMPLATES = ["{}", "The weather is nice. {}", "I went home. {}", "Because it rained, the match was cancelled. {}"]


def record(case: EditCase) -> dict:
    return case.to_counterfact()


def assert_same_keys(bundle, expected: keys.CaseKeys, got: keys.CaseKeys) -> None:
    """A scan batch's keys against one request's own batch: other matrix products, float32 rounding apart."""
    for field in ("unprefixed_key", "prefixed_key", "template_keys"):
        a, b = getattr(expected, field), getattr(got, field)
        assert a.shape == b.shape, field
        assert_agree(b, a, forward_rounding(bundle), msg=field)


@pytest.mark.parametrize("share_prefix", [True, False])
def test_batched_keys_equal_per_case_keys_on_any_weights(tiny, share_prefix):
    cases = [FIRST, LATE, DARRIEUX]
    batched = keys.case_keys_batch(tiny, cases, TEMPLATES, token_budget=64, share_prefix=share_prefix)
    for case, got in zip(cases, batched):
        assert_same_keys(tiny, keys.case_keys(tiny, case.prompt, case.subject, TEMPLATES), got)


@pytest.mark.model
@pytest.mark.parametrize("share_prefix", [True, False])
def test_batched_keys_equal_per_case_keys_on_the_real_model(smol, smol_templates, curated, share_prefix):
    cases = curated[:3] + curated[-3:] + [LATE, DARRIEUX]  # subject-first and later subjects
    batched = keys.case_keys_batch(smol, cases, smol_templates, share_prefix=share_prefix)
    for case, got in zip(cases, batched):
        assert_same_keys(smol, keys.case_keys(smol, case.prompt, case.subject, smol_templates), got)


@pytest.mark.model
def test_scan_puts_subject_first_and_later_subjects_on_either_side_of_the_threshold(smol, smol_templates):
    paper = smol
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
    assert [r.stratum for r in rows] == [FIRST_SINGLE, LATER, LATER]
    assert summary.strata == {FIRST_SINGLE: 1, FIRST_MULTI: 0, LATER: 2}
    assert summary.at_risk_by_stratum == {FIRST_SINGLE: 1, FIRST_MULTI: 0, LATER: 0}
    assert summary.tokens < summary.text_tokens  # the templates' shared openings ran once
    assert summary.cases_per_s > 0 and summary.tokens_per_s > 0


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "rome_collapse", "scan", *args], capture_output=True, text=True,
                          timeout=900)


@pytest.mark.model
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


def flat(case: EditCase) -> dict:
    """The record in EasyEdit's flat format (the subject written out in the prompt)."""
    return {"case_id": case.case_id, "prompt": case.text, "subject": case.subject, "target_new": case.target_new,
            "ground_truth": case.target_true}


MULTI_FIRST = EditCase("darrieux-first", "{} speaks the language", "Danielle Darrieux", "English", "French")


def test_scan_rows_say_where_the_subject_is_on_any_weights(tiny):
    """Flat records of each stratum: position, token count and stratum per row, the strata counted in the summary
    (the tiny model's ratios are arbitrary: only the bookkeeping is checked, against the tokenizer)."""
    cases = load_cases([flat(c) for c in (FIRST, MULTI_FIRST, DARRIEUX)])
    paper = tiny
    rows, summary = scan.scan_cases(paper, cases, TEMPLATES, stats.covariance(paper), progress=False)
    assert [r.stratum for r in rows] == [FIRST_SINGLE, FIRST_MULTI, LATER]
    for row, case in zip(rows, cases):
        first, last = subject_token_span(tiny, case.prompt, case.subject)
        assert (row.subject_position, row.subject_tokens) == (first, last - first + 1)
        assert row.at_risk == (row.ratio < summary.threshold)
    assert rows[1].subject_position == 0 and rows[1].subject_tokens > 1
    assert summary.strata == {FIRST_SINGLE: 1, FIRST_MULTI: 1, LATER: 1}
    assert sum(summary.at_risk_by_stratum.values()) == summary.at_risk
    assert any(name in line for line in summary.lines() for name in strata.STRATA)


@pytest.mark.model
def test_cli_scan_reads_flat_records_and_counts_the_strata(tmp_path):
    cases, templates, out = tmp_path / "cases.json", tmp_path / "templates.json", tmp_path / "scan.csv"
    cases.write_text(json.dumps([flat(c) for c in (FIRST, MULTI_FIRST, DARRIEUX)]))
    templates.write_text(json.dumps(TEMPLATES))
    result = run_cli("--cases", str(cases), "--templates", str(templates), "--out", str(out), "--json")
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(result.stdout)
    assert summary["strata"] == {FIRST_SINGLE: 1, FIRST_MULTI: 1, LATER: 1}
    assert summary["at_risk_by_stratum"][FIRST_SINGLE] == 1 and summary["at_risk"] == 1
    rows = list(csv.DictReader(out.open()))
    assert [r["case_id"] for r in rows] == ["paris", "darrieux-first", "darrieux"]
    assert [r["stratum"] for r in rows] == [FIRST_SINGLE, FIRST_MULTI, LATER]
    assert [r["subject_position"] for r in rows] == ["0", "0", "4"]
    assert [r["at_risk"] for r in rows] == ["True", "False", "False"]
    assert int(rows[1]["subject_tokens"]) > 1 and rows[0]["subject_tokens"] == "1"


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
