"""Notebook 06's rules (Tables 4 and 5) at the edges of their thresholds (criteria.CRITERIA)."""
import pandas as pd
import pytest

from rome_collapse import criteria
from rome_collapse.rules.fix import judge_fix


def per_edit(normal_gap=0.0, without=0.0, with_prefix=1.0, crome_collapses=0, setting="paper"):
    """Two edits per variant and group; C-ROME's normal metrics ``normal_gap`` below ROME's (all three)."""
    rows = []
    for variant in ("rome", "c-rome"):
        for group in ("collapse-prone", "normal"):
            for i in range(2):
                normal = 0.9 - (normal_gap if variant == "c-rome" else 0.0)
                prone = variant == "c-rome" and group == "collapse-prone"
                rows.append({"setting": setting, "variant": variant, "group": group, "case_id": f"{group}{i}",
                             "collapsed": variant == "c-rome" and i < crome_collapses,
                             "rewrite_acc": without if prone else normal, "rephrase_acc": normal,
                             "locality_acc": normal, "rewrite_acc_prefix": with_prefix if prone else normal})
    return pd.DataFrame(rows)


def verdicts(table, setting="paper"):
    judged = judge_fix(table, "m", setting, n_prefixes=20)
    return {v.claim_id: v for v in judged.verdicts}, judged


def test_both_claims_hold_on_a_clean_table():
    found, judged = verdicts(per_edit())
    assert found["c-rome-normal"].verdict == "holds" and found["test-prefix"].verdict == "holds"
    assert len(judged.parts) == len(criteria.parts_of("c-rome-normal")) + len(criteria.parts_of("test-prefix"))


@pytest.mark.parametrize("gap, verdict", [(0.1 - 1e-9, "holds"), (0.1, "holds"), (0.1 + 1e-6, "holds in part")])
def test_normal_case_metrics_may_fall_at_most_the_threshold_below_rome(gap, verdict):
    found, _ = verdicts(per_edit(normal_gap=gap))
    assert found["c-rome-normal"].verdict == verdict


def test_one_collapsing_c_rome_edit_breaks_the_no_collapse_part():
    found, _ = verdicts(per_edit(crome_collapses=1))
    assert found["c-rome-normal"].verdict == "holds in part" and "fails: no-collapse" in found["c-rome-normal"].measured


@pytest.mark.parametrize("without, with_prefix, verdict", [
    (0.49, 0.8, "holds"), (0.5, 0.8, "holds in part"), (0.49, 0.79, "holds in part"), (0.5, 0.79, "does not hold")])
def test_the_prefix_claim_at_its_edges(without, with_prefix, verdict):
    found, _ = verdicts(per_edit(without=without, with_prefix=with_prefix))
    assert found["test-prefix"].verdict == verdict


def test_rows_of_another_setting_are_ignored():
    table = pd.concat([per_edit(setting="paper"), per_edit(without=1.0, setting="original")])
    assert verdicts(table, "paper")[0]["test-prefix"].verdict == "holds"
    assert verdicts(table, "original")[0]["test-prefix"].verdict == "holds in part"
