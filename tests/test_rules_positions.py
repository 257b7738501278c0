"""Notebook 04's rule (claim ``position``) on small hand-made swap tables, at its thresholds' edges."""
import pandas as pd
import pytest

from rome_collapse import criteria
from rome_collapse.rules import positions

PLAIN = "none (ROME)"  # interventions.PLAIN (the rule reads the swap's rows by their kind, the others as plain)
COLUMNS = ["case_id", "intervention", "key_shift", "ratio", "ppl_after", "collapsed", "measured"]


def swap_table(kind, plain_collapsed, swap_collapsed, changed=True):
    rows = []
    for i, (p, s) in enumerate(zip(plain_collapsed, swap_collapsed)):
        for intervention, collapsed in ((PLAIN, p), (kind, s)):
            swap = intervention != PLAIN
            rows.append({"case_id": i, "intervention": intervention, "key_shift": 0.5 if swap and changed else 0.0,
                         "ratio": 0.01 if collapsed else 0.9, "ppl_after": 1e4 if collapsed else 110.0,
                         "collapsed": collapsed, "measured": changed or not swap})
    return pd.DataFrame(rows, columns=COLUMNS)


def part(judged, name):
    return next(p for p in judged.parts if p.part == name)


def judge(t6, t7):
    return positions.judge_position(t6, t7, "m", "paper")


def test_the_rows_of_the_criteria_table_are_the_parts_judged():
    judged = judge(swap_table("second2first", [True] * 2, [True] * 2), swap_table("first2second", [False] * 2,
                                                                                   [False, True]))
    assert [p.part for p in judged.parts] == [c.part for c in criteria.parts_of("position")]


@pytest.mark.parametrize("still, expected", [(0, False), (1, True), (4, True)])
def test_second2first_holds_when_some_collapse_survives_a_swap_that_changes_the_update(still, expected):
    t6 = swap_table("second2first", [True] * 4, [True] * still + [False] * (4 - still))
    p = part(judge(t6, swap_table("first2second", [False] * 2, [False, True])), "second2first-not-whole-cause")
    assert p.value == still / 4 and p.passed is expected


def test_second2first_is_not_testable_when_the_update_does_not_change():
    t6 = swap_table("second2first", [True] * 3, [True] * 3, changed=False)
    judged = judge(t6, swap_table("first2second", [False] * 4, [False, False, False, True]))
    p = part(judged, "second2first-not-whole-cause")
    assert p.passed is None and "not testable on this model" in p.note and "rotary" in p.note
    v = judged.verdicts[0]
    assert v.verdict == "holds in part" and "not testable: second2first-not-whole-cause" in v.measured
    assert "partial collapse (as on GPT-2-XL and Llama2-7b)" in v.measured and "1/4" in v.measured


def test_second2first_is_not_testable_without_a_plain_collapse():
    t6 = swap_table("second2first", [False] * 3, [False] * 3)
    p = part(judge(t6, swap_table("first2second", [False], [True])), "second2first-not-whole-cause")
    assert p.passed is None and "no plain ROME edit" in p.note


@pytest.mark.parametrize("pushed, contributes, partial", [(0, False, True), (1, True, True), (3, True, True),
                                                           (4, True, False)])
def test_first2second_edges(pushed, contributes, partial):
    t7 = swap_table("first2second", [False] * 4, [True] * pushed + [False] * (4 - pushed))
    judged = judge(swap_table("second2first", [True] * 2, [True] * 2), t7)
    assert part(judged, "first2second-contributes").passed is contributes
    assert part(judged, "first2second-partial").passed is partial
    assert judged.verdicts[0].verdict == ("holds" if contributes and partial else "holds in part")


def test_first2second_counts_only_edits_the_plain_edit_left_stable():
    # a normal edit that already collapses without the swap is not "pushed over" by it
    t7 = swap_table("first2second", [True, False, False], [True, True, False])
    n = positions.swap_numbers(t7, "first2second")
    assert (n.pushed_over, n.not_collapsing) == (1, 2)


def test_patterns_of_the_papers_models():
    gptj = judge(swap_table("second2first", [True] * 2, [True] * 2), swap_table("first2second", [False] * 2,
                                                                                [False] * 2))
    assert "ineffective (as on GPT-J and Llama2-7b)" in gptj.text and "stable (as on GPT-J)" in gptj.text
    gpt2 = judge(swap_table("second2first", [True] * 2, [True, False]), swap_table("first2second", [False] * 2,
                                                                                  [True, False]))
    assert "mitigates the collapse (as on GPT-2-XL)" in gpt2.text


def test_no_cases_is_not_testable():
    empty = swap_table("second2first", [], [])
    v = judge(empty, swap_table("first2second", [], [])).verdicts[0]
    assert v.verdict == "not testable"


def test_swap_frame_has_a_row_per_table():
    frame = positions.swap_frame(positions.swap_numbers(swap_table("second2first", [True], [True]), "second2first"),
                                 positions.swap_numbers(swap_table("first2second", [False], [True]), "first2second"))
    assert frame.shape[0] == 2 and frame.loc["Table 7 (normal, First2Second)", "pushed_over"] == 1


def test_second2first_float_noise_in_the_key_is_not_a_test():
    """On a rotary model the swap moves kᵘ by ~1e-6 (operation order); a tiny denominator can still make ΔW differ in
    the last digits (``measured`` True), but that is not a change the claim is about."""
    t6 = swap_table("second2first", [True] * 2, [True] * 2)
    t6.loc[t6["intervention"] == "second2first", "key_shift"] = positions.KEY_MOVED / 10
    p = part(judge(t6, swap_table("first2second", [False] * 2, [False, True])), "second2first-not-whole-cause")
    assert p.passed is None and "not testable" in p.note
    t6.loc[t6["intervention"] == "second2first", "key_shift"] = positions.KEY_MOVED * 10
    p = part(judge(t6, swap_table("first2second", [False] * 2, [False, True])), "second2first-not-whole-cause")
    assert p.passed is True
