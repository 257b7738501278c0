"""The engine on the real default model (SmolLM2-135M): the paper's phenomenon and its fix."""
import json
import subprocess
import sys

import pytest

from rome_collapse import data, metrics, rome, stats
from rome_collapse.data import EditCase

DARRIEUX = EditCase("darrieux", "The mother tongue of {} is", "Danielle Darrieux", "English", "French",
                    paraphrase_prompts=("Danielle Darrieux, a native", "Danielle Darrieux spoke the language"),
                    neighborhood_prompts=("The mother tongue of Léon Blum is",))


@pytest.fixture(params=["paper", "original"])
def smol_setting(request, smol, smol_stats):
    """The default model with what its update divides by in each setting (the identity or C)."""
    return smol, smol_stats if request.param == "original" else stats.covariance(smol, "paper")


@pytest.mark.model
def test_c_rome_edit_succeeds_without_hurting_perplexity(smol_setting, smol_templates):
    smol, covariance = smol_setting
    texts = data.meppl("50")
    before = metrics.perplexity(smol, texts).mean
    edit = rome.edit(smol, DARRIEUX, smol_templates, covariance, variant="c-rome")
    assert metrics.evaluate_cases(smol, [DARRIEUX])[0].efficacy == 0.0  # the model says French before
    with rome.applied(smol, edit):
        scores = metrics.evaluate_cases(smol, [DARRIEUX])[0]
        after = metrics.perplexity(smol, texts).mean
    assert scores.efficacy == 1.0 and scores.p_new > scores.p_true
    assert after < 1.5 * before
    assert metrics.perplexity(smol, texts).mean == pytest.approx(before)  # restored


@pytest.mark.model
def test_first_token_subject_has_tiny_denominator_ratio(smol_setting, smol_templates):
    smol, covariance = smol_setting
    first = EditCase("paris", "{} is located in the country of", "Paris", "Italy", "France")
    after_words = EditCase("paris-late", "The city of {} is located in the country of", "Paris", "Italy", "France")
    risk_first = rome.collapse_risk(smol, first, smol_templates, covariance)
    risk_after = rome.collapse_risk(smol, after_words, smol_templates, covariance)
    assert risk_first.setting == risk_after.setting == covariance.setting
    assert risk_first.subject_first_token and not risk_after.subject_first_token
    assert risk_first.ratio < 0.1 < risk_after.ratio
    assert risk_first.at_risk and not risk_after.at_risk


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "rome_collapse", *args], capture_output=True, text=True, timeout=900)


@pytest.mark.model
def test_cli_edit_prints_one_json_object():
    out = run_cli("edit", "--model", "smollm2-135m", "--prompt", "The mother tongue of {} is",
                  "--subject", "Danielle Darrieux", "--target-new", "English", "--target-true", "French",
                  "--variant", "c-rome", "--profile", "smoke", "--setting", "original", "--json")
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["setting"] == "original" and result["model"] == "smollm2-135m"
    for key in ("variant", "numerator_norm", "denominator", "ratio", "update_norm", "ppl_before", "ppl_after",
                "rewrite_acc", "rephrase_acc", "locality_acc", "rewrite_acc_prefix", "cf_efficacy"):
        assert key in result
    assert result["variant"] == "c-rome" and result["rewrite_acc"] == 1.0 and result["cf_efficacy"] == 1.0
    assert result["rephrase_acc"] is None and result["locality_acc"] is None  # no paraphrases or neighbours given
    assert result["rewrite_acc_prefix"] is None  # no --test-prefix
    assert result["ppl_ratio"] == pytest.approx(result["ppl_after"] / result["ppl_before"])
    assert result["collapsed"] is False  # C-ROME's edit of a normal case


@pytest.mark.model
def test_cli_risk_with_explicit_templates_in_the_paper_setting(tmp_path):
    path = tmp_path / "templates.json"
    path.write_text(json.dumps(["{}", "The weather is nice. {}", "I went home. {}"]))
    out = run_cli("risk", "--prompt", "{} is located in the country of", "--subject", "Paris",
                  "--templates", str(path), "--json")
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["setting"] == "paper" and result["subject_first_token"]
    assert result["ratio"] < 0.1


@pytest.mark.parametrize("args, message", [
    (["edit", "--prompt", "no placeholder", "--subject", "X", "--target-new", "Y"], "exactly one"),
    (["edit", "--prompt", "{} is", "--subject", "X"], "--target-new"),
    (["edit", "--cases", "/nonexistent.json", "--case-id", "1"], "--cases /nonexistent.json"),
    (["edit", "--cases", "lib/rome_collapse/resources/curated_cases.json"], "--case-id"),
    (["edit", "--cases", "lib/rome_collapse/resources/curated_cases.json", "--case-id", "nope"], "no record with case_id nope"),
    (["edit", "--prompt", "{} is", "--subject", "X", "--target-new", "Y", "--variant", "memit"], "invalid choice"),
    (["risk", "--model", "nope", "--prompt", "{} is", "--subject", "X"], "unknown model"),
    (["risk", "--prompt", "{} is", "--subject", "X", "--setting", "memit"], "invalid choice"),
    (["risk", "--prompt", "{} is", "--subject", "X", "--templates", "/nonexistent.json"], "--templates"),
    pytest.param(["risk", "--prompt", "{} is", "--subject", "X", "--layer", "99"], "--layer: layer 99 is outside",
                 marks=pytest.mark.model),  # the model's depth is read from the loaded model
    (["prepare", "--models", "smollm2-135m", "--settings", "paper,memit"], "--settings: memit"),
])
def test_cli_bad_arguments_exit_2(args, message):
    out = run_cli(*args)
    assert out.returncode == 2
    assert message in out.stderr
    assert "Traceback" not in out.stderr
