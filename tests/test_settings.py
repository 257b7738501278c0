"""The two named settings ("paper": no C⁻¹, as the authors ran; "original": C⁻¹ as Meng et al.), kept once: in
the C an edit is given."""
import json

import pytest
import torch

from rome_collapse import keys, models, rome, stats
from rome_collapse.data import EditCase
from rome_collapse.values import optimize_values

CASE = EditCase("paris", "{} is located in", "Paris", "Italy", "France")
LATE = EditCase("darrieux", "The mother tongue of {} is", "Danielle Darrieux", "English", "French")
TEXTS = ["The quick brown fox jumps over the lazy dog.", "Paris is the capital and largest city of France.",
         "I like apples and oranges very much, you know.", "Because it rained, the match was cancelled."] * 8


@pytest.fixture(scope="module")
def paper(tiny):
    return tiny  # a bundle has no setting of its own: the name says which C the tests below give it


@pytest.fixture(scope="module")
def setup(paper):
    templates = keys.context_templates(paper, seed=0, cache=False)
    values = optimize_values(paper, [CASE, LATE], templates)
    return templates, values


def test_the_setting_is_the_c_and_nothing_else(tiny):
    """No hyper-parameter names the setting: the C does (one place, so nothing can disagree with it)."""
    import dataclasses

    assert not any(f.name.endswith("adjustment") for f in dataclasses.fields(models.HParams))
    assert not hasattr(tiny, "setting")
    assert stats.covariance(tiny, "paper").setting == "paper"
    assert stats.covariance(tiny, "original", texts=TEXTS, cache=False, progress=False).setting == "original"
    assert stats.SETTINGS == ("paper", "original") and "rome" not in stats.SETTINGS  # "rome" is a variant
    with pytest.raises(ValueError, match="unknown setting 'rome'"):
        stats.covariance(tiny, "rome")


@pytest.mark.parametrize("name, layer, steps, decay", [
    ("gpt2-xl", 17, 20, 0.5), ("EleutherAI/gpt-j-6B", 5, 20, 0.5),
    ("meta-llama/Llama-2-7b-hf", 5, 25, 0.001), ("mistralai/Mistral-7B-v0.1", 5, 25, 0.001)])
def test_paper_setting_is_the_authors_configuration(name, layer, steps, decay):
    hp = models.hparams_for(name)
    assert (hp.layer, hp.v_num_grad_steps, hp.v_weight_decay) == (layer, steps, decay)
    assert (hp.v_lr, hp.clamp_norm_factor, hp.kl_factor) == (0.5, 4.0, 0.0625)


def test_paper_setting_computes_no_statistics(paper, monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("statistics were computed with the covariance switched off")

    monkeypatch.setattr(stats, "compute_second_moment", fail)
    covariance = stats.covariance(paper, "paper")
    assert covariance.is_identity
    v = torch.randn(5, 64)
    assert torch.equal(covariance.solve(v), v.double())


@pytest.mark.parametrize("variant", rome.VARIANTS)
def test_without_covariance_the_update_lands_on_its_own_key(paper, setup, variant):
    templates, values = setup
    ck = keys.case_keys(paper, CASE.prompt, CASE.subject, templates)
    edit = rome.make_edit(paper, CASE, values[0], ck, stats.covariance(paper, "paper"), variant)
    key = ck.unprefixed_key if variant == "rome" else ck.prefixed_key
    with rome.applied(paper, edit):
        landed = paper.weight(1).double() @ key.double()
    assert torch.allclose(landed, values[0].v_star.double(), atol=1e-4, rtol=1e-4)  # W'k = v*
    assert edit.report.setting == "paper"


def test_without_covariance_the_update_is_the_closed_form(paper, setup):
    """ΔW = (v* − W kᵘ) k̄ᵀ / (kᵘ·k̄) for ROME and (v* − W k̄) k̄ᵀ / ‖k̄‖² for C-ROME, written out here in numpy."""
    templates, values = setup
    ck = keys.case_keys(paper, CASE.prompt, CASE.subject, templates)
    W = paper.weight(1).detach().double().numpy()
    ku, kb, v = (t.detach().double().cpu().numpy() for t in (ck.unprefixed_key, ck.prefixed_key, values[0].v_star))
    import numpy as np

    expected = {"rome": np.outer(v - W @ ku, kb) / (ku @ kb), "c-rome": np.outer(v - W @ kb, kb) / (kb @ kb)}
    printed = {"rome": ku @ kb / np.linalg.norm(kb), "c-rome": np.linalg.norm(kb)}  # what the authors' code prints
    for variant in rome.VARIANTS:
        edit = rome.make_edit(paper, CASE, values[0], ck, stats.covariance(paper, "paper"), variant)
        assert np.allclose(edit.delta.double().numpy(), expected[variant], rtol=1e-4, atol=1e-6)
        assert edit.report.denominator == pytest.approx(printed[variant], rel=1e-5)
        assert edit.report.ratio == pytest.approx(ku @ kb / (kb @ kb), rel=1e-5)


def test_one_bundle_edits_in_either_setting_and_every_report_names_the_c_it_was_given(tiny, setup):
    templates, values = setup
    ck = keys.case_keys(tiny, CASE.prompt, CASE.subject, templates)
    C = stats.second_moment(tiny, texts=TEXTS, cache=False, progress=False)
    identity = stats.covariance(tiny, "paper")
    with_c, without = (rome.make_edit(tiny, CASE, values[0], ck, c, "rome") for c in (C, identity))
    assert (with_c.report.setting, without.report.setting) == ("original", "paper")
    assert not torch.allclose(with_c.delta, without.delta)  # the C is what differs, and it shows
    expected_left = torch.linalg.solve(C.matrix, ck.prefixed_key.double())
    assert torch.allclose(with_c.delta.double()[0] / with_c.delta.double()[0].norm(),
                          expected_left / expected_left.norm() * torch.sign(with_c.delta.double()[0] @ expected_left),
                          atol=1e-5)  # each row of ΔW lies along C⁻¹k̄
    risks = [rome.collapse_risk(tiny, CASE, templates, c) for c in (C, identity)]
    assert [r.setting for r in risks] == ["original", "paper"]
    assert risks[0].ratio == pytest.approx(with_c.report.ratio) and risks[1].ratio == pytest.approx(
        without.report.ratio)


@pytest.mark.parametrize("templates, message", [
    (["The day. {}"], "first template must be '{}'"),
    (["{}", "no placeholder"], "template 1"),
    ("{}", "non-empty JSON list of strings"),
    ([], "non-empty JSON list of strings"),
])
def test_bad_templates_are_named(tmp_path, templates, message):
    path = tmp_path / "templates.json"
    path.write_text(json.dumps(templates))
    with pytest.raises(ValueError, match=message):
        keys.load_templates(path)


def test_templates_file_round_trip(tmp_path):
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"templates": ["{}", "It rained. {}"]}))
    assert keys.load_templates(path) == ["{}", "It rained. {}"]


