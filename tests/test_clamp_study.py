"""rome.ValueOptions (where v* starts, its clamp, its loss) and notebook 10's study, on the tiny random model."""
import pytest
import torch

from rome_collapse import clamp_study, keys, rome, stats
from rome_collapse.data import EditCase
from rome_collapse.profiles import get_profile

CASES = [
    EditCase("paris", "{} is located in", "Paris", "Italy", "France",
             paraphrase_prompts=("Paris lies in",), neighborhood_prompts=("Lyon is located in",)),
    EditCase("darrieux", "The mother tongue of {} is", "Danielle Darrieux", "English", "French"),
]
PREFIXED_START = rome.ValueOptions(start="prefixed", clamp_reference="prefixed")


@pytest.fixture(scope="module")
def setup(tiny):
    templates = keys.context_templates(tiny, seed=0, cache=False)
    case_keys = [keys.case_keys(tiny, c.prompt, c.subject, templates) for c in CASES]
    return templates, case_keys


def _tight(bundle, factor: float = 0.05):
    """The bundle with a clamp small enough to bind at every step."""
    import dataclasses

    return dataclasses.replace(bundle, hparams=bundle.hparams.replace(clamp_norm_factor=factor))


def test_default_options_give_rome_values_bit_for_bit(tiny, setup):
    templates, case_keys = setup
    plain = rome.optimize_values(tiny, CASES, templates)
    explicit = rome.optimize_values(tiny, CASES, templates, options=rome.ValueOptions())
    for a, b, ck in zip(plain, explicit, case_keys):
        assert torch.equal(a.v_star, b.v_star) and torch.equal(a.delta, b.delta) and a.steps == b.steps
        # ROME's start: the output at the unprefixed prompt; the clamp is measured against it
        assert torch.allclose(a.target_init, ck.unprefixed_output, atol=1e-5)
        assert a.clamp_bound == pytest.approx(tiny.hparams.clamp_norm_factor * a.target_init.norm().item(), rel=1e-6)


def test_prefixed_clamp_changes_only_the_bound(tiny, setup):
    templates, case_keys = setup
    bundle = _tight(tiny)
    rome_v = rome.optimize_values(bundle, CASES, templates)
    prefixed = rome.optimize_values(bundle, CASES, templates, options=rome.ValueOptions(clamp_reference="prefixed"))
    for a, b, ck in zip(rome_v, prefixed, case_keys):
        assert torch.equal(a.target_init, b.target_init)  # same start
        assert abs(ck.unprefixed_output.norm() - ck.prefixed_output.norm()) > 1e-2 * ck.unprefixed_output.norm()
        assert a.delta.norm().item() == pytest.approx(0.05 * ck.unprefixed_output.norm().item(), rel=1e-4)
        assert b.delta.norm().item() == pytest.approx(0.05 * ck.prefixed_output.norm().item(), rel=1e-4)
        assert b.clamp_bound == pytest.approx(0.05 * ck.prefixed_output.norm().item(), rel=1e-4)


def test_prefixed_start_is_the_mean_output_and_c_rome_adds_exactly_delta(tiny, setup):
    templates, case_keys = setup
    second_moment = stats.SecondMoment.identity()  # the paper's setting: C = I
    values = rome.optimize_values(tiny, CASES, templates, options=PREFIXED_START)
    for case, value, ck in zip(CASES, values, case_keys):
        assert torch.allclose(value.target_init, ck.prefixed_output, atol=1e-5)  # W k̄ + b
        assert not torch.allclose(value.target_init, ck.unprefixed_output, atol=1e-3)
        assert value.clamp_bound == pytest.approx(tiny.hparams.clamp_norm_factor * ck.prefixed_output.norm().item(),
                                                  rel=1e-4)
        edit = rome.make_edit(tiny.with_setting("paper"), case, value, ck, second_moment, "c-rome")
        # C-ROME's numerator v* − (W k̄ + b) is δ itself: the edit writes at k̄ exactly what was optimised
        assert edit.report.numerator_norm == pytest.approx(value.delta.norm().item(), rel=1e-4)


