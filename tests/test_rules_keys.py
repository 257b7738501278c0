"""Notebooks 02 and 03's rules (rules.keys) on small hand-made tables, each part at its threshold's edges."""
import pandas as pd
import pytest

from rome_collapse import criteria
from rome_collapse.rules import keys

EDGE = {"<": (True, False, False), "<=": (True, True, False), ">=": (False, True, True), ">": (False, False, True)}


def edges(claim_id, part, step=0.01):
    """(value, holds) just below, at and just above the part's threshold."""
    c = criteria.criterion(claim_id, part)
    return list(zip((c.threshold - step, c.threshold, c.threshold + step), EDGE[c.op]))


def part_of(judgement, part):
    return next(p for p in judgement.parts if p.part == part)


# --------------------------------------------------------------------------------------------
# key-mismatch (notebook 02)
# --------------------------------------------------------------------------------------------
def case_table(cos_prone=0.1, cos_normal=0.9, groups=("collapse-prone", "normal")):
    cos = {"collapse-prone": cos_prone, "normal": cos_normal}
    return pd.DataFrame([{"group": g, "cos_ku_kbar": cos[g] + d, "ratio": 0.01 if g == "collapse-prone" else 0.9}
                         for g in groups for d in (-0.05, 0.05)])  # the group's mean is cos[g]


def test_key_mismatch_holds_with_both_groups_as_claimed():
    judged = keys.judge_key_mismatch(case_table(), "m")
    assert judged.verdicts[0].verdict == "holds"
    assert judged.verdicts[0].measured == "mean cos(kᵘ, k̄) 0.10 (collapse-prone) vs 0.90 (normal)"
    assert "do not overlap" in judged.text


@pytest.mark.parametrize("part, group", [("collapse-apart", "cos_prone"), ("normal-together", "cos_normal")])
def test_key_mismatch_parts_at_their_edges(part, group):
    for value, holds in edges("key-mismatch", part):
        got = part_of(keys.judge_key_mismatch(case_table(**{group: value}), "m"), part)
        assert got.value == pytest.approx(value) and got.passed is holds, (value, got)


def test_key_mismatch_without_collapse_prone_cases_leaves_that_part_not_testable():
    judged = keys.judge_key_mismatch(case_table(groups=("normal",)), "m")
    assert part_of(judged, "collapse-apart").status == "not testable"
    verdict = judged.verdicts[0]
    assert verdict.verdict == "holds in part" and "not testable: collapse-apart" in verdict.measured
    apart = keys.judge_key_mismatch(case_table(cos_prone=0.8), "m").verdicts[0]
    assert apart.verdict == "holds in part" and "fails: collapse-apart" in apart.measured


# --------------------------------------------------------------------------------------------
# first-token and first-token-bos (notebook 03, Part 1)
# --------------------------------------------------------------------------------------------
def centroids(collapse_first=1.0, normal_later=1.0, prefixed_later=1.0, collapse_later=0.0, exposed=None):
    """``representations.centroid_table``'s columns that the rules read: nearest_<ref> shares per key set."""
    def row(name, first, later, first_nobos=0.0):
        return {"set": name, "n": 4, "nearest_first": first, "nearest_later": later, "nearest_first_nobos": first_nobos}

    rows = [row("collapse kᵘ", collapse_first, collapse_later), row("normal kᵘ", 1 - normal_later, normal_later),
            row("collapse kᵘ, prefixed", 1 - prefixed_later, prefixed_later)]
    if exposed is not None:
        rows.append(row("collapse kᵘ, BOS removed", 0.0, 1 - exposed, exposed))
    return pd.DataFrame(rows)


def test_first_token_without_a_bos_holds_as_claimed():
    judged = keys.judge_first_token(centroids(), "m", bos=False)
    assert judged.verdicts[0].claim_id == "first-token" and judged.verdicts[0].verdict == "holds"


@pytest.mark.parametrize("part, field", [("collapse-near-first", "collapse_first"),
                                         ("normal-near-later", "normal_later"), ("prefix-moves-back", "prefixed_later")])
def test_first_token_parts_at_their_edges(part, field):
    for value, holds in edges("first-token", part):
        got = part_of(keys.judge_first_token(centroids(**{field: value}), "m", bos=False), part)
        assert got.value == pytest.approx(value) and got.passed is holds, (value, got)


def test_first_token_does_not_hold_when_no_part_does():
    judged = keys.judge_first_token(centroids(0.0, 0.0, 0.0), "m", bos=False)
    assert judged.verdicts[0].verdict == "does not hold"


def test_a_bos_model_is_judged_on_its_own_claim():
    judged = keys.judge_first_token(centroids(collapse_first=0.0, collapse_later=1.0, exposed=0.83), "g", bos=True)
    assert judged.verdicts[0].claim_id == "first-token-bos" and judged.verdicts[0].verdict == "holds"
    assert {p.claim_id for p in judged.parts} == {"first-token-bos"}
    hidden = keys.judge_first_token(centroids(collapse_later=1.0, exposed=0.2), "g", bos=True).verdicts[0]
    assert hidden.verdict == "holds in part" and "fails: removal-exposes" in hidden.measured
    no_removed_set = keys.judge_first_token(centroids(collapse_later=1.0), "g", bos=True)
    assert part_of(no_removed_set, "removal-exposes").status == "not testable"


