"""Notebook 05's rules (claims ``concentration`` and ``encoder``) on small hand-made spread tables, at their
thresholds' edges."""
import pandas as pd
import pytest

from rome_collapse import criteria
from rome_collapse.rules import concentration as rule
from rome_collapse.rules.concentration import BOS_TOKEN, CLS_TOKEN, FIRST_TOKEN, FIRST_WORD, LATER


def spreads(setting, first, ratios, later=2.0):
    """Rows of a spread table whose first-token / later-token mean distance at layer i is ``ratios[i]``."""
    rows = []
    for layer, r in enumerate(ratios):
        rows.append({"setting": setting, "token set": first, "layer": layer, "mean_distance": r * later})
        rows.append({"setting": setting, "token set": LATER, "layer": layer, "mean_distance": later})
    return rows


def part(judged, name):
    return next(p for p in judged.parts if p.part == name)


def test_layer_ratios_divide_the_first_tokens_distance_by_the_later_tokens():
    table = pd.DataFrame(spreads("a", FIRST_TOKEN, [1.0, 0.25, 0.5]))
    assert list(rule.layer_ratios(table, "a", FIRST_TOKEN)) == pytest.approx([1.0, 0.25, 0.5])


def test_the_first_token_is_the_first_word_behind_a_bos():
    table = pd.DataFrame(spreads("b", BOS_TOKEN, [0.0] * 3) + spreads("b", FIRST_WORD, [1.0] * 3)
                         + spreads("a", FIRST_TOKEN, [1.0] * 3))
    assert rule.first_set(table, "b") == FIRST_WORD and rule.first_set(table, "a") == FIRST_TOKEN


@pytest.mark.parametrize("below, expected", [(2, False), (3, False), (4, True)])
def test_first_concentrated_needs_more_than_half_of_the_layers_under_half(below, expected):
    # 6 layers: 3 under ½ is exactly half (not more), 4 is more; a ratio of exactly ½ is not under it
    ratios = [0.4] * below + [0.5] * (6 - below)
    judged = rule.judge_concentration(pd.DataFrame(spreads("a", FIRST_TOKEN, ratios)), {"a": "m"})
    p = part(judged, "first-concentrated")
    assert p.value == pytest.approx(below / 6) and p.passed is expected


@pytest.mark.parametrize("last, expected", [(0.49, True), (0.5, False), (0.51, False)])
def test_grows_with_depth_needs_the_last_third_under_half_the_first_thirds_ratio(last, expected):
    ratios = [1.0, 1.0, 0.3, 0.3, last, last]  # thirds of 2 layers: medians 1.0 and `last`
    judged = rule.judge_concentration(pd.DataFrame(spreads("a", FIRST_TOKEN, ratios)), {"a": "m"})
    p = part(judged, "grows-with-depth")
    assert p.value == pytest.approx(last) and p.passed is expected


def test_one_verdict_per_judged_model_naming_its_pattern_the_rest_reported():
    table = pd.DataFrame(spreads("a", FIRST_TOKEN, [1.0, 0.1, 0.01]) + spreads("g (BOS)", BOS_TOKEN, [0.0] * 3)
                         + spreads("g (BOS)", FIRST_WORD, [1.0, 1.1, 0.9])
                         + spreads("g (no BOS)", FIRST_TOKEN, [1.0, 1.2, 1.3]))
    judged = rule.judge_concentration(table, {"a": "a", "g (BOS)": "g"})
    assert [(v.model, v.verdict) for v in judged.verdicts] == [("a", "holds"), ("g", "does not hold")]
    assert judged.verdicts[0].measured.startswith("GPT-2-XL / GPT-J's pattern")
    assert judged.verdicts[1].measured.startswith("the Llama family's pattern (not concentrated): first word (pos 1)")
    assert "not judged" in judged.text and "g (no BOS)" in judged.text
    assert [p.part for p in judged.parts] == [c.part for c in criteria.parts_of("concentration")] * 2


def encoder_table(encoder_ratios, causal_ratios):
    rows = spreads("enc", FIRST_WORD, encoder_ratios) + spreads("enc", CLS_TOKEN, [0.1] * len(encoder_ratios))
    if causal_ratios is not None:
        rows += spreads("g (BOS)", FIRST_WORD, causal_ratios) + spreads("g (BOS)", BOS_TOKEN, [0.0] * 4)
    rows += spreads("s", FIRST_TOKEN, [0.01] * 4)
    return pd.DataFrame(rows)


@pytest.mark.parametrize("below, expected", [(1, True), (2, True), (3, False)])
def test_encoder_first_word_must_not_be_concentrated_at_more_than_half_of_its_layers(below, expected):
    ratios = [0.1] * below + [1.0] * (4 - below)
    judged = rule.judge_encoder(encoder_table(ratios, [0.1] * 4), "enc", "g (BOS)", "g")
    assert part(judged, "encoder-first-not-special").passed is expected


@pytest.mark.parametrize("below, expected", [(2, False), (3, True)])
def test_causal_first_word_must_be_concentrated_at_more_than_half_of_its_layers(below, expected):
    ratios = [0.1] * below + [1.0] * (4 - below)
    judged = rule.judge_encoder(encoder_table([1.0] * 4, ratios), "enc", "g (BOS)", "g")
    assert part(judged, "causal-first-special").passed is expected
    assert judged.verdicts[0].verdict == ("holds" if expected else "holds in part")
    assert ("does not show the paper's contrast" in judged.text) is not expected


def test_encoder_contrast_is_not_testable_without_a_causal_bos_model():
    judged = rule.judge_encoder(encoder_table([1.0] * 4, None), "enc", None, "s")
    v = judged.verdicts[0]
    assert part(judged, "causal-first-special").passed is None
    assert v.verdict == "holds in part" and "not testable: causal-first-special" in v.measured
    assert "s, first token (pos 0)" in judged.text and "[CLS] (pos 0)" in judged.text
