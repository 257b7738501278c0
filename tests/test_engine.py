"""The ROME math on tiny random models: the update by hand, exact landing (also through GPT-2's transposed
Conv1D), the numerator, restoration, batching, statistics, and the scorer's test-time prefix."""
import copy
import math
from types import SimpleNamespace

import pytest
import torch
import transformers

from conftest import layer_output, projection_inputs
from tolerances import assert_agree, forward_rounding, rounding, second_moment_rounding
from rome_collapse import keys, metrics, models, outcomes, rome, stats
from rome_collapse.data import EditCase
from rome_collapse.values import ValueResult, optimize_values

CASES = [
    EditCase("darrieux", "The mother tongue of {} is", "Danielle Darrieux", "English", "French",
             paraphrase_prompts=("Danielle Darrieux spoke",), neighborhood_prompts=("Léon Blum spoke",)),
    EditCase("paris", "{} is located in", "Paris", "Italy", "France"),
    EditCase("apple", "The maker of the {} phone is", "iPhone", "Nokia", "Apple"),
]
TEXTS = ["The quick brown fox jumps over the lazy dog.", "Paris is the capital and largest city of France.",
         "I like apples and oranges very much, you know.", "Because it rained, the match was cancelled."] * 8


@pytest.fixture(scope="module")
def tiny_setup(tiny):
    second_moment = stats.second_moment(tiny, texts=TEXTS, cache=False, progress=False)
    templates = keys.context_templates(tiny, seed=0, cache=False)
    values = optimize_values(tiny, CASES, templates)
    return second_moment, templates, values


def test_statistics_truncated_equal_full_forward(tiny):
    truncated, n1 = stats.compute_second_moment(tiny, 1, TEXTS, progress=False, stop=True)
    full, n2 = stats.compute_second_moment(tiny, 1, TEXTS, progress=False, stop=False)
    assert n1 == n2 > 0
    assert torch.allclose(truncated, full, rtol=1e-10, atol=1e-12)
    assert truncated.dtype == torch.float64
    assert torch.allclose(truncated, truncated.T)


def test_statistics_are_the_mean_outer_product(tiny):
    from rome_collapse.tokens import encode
    from rome_collapse.trace import down_proj_input

    batch = encode(tiny, TEXTS[:4])
    k = down_proj_input(tiny, 1, batch)
    k = k[batch.attention_mask.bool()].double()
    expected = k.T @ k / k.shape[0]
    got, n = stats.compute_second_moment(tiny, 1, TEXTS[:4], progress=False)  # length-sorted: another batch
    assert_agree(got, expected, second_moment_rounding(tiny, n, layer=1))


@pytest.mark.parametrize("variant", rome.VARIANTS)
def test_update_lands_exactly(tiny, tiny_setup, variant):
    second_moment, templates, values = tiny_setup
    case, value = CASES[0], values[0]
    ck = keys.case_keys(tiny, case.prompt, case.subject, templates)
    edit = rome.make_edit(tiny, case, value, ck, second_moment, variant)
    key = ck.unprefixed_key if variant == "rome" else ck.prefixed_key
    with rome.applied(tiny, edit):
        landed = tiny.weight(1).double() @ key.double()
    # rome: W'kᵘ = v*; c-rome: W'k̄ = v* (the rank-one update solves exactly for its own key)
    assert torch.allclose(landed, value.v_star.double(), atol=1e-4, rtol=1e-4)
    assert edit.report.variant == variant and edit.delta.shape == tiny.weight(1).shape


