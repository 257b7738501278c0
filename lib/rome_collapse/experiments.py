"""The notebooks' building blocks: case groups, editing many cases, and measuring what each edit did.

Every result is a dataclass with ``to_dict()``, so ``pandas.DataFrame([r.to_dict() for r in rows])``
gives the table behind a figure.
"""
from __future__ import annotations

import random
from dataclasses import asdict, dataclass

import pandas as pd

from tqdm.auto import tqdm

from . import metrics, rome
from .data import EditCase
from .models import Bundle
from .stats import SecondMoment
from .tokens import subject_is_first_token

# An edit "collapses" the model when ME-PPL perplexity after it is over this many times the original.
COLLAPSE_FACTOR = 10.0

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


@dataclass
class EditOutcome:
    """One edit and its effect on the model: the update's anatomy, perplexity, and the edit's scores."""
    case_id: int | str
    group: str
    variant: str
    setting: str  # "paper" (C = I) or "rome" (C⁻¹)
    subject: str
    prompt: str
    target_new: str
    numerator_norm: float
    denominator: float
    ratio: float
    delta_norm: float
    ppl_before: float
    ppl_after: float
    collapsed: bool
    efficacy: float | None = None
    generalization: float | None = None
    locality: float | None = None
    test_prefix: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


def measure_edits(bundle: Bundle, edits: list[rome.Edit], groups: dict, ppl_texts: list[str],
                  ppl_before: float, test_prefix: str | None = None, scores: bool = True,
                  progress: bool = True) -> list[EditOutcome]:
    """Apply each edit alone, measure perplexity (and efficacy, generalisation, locality), restore."""
    outcomes = []
    for e in tqdm(edits, desc="measuring edits", disable=not progress):
        with rome.applied(bundle, e):
            ppl_after = metrics.perplexity(bundle, ppl_texts).mean
            s = metrics.evaluate_cases(bundle, [e.case], test_prefix=test_prefix)[0] if scores else None
        outcomes.append(EditOutcome(
            e.case.case_id, groups.get(e.case.case_id, "?"), e.report.variant, e.report.setting, e.case.subject, e.case.prompt,
            e.case.target_new, e.report.numerator_norm, e.report.denominator, e.report.ratio, e.report.delta_norm,
            ppl_before, ppl_after, not ppl_after < COLLAPSE_FACTOR * ppl_before,  # NaN/inf count as collapsed
            s.efficacy if s else None, s.generalization if s else None, s.locality if s else None,
            bool(s.test_prefix) if s else False))
    return outcomes


def edit_and_measure(bundle: Bundle, selection: dict[str, list[EditCase]], templates: list[str],
                     second_moment: SecondMoment, ppl_texts: list[str], variants=rome.VARIANTS,
                     scores: bool = True, batch_size: int = 8, progress: bool = True) -> list[EditOutcome]:
    """Edit every selected case with every variant (v* shared and cached) and measure each edit alone."""
    cases = [c for group in selection.values() for c in group]
    groups = {c.case_id: g for g, cs in selection.items() for c in cs}
    edits = rome.compute_edits(bundle, cases, templates, second_moment, tuple(variants),
                               batch_size=batch_size, progress=progress)
    ppl_before = metrics.perplexity(bundle, ppl_texts).mean
    return [o for v in variants
            for o in measure_edits(bundle, edits[v], groups, ppl_texts, ppl_before, scores=scores, progress=progress)]


def continuation_table(bundle: Bundle, edits: dict[str, list[rome.Edit]], openings: list[str],
                       max_new_tokens: int = 16) -> pd.DataFrame:
    """Greedy continuations of ``openings`` and of each edit's rewrite prompt: unedited, after ROME and after
    C-ROME (each edit applied alone, weights restored after). One row per case and prompt; ``edits`` maps
    "rome" and "c-rome" to edits of the same cases in the same order."""
    labels = {"rome": "ROME", "c-rome": "C-ROME"}
    cases = [e.case for e in edits["rome"]]
    prompts = {c.case_id: openings + [c.text] for c in cases}
    unique = list(dict.fromkeys(p for ps in prompts.values() for p in ps))
    before = dict(zip(unique, metrics.continuations(bundle, unique, max_new_tokens)))
    after = {}
    for variant, variant_edits in edits.items():
        for e in variant_edits:
            with rome.applied(bundle, e):
                texts = metrics.continuations(bundle, prompts[e.case.case_id], max_new_tokens)
            after[(variant, e.case.case_id)] = texts
    rows = []
    for c in cases:
        for i, prompt in enumerate(prompts[c.case_id]):
            rows.append({"case": f"{c.subject}: {c.target_true} → {c.target_new}", "prompt": prompt,
                         "unedited": before[prompt],
                         **{labels[v]: after[(v, c.case_id)][i] for v in edits if (v, c.case_id) in after}})
    return pd.DataFrame(rows)
