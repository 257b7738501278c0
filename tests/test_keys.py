"""The one key path (keys.py): every key is read by ``keys._forward``; the scan's batching, the per-request
batching and the multi-layer read agree, and a prefix's key/value cache is reused without being changed."""
import pytest
import torch

from rome_collapse import keys, representations, stats
from rome_collapse.data import CaseError, EditCase
from rome_collapse.rome import denominator_ratio
from rome_collapse.trace import cache_view, down_proj_input
from tolerances import approx, assert_agree, forward_rounding

TEMPLATES = ["{}", "The weather was fine today. {}", "I wrote this down. {}"]
CASES = [EditCase("paris", "{} is located in", "Paris", "Italy", "France"),
         EditCase("darrieux", "The mother tongue of {} is", "Danielle Darrieux", "English", "French"),
         EditCase("louvre", "{} is in the city of", "The Louvre", "Rome", "Paris")]


def test_a_cache_view_is_extended_and_repeated_without_changing_the_prefix_cache(tiny):
    from transformers import DynamicCache

    prefix = torch.tensor([[5, 6, 7, 8]])
    cache = DynamicCache(config=tiny.model.config)
    down_proj_input(tiny, 1, input_ids=prefix, attention_mask=torch.ones_like(prefix), cache=cache, use_cache=True,
                    stop=False)
    before = [(layer.keys.clone(), layer.values.clone()) for layer in cache.layers]
    view = cache_view(cache, repeat=3)
    suffix = torch.tensor([[9, 10], [11, 12], [13, 14]])
    mask = torch.ones(3, 6, dtype=torch.long)
    positions = (4 + torch.arange(2)).expand(3, 2)
    down_proj_input(tiny, 1, input_ids=suffix, attention_mask=mask, position_ids=positions, cache=view,
                    use_cache=True, stop=False)
    assert view.get_seq_length() == 6 and view.layers[0].keys.shape[0] == 3
    assert cache.get_seq_length() == 4
    for layer, (k, v) in zip(cache.layers, before):
        assert layer.keys.shape[0] == 1 and torch.equal(layer.keys, k) and torch.equal(layer.values, v)
    assert cache_view(None) is None


def test_a_shared_opening_gives_the_same_keys_for_fewer_tokens(tiny):
    shared = keys.key_batch(tiny, CASES, TEMPLATES, [1], share_prefix=True)
    whole = keys.key_batch(tiny, CASES, TEMPLATES, [1], share_prefix=False)
    assert shared.tokens < whole.tokens and shared.text_tokens == whole.text_tokens
    for a, b in zip(whole.keys[1], shared.keys[1]):  # the opening run once, then its cache: other matrix products
        assert_agree(b.template_keys, a.template_keys, forward_rounding(tiny, 1))


def test_case_keys_are_the_first_template_and_the_mean(tiny):
    k = keys.case_keys(tiny, CASES[1].prompt, CASES[1].subject, TEMPLATES)
    assert k.template_keys.shape[0] == len(TEMPLATES)
    assert torch.equal(k.unprefixed_key, k.template_keys[0])  # the same tensor, indexed
    assert torch.equal(k.prefixed_key, k.template_keys.mean(0))  # the same mean of the same rows
    # The key read alone is another computation (one unpadded prompt, not a row of the templates' batch): it agrees
    # within float32 rounding of the forward pass, not to the bit.
    alone = keys.unprefixed_key(tiny, CASES[1].prompt, CASES[1].subject)
    assert_agree(k.unprefixed_key, alone, forward_rounding(tiny, tiny.hparams.layer))


def test_keys_at_every_layer_equal_the_keys_read_one_layer_at_a_time(tiny):
    options = dict(truncate=False, share_prefix=False, batch_size=64)
    both = keys.key_batch(tiny, CASES, TEMPLATES, [0, 1], **options)
    for layer in (0, 1):  # the same batches, so the same numbers to the bit
        one = keys.key_batch(tiny, CASES, TEMPLATES, [layer], **options)
        for a, b in zip(one.keys[layer], both.keys[layer]):
            assert torch.equal(a.template_keys, b.template_keys)
        for case, got in zip(CASES, both.keys[layer]):  # other batches (one request's rows): float rounding only
            alone = keys.case_keys(tiny, case.prompt, case.subject, TEMPLATES, layer=layer)
            assert_agree(got.template_keys, alone.template_keys, forward_rounding(tiny, layer))
    assert not torch.equal(both.keys[0][0].unprefixed_key, both.keys[1][0].unprefixed_key)


def test_denominator_ratios_across_layers_read_the_same_keys_as_an_edit(tiny):
    paper = tiny
    rows = representations.denominator_ratios(paper, {"g": CASES}, TEMPLATES, [0, 1], n_samples=4, setting="paper",
                                              progress=False)
    assert len(rows) == 2 * len(CASES)
    for row in rows:
        case = next(c for c in CASES if c.case_id == row["case_id"])
        k = keys.case_keys(paper, case.prompt, case.subject, TEMPLATES, layer=row["layer"])
        expected = denominator_ratio(stats.SecondMoment.identity(), k.unprefixed_key, k.prefixed_key)
        assert row["ratio"] == approx(expected, forward_rounding(paper, row["layer"]))  # keys of every layer at once


def test_a_request_whose_subject_is_missing_is_named(tiny):
    bad = EditCase("case-77", "Where is {}?", "Paris", "Italy", "France")
    with pytest.raises(CaseError, match="case-77"):
        keys.key_batch(tiny, [CASES[0], _without_subject(bad)], TEMPLATES, [1])
    with pytest.raises(ValueError, match="first context template"):
        keys.key_batch(tiny, CASES, TEMPLATES[1:], [1])


def _without_subject(case: EditCase) -> EditCase:
    """A request whose subject does not occur where the prompt puts it (an empty subject covers no token)."""
    import dataclasses
    return dataclasses.replace(case, subject="")