def test_workbook_setup_gives_each_setting_its_own_c_and_one_set_of_templates(tiny, monkeypatch):
    from rome_collapse import workbook

    C = stats.second_moment(tiny, texts=TEXTS, cache=False, progress=False)
    asked = {}

    def second_moment(bundle, n_samples=None, **kwargs):
        asked["n"] = n_samples
        return C

    def context_templates(bundle, seed):
        asked["seed"] = seed
        return ["{}"]

    monkeypatch.setattr(models, "load_model", lambda name, device=None: tiny)
    monkeypatch.setattr(stats, "second_moment", second_moment)
    monkeypatch.setattr(keys, "context_templates", context_templates)
    setup = workbook.setup("tiny-llama", "smoke", ["paper", "original"])
    assert list(setup.covariances) == ["paper", "original"]
    assert [c.setting for c in setup.covariances.values()] == ["paper", "original"]
    assert setup.covariance.is_identity and setup.covariances["original"] is C
    assert asked == {"n": 1000, "seed": 0} and setup.templates == ["{}"]  # the smoke profile's sizes
    assert "setting paper: no C⁻¹ (identity); setting original: C over" in setup.describe()
    asked.clear()
    assert workbook.setup("tiny-llama", "full", "original").covariance is C and asked["n"] == 9950


def test_hyper_parameters_have_one_source_the_yaml(tiny):
    """HParams carries no numbers of its own: every value comes from resources/hparams.yaml, and a bundle's
    hyper-parameters change only by making a new bundle."""
    import dataclasses
    from importlib import resources

    import yaml

    assert all(f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
               for f in dataclasses.fields(models.HParams))
    table = yaml.safe_load(resources.files("rome_collapse").joinpath("resources/hparams.yaml").read_text())
    assert dataclasses.asdict(models.default_hparams(layer=3)) == {**table["defaults"], "layer": 3}
    smol = models.hparams_for("smollm2-135m")
    expected = table["models"]["smollm2-135m"]
    assert {k: v for k, v in dataclasses.asdict(smol).items() if k in expected} == expected
    moved = tiny.with_hparams(layer=2)
    assert moved.hparams.layer == 2 and tiny.hparams.layer == 1 and moved.model is tiny.model


def test_a_profile_sizes_v_star_steps_and_leaves_the_rest(tiny):
    from rome_collapse.profiles import get_profile

    smoke, full = get_profile("smoke"), get_profile("full")
    sized = smoke.sized(tiny)
    assert sized.hparams.v_num_grad_steps == smoke.value_steps < tiny.hparams.v_num_grad_steps
    assert sized.hparams.replace(v_num_grad_steps=tiny.hparams.v_num_grad_steps) == tiny.hparams
    assert full.sized(tiny) is tiny  # the real run keeps the model's own steps