def test_prefixed_loss_leaves_the_unprefixed_prompt_out(tiny, setup):
    templates, _ = setup
    all_rows = rome._build_rows(tiny, CASES, templates)
    prefixed = rome._build_rows(tiny, CASES, templates, loss_templates="prefixed")
    assert set(all_rows.first_row.tolist()) <= set(all_rows.target_row.tolist())
    assert not set(prefixed.first_row.tolist()) & set(prefixed.target_row.tolist())
    for rows in (all_rows, prefixed):  # each request's target NLL is still a mean (weights sum to 1)
        sums = torch.zeros(len(CASES)).index_add(0, rows.case[rows.target_row], rows.target_weight)
        assert torch.allclose(sums, torch.ones(len(CASES)))
    default = rome.optimize_values(tiny, CASES, templates)
    changed = rome.optimize_values(tiny, CASES, templates, options=rome.ValueOptions(loss_templates="prefixed"))
    assert torch.equal(default[0].target_init, changed[0].target_init)
    assert not torch.allclose(default[0].delta, changed[0].delta)
    with pytest.raises(ValueError, match="besides"):
        rome._build_rows(tiny, CASES, ["{}"], loss_templates="prefixed")


def test_options_are_checked():
    with pytest.raises(ValueError, match="start"):
        rome.ValueOptions(start="middle")
    with pytest.raises(ValueError, match="loss_templates"):
        rome.ValueOptions(loss_templates="some")


def test_default_key_is_unchanged_and_options_enter_it(tiny, setup):
    templates, _ = setup
    hp, case = tiny.hparams, CASES[0]
    old_style = rome._value_key(tiny, case, templates, 1, hp)
    assert "value_options" not in old_style
    assert rome._value_key(tiny, case, templates, 1, hp, rome.ValueOptions()) == old_style
    keyed = {rome._value_path(rome._value_key(tiny, case, templates, 1, hp, o))
             for o in (rome.ValueOptions(), rome.ValueOptions(clamp_reference="prefixed"), PREFIXED_START,
                       rome.ValueOptions(loss_templates="prefixed"))}
    assert len(keyed) == 4
    larger = rome._value_key(tiny, case, templates, 1, hp.replace(clamp_norm_factor=20.0))
    assert larger != old_style  # the clamp factor is a hyper-parameter: already in the key


def test_cached_values_keep_their_options(tiny, setup, tmp_path, monkeypatch):
    monkeypatch.setenv("ROME_COLLAPSE_CACHE", str(tmp_path))
    templates, case_keys = setup
    first = rome.values_for(tiny, CASES[:1], templates, options=PREFIXED_START, progress=False)[0]
    assert len(list(tmp_path.rglob("*.safetensors"))) == 1
    again = rome.values_for(tiny, CASES[:1], templates, options=PREFIXED_START, progress=False)[0]
    assert torch.equal(first.v_star, again.v_star) and again.clamp_bound == pytest.approx(first.clamp_bound)
    default = rome.values_for(tiny, CASES[:1], templates, progress=False)[0]  # not the prefixed-start entry
    assert len(list(tmp_path.rglob("*.safetensors"))) == 2
    assert torch.allclose(default.target_init, case_keys[0].unprefixed_output, atol=1e-5)
    edits = rome.compute_edits(tiny.with_setting("paper"), CASES[:1], templates,
                               stats.covariance(tiny.with_setting("paper")), ("c-rome",), progress=False,
                               value_options=PREFIXED_START)
    assert torch.equal(edits["c-rome"][0].value.v_star, first.v_star)


