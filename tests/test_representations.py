"""Where keys and token states sit: concentration on known vectors, causal layer-wise states, the centroid
statistics, the denominator ratio at every layer, and an encoder's keys against a manual forward."""
import math

import pytest
import torch

from rome_collapse import keys, models, representations, rome, stats
from rome_collapse.data import EditCase
from rome_collapse.keys import Lookup
from rome_collapse.tokens import token_ids
from tolerances import approx, forward_rounding

TEXTS = ["The quick brown fox jumps over the lazy dog.", "The capital of France is Paris, a large city.",
         "The rain stopped and the match went on after all.", "The best apples grow on old trees in the north."]


def test_concentration_on_known_vectors():
    same = torch.ones(5, 3)
    assert representations.concentration(same)["mean_distance"] == pytest.approx(0.0)
    opposite = torch.tensor([[2.0, 0.0], [-2.0, 0.0]])  # centroid 0: distance 2, norm 2
    c = representations.concentration(opposite)
    assert (c["mean_distance"], c["mean_norm"], c["normalised"]) == pytest.approx((2.0, 2.0, 1.0))
    square = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0], [2.0, 2.0]])  # centroid (1, 1): each √2 away
    assert representations.mean_distance_to_centroid(square) == pytest.approx(math.sqrt(2))
    assert representations.concentration(square)["mean_norm"] == pytest.approx((0 + 2 + 2 + math.sqrt(8)) / 4)
    # the normalised spread ignores the scale, the raw one does not
    x = torch.randn(20, 8, generator=torch.Generator().manual_seed(0))
    c = representations.concentration
    assert c(10 * x)["normalised"] == pytest.approx(c(x)["normalised"])
    assert c(10 * x)["mean_distance"] == pytest.approx(10 * c(x)["mean_distance"])


def test_layer_concentration_is_causal_and_batched(tiny):
    # All texts start with "The": in a causal model its state is the same in every text at every layer.
    rows = representations.layer_concentration(tiny, [Lookup(t, 0) for t in TEXTS], batch_size=3)
    assert [r["layer"] for r in rows] == list(range(tiny.num_layers + 1))
    assert all(r["mean_distance"] < 1e-4 for r in rows)
    later = [Lookup(t, p) for t, p in zip(TEXTS, [3, 5, 2, 6])]
    rows = representations.layer_concentration(tiny, later, batch_size=3)
    assert all(r["mean_distance"] > 1e-3 for r in rows)
    # batching does not change the numbers, and each row is the concentration of that layer's states
    one = representations.layer_concentration(tiny, later, batch_size=len(TEXTS))
    assert [r["mean_distance"] for r in rows] == pytest.approx([r["mean_distance"] for r in one], rel=1e-4)
    states = torch.cat([keys.hidden_states_at(tiny, [lk.text], [lk.position]) for lk in later], dim=1)
    assert rows[2]["mean_distance"] == pytest.approx(representations.concentration(states[2])["mean_distance"],
                                                     rel=1e-4)
    key = representations.key_concentration(tiny, later)
    direct = representations.concentration(torch.cat([keys.token_keys(tiny, [lk.text], lk.position) for lk in later]))
    assert key["mean_distance"] == pytest.approx(direct["mean_distance"], rel=1e-4)


def test_layer_key_concentration_reads_every_layer_as_its_own_pass_would(tiny):
    later = [Lookup(t, p) for t, p in zip(TEXTS, [3, 5, 2, 6])]
    rows = representations.layer_key_concentration(tiny, later)
    assert [r["layer"] for r in rows] == list(range(tiny.num_layers))
    for layer in (0, tiny.num_layers - 1):
        one = representations.key_concentration(tiny, later, layer=layer)
        assert rows[layer]["mean_distance"] == pytest.approx(one["mean_distance"], rel=1e-5)
    assert rows[0]["mean_distance"] != pytest.approx(rows[-1]["mean_distance"], rel=1e-3)  # the layer matters
    first = representations.layer_key_concentration(tiny, [Lookup(t, 0) for t in TEXTS], layers=[1])
    assert [r["layer"] for r in first] == [1] and first[0]["mean_distance"] < 1e-4  # "The" in every text


def test_shortest_prefix_keeps_the_early_tokens(tiny):
    text = TEXTS[1]
    assert representations.shortest_prefix(tiny, text, 0) == "The"
    for p in range(len(token_ids(tiny, text))):
        prefix = representations.shortest_prefix(tiny, text, p)
        assert token_ids(tiny, prefix)[:p + 1] == token_ids(tiny, text)[:p + 1]
        assert len(prefix) <= len(text)
    with pytest.raises(ValueError):
        representations.shortest_prefix(tiny, text, 10_000)
    # the state read through the cut text is the whole text's state
    whole = keys.hidden_states_at(tiny, [text], [3])
    cut = keys.hidden_states_at(tiny, [representations.shortest_prefix(tiny, text, 3)], [3])
    assert torch.allclose(whole, cut, atol=1e-5)