def test_rank_one_update_against_numbers_worked_by_hand():
    """A 3×2 W with a bias, C = diag(2, 1), kᵘ = (1, 0), k̄ = (2, 2), v* = (3, 1, 2): the left vector is
    C⁻¹k̄ = (1, 2), with ‖C⁻¹k̄‖ = √5 and k̄·C⁻¹k̄ = 6; every number below is worked out by hand."""
    W = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    C = stats.SecondMoment(torch.tensor([[2.0, 0.0], [0.0, 1.0]], dtype=torch.float64), 1, {})
    k_u, k_bar = torch.tensor([1.0, 0.0]), torch.tensor([2.0, 2.0])
    v_star, b = torch.tensor([3.0, 1.0, 2.0]), torch.tensor([0.5, 0.0, -1.0])
    # ROME: numerator v* − W kᵘ − b = (3 − 1 − 0.5, 1 − 0 − 0, 2 − 1 + 1) = (1.5, 1, 2); denominator kᵘ·C⁻¹k̄ = 1
    delta, parts = rome.rank_one_update(W, C, k_u, k_bar, v_star, "rome", bias=b)
    torch.testing.assert_close(delta, torch.tensor([[1.5, 3.0], [1.0, 2.0], [2.0, 4.0]], dtype=torch.float64))
    assert parts["numerator_norm"] == pytest.approx(math.sqrt(1.5 ** 2 + 1 + 4))
    assert parts["denominator"] == pytest.approx(1 / math.sqrt(5))  # k·u, u = C⁻¹k̄/‖C⁻¹k̄‖
    assert parts["ratio"] == pytest.approx(1 / 6)  # (kᵘ·C⁻¹k̄)/(k̄·C⁻¹k̄)
    torch.testing.assert_close((W.double() + delta) @ k_u.double() + b.double(), v_star.double())  # W'kᵘ + b = v*
    # C-ROME: numerator v* − W k̄ − b = (3 − 2 − 0.5, 1 − 2 − 0, 2 − 4 + 1) = (0.5, −1, −1); denominator k̄·C⁻¹k̄ = 6
    delta, parts = rome.rank_one_update(W, C, k_u, k_bar, v_star, "c-rome", bias=b)
    torch.testing.assert_close(delta, torch.tensor([[1 / 12, 1 / 6], [-1 / 6, -1 / 3], [-1 / 6, -1 / 3]],
                                                   dtype=torch.float64))
    assert parts["numerator_norm"] == pytest.approx(1.5)
    assert parts["denominator"] == pytest.approx(6 / math.sqrt(5))
    assert parts["ratio"] == pytest.approx(1 / 6)  # the ratio is ROME's, whichever variant
    torch.testing.assert_close((W.double() + delta) @ k_bar.double() + b.double(), v_star.double())  # W'k̄ + b = v*


def test_template_keys_and_prefixed_key(tiny, tiny_setup):
    _, templates, _ = tiny_setup
    ck = keys.case_keys(tiny, CASES[0].prompt, CASES[0].subject, templates)
    tolerance = forward_rounding(tiny)  # one batch of every template against each prompt read on its own
    assert_agree(ck.unprefixed_key, keys.unprefixed_key(tiny, CASES[0].prompt, CASES[0].subject), tolerance)
    assert_agree(ck.prefixed_key, keys.prefixed_key(tiny, CASES[0].prompt, CASES[0].subject, templates), tolerance)
    assert ck.template_keys.shape[0] == len(templates)


def test_restoration_is_bitwise_even_after_an_exception(tiny, tiny_setup):
    second_moment, templates, values = tiny_setup
    edits = rome.compute_edits(tiny, CASES[:2], templates, second_moment, cache=False, progress=False)["rome"]
    before = {n: p.detach().clone() for n, p in tiny.model.named_parameters()}
    with pytest.raises(RuntimeError, match="boom"):
        with rome.applied(tiny, edits):
            assert not torch.equal(tiny.weight(1), before["model.layers.1.mlp.down_proj.weight"])
            raise RuntimeError("boom")
    assert all(torch.equal(p, before[n]) for n, p in tiny.model.named_parameters())
    with rome.EditSession(tiny) as session:
        for e in edits:
            session.apply(e)
        assert len(session.edits) == 2
    assert all(torch.equal(p, before[n]) for n, p in tiny.model.named_parameters())


