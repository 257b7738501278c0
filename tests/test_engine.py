"""The ROME math on a tiny random model: exact landing, restoration, batching, statistics."""
import pytest
import torch

from rome_collapse import keys, metrics, rome, stats
from rome_collapse.data import EditCase

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
    values = rome.optimize_values(tiny, CASES, templates)
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
    from rome_collapse.trace import down_proj_io

    batch = encode(tiny, TEXTS[:4])
    k, _ = down_proj_io(tiny, 1, batch)
    k = k[batch.attention_mask.bool()].double()
    expected = k.T @ k / k.shape[0]
    got, _ = stats.compute_second_moment(tiny, 1, TEXTS[:4], progress=False)
    assert torch.allclose(got, expected, rtol=1e-8)


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


def test_rome_and_c_rome_differ_only_in_the_key(tiny, tiny_setup):
    second_moment, templates, values = tiny_setup
    ck = keys.case_keys(tiny, CASES[1].prompt, CASES[1].subject, templates)
    same = rome.CaseKeys(ck.prefixed_key, ck.prefixed_key, ck.prefixed_output, ck.prefixed_output, ck.template_keys)
    a, _ = rome.rank_one_update(tiny.weight(1), second_moment, same.unprefixed_key, same.prefixed_key, values[1].v_star, "rome")
    b, _ = rome.rank_one_update(tiny.weight(1), second_moment, same.unprefixed_key, same.prefixed_key, values[1].v_star, "c-rome")
    assert torch.allclose(a, b)  # with kᵘ = k̄ the two conventions coincide
    c, parts = rome.rank_one_update(tiny.weight(1), second_moment, ck.unprefixed_key, ck.prefixed_key, values[1].v_star, "rome")
    expected_ratio = float(ck.unprefixed_key.double() @ second_moment.solve(ck.prefixed_key)
                           / (ck.prefixed_key.double() @ second_moment.solve(ck.prefixed_key)))
    assert parts["ratio"] == pytest.approx(expected_ratio)


def test_template_keys_and_prefixed_key(tiny, tiny_setup):
    _, templates, _ = tiny_setup
    ck = keys.case_keys(tiny, CASES[0].prompt, CASES[0].subject, templates)
    assert torch.allclose(ck.unprefixed_key, keys.unprefixed_key(tiny, CASES[0].prompt, CASES[0].subject), atol=1e-5)
    assert torch.allclose(ck.prefixed_key, keys.prefixed_key(tiny, CASES[0].prompt, CASES[0].subject, templates), atol=1e-5)
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
        alone = rome.optimize_values(tiny, [case], templates)[0]
        assert alone.steps == together.steps
        assert torch.allclose(alone.v_star, together.v_star, atol=1e-4, rtol=1e-4)


def test_prefix_cache_gives_the_same_values(tiny, tiny_setup):
    _, templates, batched = tiny_setup
    plain = rome.optimize_values(tiny, CASES, templates, prefix_cache=False)
    for a, b in zip(plain, batched):
        assert torch.allclose(a.v_star, b.v_star, atol=1e-4, rtol=1e-4)


def test_value_optimisation_gives_no_weight_gradients(tiny, tiny_setup):
    _, templates, values = tiny_setup
    assert all(p.grad is None and not p.requires_grad for p in tiny.model.parameters())
    assert values[0].steps >= 1 and values[0].delta.norm() > 0
    limit = tiny.hparams.clamp_norm_factor * values[0].target_init.norm()
    assert all(v.delta.norm() <= tiny.hparams.clamp_norm_factor * v.target_init.norm() * (1 + 1e-5) for v in values)
    assert limit > 0


def test_statistics_cache_detects_truncated_file(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("ROME_COLLAPSE_CACHE", str(tmp_path))
    first = stats.second_moment(tiny, texts=TEXTS, corpus="tiny-test", n_samples=len(TEXTS), progress=False)
    (path,) = list((tmp_path / "stats").glob("*.safetensors"))
    path.write_bytes(path.read_bytes()[:100])  # truncated
    again = stats.second_moment(tiny, texts=TEXTS, corpus="tiny-test", n_samples=len(TEXTS), progress=False)
    assert torch.allclose(first.matrix.cpu(), again.matrix.cpu())
    cached = stats.second_moment(tiny, texts=["different text entirely"], corpus="tiny-test",
                                 n_samples=len(TEXTS), progress=False)
    assert torch.equal(cached.matrix.cpu(), again.matrix.cpu())  # read back from the rewritten cache


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
    from rome_collapse import experiments

    second_moment, templates, _ = tiny_setup
    edits = rome.compute_edits(tiny, CASES[:2], templates, second_moment, cache=False, progress=False)
    before = tiny.weight(1).detach().clone()
    table = experiments.continuation_table(tiny, edits, ["It was a sunny"], max_new_tokens=3)
    assert list(table.columns) == ["case", "prompt", "unedited", "ROME", "C-ROME"]
    assert len(table) == 4 and list(table["prompt"])[:2] == ["It was a sunny", CASES[0].text]
    assert torch.equal(tiny.weight(1), before)
    with rome.applied(tiny, edits["rome"][0]):
        assert metrics.continuations(tiny, [CASES[0].text], 3)[0] == table["ROME"].iloc[1]
