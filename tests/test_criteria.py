"""The one table of thresholds and how a claim's parts combine into its verdict."""
import math

import pytest

from rome_collapse import claims, criteria


def part(name, passed):
    return criteria.PartResult("denominator", name, None if passed is None else 1.0, passed)


@pytest.mark.parametrize("states, verdict", [
    ((True, True, True), "holds"),
    ((True, False, True), "holds in part"),
    ((True, None, True), "holds in part"),  # a part that cannot be tested keeps a claim from holding
    ((False, False, None), "does not hold"),
    ((None, None, None), "not testable"),
])
def test_combine(states, verdict):
    names = [c.part for c in criteria.parts_of("denominator")]
    assert criteria.combine([part(n, s) for n, s in zip(names, states)]) == verdict


@pytest.mark.parametrize("value, passed", [(0.0999, True), (0.1, False), (0.1001, False)])
def test_check_is_strict_where_the_table_says_less_than(value, passed):
    assert criteria.criterion("denominator", "small-denominator").op == "<"
    assert criteria.check("denominator", "small-denominator", value).passed is passed


@pytest.mark.parametrize("value, passed", [(1.999, True), (2.0, True), (2.001, False)])
def test_check_at_a_less_or_equal_threshold(value, passed):
    assert criteria.check("denominator", "similar-numerators", value).passed is passed


def test_not_testable_values():
    assert criteria.check("denominator", "small-denominator", None).passed is None
    assert criteria.check("denominator", "small-denominator", math.nan).passed is None
    assert criteria.check("denominator", "small-denominator", 0.01, testable=False, note="why").status == "not testable"


def test_unknown_parts_are_refused_with_the_claims_parts_named():
    with pytest.raises(KeyError, match="small-denominator"):
        criteria.check("denominator", "tiny", 0.1)


def test_a_verdict_needs_every_part_of_its_claim_once():
    names = [c.part for c in criteria.parts_of("denominator")]
    parts = [criteria.PartResult("denominator", n, 1.0, i != 0) for i, n in enumerate(names)]
    v = claims.Verdict.from_parts("denominator", "m", "numbers", parts[::-1], "paper")  # any order
    assert v.verdict == "holds in part" and v.measured == f"numbers [fails: {names[0]}]"
    assert v.parts.startswith(names[0] + ":")  # listed in the table's order
    assert v.parts.count(" | ") == len(names) - 1
    with pytest.raises(ValueError, match="parts"):
        claims.Verdict.from_parts("denominator", "m", "numbers", parts[:-1], "paper")
    with pytest.raises(ValueError, match="parts"):
        claims.Verdict.from_parts("denominator", "m", "numbers", parts + parts[:1], "paper")


def test_every_claim_has_parts_and_every_part_a_known_claim():
    assert set(c.claim_id for c in criteria.CRITERIA) <= set(claims.CLAIMS)
    table = criteria.criteria_table()
    assert list(table.columns) == ["claim_id", "part", "statement", "rule"] and len(table) == len(criteria.CRITERIA)