def test_failing_apply_leaves_weights_untouched(tiny, tiny_setup):
    second_moment, templates, values = tiny_setup
    good = rome.compute_edits(tiny, CASES[:1], templates, second_moment, ("rome",), cache=False, progress=False)["rome"][0]
    bad = rome.Edit(good.case, 1, torch.ones(3, 3), good.report)  # wrong shape: fails halfway
    before = tiny.weight(1).detach().clone()
    with pytest.raises(RuntimeError):
        with rome.applied(tiny, [good, bad]):
            pass
    assert torch.equal(tiny.weight(1), before)


def test_refusing_a_tiny_denominator(tiny, tiny_setup):
    second_moment, templates, values = tiny_setup
    edit = rome.compute_edits(tiny, CASES[:1], templates, second_moment, ("rome",), cache=False, progress=False)["rome"][0]
    before = tiny.weight(1).detach().clone()
    with pytest.raises(rome.CollapseRiskError, match="darrieux"):
        with rome.applied(tiny, edit, min_ratio=edit.report.ratio + 1.0):
            pass
    assert torch.equal(tiny.weight(1), before)


def test_batched_values_equal_one_at_a_time(tiny, tiny_setup):
    _, templates, batched = tiny_setup
    for case, together in zip(CASES, batched):
        alone = optimize_values(tiny, [case], templates)[0]
        assert alone.steps == together.steps
        assert torch.allclose(alone.v_star, together.v_star, atol=1e-4, rtol=1e-4)


def test_prefix_cache_gives_the_same_values(tiny, tiny_setup):
    _, templates, batched = tiny_setup
    plain = optimize_values(tiny, CASES, templates, prefix_cache=False)
    for a, b in zip(plain, batched):
        assert torch.allclose(a.v_star, b.v_star, atol=1e-4, rtol=1e-4)


def test_value_optimisation_keeps_delta_within_the_clamp(tiny, tiny_setup):
    _, templates, values = tiny_setup
    assert all(v.steps >= 1 and v.delta.norm() > 0 for v in values)
    assert all(v.delta.norm() <= tiny.hparams.clamp_norm_factor * v.target_init.norm() * (1 + 1e-5) for v in values)


