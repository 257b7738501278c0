"""Notebooks 11 and 12 (the paper's protocol on CounterFact): the claims ``observation`` (§3.3) and
``period-subjects`` (Table 3). Tables 1, 2, 4 and 5 on CounterFact reuse ``rules.denominators`` and ``rules.fix``
(their verdicts marked ``Verdict.on("CounterFact")``).

Both rules read per-edit tables (``outcomes.EditOutcome`` rows) with each record's ``stratum`` beside it
(``protocol.with_strata``).
"""
from __future__ import annotations

import pandas as pd

from .. import criteria
from ..claims import Judgement, Verdict
from ..protocol import observation
from ..strata import FIRST_SINGLE

DATA = "CounterFact"


def judge_observation(per_edit: pd.DataFrame, model: str, setting: str = "paper") -> Judgement:
    """§3.3 on what was measured: the share of the ROME collapses (every edited record, both groups) with a one-token
    subject at the start, and the share of edited one-token-first records that collapsed. Not testable without a
    collapse, or without such a record edited."""
    seen = observation(per_edit, setting)
    rome = per_edit[(per_edit["variant"] == "rome") & (per_edit["setting"] == setting)]
    first = rome[rome["stratum"] == FIRST_SINGLE]
    first_collapsed = int(first["collapsed"].astype(bool).sum())
    parts = [
        criteria.check("observation", "collapses-single-token-first", seen.share,
                       note=f"{seen.single_token_first} of {seen.collapses} collapses" if seen.collapses
                       else "no edit collapsed the model"),
        criteria.check("observation", "single-token-first-collapse",
                       first_collapsed / len(first) if len(first) else None,
                       note=f"{first_collapsed} of {len(first)} edited" if len(first)
                       else "no one-token-first record edited"),
    ]
    others = ", ".join(f"{o['subject']!r} ({o['stratum']}, {o['subject_tokens']} tokens)" for o in seen.others[:4])
    measured = (f"{seen.single_token_first}/{seen.collapses} collapses one-token-first; {first_collapsed}/{len(first)} "
                f"one-token-first edits collapse")
    verdict = Verdict.from_parts("observation", model, measured, parts, setting, DATA)
    text = (f"Claim `observation` (§3.3, {setting} setting, CounterFact): **{verdict.verdict}**. Of the {seen.collapses} "
            f"ROME edits that collapsed {model}, {seen.single_token_first} have a one-token subject at the start"
            + (f"; the others: {others}{' …' if len(seen.others) > 4 else ''}" if seen.others else "")
            + f". {first_collapsed} of the {len(first)} edited one-token-first records collapsed it.")
    return Judgement([verdict], text, tuple(parts))


def judge_period_subjects(per_edit: pd.DataFrame, model: str, has_bos: bool, setting: str = "paper") -> Judgement:
    """Table 3 on one model as it is used (with its BOS when ``has_bos``): the share of the period-subject ROME edits
    of ``setting`` that collapse it. A model without a BOS tests ``no-bos-safe``, one with a BOS ``bos-collapses``;
    the other part is not testable on it."""
    rome = per_edit[(per_edit["variant"] == "rome") & (per_edit["setting"] == setting)]
    k, n = int(rome["collapsed"].astype(bool).sum()), len(rome)
    share = k / n if n else None
    note = f"{k} of {n} edits"
    parts = [
        criteria.check("period-subjects", "no-bos-safe", share, note=note if not has_bos else "the model has a BOS",
                       testable=not has_bos),
        criteria.check("period-subjects", "bos-collapses", share, note=note if has_bos else "the model has no BOS",
                       testable=has_bos),
    ]
    verdict = Verdict.from_parts("period-subjects", model, f"{k}/{n} period-subject ROME edits collapse", parts,
                                 setting, DATA)
    text = (f"Claim `period-subjects` (Table 3, {setting} setting, {model} {'with' if has_bos else 'without'} a BOS): "
            f"**{verdict.verdict}**: {k} of {n} ROME edits of subjects ending in a period collapsed the model.")
    return Judgement([verdict], text, tuple(parts))
