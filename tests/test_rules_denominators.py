"""Notebook 01's rules (rules.denominators) on small hand-made per-edit tables, each part at its threshold's edges."""
import pandas as pd
import pytest

from rome_collapse import criteria
from rome_collapse.rules import denominators

# Whether a part holds just below, at and just above its threshold, for each comparison.
EDGE = {"<": (True, False, False), "<=": (True, True, False), ">=": (False, True, True), ">": (False, False, True)}
BEFORE = 100.0


def row(group, variant, ratio=1.0, denominator=5.0, numerator=60.0, factor=1.01, setting="paper"):
    ppl_after = factor * BEFORE
    return {"setting": setting, "group": group, "variant": variant, "ratio": ratio, "denominator": denominator,
            "numerator_norm": numerator, "ppl_before": BEFORE, "ppl_after": ppl_after,
            "collapsed": not ppl_after <= 10 * BEFORE}


def edits(n=4, prone=None, normal=None, crome=None, prone_collapsed=None, normal_collapsed=0, crome_collapsed=0):
    """n collapse-prone and n normal cases, both variants: by default every part of the three claims holds.
    ``prone`` / ``normal`` / ``crome``: fields of the ROME rows of a group, or of every C-ROME row;
    ``*_collapsed``: how many edits of the group (ROME) or variant (C-ROME) collapse (1000×)."""
    prone_collapsed = n if prone_collapsed is None else prone_collapsed
    prone = {"ratio": 0.01, "denominator": 0.05, "numerator": 60.0, **(prone or {})}
    normal = {"ratio": 0.9, "denominator": 5.0, "numerator": 60.0, **(normal or {})}
    rows = ([row("collapse-prone", "rome", **{**prone, "factor": 1e3 if i < prone_collapsed else 1.01})
             for i in range(n)]
            + [row("normal", "rome", **{**normal, "factor": 1e3 if i < normal_collapsed else 1.01}) for i in range(n)]
            + [row(g, "c-rome", **{**(crome or {}), **({"factor": 1e3} if 2 * i + j < crome_collapsed else {})})
               for j, g in enumerate(("collapse-prone", "normal")) for i in range(n)]
            # the other setting's rows, which must not count: nothing holds there
            + [row(g, v, ratio=0.9, numerator=1.0 if g == "normal" else 50.0, setting="original",
                   factor=1.01 if (g, v) == ("collapse-prone", "rome") else 1e3)
               for g in ("collapse-prone", "normal") for v in ("rome", "c-rome")])
    return pd.DataFrame(rows)


def parts_of(table, setting="paper"):
    return {(p.claim_id, p.part): p for p in denominators.judge_denominators(table, "m", setting).parts}


def verdicts(table, setting="paper"):
    return {v.claim_id: v.verdict for v in denominators.judge_denominators(table, "m", setting).verdicts}


def assert_edges(claim_id, part, tables, values):
    """``tables``: the table with the part's quantity just below, at and just above its threshold."""
    c = criteria.criterion(claim_id, part)
    for table, value, holds in zip(tables, values, EDGE[c.op]):
        got = parts_of(table)[(claim_id, part)]
        assert got.value == pytest.approx(value) and got.passed is holds, (part, value, got)


def test_every_part_holds_on_the_default_table_and_the_other_setting_does_not_count():
    assert verdicts(edits()) == {"denominator": "holds", "rome-collapses": "holds", "c-rome-safe": "holds"}
    other = denominators.judge_denominators(edits(), "m", "original")
    assert {v.verdict for v in other.verdicts} == {"does not hold"} and all(v.setting == "original" for v in other.verdicts)


def test_small_denominator_at_its_edges():
    t = criteria.criterion("denominator", "small-denominator").threshold
    values = [t * 0.99, t, t * 1.01]
    assert_edges("denominator", "small-denominator", [edits(prone={"ratio": v}) for v in values], values)


def test_orders_of_magnitude_at_its_edges():
    t = criteria.criterion("denominator", "orders-of-magnitude").threshold
    values = [t * 0.99, t, t * 1.01]  # normal |denominator| 1: the quantity is the collapse-prone one
    assert_edges("denominator", "orders-of-magnitude",
                 [edits(prone={"denominator": -v}, normal={"denominator": 1.0}) for v in values], values)


def test_similar_numerators_at_its_edges_whichever_group_is_larger():
    t = criteria.criterion("denominator", "similar-numerators").threshold
    values = [t * 0.99, t, t * 1.01]
    assert_edges("denominator", "similar-numerators",
                 [edits(prone={"numerator": 20.0}, normal={"numerator": 20.0 * v}) for v in values], values)
    assert_edges("denominator", "similar-numerators",
                 [edits(prone={"numerator": 20.0 * v}, normal={"numerator": 20.0}) for v in values], values)
    # the workbook's case: small collapse-prone numerators keep the claim from holding fully
    judged = denominators.judge_denominators(edits(prone={"numerator": 20.6}, normal={"numerator": 99.1}), "m", "paper")
    verdict = judged.verdicts[0]
    assert verdict.verdict == "holds in part" and "fails: similar-numerators" in verdict.measured
    assert "median numerator 20.6 vs 99.1" in judged.text


@pytest.mark.parametrize("part, group", [("collapse-prone-collapse", "prone_collapsed"),
                                         ("normal-safe", "normal_collapsed")])
def test_collapse_shares_at_their_edges(part, group):
    n, t = 20, criteria.criterion("rome-collapses", part).threshold
    counts = [round(t * n) + d for d in (-1, 0, 1)]
    assert_edges("rome-collapses", part, [edits(n=n, **{group: k}) for k in counts], [k / n for k in counts])


def test_rome_collapses_holds_in_part_when_too_few_collapse_and_not_when_normal_ones_do_too():
    assert verdicts(edits(n=4, prone_collapsed=1))["rome-collapses"] == "holds in part"
    assert verdicts(edits(n=4, prone_collapsed=0, normal_collapsed=4))["rome-collapses"] == "does not hold"


def test_c_rome_no_collapse_at_its_edges():
    c = criteria.criterion("c-rome-safe", "no-collapse")
    t = int(c.threshold)
    for k, holds in zip((t - 1, t, t + 1), EDGE[c.op]):
        if k < 0:
            continue  # a count cannot go below 0
        got = parts_of(edits(crome_collapsed=k))[("c-rome-safe", "no-collapse")]
        assert got.value == k and got.passed is holds, (k, got)


def test_c_rome_perplexity_kept_at_its_edges_and_a_nan_perplexity_fails_it():
    t = criteria.criterion("c-rome-safe", "perplexity-kept").threshold
    values = [t * 0.99, t, t * 1.01]
    assert_edges("c-rome-safe", "perplexity-kept", [edits(crome={"factor": v}) for v in values], values)
    broken = edits()
    broken.loc[(broken.variant == "c-rome") & (broken.setting == "paper"), "ppl_after"] = float("nan")
    got = parts_of(broken)[("c-rome-safe", "perplexity-kept")]
    assert got.passed is False and got.value == float("inf")


def test_a_missing_group_leaves_its_parts_not_testable():
    table = edits()
    only_normal = table[table.group == "normal"]
    parts = parts_of(only_normal)
    assert parts[("denominator", "small-denominator")].status == "not testable"
    assert parts[("denominator", "similar-numerators")].status == "not testable"
    assert parts[("rome-collapses", "collapse-prone-collapse")].status == "not testable"
    assert parts[("rome-collapses", "normal-safe")].passed is True
    assert verdicts(only_normal)["denominator"] == "not testable"
    assert verdicts(only_normal)["rome-collapses"] == "holds in part"
