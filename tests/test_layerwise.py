"""The A.4/A.5 helpers: concentration on known vectors, seeded positions, causal layer-wise states, swaps."""
import math

import pytest
import torch

from rome_collapse import keys, layerwise, metrics, rome, stats
from rome_collapse.data import EditCase
from rome_collapse.tokens import token_ids

TEXTS = ["The quick brown fox jumps over the lazy dog.", "The capital of France is Paris, a large city.",
         "The rain stopped and the match went on after all.", "The best apples grow on old trees in the north."]


def test_concentration_on_known_vectors():
    same = torch.ones(5, 3)
    assert layerwise.concentration(same)["mean_distance"] == pytest.approx(0.0)
    opposite = torch.tensor([[2.0, 0.0], [-2.0, 0.0]])  # centroid 0: distance 2, norm 2
    c = layerwise.concentration(opposite)
    assert (c["mean_distance"], c["mean_norm"], c["normalised"]) == pytest.approx((2.0, 2.0, 1.0))
    x = torch.randn(20, 8, generator=torch.Generator().manual_seed(0))
    assert layerwise.concentration(x)["mean_distance"] == pytest.approx(metrics.mean_distance_to_centroid(x))
    # the normalised spread ignores the scale, the raw one does not
    assert layerwise.concentration(10 * x)["normalised"] == pytest.approx(layerwise.concentration(x)["normalised"])
    assert layerwise.concentration(10 * x)["mean_distance"] == pytest.approx(10 * layerwise.concentration(x)["mean_distance"])


def test_random_positions_are_seeded_and_in_range():
    lengths = [3, 5, 40, 7] * 10
    a = layerwise.random_positions(lengths, start=2, seed=1)
    assert a == layerwise.random_positions(lengths, start=2, seed=1)
    assert all(2 <= p < n for p, n in zip(a, lengths))
    assert a != layerwise.random_positions(lengths, start=2, seed=2)
    with pytest.raises(ValueError):
        layerwise.random_positions([2], start=2)


def test_snippets_cut_words():
    out = layerwise.snippets(["a b c d e", "f g"], 2, max_words=3, seed=0)
    assert sorted(out) == ["a b c", "f g"]


def test_layer_concentration_is_causal_and_batched(tiny):
    # All texts start with "The": in a causal model its state is the same in every text at every layer.
    rows = layerwise.layer_concentration(tiny, TEXTS, [0] * len(TEXTS), batch_size=3)
    assert [r["layer"] for r in rows] == list(range(tiny.num_layers + 1))
    assert all(r["mean_distance"] < 1e-4 for r in rows)
    later = layerwise.later_positions(tiny, TEXTS, seed=0)
    rows = layerwise.layer_concentration(tiny, TEXTS, later, batch_size=3)
    assert all(r["mean_distance"] > 1e-3 for r in rows)
    # batching does not change the numbers
    one = layerwise.layer_concentration(tiny, TEXTS, later, batch_size=len(TEXTS))
    assert [r["mean_distance"] for r in rows] == pytest.approx([r["mean_distance"] for r in one], rel=1e-4)
    key = layerwise.key_concentration(tiny, TEXTS, later)
    direct = layerwise.concentration(torch.cat([keys.token_keys(tiny, [t], p) for t, p in zip(TEXTS, later)]))
    assert key["mean_distance"] == pytest.approx(direct["mean_distance"], rel=1e-4)


def test_position_swap_outcomes(tiny):
    first = EditCase("paris", "{} is located in", "Paris", "Italy", "France")
    late = EditCase("late", "The city of {} is located in", "Paris", "Italy", "France")
    templates = ["{}", "Some words here. {}", "Another short text. {}"]
    C = stats.second_moment(tiny, texts=TEXTS * 4, cache=False, progress=False)
    values = rome.optimize_values(tiny, [first, late], templates)
    ppl_texts = TEXTS[:2]
    # Rotary model: a lone first token is position-invariant, so Second2First changes nothing.
    rows = layerwise.position_swap_outcomes(tiny, [first], values[:1], templates, C, "second2first", ppl_texts,
                                            progress=False)
    plain, swapped = rows
    assert plain["intervention"] == layerwise.PLAIN and swapped["intervention"] == "second2first"
    assert swapped["key_shift"] < 1e-5 and not swapped["measured"]
    assert swapped["ppl_after"] == plain["ppl_after"] and swapped["ratio"] == pytest.approx(plain["ratio"], rel=1e-4)
    # First2Second moves the key; the swapped edit is measured on its own.
    rows = layerwise.position_swap_outcomes(tiny, [late], values[1:], templates, C, "first2second", ppl_texts,
                                            progress=False)
    plain, swapped = rows
    assert swapped["key_shift"] > 1e-3 and swapped["measured"]
    assert swapped["ratio"] != pytest.approx(plain["ratio"], rel=1e-4)
    assert math.isfinite(swapped["ppl_after"]) and swapped["group"] == "normal"
    with pytest.raises(ValueError):
        layerwise.position_swap_outcomes(tiny, [late], values[:1], templates, C, "first2second", ppl_texts)


def test_shortest_prefix_keeps_the_early_tokens(tiny):
    text = TEXTS[1]
    assert layerwise.shortest_prefix(tiny, text, 0) == "The"
    for p in range(len(token_ids(tiny, text))):
        prefix = layerwise.shortest_prefix(tiny, text, p)
        assert token_ids(tiny, prefix)[:p + 1] == token_ids(tiny, text)[:p + 1]
        assert len(prefix) <= len(text)
    with pytest.raises(ValueError):
        layerwise.shortest_prefix(tiny, text, 10_000)
    # the state read through the cut text is the whole text's state
    whole = keys.hidden_states_at(tiny, [text], [3])
    cut = keys.hidden_states_at(tiny, [layerwise.shortest_prefix(tiny, text, 3)], [3])
    assert torch.allclose(whole, cut, atol=1e-5)


def test_denominator_ratios_match_the_ratio_at_each_layer(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("ROME_COLLAPSE_CACHE", str(tmp_path))
    first = EditCase("paris", "{} is located in", "Paris", "Italy", "France")
    late = EditCase("late", "The city of {} is located in", "Paris", "Italy", "France")
    templates = ["{}", "Some words here. {}", "Another short text. {}"]
    texts = TEXTS * 4
    rows = layerwise.denominator_ratios(tiny, {"collapse-prone": [first], "normal": [late]}, templates, [0, 2],
                                        n_samples=len(texts), texts=texts, corpus="tiny-test", progress=False)
    assert [(r["layer"], r["case_id"]) for r in rows] == [(0, "paris"), (0, "late"), (2, "paris"), (2, "late")]
    for r, case in zip(rows, [first, late, first, late]):
        C = stats.second_moment(tiny, layer=r["layer"], texts=texts, cache=False, progress=False)
        ck = keys.case_keys(tiny, case.prompt, case.subject, templates, layer=r["layer"])
        assert r["ratio"] == pytest.approx(rome.denominator_ratio(C, ck.unprefixed_key, ck.prefixed_key), rel=1e-6)
    assert rows[0]["ratio"] != pytest.approx(rows[2]["ratio"], rel=1e-3)  # the layer matters
    assert len(list(tmp_path.rglob("*.safetensors"))) == 2  # one cached C per layer