def test_study_table(tiny, setup):
    templates, _ = setup
    bundle = tiny.with_setting("paper")
    variants = [clamp_study.VALUE_VARIANTS[0], clamp_study.VALUE_VARIANTS[-1]]
    texts = ["The quick brown fox jumps over the lazy dog.", "Paris is the capital and largest city of France."]
    study = clamp_study.run_study({"paper": bundle}, CASES[:1], {"paris": "collapse-prone"}, templates,
                                  {"paper": stats.covariance(bundle)}, texts, templates[1:3], variants, progress=False)
    assert list(study["variant"]) == [v.name for v in variants]
    for column in ("efficacy", "efficacy with prefix", "generalization", "locality with prefix", "ppl_ratio",
                   "target_prob", "delta_norm", "clamp_bound", "steps", "collapsed"):
        assert column in study and study[column].notna().all(), column
    assert (study["delta_norm"] <= study["clamp_bound"] * 1.001).all()
    summary = clamp_study.summary(study)
    assert list(summary["variant"]) == [v.name for v in variants] and (summary["edits"] == 1).all()
    assert torch.equal(tiny.weight(1), bundle.weight(1))  # weights restored


def test_profiles_size_the_study():
    smoke, full = get_profile("smoke"), get_profile("full")
    assert 0 < smoke.clamp_study_cases <= full.clamp_study_cases
    assert 0 < smoke.clamp_study_normal_cases <= full.clamp_study_normal_cases


def test_entries_from_before_the_bound_was_stored_get_rome_s_bound(tiny, setup, tmp_path, monkeypatch):
    monkeypatch.setenv("ROME_COLLAPSE_CACHE", str(tmp_path))
    templates, _ = setup
    value = rome.optimize_values(tiny, CASES[:1], templates)[0]
    for options, expected in ((None, tiny.hparams.clamp_norm_factor * value.target_init.norm().item()),
                              (PREFIXED_START, None)):
        key = rome._value_key(tiny, CASES[0], templates, 1, tiny.hparams, options)
        path = rome._value_path(key)
        rome._save_value(path, key, rome.ValueResult(**{**value.__dict__, "clamp_bound": None}))
        loaded = rome._load_value(path, key, CASES[0].case_id)
        assert torch.equal(loaded.v_star, value.v_star)
        assert loaded.clamp_bound == (pytest.approx(expected) if expected else None)


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
    assert result["clamp_norm_factor"] == 10.0 and result["setting"] == "paper" and result["test_prefix"]
    assert result["efficacy"] == 1.0


def _study_rows(variant, efficacy_with_prefix, locality, ppl_ratio=1.0, normal_efficacy=1.0):
    prone = {"setting": "paper", "variant": variant, "group": "collapse-prone", "efficacy": 0.0,
             "efficacy with prefix": efficacy_with_prefix, "locality with prefix": locality, "ppl_ratio": ppl_ratio,
             "collapsed": ppl_ratio > 10, "target_prob": 0.5}
    normal = {**prone, "group": "normal", "efficacy": normal_efficacy, "efficacy with prefix": normal_efficacy,
              "ppl_ratio": 1.0, "collapsed": False}
    return [prone, normal]


@pytest.mark.parametrize("rows, verdict, passing", [
    ([("base", 0.6, 0.8), ("good", 0.95, 0.78)], "holds", ["good"]),
    ([("base", 0.6, 0.8), ("costly", 1.0, 0.5)], "holds in part", []),  # reaches the bar, loses locality
    ([("base", 0.6, 0.8), ("collapsing", 1.0, 0.8, 50.0)], "holds in part", []),
    ([("base", 0.6, 0.8), ("better", 0.75, 0.8)], "holds in part", []),  # intact, +0.15 but short of 0.9
    ([("base", 0.6, 0.8), ("same", 0.65, 0.8)], "does not hold", []),
    ([("base", 0.6, 0.8), ("breaks normal", 0.95, 0.8, 1.0, 0.5)], "holds in part", []),
])
def test_judge(rows, verdict, passing):
    import pandas as pd

    study = pd.DataFrame([r for args in rows for r in _study_rows(*args)])
    found = clamp_study.judge(study, "paper", baseline="base")
    assert (found.verdict, found.passing) == (verdict, passing)
    assert found.measured and "base" not in found.checks.index[found.checks["passes"]]