@pytest.mark.parametrize("part, field", [("bos-protects-keys", "collapse_later"), ("normal-near-later", "normal_later"),
                                         ("removal-exposes", "exposed")])
def test_first_token_bos_parts_at_their_edges(part, field):
    for value, holds in edges("first-token-bos", part):
        given = {"collapse_later": 1.0, "exposed": 1.0, field: value}
        got = part_of(keys.judge_first_token(centroids(**given), "g", bos=True), part)
        assert got.value == pytest.approx(value) and got.passed is holds, (value, got)


# --------------------------------------------------------------------------------------------
# bos (notebook 03, Part 2)
# --------------------------------------------------------------------------------------------
def bos_table(n=4, ratio_with=1.1, ratio_without=0.01, worse_with=0, worse_without=None, unedited_without=1e4,
              over=20.0, crome_factor=1.5):
    """n cases edited in both BOS settings with both variants. C-ROME's edit takes ME-PPL to ``crome_factor`` × the
    unedited;
    ``worse_*`` of the ROME edits are ``over`` × C-ROME's, the others 1.2×."""
    worse_without = n if worse_without is None else worse_without
    rows = []
    for label, unedited, ratio, worse in (("with BOS", 139.0, ratio_with, worse_with),
                                          ("without BOS", unedited_without, ratio_without, worse_without)):
        for case in range(n):
            crome = crome_factor * unedited
            rome = crome * (over if case < worse else 1.2)
            for variant, ppl, r in (("rome", rome, ratio), ("c-rome", crome, 1.0)):
                rows.append({"BOS": label, "variant": variant, "case_id": case, "ratio": r, "ppl_before": unedited,
                             "ppl_after": ppl, "ppl_ratio": ppl / unedited, "collapsed": ppl / unedited > 10})
    return pd.DataFrame(rows)


def test_bos_holds_as_claimed_and_shows_both_unedited_perplexities():
    judged = keys.judge_bos(bos_table(), "g", "paper")
    assert judged.verdicts[0].verdict == "holds" and judged.verdicts[0].setting == "paper"
    assert "unedited ME-PPL 139 with the BOS, 10000 without" in judged.verdicts[0].measured
    assert "not a healthy model" in judged.text
    pairs = keys.bos_pairs(bos_table())
    assert set(pairs.groupby("BOS").ppl_unedited.first()) == {139.0, 1e4}
    assert pairs.rome_over_c_rome.max() == pytest.approx(20.0)


@pytest.mark.parametrize("part, field", [("bos-keeps-denominator", "ratio_with"),
                                         ("removal-shrinks-denominator", "ratio_without")])
def test_bos_denominator_parts_at_their_edges(part, field):
    for value, holds in edges("bos", part, step=0.001):
        got = part_of(keys.judge_bos(bos_table(**{field: value}), "g", "paper"), part)
        assert got.value == pytest.approx(value) and got.passed is holds, (value, got)


@pytest.mark.parametrize("part, field", [("bos-protects", "worse_with"), ("removal-collapses", "worse_without")])
def test_bos_collapse_shares_at_their_edges(part, field):
    n, c = 20, criteria.criterion("bos", part)
    for k, holds in zip([round(c.threshold * n) + d for d in (-1, 0, 1)], EDGE[c.op]):
        if k < 0:
            continue  # a share cannot go below 0
        got = part_of(keys.judge_bos(bos_table(n=n, **{field: k}), "g", "paper"), part)
        assert got.value == pytest.approx(k / n) and got.passed is holds, (k, got)


def test_bos_counts_rome_against_c_rome_not_against_the_unedited_model():
    # ROME at exactly 10× C-ROME's is not over it; just above is
    assert part_of(keys.judge_bos(bos_table(over=10.0), "g", "paper"), "removal-collapses").value == 0
    assert part_of(keys.judge_bos(bos_table(over=10.01), "g", "paper"), "removal-collapses").value == 1
    # 18× the unedited perplexity, but 1.2× C-ROME's: the key adds no damage, so no collapse is counted
    mild = bos_table(worse_without=0, crome_factor=15.0)
    assert (mild[mild.variant == "rome"].ppl_ratio > 10).all()
    assert part_of(keys.judge_bos(mild, "g", "paper"), "removal-collapses").value == 0
    # a ROME edit whose perplexity is not finite counts as worse
    broken = bos_table(worse_with=0)
    first_rome = (broken.BOS == "with BOS") & (broken.variant == "rome") & (broken.case_id == 0)
    broken.loc[first_rome, "ppl_after"] = float("nan")
    assert part_of(keys.judge_bos(broken, "g", "paper"), "bos-protects").value == pytest.approx(0.25)


def test_bos_without_one_setting_leaves_its_parts_not_testable():
    only_with = bos_table()[lambda t: t.BOS == "with BOS"]
    judged = keys.judge_bos(only_with, "g", "paper")
    assert part_of(judged, "removal-collapses").status == "not testable"
    assert judged.verdicts[0].verdict == "holds in part"
