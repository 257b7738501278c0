"""The explorer's callbacks, headless: set the widgets' values, click the buttons, read what the widgets show.

Most tests use the tiny random Llama (injected through ``load=``): the plumbing must hold on any weights.
"""
import pytest
import torch

from rome_collapse import explorer, keys, models, outcomes, rome, stats, values
from rome_collapse.explorer import render
from rome_collapse.tokens import subject_is_first_token

from conftest import tiny_llama

TEXTS = ["The quick brown fox jumps over the lazy dog.", "Paris is the capital of France.",
         "Water boils at one hundred degrees.", "She wrote a letter to her old friend."]


def weights(bundle) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in bundle.model.state_dict().items()}


def same_weights(bundle, saved) -> bool:
    return all(torch.equal(v, saved[k]) for k, v in bundle.model.state_dict().items())


@pytest.fixture
def make(tiny, curated):
    def build(**kwargs):
        options = dict(model="tiny-llama", load=lambda name: tiny, model_names=["tiny-llama"], cases=curated,
                       v_steps=3, ppl_sentences=3, cache=False)
        return explorer.Explorer(**{**options, **kwargs})
    return build


@pytest.fixture
def ex(make):
    return make()


def type_case(ex, prompt, subject, target_new="Madrid", target_true="Berlin"):
    ex.target_new.value, ex.target_true.value = target_new, target_true
    ex.prompt.value, ex.subject.value = prompt, subject


def is_error(html: str) -> bool:
    return "rc-error" in html and "color:#c62828" in html and "Traceback" not in html


# ---- the plain functions ------------------------------------------------------------------
def test_read_case_returns_the_curated_case_when_unchanged(curated):
    c = curated[1]
    assert explorer.read_case(c.prompt, c.subject, c.target_new, c.target_true, c) is c
    typed = explorer.read_case(c.prompt, c.subject, "Lisbon", c.target_true, c)
    assert typed.case_id == explorer.FREE_TEXT_ID and typed.target_new == "Lisbon"


@pytest.mark.parametrize("prompt, subject, target_new, target_true, says", [
    ("Germany's capital city is", "Germany", "Madrid", "Berlin", "replace “Germany” in it by {}"),
    ("The capital of Germany is", "France", "Madrid", "Berlin", "has no {}"),
    ("{} and {} are", "Germany", "Madrid", "Berlin", "more than one {}"),
    ("{}'s capital city is", "  ", "Madrid", "Berlin", "subject is not in the prompt"),
    ("{}'s capital city is", "Germany", "", "Berlin", "target_new is empty"),
    ("{}'s capital city is", "Germany", "Madrid", " ", "target_true is empty"),
    ("{}'s capital city is", "Germany", "Berlin", "Berlin", "equals target_true"),
])
def test_read_case_says_what_to_fix(prompt, subject, target_new, target_true, says):
    with pytest.raises(explorer.InputError, match=None) as info:
        explorer.read_case(prompt, subject, target_new, target_true)
    assert says in str(info.value)


def test_top_tokens_are_the_argmax_of_the_next_token_distribution(tiny):
    top = explorer.top_tokens(tiny, "The capital of France is", k=5)
    assert len(top) == 5 and all(a[1] >= b[1] for a, b in zip(top, top[1:]))
    ids = tiny.tokenizer("The capital of France is", add_special_tokens=False, return_tensors="pt").input_ids
    with torch.no_grad():
        best = tiny.model(input_ids=ids).logits[0, -1].argmax().item()
    assert top[0][0] == tiny.tokenizer.decode([best])


# ---- errors appear as red messages, never as tracebacks -------------------------------------
def test_prompt_without_braces_is_a_red_message(ex, tiny):
    saved = weights(tiny)
    type_case(ex, "Germany's capital city is", "Germany")  # the risk refreshes at once
    assert is_error(ex.message.value) and "has no {}" in ex.message.value and ex.risk.value == ""
    ex.edit_button.click()
    assert is_error(ex.message.value) and ex.result.value == "" and ex.last_edit is None
    assert same_weights(tiny, saved) and not ex.edit_button.disabled


def test_subject_not_in_the_prompt_is_a_red_message(ex):
    type_case(ex, "{} is located in", "")
    ex.risk_button.click()
    assert is_error(ex.message.value) and "subject is not in the prompt" in ex.message.value
    assert ex.last_risk is None


def test_empty_target_is_a_red_message(ex, tiny):
    saved = weights(tiny)
    type_case(ex, "{}'s capital city is", "Germany", target_new="")
    assert ex.last_risk is not None  # the pre-flight check needs no target
    ex.edit_button.click()
    assert is_error(ex.message.value) and "target_new is empty" in ex.message.value
    assert ex.result.value == "" and same_weights(tiny, saved) and ex.undo_button.disabled


