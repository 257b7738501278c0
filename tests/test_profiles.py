"""Run sizes (profiles.py): the large profile runs the paper's CounterFact sizes, and no size below full's."""
from dataclasses import fields

import pytest

from rome_collapse.profiles import PROFILES, get_profile


def test_the_large_profile_edits_every_flagged_record_and_a_thousand_normal_ones():
    large, full, smoke = get_profile("large"), get_profile("full"), get_profile("smoke")
    assert large.name == "large"
    assert large.counterfact_flagged is None  # every record the scan flags
    assert large.counterfact_normal == 1000 > full.counterfact_normal > smoke.counterfact_normal
    assert full.counterfact_normal >= 100  # issue 20's minimum for the full profile
    assert full.counterfact_flagged is not None and smoke.counterfact_flagged <= full.counterfact_flagged
    assert large.period_cases is None and large.counterfact_scan is None


def test_the_full_profile_meets_the_protocols_minimums():
    full, smoke = get_profile("full"), get_profile("smoke")
    assert full.counterfact_scan is None  # every record of both splits screened
    assert full.period_cases >= 30 and full.period_bos_cases >= 10  # Table 3: issue 20's minimums
    assert smoke.counterfact_scan is not None and smoke.counterfact_scan < 1000  # make test stays short


def test_the_large_profile_is_no_smaller_than_full_anywhere():
    large, full = get_profile("large"), get_profile("full")
    for field in fields(large):
        a, b = getattr(large, field.name), getattr(full, field.name)
        if field.name in ("name", "counterfact_flagged", "counterfact_scan", "period_cases"):  # None: every one
            continue
        if isinstance(b, bool) or not isinstance(b, (int, float)):
            assert a == b, field.name
        else:
            assert a >= b, field.name


def test_an_unknown_profile_names_the_known_ones():
    with pytest.raises(ValueError, match="smoke, full, large"):
        get_profile("paper")
    assert set(PROFILES) == {"smoke", "full", "large"}
