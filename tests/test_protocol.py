"""The paper's protocol on CounterFact (protocol.py, rules/counterfact.py): the screen's cache, the groups edited,
collapse rates with their bounds, the §3.3 observation and Table 3's records."""
import pandas as pd
import pytest

from rome_collapse import collapse, protocol, stats
from rome_collapse.data import EditCase
from rome_collapse.rules import counterfact as cf_rules
from rome_collapse.strata import FIRST_MULTI, FIRST_SINGLE, LATER

TEMPLATES = ["{}", "The weather is nice. {}", "I went home. {}"]
CASES = [EditCase(1, "{} is located in the country of", "Paris", "Italy", "France"),
         EditCase(2, "The city of {} is located in", "Paris", "Italy", "France"),
         EditCase(3, "The mother tongue of {} is", "Danielle Darrieux", "English", "French")]


@pytest.fixture
def cache_home(tmp_path, monkeypatch):
    monkeypatch.setenv("ROME_COLLAPSE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_the_screen_is_cached_and_the_threshold_applied_after_reading(tiny, cache_home, monkeypatch):
    tiny = tiny
    identity = stats.SecondMoment.identity()
    first = protocol.scan_records(tiny, CASES, TEMPLATES, identity, {1: "edit", 2: "edit", 3: "train"},
                                  threshold=0.1, progress=False)
    assert not first.cached and list(first.table["case_id"]) == [1, 2, 3]
    assert list(first.table["split"]) == ["edit", "edit", "train"]

    def no_scan(*args, **kwargs):
        raise AssertionError("scanned again")

    monkeypatch.setattr(protocol, "scan_cases", no_scan)
    again = protocol.scan_records(tiny, CASES, TEMPLATES, identity, threshold=5.0, progress=False)
    assert again.cached
    pd.testing.assert_series_equal(again.table["ratio"], first.table["ratio"])
    assert list(again.table["at_risk"]) == list(again.table["ratio"] < 5.0)  # the new threshold, not the stored one
    with pytest.raises(AssertionError, match="scanned again"):  # other records: another entry
        protocol.scan_records(tiny, CASES[:2], TEMPLATES, identity, progress=False)
    with pytest.raises(AssertionError, match="scanned again"):  # other templates: another entry
        protocol.scan_records(tiny, CASES, TEMPLATES[:2], identity, progress=False)


def test_a_parallel_screen_gives_the_rows_of_a_serial_one(tiny, cache_home, monkeypatch):
    tiny = tiny
    monkeypatch.setattr(protocol, "_PART", 1)  # one record per work item: three items on two threads
    identity = stats.SecondMoment.identity()
    serial = protocol.scan_records(tiny, CASES, TEMPLATES, identity, use_cache=False, progress=False)
    parallel = protocol.scan_records(tiny, CASES, TEMPLATES, identity, workers=2, use_cache=False, progress=False)
    assert list(parallel.table["case_id"]) == [1, 2, 3] and parallel.workers == 2
    pd.testing.assert_series_equal(parallel.table["ratio"], serial.table["ratio"], rtol=1e-6)


def scan_table(flags: list[bool], strata_: list[str]) -> pd.DataFrame:
    return pd.DataFrame({"case_id": list(range(len(flags))), "at_risk": flags, "stratum": strata_,
                         "ratio": [0.01 if f else 0.9 for f in flags]})


def records(n: int) -> list[EditCase]:
    return [EditCase(i, "{} plays", f"Subject {i}", "chess", "golf") for i in range(n)]


def test_edit_groups_sample_flagged_and_unflagged_records_by_seed():
    flags = [i % 10 == 0 for i in range(200)]  # 20 flagged
    table = scan_table(flags, [FIRST_MULTI] * 200)
    cases = records(200)
    groups = protocol.edit_groups(table, cases, n_flagged=5, n_normal=30, seed=1)
    assert all(c.case_id % 10 == 0 for c in groups[protocol.PRONE]) and len(groups[protocol.PRONE]) == 5
    assert all(c.case_id % 10 != 0 for c in groups[protocol.NORMAL]) and len(groups[protocol.NORMAL]) == 30
    assert groups == protocol.edit_groups(table, cases, 5, 30, seed=1)  # the seed decides
    assert groups != protocol.edit_groups(table, cases, 5, 30, seed=2)
    bigger = protocol.edit_groups(table, cases, 10, 60, seed=1)  # nested: a larger sample keeps the smaller one
    assert {c.case_id for c in groups[protocol.NORMAL]} <= {c.case_id for c in bigger[protocol.NORMAL]}
    every = protocol.edit_groups(table, cases, None, 0, seed=1)
    assert len(every[protocol.PRONE]) == 20 and every[protocol.NORMAL] == []


def per_edit_rows(rows: list[tuple]) -> pd.DataFrame:
    """(case_id, group, stratum, collapsed) rows of ROME edits in the paper setting."""
    return pd.DataFrame([{"case_id": c, "group": g, "stratum": s, "collapsed": k, "setting": "paper",
                          "variant": "rome", "subject": f"s{c}", "subject_tokens": 1 if s == FIRST_SINGLE else 2,
                          "ppl_before": 100.0, "ppl_after": 5000.0 if k else 110.0} for c, g, s, k in rows])


def test_collapse_rates_count_per_cell_with_clopper_pearson_bounds():
    rows = [(i, protocol.PRONE, FIRST_SINGLE, i < 3) for i in range(4)] + \
           [(10 + i, protocol.NORMAL, LATER, False) for i in range(20)]
    table = scan_table([True] * 4 + [False] * 40, [FIRST_SINGLE] * 4 + [LATER] * 40)
    rates = protocol.collapse_rates(per_edit_rows(rows), table).set_index("group")
    prone, normal = rates.loc[protocol.PRONE], rates.loc[protocol.NORMAL]
    assert (prone["edits"], prone["collapsed"], prone["rate"]) == (4, 3, 0.75)
    assert prone["upper"] == pytest.approx(collapse.upper_bound(3, 4)) and prone["lower"] > 0
    assert (normal["collapsed"], normal["lower"]) == (0, 0.0)
    assert normal["upper"] == pytest.approx(1 - 0.05 ** (1 / 20))  # exact: 0 of n, one-sided 95%
    assert (prone["records"], normal["records"]) == (4, 40)


def test_the_observation_counts_collapses_by_stratum_and_names_the_others():
    rows = [(1, protocol.PRONE, FIRST_SINGLE, True), (2, protocol.PRONE, FIRST_MULTI, True),
            (3, protocol.PRONE, FIRST_SINGLE, False), (4, protocol.NORMAL, LATER, False)]
    seen = protocol.observation(per_edit_rows(rows))
    assert (seen.collapses, seen.single_token_first, seen.share) == (2, 1, 0.5)
    assert [o["case_id"] for o in seen.others] == [2] and seen.others[0]["ppl_ratio"] == 50.0
    judged = cf_rules.judge_observation(per_edit_rows(rows), "m")
    verdict = judged.verdicts[0]
    assert verdict.data == "CounterFact" and verdict.verdict == "holds in part"  # 1/2 < 0.9 fails; 1/2 >= 0.5 holds


def test_the_observation_is_not_testable_without_a_collapse():
    rows = [(1, protocol.NORMAL, LATER, False), (2, protocol.NORMAL, FIRST_MULTI, False)]
    assert cf_rules.judge_observation(per_edit_rows(rows), "m").verdicts[0].verdict == "not testable"


@pytest.mark.parametrize("collapsed, has_bos, expected", [
    ([False] * 10, False, "holds in part"),  # no-bos-safe holds, bos-collapses not testable on this model
    ([True] * 2 + [False] * 8, False, "does not hold"),  # 20% > 10%
    ([True] * 5 + [False] * 5, True, "holds in part"),  # half collapse a BOS model
    ([False] * 10, True, "does not hold"),
])
def test_table3_judges_the_part_each_model_can_test(collapsed, has_bos, expected):
    rows = per_edit_rows([(i, "period", FIRST_MULTI, k) for i, k in enumerate(collapsed)])
    judged = cf_rules.judge_period_subjects(rows, "m", has_bos)
    assert judged.verdicts[0].verdict == expected
    untested = [p.part for p in judged.parts if p.passed is None]
    assert untested == (["no-bos-safe"] if has_bos else ["bos-collapses"])


def test_period_subjects_are_the_subjects_ending_in_a_period():
    cases = [EditCase(1, "{} was founded in", "Apple Inc.", "Paris", "Cupertino"),
             EditCase(2, "{} was founded in", "Apple", "Paris", "Cupertino"),
             EditCase(3, "{} was born in", "Martin Luther King Jr. ", "Paris", "Atlanta")]
    assert [c.case_id for c in protocol.period_subjects(cases)] == [1, 3]


def test_without_the_shared_splits_the_records_come_from_romes_own_file(monkeypatch):
    def missing(name):
        raise FileNotFoundError(f"CounterFact split {name!r}: no data root found")

    monkeypatch.setattr(protocol.data, "counterfact_split", missing)
    monkeypatch.setattr(protocol.data, "counterfact", lambda: CASES)
    cases, split_of = protocol.counterfact_records()
    assert cases == CASES and set(split_of.values()) == {"all"}
    with pytest.raises(FileNotFoundError, match="no data root"):
        protocol.counterfact_records(download=False)


@pytest.mark.model  # reads the shared CounterFact splits (no model)
def test_the_shared_splits_hold_73_period_subjects():
    try:
        cases, split_of = protocol.counterfact_records()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    period = protocol.period_subjects(cases)
    assert len(cases) == 20_000 and len(period) == 73
    assert sum(split_of[c.case_id] == "edit" for c in period) == 34