def test_an_engine_error_is_a_red_message_too(ex, monkeypatch):
    type_case(ex, "{}'s capital city is", "Germany")

    def broken(*args, **kwargs):
        raise RuntimeError("out of memory")
    monkeypatch.setattr(values, "values_for", broken)
    ex.edit_button.click()
    assert is_error(ex.message.value) and "RuntimeError: out of memory" in ex.message.value
    assert not ex.edit_button.disabled and not ex.risk_button.disabled


# ---- the pre-flight check -----------------------------------------------------------------
def test_risk_shows_the_ratio_and_the_first_token_flag(ex, tiny, curated):
    case = curated[1]  # "{}'s capital city is", Germany: the subject is the first token
    ex.case.value = ex._label(case)  # picking a curated case fills the inputs and checks at once
    assert (ex.prompt.value, ex.subject.value, ex.target_new.value) == (case.prompt, case.subject, case.target_new)
    report = ex.last_risk
    paper = tiny  # the explorer's default setting
    expected = rome.collapse_risk(paper, case, keys.context_templates(paper), stats.SecondMoment.identity())
    assert report.ratio == pytest.approx(expected.ratio) and report.setting == "paper"
    assert report.subject_first_token is True and subject_is_first_token(tiny, case.prompt, case.subject)
    assert f"ratio {render.format_number(report.ratio)} · first token: yes" in ex.risk.value
    assert "setting <b>paper: no C⁻¹" in ex.risk.value and ex.message.value == ""

    type_case(ex, "The capital of {} is", "Germany")
    assert ex.last_risk.subject_first_token is False and "first token: no" in ex.risk.value


def test_risk_follows_the_layer_slider_and_the_setting(ex, tiny, monkeypatch):
    assert (ex.layer.value, ex.layer.max) == (tiny.hparams.layer, tiny.num_layers - 1)
    type_case(ex, "{}'s capital city is", "Germany")
    ex.layer.value = 2
    assert "layer 2" in ex.risk.value
    C = stats.second_moment(tiny, layer=2, texts=TEXTS, cache=False, progress=False)
    monkeypatch.setattr(stats, "covariance",  # C over a few texts, not the profile's 1,000
                        lambda bundle, setting, **kw: C if setting == "original" else stats.SecondMoment.identity())
    ex.setting.value = "original"
    assert ex.last_risk.setting == "original" and "setting <b>original: left vector C⁻¹k̄" in ex.risk.value
    assert ex.last_risk.ratio == pytest.approx(rome.collapse_risk(
        tiny.with_hparams(layer=2), ex.read_inputs(need_targets=False), ex.templates(), C).ratio)


# ---- editing and undoing ------------------------------------------------------------------
def test_edit_shows_the_update_and_undo_restores_the_weights_bit_for_bit(ex, tiny, curated, capsys):
    saved = weights(tiny)
    ex.case.value = ex._label(curated[1])
    ex.edit_button.click()
    edit = ex.last_edit
    assert edit is not None, ex.message.value
    html = ex.result.value
    for shown in ("numerator ‖v* − Wk − b‖", "denominator k·u", "‖ΔW‖", "ME-PPL", "rewrite accuracy (the paper's efficacy)", "CounterFact's efficacy",
                  "top-5 next tokens", "greedy continuation", "before", "after (ROME, paper)"):
        assert shown in html, shown
    assert render.format_number(edit.report.update_norm) in html
    assert render.format_number(edit.report.numerator_norm) in html
    assert edit.report.setting == "paper" and edit.report.variant == "rome" and edit.report.layer == tiny.hparams.layer
    assert ex.progress.value == ex.progress.max == 3 and ex.progress_label.value.startswith("v*: ")
    assert not same_weights(tiny, saved) and not ex.undo_button.disabled
    assert "Edits so far" in ex.history.value and len(ex.runs) == 1
    # the history names both efficacies, with the numbers of the result panel
    run = ex.runs[0]
    assert "rewrite accuracy" in ex.history.value and "CounterFact efficacy" in ex.history.value
    assert render.format_number(run["rewrite_acc_after"]) in ex.history.value
    assert run["efficacy_after"] in (0, 1) and 0.0 <= run["rewrite_acc_after"] <= 1.0

    ex.undo_button.click()
    assert same_weights(tiny, saved) and ex.undo_button.disabled and "Undone" in ex.message.value
    assert capsys.readouterr().out == ""  # the explorer writes into its widgets only


def test_rome_edit_reports_each_step_of_v_star(tiny, curated):
    paper = tiny.with_hparams(v_num_grad_steps=3)
    steps = []
    edit = rome.edit(paper, curated[1], keys.context_templates(paper), stats.SecondMoment.identity(), cache=False,
                     on_step=steps.append)
    assert steps and steps == list(range(1, len(steps) + 1)) and steps[-1] == edit.value.steps