def test_centroid_table_and_first_token_statistics_on_known_vectors():
    later = torch.tensor([[1.0, 0.0], [3.0, 0.0]])  # centroid (2, 0), spread 1
    first = torch.tensor([[0.0, 2.0], [0.0, 4.0]])  # centroid (0, 3), spread 1
    table = representations.centroid_table({"first": first, "later": later}, {"first": first, "later": later})
    row = table.set_index("set").loc["first"]
    assert row["cos_to_first"] == pytest.approx(1.0)
    assert row["cos_to_later"] == pytest.approx(0.0)
    assert row["dist_to_later"] == pytest.approx((8 ** 0.5 + 20 ** 0.5) / 2)
    assert row["nearest_first"] == 1.0 and row["nearest_later"] == 0.0
    assert row["spread"] == pytest.approx(1.0)
    s = representations.first_token_statistics(first, later)
    assert s["separation"] == pytest.approx((8 ** 0.5 + 20 ** 0.5) / 2)
    assert s["concentration"] == pytest.approx(1.0)
    assert s["cos_first_later"] == pytest.approx(0.0)
    assert s["norm_ratio"] == pytest.approx(1.5)


def test_denominator_ratios_match_the_ratio_at_each_layer(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("ROME_COLLAPSE_CACHE", str(tmp_path))
    first = EditCase("paris", "{} is located in", "Paris", "Italy", "France")
    late = EditCase("late", "The city of {} is located in", "Paris", "Italy", "France")
    templates = ["{}", "Some words here. {}", "Another short text. {}"]
    texts = TEXTS * 4
    rows = representations.denominator_ratios(tiny, {"collapse-prone": [first], "normal": [late]}, templates, [0, 2],
                                              n_samples=len(texts), setting="original", texts=texts,
                                              corpus="tiny-test", progress=False)
    assert [(r["layer"], r["case_id"]) for r in rows] == [(0, "paris"), (0, "late"), (2, "paris"), (2, "late")]
    for r, case in zip(rows, [first, late, first, late]):
        C = stats.second_moment(tiny, layer=r["layer"], texts=texts, cache=False, progress=False)
        ck = keys.case_keys(tiny, case.prompt, case.subject, templates, layer=r["layer"])
        # the sweep reads every layer's keys from one forward; these come from a forward stopped at the layer
        expected = rome.denominator_ratio(C, ck.unprefixed_key, ck.prefixed_key)
        assert r["ratio"] == approx(expected, forward_rounding(tiny, r["layer"]))
    assert rows[0]["ratio"] != pytest.approx(rows[2]["ratio"], rel=1e-3)  # the layer matters
    assert len(list(tmp_path.rglob("*.safetensors"))) == 2  # one cached C per layer


@pytest.fixture(scope="module")
def minilm():
    try:
        return models.load_encoder("minilm", device="cpu")
    except models.ModelNotAvailable as exc:
        pytest.skip(str(exc))


@pytest.mark.model
def test_encoder_layer_keys_read_cls_first_word_and_later_words_at_every_layer(minilm):
    model, tokenizer = minilm
    texts = ["Paris is the capital of France.", "The cat sat on the mat and purred loudly."]
    by_layer = representations.encoder_layer_keys(model, tokenizer, texts)
    assert sorted(by_layer) == list(range(model.config.num_hidden_layers))
    for layer in (0, 3):
        first, later = representations.encoder_mlp_keys(model, tokenizer, texts, layer)
        sets = by_layer[layer]
        torch.testing.assert_close(sets["first word (pos 1)"], first)
        torch.testing.assert_close(sets["later token (pos ≥ 2)"], later)
        assert sets["[CLS] (pos 0)"].shape == first.shape
    assert not torch.allclose(by_layer[0]["[CLS] (pos 0)"], by_layer[3]["[CLS] (pos 0)"])
    rows = representations.encoder_concentration(model, tokenizer, texts, layers=[3])
    assert [(r["token set"], r["layer"]) for r in rows] == [(name, 3) for name in representations.ENCODER_SETS]
    assert rows[1]["mean_distance"] == pytest.approx(
        representations.mean_distance_to_centroid(by_layer[3]["first word (pos 1)"]), rel=1e-6)


@pytest.mark.model
def test_encoder_mlp_keys_match_a_manual_forward(minilm):
    model, tokenizer = minilm
    texts = ["Paris is the capital of France.", "The cat sat on the mat and purred loudly."]
    layer = 3
    first, later = representations.encoder_mlp_keys(model, tokenizer, texts, layer)
    d = model.config.intermediate_size
    n_words = [len(tokenizer(t).input_ids) - 2 for t in texts]  # without [CLS] and [SEP]
    assert first.shape == (2, d)
    assert later.shape == (sum(n_words) - 2, d)  # every word token but the first of each text
    # Manual: the layer's MLP input projection and activation on its attention output, text alone.
    enc = tokenizer(texts[1], return_tensors="pt")
    with torch.no_grad():
        hidden = model(**enc, output_hidden_states=True).hidden_states[layer]  # input of layer `layer`
        block = model.encoder.layer[layer]
        attention = block.attention(hidden)[0]
        manual = block.intermediate(attention)[0]
    torch.testing.assert_close(first[1], manual[1], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(later[-1], manual[-2], rtol=1e-4, atol=1e-5)  # last word, before [SEP]
