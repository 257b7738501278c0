"""Where a request's subject sits, as a model tokenises it: the strata the paper's §3.3 observation is about.

* "first, single token": the subject is one token and the first the model sees (position 0, or 1 right after the
  model's BOS): the paper's collapse cases.
* "first, multi-token": the subject opens the prompt but takes several tokens.
* "later": other tokens come before the subject.
"""
from __future__ import annotations

from collections import Counter

from .data import EditCase
from .models import Bundle
from .tokens import subject_token_span

FIRST_SINGLE, FIRST_MULTI, LATER = "first, single token", "first, multi-token", "later"
STRATA = (FIRST_SINGLE, FIRST_MULTI, LATER)


def stratum_of_span(first: int, last: int, add_bos: bool) -> str:
    """The stratum of a subject at token positions ``first`` … ``last`` (BOS counted when ``add_bos``)."""
    if first != (1 if add_bos else 0):
        return LATER
    return FIRST_SINGLE if first == last else FIRST_MULTI


def subject_stratum(bundle: Bundle, case: EditCase) -> str:
    """The stratum of ``case``'s subject as ``bundle`` tokenises the prompt (BOS per the bundle's switch)."""
    return stratum_of_span(*subject_token_span(bundle, case.prompt, case.subject), bundle.add_bos)


def stratum_counts(bundle: Bundle, cases: list[EditCase]) -> dict[str, int]:
    """How many of ``cases`` fall in each stratum (every stratum named, zeros included)."""
    counts = Counter(subject_stratum(bundle, case) for case in cases)
    return {stratum: counts[stratum] for stratum in STRATA}
