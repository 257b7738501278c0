"""Where the subject sits (strata.py), and the counts issue 20 states for the shared CounterFact splits."""
import pytest

from rome_collapse import data, models, samples, strata
from rome_collapse.config import repo_root
from rome_collapse.data import EditCase
from rome_collapse.strata import FIRST_MULTI, FIRST_SINGLE, LATER

SHARED = repo_root().parent / "shared" / "data" / "CounterFact"
needs_shared = pytest.mark.skipif(not SHARED.exists(), reason="the shared CounterFact splits are not beside this "
                                                               "checkout (../shared/data/CounterFact)")


@pytest.mark.parametrize("first, last, add_bos, stratum", [
    (0, 0, False, FIRST_SINGLE), (0, 2, False, FIRST_MULTI), (1, 1, False, LATER),
    (1, 1, True, FIRST_SINGLE), (1, 3, True, FIRST_MULTI), (0, 0, True, LATER), (2, 2, True, LATER)])
def test_the_stratum_counts_a_bos_in_front(first, last, add_bos, stratum):
    assert strata.stratum_of_span(first, last, add_bos) == stratum


@pytest.mark.model
def test_the_strata_of_real_prompts_on_smollm2(smol, curated):
    cases = [EditCase("a", "{} is located in the country of", "Paris", "Italy", "France"),
             EditCase("b", "{} speaks the language", "Danielle Darrieux", "English", "French"),
             EditCase("c", "The mother tongue of {} is", "Danielle Darrieux", "English", "French")]
    assert [strata.subject_stratum(smol, c) for c in cases] == [FIRST_SINGLE, FIRST_MULTI, LATER]
    assert strata.stratum_counts(smol, cases) == {FIRST_SINGLE: 1, FIRST_MULTI: 1, LATER: 1}
    for case in curated:  # the curated set's collapse-prone group is the first, single-token stratum
        assert (strata.subject_stratum(smol, case) == FIRST_SINGLE) == (
            samples.case_group(smol, case) == "collapse-prone"), case.case_id


@pytest.fixture(scope="module")
def splits():
    return {name: data.counterfact_split(name) for name in data.COUNTERFACT_SPLITS}


@needs_shared
@pytest.mark.model
def test_the_stratum_counts_of_the_shared_splits_on_smollm2(smol, splits):
    """Issue 20: 46 single-token subjects at position 0 (26 edit, 20 train), about 16,000 multi-token subjects
    first, about 4,000 later (measured: 15,996 and 3,958)."""
    edit, train = (strata.stratum_counts(smol, splits[n]) for n in ("edit", "train"))
    assert edit == {FIRST_SINGLE: 26, FIRST_MULTI: 8025, LATER: 1949}
    assert train == {FIRST_SINGLE: 20, FIRST_MULTI: 7971, LATER: 2009}
    assert edit[FIRST_SINGLE] + train[FIRST_SINGLE] == 46


@needs_shared
@pytest.mark.model
def test_the_stratum_counts_of_the_shared_splits_on_gemma3_with_and_without_its_bos(splits):
    """Issue 20: 213 single-token subjects right after Gemma-3's BOS; the same records are first without it."""
    gemma = models.load_model("gemma3-270m", device="cpu")
    assert gemma.add_bos
    for bundle in (gemma, gemma.with_bos(False)):
        edit, train = (strata.stratum_counts(bundle, splits[n]) for n in ("edit", "train"))
        assert edit == {FIRST_SINGLE: 105, FIRST_MULTI: 7946, LATER: 1949}
        assert train == {FIRST_SINGLE: 108, FIRST_MULTI: 7883, LATER: 2009}
        assert edit[FIRST_SINGLE] + train[FIRST_SINGLE] == 213
