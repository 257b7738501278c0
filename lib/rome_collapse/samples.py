"""The seeded samples the notebooks draw: edit cases by group, ordinary texts, and later positions in them.

* :func:`case_group`, :data:`GROUPS`: which group a case falls in for a model (is the subject the first token?).
* :func:`select_cases`: a seeded sample of cases from each group.
* :func:`sample_records`: a seeded sample of records from a file (CounterFact), some case ids left out.
* :func:`sample_texts`: a seeded sample of ordinary texts, each cut at a word boundary.
* :func:`later_lookups`: seeded positions after a text's first real token, as :class:`~rome_collapse.keys.Lookup`.

Every sampler takes a ``seed`` and its own ``random.Random``, so a notebook's draws do not depend on what ran
before it.
"""
from __future__ import annotations

import random

from collections.abc import Collection

from .data import EditCase
from .keys import Lookup
from .models import Bundle
from .tokens import subject_is_first_token, token_ids

GROUPS = ("collapse-prone", "normal", "multi-token-start", "bos-protected")


def case_group(bundle: Bundle, case: EditCase) -> str:
    """collapse-prone: the subject is the very first token the model sees (one token, no BOS, no prefix);
    normal: the subject comes after other words; multi-token-start: a longer subject at the start;
    bos-protected: a one-token subject at the start with the model's BOS before it (collapse-prone
    once the BOS is removed)."""
    if subject_is_first_token(bundle, case.prompt, case.subject):
        return "collapse-prone"
    if not case.prompt.startswith("{}"):
        return "normal"
    if bundle.add_bos and subject_is_first_token(bundle.with_bos(False), case.prompt, case.subject):
        return "bos-protected"
    return "multi-token-start"


def select_cases(bundle: Bundle, cases: list[EditCase], n_per_group: int, seed: int = 0,
                 groups: tuple[str, ...] = ("collapse-prone", "normal")) -> dict[str, list[EditCase]]:
    """A seeded sample of ``n_per_group`` cases from each group (fewer when a group is smaller)."""
    by_group: dict[str, list[EditCase]] = {g: [] for g in groups}
    for case in cases:
        group = case_group(bundle, case)
        if group in by_group:
            by_group[group].append(case)
    rng = random.Random(seed)
    return {g: sorted(rng.sample(cs, min(n_per_group, len(cs))), key=lambda c: str(c.case_id))
            for g, cs in by_group.items()}


def sample_records(cases: list[EditCase], n: int, seed: int = 0,
                   exclude: Collection[int | str] = ()) -> list[EditCase]:
    """A seeded sample of ``n`` of ``cases`` whose case_id is not in ``exclude`` (all of them when fewer are
    left), returned in the order of ``cases``. Samples of one seed are nested: the first ``n`` of one seeded
    shuffle, so a smaller profile's records are among a larger one's (and their cached edits are shared)."""
    if n < 0:
        raise ValueError(f"cannot sample {n} records")
    excluded = set(exclude)
    pool = [i for i, case in enumerate(cases) if case.case_id not in excluded]
    random.Random(seed).shuffle(pool)
    return [cases[i] for i in sorted(pool[:n])]


def sample_texts(texts: list[str], n: int, seed: int = 0, exclude: set[str] | None = None,
                 max_words: int | None = None, max_chars: int | None = None) -> list[str]:
    """A seeded sample of ``n`` non-empty texts not in ``exclude``, each cut to its first ``max_words`` words
    (whitespace-joined) and/or at the last space before ``max_chars`` characters (no cut where not given).

    A causal model's state at a token depends only on the tokens before it, so cutting a text leaves the
    kept positions as they were and only makes the forward passes cheaper.
    """
    exclude = exclude or set()
    pool = [t for t in texts if t.strip() and t not in exclude]
    picked = random.Random(seed).sample(pool, min(n, len(pool)))
    return [_cut(t, max_words, max_chars) for t in picked]


def _cut(text: str, max_words: int | None, max_chars: int | None) -> str:
    if max_words is not None:
        text = " ".join(text.split()[:max_words])
    if max_chars is not None and len(text) > max_chars:
        space = text.rfind(" ", 0, max_chars)
        text = text[:space] if space > 0 else text[:max_chars]
    return text


def later_lookups(bundle: Bundle, texts: list[str], per_text: int = 1, start: int | None = None,
                  max_position: int | None = None, seed: int = 0) -> list[Lookup]:
    """``per_text`` seeded random positions in each text (in increasing order, text by text), counted as the
    bundle tokenises it (BOS included), from ``start`` (default: right after the first real token, 2 with a BOS
    and 1 without) and below ``max_position`` (default: the text's end). A text with fewer such positions gives
    fewer (none when it has none)."""
    start = (2 if bundle.add_bos else 1) if start is None else start
    rng = random.Random(seed)
    lookups = []
    for text in texts:
        length = len(token_ids(bundle, text))
        positions = range(start, length if max_position is None else min(length, max_position))
        lookups += [Lookup(text, p) for p in sorted(rng.sample(positions, min(per_text, len(positions))))]
    return lookups
