"""values.ValueOptions (where v* starts, its clamp, its loss) and notebook 10's study, on the tiny random model."""
import pytest
import torch

from conftest import layer_output
from rome_collapse import keys, rome, stats
from rome_collapse.studies import clamp_study
from rome_collapse.value_batch import build_rows
from rome_collapse.values import ValueOptions, _value_key, _value_path, optimize_values, values_for
from rome_collapse.data import EditCase
from rome_collapse.profiles import get_profile

CASES = [
    EditCase("paris", "{} is located in", "Paris", "Italy", "France",
             paraphrase_prompts=("Paris lies in",), neighborhood_prompts=("Lyon is located in",)),
    EditCase("darrieux", "The mother tongue of {} is", "Danielle Darrieux", "English", "French"),
]
PREFIXED_START = ValueOptions(start="prefixed", clamp_reference="prefixed")


@pytest.fixture(scope="module")
def setup(tiny):
    templates = keys.context_templates(tiny, seed=0, cache=False)
    case_keys = [keys.case_keys(tiny, c.prompt, c.subject, templates) for c in CASES]
    return templates, case_keys


def _tight(bundle, factor: float = 0.05):
    """The bundle with a clamp small enough to bind at every step."""
    return bundle.with_hparams(clamp_norm_factor=factor)


def test_default_options_give_rome_values_bit_for_bit(tiny, setup):
    templates, case_keys = setup
    plain = optimize_values(tiny, CASES, templates)
    explicit = optimize_values(tiny, CASES, templates, options=ValueOptions())
    for a, b, ck in zip(plain, explicit, case_keys):
        assert torch.equal(a.v_star, b.v_star) and torch.equal(a.delta, b.delta) and a.steps == b.steps
        # ROME's start: the output at the unprefixed prompt; the clamp is measured against it
        assert torch.allclose(a.target_init, layer_output(tiny, ck.unprefixed_key), atol=1e-5)
        assert a.clamp_bound == pytest.approx(tiny.hparams.clamp_norm_factor * a.target_init.norm().item(), rel=1e-6)


def test_prefixed_clamp_changes_only_the_bound(tiny, setup):
    templates, case_keys = setup
    bundle = _tight(tiny)
    rome_v = optimize_values(bundle, CASES, templates)
    prefixed = optimize_values(bundle, CASES, templates, options=ValueOptions(clamp_reference="prefixed"))
    for a, b, ck in zip(rome_v, prefixed, case_keys):
        assert torch.equal(a.target_init, b.target_init)  # same start
        assert abs(layer_output(tiny, ck.unprefixed_key).norm() - layer_output(tiny, ck.prefixed_key).norm()) > 1e-2 * layer_output(tiny, ck.unprefixed_key).norm()
        assert a.delta.norm().item() == pytest.approx(0.05 * layer_output(tiny, ck.unprefixed_key).norm().item(), rel=1e-4)
        assert b.delta.norm().item() == pytest.approx(0.05 * layer_output(tiny, ck.prefixed_key).norm().item(), rel=1e-4)
        assert b.clamp_bound == pytest.approx(0.05 * layer_output(tiny, ck.prefixed_key).norm().item(), rel=1e-4)


def test_prefixed_start_is_the_mean_output_and_c_rome_adds_exactly_delta(tiny, setup):
    templates, case_keys = setup
    second_moment = stats.SecondMoment.identity()  # the paper's setting: C = I
    values = optimize_values(tiny, CASES, templates, options=PREFIXED_START)
    for case, value, ck in zip(CASES, values, case_keys):
        assert torch.allclose(value.target_init, layer_output(tiny, ck.prefixed_key), atol=1e-5)  # W k̄ + b
        assert not torch.allclose(value.target_init, layer_output(tiny, ck.unprefixed_key), atol=1e-3)
        assert value.clamp_bound == pytest.approx(tiny.hparams.clamp_norm_factor * layer_output(tiny, ck.prefixed_key).norm().item(),
                                                  rel=1e-4)
        edit = rome.make_edit(tiny, case, value, ck, second_moment, "c-rome")
        # C-ROME's numerator v* − (W k̄ + b) is δ itself: the edit writes at k̄ exactly what was optimised
        assert edit.report.numerator_norm == pytest.approx(value.delta.norm().item(), rel=1e-4)


def test_prefixed_loss_leaves_the_unprefixed_prompt_out(tiny, setup):
    templates, _ = setup
    all_rows = build_rows(tiny, CASES, templates)
    prefixed = build_rows(tiny, CASES, templates, loss_templates="prefixed")
    assert set(all_rows.first_row.tolist()) <= set(all_rows.target_row.tolist())
    assert not set(prefixed.first_row.tolist()) & set(prefixed.target_row.tolist())
    for rows in (all_rows, prefixed):  # each request's target NLL is still a mean (weights sum to 1)
        sums = torch.zeros(len(CASES)).index_add(0, rows.case[rows.target_row], rows.target_weight)
        assert torch.allclose(sums, torch.ones(len(CASES)))
    default = optimize_values(tiny, CASES, templates)
    changed = optimize_values(tiny, CASES, templates, options=ValueOptions(loss_templates="prefixed"))
    assert torch.equal(default[0].target_init, changed[0].target_init)
    assert not torch.allclose(default[0].delta, changed[0].delta)
    with pytest.raises(ValueError, match="besides"):
        build_rows(tiny, CASES, ["{}"], loss_templates="prefixed")