def test_statistics_cache_detects_truncated_file(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("ROME_COLLAPSE_CACHE", str(tmp_path))
    first = stats.second_moment(tiny, texts=TEXTS, corpus="tiny-test", n_samples=len(TEXTS), progress=False)
    (path,) = list((tmp_path / "stats").rglob("*.safetensors"))
    path.write_bytes(path.read_bytes()[:100])  # truncated
    again = stats.second_moment(tiny, texts=TEXTS, corpus="tiny-test", n_samples=len(TEXTS), progress=False)
    assert torch.allclose(first.matrix.cpu(), again.matrix.cpu())


def test_statistics_cache_is_keyed_by_the_texts(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("ROME_COLLAPSE_CACHE", str(tmp_path))
    calls = []
    real = stats.compute_second_moment
    monkeypatch.setattr(stats, "compute_second_moment", lambda *args, **kw: calls.append(1) or real(*args, **kw))
    first = stats.second_moment(tiny, texts=TEXTS, corpus="tiny-test", n_samples=len(TEXTS), progress=False)
    again = stats.second_moment(tiny, texts=list(TEXTS), corpus="tiny-test", n_samples=len(TEXTS), progress=False)
    assert len(calls) == 1 and torch.equal(first.matrix.cpu(), again.matrix.cpu())  # the same texts: read back
    other = stats.second_moment(tiny, texts=["different text entirely"], corpus="tiny-test",
                                n_samples=len(TEXTS), progress=False)
    assert len(calls) == 2  # the same corpus name, other texts: computed, not read back
    assert not torch.allclose(other.matrix.cpu(), first.matrix.cpu())
    assert len(list((tmp_path / "stats").rglob("*.safetensors"))) == 2


def test_perplexity_matches_a_direct_computation(tiny):
    texts = TEXTS[:3]
    got = metrics.perplexity(tiny, texts, batch_size=2)
    for text, value in zip(texts, got.per_text):
        ids = torch.tensor([tiny.tokenizer(text, add_special_tokens=False).input_ids])
        with torch.no_grad():
            loss = tiny.model(ids, labels=ids).loss
        assert value == pytest.approx(torch.exp(loss).item(), rel=1e-4)
    assert got.mean == pytest.approx(sum(got.per_text) / 3)
    # logits in chunks smaller than a text, across a padded batch: the same numbers
    chunked = metrics.perplexity(tiny, texts, batch_size=3, logits_chunk=2)
    assert chunked.per_text == pytest.approx(got.per_text, rel=1e-5)


def test_continuations_are_greedy(tiny):
    from rome_collapse.tokens import token_ids

    prompt = "The capital of France is"
    ids = token_ids(tiny, prompt)
    for _ in range(4):  # argmax, one token at a time, written out here
        with torch.no_grad():
            logits = tiny.model(input_ids=torch.tensor([ids])).logits[0, -1]
        ids.append(int(logits.argmax()))
    expected = tiny.tokenizer.decode(ids[-4:], skip_special_tokens=True)
    assert metrics.continuations(tiny, [prompt], max_new_tokens=4) == [expected]


def test_continuation_table_shows_each_state_and_restores(tiny, tiny_setup):
    second_moment, templates, _ = tiny_setup
    edits = rome.compute_edits(tiny, CASES[:2], templates, second_moment, cache=False, progress=False)
    before = tiny.weight(1).detach().clone()
    table = outcomes.continuation_table(tiny, edits, ["It was a sunny"], max_new_tokens=3)
    assert list(table.columns) == ["case", "prompt", "unedited", "ROME", "C-ROME"]
    assert len(table) == 4 and list(table["prompt"])[:2] == ["It was a sunny", CASES[0].text]
    assert torch.equal(tiny.weight(1), before)
    with rome.applied(tiny, edits["rome"][0]):
        assert metrics.continuations(tiny, [CASES[0].text], 3)[0] == table["ROME"].iloc[1]


# --------------------------------------------------------------------------------------------
# GPT-2: the projection is a Conv1D that stores W transposed, with a bias
# --------------------------------------------------------------------------------------------
FIRST = EditCase("paris", "{} is located in", "Paris", "Italy", "France",
                 paraphrase_prompts=("Paris lies in the country of",), neighborhood_prompts=("Lyon is located in",))
LATER = EditCase("darrieux", "The mother tongue of {} is", "Danielle Darrieux", "English", "French",
                 paraphrase_prompts=("Danielle Darrieux spoke",), neighborhood_prompts=("Léon Blum spoke",))
FEW_TEMPLATES = ["{}", "Some words here. {}", "It rained all day. {}"]


@pytest.fixture(scope="module")
def tiny_gpt2(tiny_tokenizer):
    """A 3-layer random GPT-2 (Conv1D projections) with the tiny tokenizer, its edited bias made non-zero. The edited
    layer 1 has a block above it, whose attention carries v* from the subject to the positions that predict the
    target; weights ten times GPT-2's initial scale let v* move those predictions."""
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=len(tiny_tokenizer), n_positions=128, n_embd=32, n_layer=3, n_head=2,
                                     initializer_range=0.2)
    model = transformers.GPT2LMHeadModel(config)
    with torch.no_grad():
        model.transformer.h[1].mlp.c_proj.bias.normal_()
    return models.from_model(model, tiny_tokenizer, name="tiny-gpt2", hparams=models.default_hparams(layer=1))


def hand_value(case, v_star, start):
    return ValueResult(case_id=case.case_id, v_star=v_star, delta=v_star - start, target_init=start, steps=0,
                            final_loss=0.0, target_prob=0.0)


def well_conditioned_c(d, seed=0):
    a = torch.randn(d, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return stats.SecondMoment(a @ a.T / d + torch.eye(d, dtype=torch.float64), 1, {"mom2_adjustment": True})


@pytest.mark.parametrize("setting", ["paper", "original"])
@pytest.mark.parametrize("variant", rome.VARIANTS)
def test_gpt2_conv1d_edit_lands_in_the_output_space_and_restores_bitwise(tiny_gpt2, setting, variant):
    bundle = tiny_gpt2
    down = bundle.down_proj(1)
    assert bundle.spec.transposed_weight and tuple(down.weight.shape) == (128, 32)  # Conv1D: (in, out)
    second_moment = stats.SecondMoment.identity() if setting == "paper" else well_conditioned_c(128)
    ck = keys.case_keys(bundle, FIRST.prompt, FIRST.subject, FEW_TEMPLATES)
    v_star = layer_output(bundle, ck.unprefixed_key) + torch.randn(32, generator=torch.Generator().manual_seed(1))
    edit = rome.make_edit(bundle, FIRST, hand_value(FIRST, v_star, layer_output(bundle, ck.unprefixed_key)), ck, second_moment, variant)
    key = ck.unprefixed_key if variant == "rome" else ck.prefixed_key
    before = {n: p.detach().clone() for n, p in bundle.model.named_parameters()}
    with rome.applied(bundle, edit):
        assert not torch.equal(down.weight, before["transformer.h.1.mlp.c_proj.weight"])
        with torch.no_grad():
            landed = down(key[None])[0]  # the layer's own forward: k W_stored + b
        torch.testing.assert_close(landed, v_star, rtol=1e-4, atol=1e-4)  # W'k + b = v*
        if variant == "rome":  # the edited model itself writes v* at the subject of the prompt
            after = keys.case_keys(bundle, FIRST.prompt, FIRST.subject, FEW_TEMPLATES)
            torch.testing.assert_close(layer_output(bundle, after.unprefixed_key), v_star, rtol=1e-4, atol=1e-4)
    assert all(torch.equal(p, before[n]) for n, p in bundle.model.named_parameters())


def test_gpt2_through_v_star_statistics_the_update_and_perplexity(tiny_gpt2, curated):
    """The whole pipeline on GPT-2's Conv1D (W stored transposed, a bias), each step against a computation of its own:
    v* starts at the projection's output at the subject and lowers its loss, C is the mean outer product of the
    projection's inputs, the rank-one update makes the edited model write v* and say target_new likelier, perplexity
    is exp of the model's own mean NLL and moves with the edit, and the weights come back bit for bit. ROME's clamp is
    lifted (the random model's ‖W kᵘ + b‖ is small, as in test_half_precision) so that v* moves the loss."""
    bundle = tiny_gpt2.with_hparams(v_num_grad_steps=10, clamp_norm_factor=1e4, v_weight_decay=0.0)
    down, case = bundle.down_proj(1), LATER
    ck = keys.case_keys(bundle, case.prompt, case.subject, FEW_TEMPLATES)
    start = optimize_values(bundle.with_hparams(v_num_grad_steps=1), [case], FEW_TEMPLATES)[0]  # the loss at δ = 0
    value = optimize_values(bundle, [case], FEW_TEMPLATES)[0]
    assert_agree(value.target_init, layer_output(bundle, ck.unprefixed_key), forward_rounding(bundle))
    assert torch.isfinite(value.v_star).all() and value.final_loss < start.final_loss - 0.05

    texts = [c.text for c in curated]  # over a thousand tokens: C (128 × 128) has full rank
    k = projection_inputs(bundle, 1, texts)  # the Conv1D's inputs at every token, one text at a time
    second_moment = stats.second_moment(bundle, texts=texts, cache=False, progress=False)
    assert second_moment.n_tokens == k.shape[0] > 1000
    # C's keys come from length-sorted padded batches, these from one text at a time: other matrix products, so
    # float32 rounding of the forward pass (twice, k kᵀ) and of the float64 sum over every token.
    assert_agree(second_moment.matrix, k.T @ k / k.shape[0], second_moment_rounding(bundle, k.shape[0]))

    texts = [f"{case.text} {case.target_new}", *TEXTS[:2]]
    before = {n: p.detach().clone() for n, p in bundle.model.named_parameters()}
    ppl_before = metrics.perplexity(bundle, texts)
    for text, got in zip(texts, ppl_before.per_text):
        ids = torch.tensor([bundle.tokenizer(text, add_special_tokens=False).input_ids])
        with torch.no_grad():
            assert got == pytest.approx(torch.exp(bundle.model(ids, labels=ids).loss).item(), rel=1e-4)
    nll_before = metrics.target_nll(bundle, [case.text], [case.target_new])
    edit = rome.make_edit(bundle, case, value, ck, second_moment, "rome")
    with rome.applied(bundle, edit):
        torch.testing.assert_close(down.weight.T, before["transformer.h.1.mlp.c_proj.weight"].T + edit.delta)
        after = keys.case_keys(bundle, case.prompt, case.subject, FEW_TEMPLATES)
        torch.testing.assert_close(layer_output(bundle, after.unprefixed_key), value.v_star, rtol=1e-4, atol=1e-4)
        assert metrics.target_nll(bundle, [case.text], [case.target_new]) < nll_before
        edited = metrics.perplexity(bundle, texts).per_text
        assert edited[0] != pytest.approx(ppl_before.per_text[0], rel=1e-2)  # the edited prompt reads otherwise
    assert all(torch.equal(p, before[n]) for n, p in bundle.model.named_parameters())
    assert metrics.perplexity(bundle, texts).per_text == ppl_before.per_text


@pytest.mark.parametrize("bundle_name", ["tiny", "tiny_gpt2"])
def test_numerator_is_v_star_minus_the_layers_output_at_the_variants_key(request, bundle_name):
    """ROME's numerator is v* − W kᵘ − b and C-ROME's v* − W k̄ − b: W k + b read from the layer's own forward
    (Llama: no bias; GPT-2: Conv1D with a bias)."""
    bundle = request.getfixturevalue(bundle_name)
    down = copy.deepcopy(bundle.down_proj(bundle.hparams.layer)).double()  # its forward in float64
    ck = keys.case_keys(bundle, FIRST.prompt, FIRST.subject, FEW_TEMPLATES)
    # v* a tenth of ‖W(kᵘ − k̄)‖ away from W kᵘ + b: ROME's numerator is that tenth, C-ROME's about ‖W(kᵘ − k̄)‖
    gap = (layer_output(bundle, ck.unprefixed_key) - layer_output(bundle, ck.prefixed_key)).norm()
    offset = torch.randn(layer_output(bundle, ck.unprefixed_key).shape, generator=torch.Generator().manual_seed(2))
    v_star = layer_output(bundle, ck.unprefixed_key) + 0.1 * gap * offset / offset.norm()
    value = hand_value(FIRST, v_star, layer_output(bundle, ck.unprefixed_key))
    norms = {}
    for variant, key in (("rome", ck.unprefixed_key), ("c-rome", ck.prefixed_key)):
        edit = rome.make_edit(bundle, FIRST, value, ck, stats.SecondMoment.identity(), variant)
        with torch.no_grad():
            expected = v_star.double() - down(key.double()[None])[0]
        norms[variant] = edit.report.numerator_norm
        assert norms[variant] == pytest.approx(expected.norm().item(), rel=1e-4)
    assert norms["rome"] < 0.5 * norms["c-rome"]  # kᵘ ≠ k̄: the two numerators differ


# --------------------------------------------------------------------------------------------
# The scorer's test-time prefix
# --------------------------------------------------------------------------------------------
PREFIX = "The weather is nice. {}"


def spy_prompts(monkeypatch) -> list[str]:
    """The prompts the scorer asks target_nll about, in order (each once for target_new, once for target_true)."""
    seen, real = [], metrics.target_nll

    def spy(bundle, prompts, targets, **kwargs):
        seen.extend(prompts)
        return real(bundle, prompts, targets, **kwargs)

    monkeypatch.setattr(metrics, "target_nll", spy)
    return seen


def prompts_of(case, prefix=None):
    texts = [case.text, *case.paraphrase_prompts, *case.neighborhood_prompts]
    return [t if prefix is None else prefix.replace("{}", t) for t in texts for _ in ("new", "true")]


def test_prefixed_fills_the_template_with_the_prompt():
    assert metrics.prefixed("Paris is located in", PREFIX) == "The weather is nice. Paris is located in"
    assert metrics.prefixed("Paris is", "{}") == "Paris is"


def test_the_test_prefix_goes_before_every_prompt_of_subject_first_cases_only(tiny, monkeypatch):
    seen = spy_prompts(monkeypatch)
    first, later = metrics.evaluate_cases(tiny, [FIRST, LATER], test_prefix=PREFIX)
    assert first.test_prefix and not later.test_prefix
    assert seen == prompts_of(FIRST, PREFIX) + prompts_of(LATER)  # rewrite, paraphrases and neighbours alike
    seen.clear()
    both = metrics.evaluate_cases(tiny, [FIRST, LATER], test_prefix=PREFIX, prefix_only_first_token=False)
    assert [m.test_prefix for m in both] == [True, True]
    assert seen == prompts_of(FIRST, PREFIX) + prompts_of(LATER, PREFIX)
    seen.clear()
    assert not metrics.evaluate_cases(tiny, [FIRST])[0].test_prefix
    assert seen == prompts_of(FIRST)


def test_a_prefixed_score_is_the_score_of_the_prefixed_prompts(tiny):
    typed = EditCase("paris", PREFIX.replace("{}", FIRST.prompt), "Paris", "Italy", "France",
                     paraphrase_prompts=tuple(PREFIX.replace("{}", p) for p in FIRST.paraphrase_prompts),
                     neighborhood_prompts=tuple(PREFIX.replace("{}", p) for p in FIRST.neighborhood_prompts))
    got, want = metrics.evaluate_cases(tiny, [FIRST], test_prefix=PREFIX)[0], metrics.evaluate_cases(tiny, [typed])[0]
    assert (got.p_new, got.p_true) == pytest.approx((want.p_new, want.p_true), rel=1e-5)
    assert (got.efficacy, got.generalization, got.locality) == (want.efficacy, want.generalization, want.locality)
    assert got.p_new != pytest.approx(metrics.evaluate_cases(tiny, [FIRST])[0].p_new, rel=1e-3)  # the prefix matters


def test_measure_edits_scores_alone_with_the_prefix_on_every_rewrite_prompt_and_restores_the_weights(
        tiny, monkeypatch):
    layer = tiny.hparams.layer
    report = SimpleNamespace(variant="c-rome", setting="paper", numerator_norm=1.0, denominator=2.0, ratio=1.0,
                             update_norm=3.0)
    edits = [rome.Edit(c, layer, torch.full_like(tiny.weight(layer), 1e-3), report) for c in (FIRST, LATER)]
    before = tiny.weight(layer).detach().clone()
    seen, real = [], metrics._argmax_at_targets

    def spy(bundle, prompts, targets, **kwargs):
        seen.extend(prompts)
        return real(bundle, prompts, targets, **kwargs)

    monkeypatch.setattr(metrics, "_argmax_at_targets", spy)
    found = outcomes.measure_edits(tiny, edits, {"paris": "collapse-prone", "darrieux": "normal"},
                                   test_prefixes=[PREFIX], progress=False)
    assert [o.group for o in found] == ["collapse-prone", "normal"]
    for case in (FIRST, LATER):  # the authors' placement: every case, the rewrite prompt only
        assert PREFIX.format(case.text) in seen
        assert all(PREFIX.format(p) not in seen for p in case.paraphrase_prompts + case.neighborhood_prompts)
    assert all(o.ppl_after is None and o.collapsed is None and o.rewrite_acc_prefix is not None for o in found)
    assert all(o.cf_efficacy is not None and o.locality_acc is not None for o in found)
    assert torch.equal(tiny.weight(layer), before)