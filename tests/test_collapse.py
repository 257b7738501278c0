"""What counts as a collapse, and the confidence bounds on a collapse rate (collapse.py)."""
import numpy as np
import pytest
from scipy.stats import binom

from rome_collapse import collapse


def test_collapsed_is_over_the_factor_and_counts_non_finite_perplexity():
    assert list(collapse.collapsed([9.9, 10.0, 10.1, np.nan, np.inf])) == [False, False, True, True, True]
    assert collapse.collapsed(12.0) is True and collapse.collapsed(3.0, factor=2.0) is True


def test_no_collapse_in_200_edits_bounds_the_rate_under_one_and_a_half_percent():
    bound = collapse.upper_bound(0, 200)
    assert bound == pytest.approx(1 - 0.05 ** (1 / 200), rel=1e-9)  # closed form when k = 0
    assert 0.0148 < bound < 0.0150
    assert collapse.lower_bound(0, 200) == 0.0


@pytest.mark.parametrize("k, n", [(1, 20), (3, 100), (17, 1919), (50, 60)])
def test_the_bounds_leave_the_stated_tail_chance(k, n):
    """Clopper–Pearson's definition: at the upper bound, k or fewer collapses have chance 5%; at the lower, k or
    more have chance 5%; the measured rate lies between them."""
    upper, lower = collapse.upper_bound(k, n), collapse.lower_bound(k, n)
    assert binom.cdf(k, n, upper) == pytest.approx(0.05, rel=1e-6)
    assert binom.sf(k - 1, n, lower) == pytest.approx(0.05, rel=1e-6)
    assert lower < k / n < upper
    assert collapse.upper_bound(k, n, confidence=0.99) > upper  # surer: wider


def test_every_edit_collapsing_bounds_at_one():
    assert collapse.upper_bound(30, 30) == 1.0
    assert collapse.lower_bound(30, 30) == pytest.approx(0.05 ** (1 / 30), rel=1e-9)


@pytest.mark.parametrize("k, n, confidence", [(3, 2, 0.95), (0, 0, 0.95), (-1, 5, 0.95), (1.5, 5, 0.95),
                                              (1, 5, 1.0), (1, 5, 0.0), (True, 5, 0.95)])
def test_bad_counts_or_confidence_are_refused(k, n, confidence):
    for bound in (collapse.upper_bound, collapse.lower_bound):
        with pytest.raises(ValueError):
            bound(k, n, confidence)