def test_the_edit_is_measured_as_outcomes_measure_edit_does(ex, tiny):
    """ME-PPL before and after and the collapse verdict are outcomes.measure_edit's, and the edit stays applied."""
    saved = weights(tiny)
    type_case(ex, "{}'s capital city is", "Germany")
    ex.edit_button.click()
    edit = ex.last_edit
    assert edit is not None and ex.session.edits == [edit] and not same_weights(tiny, saved)
    assert "steps" in ex.progress_label.value and "from the cache" not in ex.progress_label.value
    ex.undo_button.click()
    outcome = outcomes.measure_edit(ex.bundle, edit, ex.ppl_texts, scores=False)
    run = ex.runs[-1]
    assert (run["ppl_before"], run["ppl_after"]) == pytest.approx((outcome.ppl_before, outcome.ppl_after), rel=1e-9)
    assert run["ppl_after"] != run["ppl_before"]
    assert ("(collapsed)" in ex.result.value) == outcome.collapsed


def test_each_edit_starts_from_the_unedited_model(ex, tiny):
    saved = weights(tiny)
    type_case(ex, "{}'s capital city is", "Germany")
    ex.edit_button.click()
    first = ex.last_edit
    ex.variant.value = "c-rome"
    ex.layer.value = 2
    ex.edit_button.click()
    second = ex.last_edit
    assert (second.report.variant, second.report.layer) == ("c-rome", 2)
    # only the second edit is in the model: layer 1 is back to the original, layer 2 holds ΔW
    name = "model.layers.{}.mlp.down_proj.weight"
    assert torch.equal(tiny.model.state_dict()[name.format(first.layer)], saved[name.format(first.layer)])
    assert torch.equal(tiny.model.state_dict()[name.format(2)], saved[name.format(2)] + second.delta)
    assert [r["variant"] for r in ex.runs] == ["ROME", "C-ROME"]
    ex.undo_button.click()
    assert same_weights(tiny, saved)


def test_risk_while_edited_reads_the_unedited_model(ex, tiny):
    type_case(ex, "{}'s capital city is", "Germany")
    ex.layer.value = 2
    before = ex.last_risk.ratio
    ex.layer.value = 1
    ex.edit_button.click()  # edits layer 1, which changes the keys of layer 2
    ex.layer.value = 2
    assert ex.last_risk.ratio == pytest.approx(before, abs=0, rel=1e-12)
    assert ex.session.edits  # the edit is still applied after the check


def test_test_time_prefix_is_put_before_the_prompt(ex, tiny):
    type_case(ex, "{}'s capital city is", "Germany")
    ex.prefix.value = True
    ex.variant.value = "c-rome"
    ex.edit_button.click()
    prefix = keys.context_templates(tiny)[1].replace("{}", "")
    assert ex.runs[-1]["test_prefix"] and render.escape_text(prefix) in ex.result.value


def test_switching_model_undoes_the_edit(make, tiny, tiny_tokenizer):
    other = models.from_model(tiny_llama(tiny_tokenizer, seed=1), tiny_tokenizer, name="tiny-other",
                              hparams=tiny.hparams)
    bundles = {"tiny-llama": tiny, "tiny-other": other}
    ex = make(load=bundles.__getitem__, model_names=list(bundles))
    saved = weights(tiny)
    type_case(ex, "{}'s capital city is", "Germany")
    ex.edit_button.click()
    assert not same_weights(tiny, saved)
    ex.model.value = "tiny-other"
    assert same_weights(tiny, saved) and ex.undo_button.disabled and ex.last_risk is not None
    assert ex.bundle.model is other.model


@pytest.mark.model
def test_collapse_prone_case_on_the_default_model(smol, curated):
    ex = explorer.Explorer(load=lambda name: smol, case_id=1, cases=curated)
    assert ex.last_risk is not None, ex.message.value
    assert ex.last_risk.subject_first_token and ex.last_risk.at_risk and ex.last_risk.ratio < 0.1
    assert "first token: yes" in ex.risk.value and "at risk" in ex.risk.value


def test_the_explorer_offers_records_of_a_flat_counterfact_file(make, tmp_path):
    """EasyEdit's flat format (the shared CounterFact splits) reaches the case list like ROME's format does."""
    import json

    from rome_collapse import data

    record = {"case_id": 0, "prompt": "The mother tongue of Danielle Darrieux is", "subject": "Danielle Darrieux",
              "target_new": "English", "ground_truth": "French",
              "rephrase_prompt": "Where Danielle Darrieux is from, people speak the language of",
              "locality_prompt": "Michel Rocard is a native speaker of", "locality_ground_truth": "French"}
    path = tmp_path / "flat.json"
    path.write_text(json.dumps([record]))
    ex = make(cases=data.load_cases(path), case_id=0)
    (case,) = ex.cases.values()
    assert case.prompt == "The mother tongue of {} is" and case.subject == "Danielle Darrieux"
