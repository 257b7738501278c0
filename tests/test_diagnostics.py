"""diagnostics: encoder keys against a manual forward, and the centroid statistics on known vectors."""
from __future__ import annotations

import pytest
import torch

from rome_collapse import diagnostics, models


@pytest.fixture(scope="module")
def minilm():
    try:
        return models.load_encoder("minilm", device="cpu")
    except models.ModelNotAvailable as exc:
        pytest.skip(str(exc))


def test_encoder_mlp_keys_match_a_manual_forward(minilm):
    model, tokenizer = minilm
    texts = ["Paris is the capital of France.", "The cat sat on the mat and purred loudly."]
    layer = 3
    first, later = diagnostics.encoder_mlp_keys(model, tokenizer, texts, layer)
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


def test_centroid_table_and_first_token_statistics_on_known_vectors():
    later = torch.tensor([[1.0, 0.0], [3.0, 0.0]])  # centroid (2, 0), spread 1
    first = torch.tensor([[0.0, 2.0], [0.0, 4.0]])  # centroid (0, 3), spread 1
    table = diagnostics.centroid_table({"first": first, "later": later}, {"first": first, "later": later})
    row = table.set_index("set").loc["first"]
    assert row["cos_to_first"] == pytest.approx(1.0)
    assert row["cos_to_later"] == pytest.approx(0.0)
    assert row["dist_to_later"] == pytest.approx((8 ** 0.5 + 20 ** 0.5) / 2)
    assert row["nearest_first"] == 1.0 and row["nearest_later"] == 0.0
    assert row["spread"] == pytest.approx(1.0)
    s = diagnostics.first_token_statistics(first, later)
    assert s["separation"] == pytest.approx((8 ** 0.5 + 20 ** 0.5) / 2)
    assert s["concentration"] == pytest.approx(1.0)
    assert s["cos_first_later"] == pytest.approx(0.0)
    assert s["norm_ratio"] == pytest.approx(1.5)
