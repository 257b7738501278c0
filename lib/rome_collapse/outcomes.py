"""What an edit does to the model: each edit applied alone, measured, and the weights restored.

* :class:`EditOutcome`: one edit's anatomy (numerator, denominator, ratio, ‖ΔW‖), the perplexity before and after
  it, whether it collapsed the model (``collapse.collapsed``), and its scores: the paper's metrics (rewrite,
  rephrase and locality accuracy; rewrite accuracy behind an editing prefix) and CounterFact's (``cf_*``).
* :func:`measure_edits`: the one place edits are measured — perplexity, scores (optionally with the paper's
  test-time prefixes), or both; :func:`measure_edit`: one edit, through it; :func:`edit_and_measure`: edit every
  case of a selection and measure each edit.
* :func:`saved_edits`: an earlier run's per-edit table, when it holds exactly these edits (so that each
  measurement is made once and read by whoever needs it: notebooks 03, 04 and 06).
* :func:`group_stats`: summaries of a per-edit table by group; :func:`continuation_table`: what the model writes
  before and after each edit.

Every result is a dataclass with ``to_dict()``, so ``pandas.DataFrame([r.to_dict() for r in rows])`` gives the
table behind a figure.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path

import pandas as pd

from . import metrics, rome
from .parallel import map_on_copies
from .collapse import collapsed
from .data import EditCase
from .models import Bundle
from .stats import SecondMoment


@dataclass
class EditOutcome:
    """One edit and its effect on the model: the update's anatomy, perplexity, and the edit's scores (None where
    not measured). ``rewrite_acc``, ``rephrase_acc``, ``locality_acc`` are the paper's metrics (EasyEdit's token
    accuracies, ``metrics.paper_scores``), ``rewrite_acc_prefix`` the rewrite accuracy behind an editing prefix
    (the authors' placement, mean over the prefixes); ``cf_*`` are CounterFact's probability scores
    (``metrics.evaluate_cases``: target_new against target_true), a second family."""
    case_id: int | str
    group: str
    variant: str
    setting: str  # "paper" (C = I) or "original" (C⁻¹)
    subject: str
    prompt: str
    target_new: str
    numerator_norm: float  # ‖v* − W k − b‖
    denominator: float  # k·u, u = C⁻¹k̄/‖C⁻¹k̄‖ (what the authors' code prints)
    ratio: float  # (kᵘ·C⁻¹k̄)/(k̄·C⁻¹k̄)
    update_norm: float  # ‖ΔW‖
    ppl_before: float | None
    ppl_after: float | None
    collapsed: bool | None
    rewrite_acc: float | None = None
    rephrase_acc: float | None = None
    locality_acc: float | None = None
    rewrite_acc_prefix: float | None = None
    cf_efficacy: float | None = None
    cf_generalization: float | None = None
    cf_locality: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def ppl_ratio(self) -> float | None:
        """Perplexity after / before: the one ratio the collapse rule reads."""
        return None if self.ppl_after is None or self.ppl_before is None else self.ppl_after / self.ppl_before

    @classmethod
    def from_row(cls, row) -> EditOutcome:
        """An outcome read back from a row of a per-edit table (empty cells become None)."""
        return cls(**{f.name: None if pd.isna(row[f.name]) else row[f.name] for f in fields(cls) if f.name in row})


def measure_edits(bundle: Bundle, edits: list[rome.Edit], groups: dict, ppl_texts: list[str] | None = None,
                  ppl_before: float | None = None, scores: bool = True, test_prefixes: list[str] | None = None,
                  progress: bool = True, workers: int = 1) -> list[EditOutcome]:
    """Apply each edit alone, measure what it did, restore the weights. One outcome per edit, in order: the one
    place edits are measured.

    ``groups`` maps case_id to its group. With ``ppl_texts``: perplexity after the edit on them (ME-PPL, as the
    paper's script computes it) against ``ppl_before`` (measured here when not given), and ``collapsed``.
    With ``scores``: the paper's metrics of the edit's own case (locality against the unedited model's tokens,
    taken just before the edit) and CounterFact's scores; with ``test_prefixes`` (editing prefixes, e.g.
    ``templates[1:]``) also the rewrite accuracy behind each of them, averaged (Table 5, the authors' placement).
    ``workers``: threads measuring edits side by side (``parallel.map_on_copies``). The blocks below the lowest
    edited layer run once per perplexity batch, not once per edit (``metrics.LowerStates``).
    """
    lower = metrics.LowerStates(min(e.layer for e in edits)) if edits and ppl_texts is not None else None
    if ppl_texts is not None:
        ppl_before = metrics.perplexity_before(bundle, ppl_texts, ppl_before, lower)

    def measure(b: Bundle, e: rome.Edit) -> EditOutcome:
        reference = metrics.locality_reference(b, e.case) if scores else None  # the unedited model's tokens
        with rome.applied(b, e):
            ppl_after = metrics.perplexity(b, ppl_texts, lower=lower).mean if ppl_texts is not None else None
            paper = metrics.paper_scores(b, e.case, reference, test_prefixes) if scores else None
            cf = metrics.evaluate_cases(b, [e.case])[0] if scores else None
        r = e.report
        return EditOutcome(
            e.case.case_id, groups.get(e.case.case_id, "?"), r.variant, r.setting, e.case.subject, e.case.prompt,
            e.case.target_new, r.numerator_norm, r.denominator, r.ratio, r.update_norm,
            ppl_before if ppl_texts is not None else None, ppl_after,
            collapsed(ppl_after / ppl_before) if ppl_texts is not None else None,
            *((paper.rewrite_acc, paper.rephrase_acc, paper.locality_acc, paper.rewrite_acc_prefix,
               cf.efficacy, cf.generalization, cf.locality) if scores else ()))

    return map_on_copies(bundle, measure, edits, workers, desc="measuring edits", progress=progress)


def measure_edit(bundle: Bundle, edit: rome.Edit, ppl_texts: list[str] | None = None,
                 ppl_before: float | None = None, scores: bool = True, test_prefixes: list[str] | None = None,
                 group: str = "?") -> EditOutcome:
    """One edit applied alone, measured (as :func:`measure_edits`, which it calls), the weights restored.
    ``group`` labels the outcome."""
    return measure_edits(bundle, [edit], {edit.case.case_id: group}, ppl_texts, ppl_before, scores=scores,
                         test_prefixes=test_prefixes, progress=False)[0]


def edit_and_measure(bundle: Bundle, selection: dict[str, list[EditCase]], templates: list[str],
                     second_moment: SecondMoment, ppl_texts: list[str], variants=rome.VARIANTS,
                     scores: bool = True, batch_size: int = 8, progress: bool = True, workers: int = 1,
                     ppl_before: float | None = None, test_prefixes: list[str] | None = None) -> list[EditOutcome]:
    """Edit every selected case with every variant (v* shared and cached) and measure each edit alone
    (variant by variant, cases in the selection's order), on ``workers`` threads. ``ppl_before``: the unedited
    perplexity on ``ppl_texts`` when already measured (else :func:`measure_edits` measures it)."""
    cases = [c for group in selection.values() for c in group]
    groups = {c.case_id: g for g, cs in selection.items() for c in cs}
    edits = rome.compute_edits(bundle, cases, templates, second_moment, tuple(variants),
                               batch_size=batch_size, progress=progress, workers=workers)
    return measure_edits(bundle, [e for v in variants for e in edits[v]], groups, ppl_texts, ppl_before,
                         scores=scores, test_prefixes=test_prefixes, progress=progress, workers=workers)


ANATOMY = ("numerator_norm", "denominator", "ratio", "update_norm")  # what identifies an edit's update in a table


def saved_edits(saved: str | Path | pd.DataFrame, edits: dict[str, list[rome.Edit]],
                ppl_before: float | None = None, where: dict | None = None, rtol: float = 1e-9) -> pd.DataFrame | None:
    """The rows of an earlier run's per-edit table (a CSV at ``saved``, or the table) for exactly ``edits`` (variant
    → edits, each looked for in its own report's setting), in the order of ``edits``; or None when it is missing or
    does not hold every one of them with the same update (numerator, denominator, ratio and ‖ΔW‖ within ``rtol``:
    other v*, C, templates or cases give others) and, when ``ppl_before`` is given, the same perplexity before
    editing (other texts or model). ``where``: column → value, the rows to look in (e.g. one BOS setting of notebook
    03's table).

    The default ``rtol`` asks for the same numbers as this run's, up to the CSV's decimal round trip: a table
    written on another device, or before a change to the engine, is measured again rather than read."""
    if isinstance(saved, pd.DataFrame):
        table = saved
    else:
        if not Path(saved).exists():
            return None
        table = pd.read_csv(saved)
    if not {"case_id", "variant", "setting", *ANATOMY, *(where or {})} <= set(table.columns):
        return None
    for column, value in (where or {}).items():
        table = table[table[column] == value]
    wanted = {(str(e.case.case_id), v, e.report.setting): e.report for v, es in edits.items() for e in es}
    pairs = list(zip(table["case_id"].astype(str), table["variant"], table["setting"]))
    rows = {pair: i for i, pair in zip(table.index, pairs) if pair in wanted}
    if len(rows) != len(wanted) or sum(pair in wanted for pair in pairs) != len(wanted):
        return None  # an edit missing, or one held twice
    table = table.loc[[rows[pair] for pair in wanted]]

    def close(a, b) -> bool:
        return abs(a - b) <= rtol * max(abs(b), 1e-12)

    for column in ANATOMY:
        if not all(close(got, getattr(report, column)) for got, report in zip(table[column], wanted.values())):
            return None
    if ppl_before is not None and not ("ppl_before" in table and all(close(p, ppl_before) for p in table["ppl_before"])):
        return None
    return table.reset_index(drop=True)


def measured_or_saved(bundle: Bundle, edits: dict[str, list[rome.Edit]], groups: dict, saved: str | Path,
                      ppl_texts: list[str], ppl_before: float, test_prefixes: list[str] | None = None,
                      workers: int = 1, progress: bool = True) -> tuple[pd.DataFrame, str]:
    """The per-edit table of ``edits`` (variant → edits): read from an earlier run's table at ``saved`` when it
    holds exactly these edits, measured, perplexity and scores, otherwise (:func:`measure_edits`). Returns the table
    and where it came from ("measured" or the file's name)."""
    table = saved_edits(saved, edits, ppl_before)
    if table is not None and (test_prefixes is None or not table["rewrite_acc_prefix"].isna().any()):
        return table, Path(saved).name
    outcomes = measure_edits(bundle, [e for es in edits.values() for e in es], groups, ppl_texts, ppl_before,
                             test_prefixes=test_prefixes, progress=progress, workers=workers)
    return pd.DataFrame([o.to_dict() for o in outcomes]), "measured"


def group_stats(table: pd.DataFrame, columns: list[str], by: list[str] | str = "group",
                stats: tuple[str, ...] = ("mean", "min", "max")) -> pd.DataFrame:
    """``table.groupby(by)[columns]`` summarised by ``stats``; columns named ``<column> <stat>``."""
    out = table.groupby(by)[columns].agg(list(stats))
    out.columns = [f"{col} {stat}" for col, stat in out.columns]
    return out.reset_index()


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