def test_options_are_checked():
    with pytest.raises(ValueError, match="start"):
        ValueOptions(start="middle")
    with pytest.raises(ValueError, match="loss_templates"):
        ValueOptions(loss_templates="some")


def test_default_key_is_unchanged_and_options_enter_it(tiny, setup):
    templates, _ = setup
    hp, case = tiny.hparams, CASES[0]
    old_style = _value_key(tiny, case, templates, 1, hp)
    assert "value_options" not in old_style
    assert _value_key(tiny, case, templates, 1, hp, ValueOptions()) == old_style
    keyed = {_value_path(_value_key(tiny, case, templates, 1, hp, o))
             for o in (ValueOptions(), ValueOptions(clamp_reference="prefixed"), PREFIXED_START,
                       ValueOptions(loss_templates="prefixed"))}
    assert len(keyed) == 4
    larger = _value_key(tiny, case, templates, 1, hp.replace(clamp_norm_factor=20.0))
    assert larger != old_style  # the clamp factor is a hyper-parameter: already in the key


def test_cached_values_keep_their_options(tiny, setup, tmp_path, monkeypatch):
    monkeypatch.setenv("ROME_COLLAPSE_CACHE", str(tmp_path))
    templates, case_keys = setup
    first = values_for(tiny, CASES[:1], templates, options=PREFIXED_START, progress=False)[0]
    assert len(list(tmp_path.rglob("*.safetensors"))) == 1
    again = values_for(tiny, CASES[:1], templates, options=PREFIXED_START, progress=False)[0]
    assert torch.equal(first.v_star, again.v_star) and again.clamp_bound == pytest.approx(first.clamp_bound)
    default = values_for(tiny, CASES[:1], templates, progress=False)[0]  # not the prefixed-start entry
    assert len(list(tmp_path.rglob("*.safetensors"))) == 2
    assert torch.allclose(default.target_init, layer_output(tiny, case_keys[0].unprefixed_key), atol=1e-5)
    edits = rome.compute_edits(tiny, CASES[:1], templates,
                               stats.covariance(tiny), ("c-rome",), progress=False,
                               value_options=PREFIXED_START)
    assert torch.equal(edits["c-rome"][0].value.v_star, first.v_star)


def test_study_table(tiny, setup):
    templates, _ = setup
    bundle = tiny
    variants = [clamp_study.VALUE_VARIANTS[0], clamp_study.VALUE_VARIANTS[-1]]
    texts = ["The quick brown fox jumps over the lazy dog.", "Paris is the capital and largest city of France."]
    before = bundle.weight(1).detach().clone()
    study = clamp_study.run_study(bundle, CASES[:1], {"paris": "collapse-prone"}, templates,
                                  [stats.covariance(bundle, "paper")], texts, templates[1:3], variants, progress=False)
    assert list(study["variant"]) == [v.name for v in variants]
    for column in ("rewrite_acc", "rewrite_acc_prefix", "rephrase_acc", "locality_acc", "cf_efficacy", "ppl_ratio",
                   "target_prob", "delta_norm", "clamp_bound", "steps", "collapsed"):
        assert column in study and study[column].notna().all(), column
    assert (study["delta_norm"] <= study["clamp_bound"] * 1.001).all()
    summary = clamp_study.summary(study)
    assert list(summary["variant"]) == [v.name for v in variants] and (summary["edits"] == 1).all()
    assert torch.equal(bundle.weight(1), before)  # every edit of the study undone, bit for bit


def test_profiles_size_the_study():
    smoke, full = get_profile("smoke"), get_profile("full")
    assert 0 < smoke.clamp_study_cases <= full.clamp_study_cases
    assert 0 < smoke.clamp_study_normal_cases <= full.clamp_study_normal_cases


def _cli(*args):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "rome_collapse", *args], capture_output=True, text=True, timeout=900)


def test_cli_refuses_a_clamp_factor_that_is_not_positive():
    out = _cli("edit", "--prompt", "{} is", "--subject", "X", "--target-new", "Y", "--clamp-factor", "0")
    assert out.returncode == 2 and "--clamp-factor must be above 0" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.model
def test_cli_edit_with_a_larger_clamp_factor(tmp_path):
    """A subject-first case of notebook 10 (Italy's capital → Lisbon) that C-ROME with a test-time prefix gets
    wrong with ROME's clamp (its v* ends at target probability 0.01) and right with clamp factor 10."""
    import json

    texts = tmp_path / "texts.json"
    texts.write_text(json.dumps(["The quick brown fox jumps over the lazy dog.", "Paris is the capital of France."]))
    out = _cli("edit", "--prompt", "{}'s capital city is", "--subject", "Italy", "--target-new", "Lisbon",
               "--target-true", "Rome", "--variant", "c-rome", "--test-prefix", "--clamp-factor", "10",
               "--ppl-texts", str(texts), "--json")
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["clamp_norm_factor"] == 10.0 and result["setting"] == "paper" and result["test_prefixes"] == 20
    assert result["rewrite_acc_prefix"] >= 0.9, result  # behind the editing prefixes, as the authors test it
