import math

import pandas as pd
import pytest
import torch

from rome_collapse import interventions, keys, outcomes, rome, stats
from rome_collapse.data import EditCase
from rome_collapse.tokens import encode, subject_last_index
from rome_collapse.values import optimize_values

PARIS = EditCase("paris", "{} is located in", "Paris", "Italy", "France")
LATE = EditCase("late", "The city of {} is located in", "Paris", "Italy", "France")


def test_position_maps():
    assert interventions.second_to_first(4).tolist() == [1, 1, 2, 3]
    assert interventions.token_to_first(5, 3).tolist() == [0, 1, 2, 0, 4]


def test_identity_positions_give_the_ordinary_key(tiny):
    lookup = subject_last_index(tiny, LATE.prompt, LATE.subject)
    length = encode(tiny, [LATE.text]).input_ids.shape[1]
    key = interventions.key_with_positions(tiny, LATE.text, lookup, torch.arange(length))
    assert torch.allclose(key, keys.unprefixed_key(tiny, LATE.prompt, LATE.subject), atol=1e-5)


def test_first2second_moves_the_unprefixed_key(tiny):
    templates = ["{}", "Some words here. {}"]
    ck = keys.case_keys(tiny, LATE.prompt, LATE.subject, templates)
    swapped = interventions.swapped_unprefixed_keys(tiny, LATE, ck, "first2second")
    assert not torch.allclose(swapped.unprefixed_key, ck.unprefixed_key)  # rotary: position 0 vs 3 differ


TEXTS = ["The quick brown fox jumps over the lazy dog.", "The capital of France is Paris, a large city.",
         "The rain stopped and the match went on after all.", "The best apples grow on old trees in the north."]
TEMPLATES = ["{}", "Some words here. {}", "Another short text. {}"]


@pytest.fixture(scope="module")
def swap_setup(tiny):
    C = stats.second_moment(tiny, texts=TEXTS * 4, cache=False, progress=False)
    return C, optimize_values(tiny, [PARIS, LATE], TEMPLATES)


def test_position_swap_outcomes(tiny, swap_setup):
    C, values = swap_setup
    ppl_texts = TEXTS[:2]
    # Rotary model: a lone first token is position-invariant, so Second2First changes nothing.
    rows = interventions.position_swap_outcomes(tiny, [PARIS], values[:1], TEMPLATES, C, "second2first", ppl_texts,
                                                progress=False)
    plain, swapped = rows
    assert plain["intervention"] == interventions.PLAIN and swapped["intervention"] == "second2first"
    assert swapped["key_shift"] < 1e-5 and not swapped["measured"]
    assert swapped["ppl_after"] == plain["ppl_after"] and swapped["ratio"] == pytest.approx(plain["ratio"], rel=1e-4)
    # First2Second moves the key; the swapped edit is measured on its own.
    rows = interventions.position_swap_outcomes(tiny, [LATE], values[1:], TEMPLATES, C, "first2second", ppl_texts,
                                                progress=False)
    plain, swapped = rows
    assert swapped["key_shift"] > 1e-3 and swapped["measured"]
    assert swapped["ratio"] != pytest.approx(plain["ratio"], rel=1e-4)
    assert math.isfinite(swapped["ppl_after"]) and swapped["group"] == "normal"
    with pytest.raises(ValueError):
        interventions.position_swap_outcomes(tiny, [LATE], values[:1], TEMPLATES, C, "first2second", ppl_texts)


def test_position_swaps_read_the_plain_edits_from_an_earlier_measurement(tiny, swap_setup):
    C, values = swap_setup
    ppl_texts = TEXTS[:2]
    here = interventions.position_swap_outcomes(tiny, [PARIS, LATE], values, TEMPLATES, C, "first2second", ppl_texts,
                                                progress=False)
    # an earlier run's per-edit table of the same plain ROME edits (as notebook 01 writes it), with marked perplexities
    plain = rome.compute_edits(tiny, [PARIS, LATE], TEMPLATES, C, ("rome",), cache=False, progress=False)["rome"]
    ppl_before = here[0]["ppl_before"]
    table = pd.DataFrame([o.to_dict() for o in outcomes.measure_edits(
        tiny, plain, {}, ppl_texts, ppl_before, scores=False, progress=False)])
    assert list(table["ppl_after"]) == [here[0]["ppl_after"], here[2]["ppl_after"]]  # the same measurement
    table["ppl_after"] = [123.0, 456.0]
    read = interventions.position_swap_outcomes(tiny, [LATE, PARIS], values[::-1], TEMPLATES, C, "first2second",
                                                ppl_texts, ppl_before, measured=table, progress=False)
    assert [r["ppl_after"] for r in read if r["intervention"] == interventions.PLAIN] == [456.0, 123.0]
    late, paris = [r for r in read if r["intervention"] != interventions.PLAIN]
    assert late["measured"] and late["ppl_after"] == here[3]["ppl_after"]  # a swapped edit is still measured here
    assert not paris["measured"] and paris["ppl_after"] == 123.0  # the plain update itself: its perplexity as read
    with pytest.raises(ValueError, match="does not hold every plain ROME edit"):
        interventions.position_swap_outcomes(tiny, [PARIS, LATE], values, TEMPLATES, C, "first2second", ppl_texts,
                                             ppl_before, measured=table.iloc[:1], progress=False)
