"""Notebook 01 (Tables 1 and 2): claims ``denominator``, ``rome-collapses`` and ``c-rome-safe``, one setting at a time.

The rules read a per-edit table (``outcomes.EditOutcome`` rows: setting, variant, group, numerator_norm,
denominator, ratio, ppl_before, ppl_after, collapsed), measure each part's quantity (:func:`edit_numbers`) and
compare it with its row of ``criteria.CRITERIA``; the findings in words are rendered from the same numbers
(:func:`findings`), apart from the rule. numpy/pandas only, no torch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from .. import criteria
from ..claims import Judgement, Verdict
from ..collapse import COLLAPSE_FACTOR

PRONE, NORMAL = "collapse-prone", "normal"
NAN = float("nan")


@dataclass(frozen=True)
class EditNumbers:
    """What one setting's edits show, per group of ROME edits (NaN / 0 where a group has no edit) and for C-ROME."""
    setting: str
    rome_edits: dict  # group → number of ROME edits
    rome_collapsed: dict  # group → ROME edits over COLLAPSE_FACTOR × the unedited perplexity
    median_ratio: dict  # group → median denominator ratio (kᵘ·C⁻¹k̄)/(k̄·C⁻¹k̄)
    median_abs_denominator: dict  # group → median |k·u|
    median_numerator: dict  # group → median ‖v* − W kᵘ − b‖
    prone_ppl_median: float  # ME-PPL after the collapse-prone ROME edits
    prone_ppl_max: float
    ppl_before: float  # the unedited model's ME-PPL
    crome_edits: int
    crome_collapsed: int
    crome_worst_factor: float  # largest ME-PPL after / before of a C-ROME edit (inf when one is not finite)

    def share_collapsed(self, group: str) -> float:
        n = self.rome_edits[group]
        return self.rome_collapsed[group] / n if n else NAN


def _median(frame: pd.DataFrame, column: str) -> float:
    return float(frame[column].median()) if len(frame) else NAN


def edit_numbers(edits: pd.DataFrame, setting: str) -> EditNumbers:
    """The quantities of the parts, from the rows of ``setting``."""
    e = edits[edits["setting"] == setting]
    rome, crome = e[e["variant"] == "rome"], e[e["variant"] == "c-rome"]
    by = {g: rome[rome["group"] == g] for g in (PRONE, NORMAL)}
    factors = (crome["ppl_after"] / crome["ppl_before"]).fillna(math.inf)  # a NaN perplexity is no safe edit
    return EditNumbers(
        setting=setting,
        rome_edits={g: len(r) for g, r in by.items()},
        rome_collapsed={g: int(r["collapsed"].astype(bool).sum()) for g, r in by.items()},
        median_ratio={g: _median(r, "ratio") for g, r in by.items()},
        median_abs_denominator={g: _median(r.assign(a=r["denominator"].abs()), "a") for g, r in by.items()},
        median_numerator={g: _median(r, "numerator_norm") for g, r in by.items()},
        prone_ppl_median=_median(by[PRONE], "ppl_after"),
        prone_ppl_max=float(by[PRONE]["ppl_after"].max()) if len(by[PRONE]) else NAN,
        ppl_before=float(e["ppl_before"].iloc[0]) if len(e) else NAN,
        crome_edits=len(crome), crome_collapsed=int(crome["collapsed"].astype(bool).sum()),
        crome_worst_factor=float(factors.max()) if len(crome) else NAN)


def _apart(values: dict) -> float | None:
    """Larger / smaller of the two groups' values (None when one is missing or not positive)."""
    low, high = min(values.values()), max(values.values())
    return high / low if low > 0 else None  # NaN > 0 is False too


def _both(n: EditNumbers) -> bool:
    return n.rome_edits[PRONE] > 0 and n.rome_edits[NORMAL] > 0


def denominator_parts(n: EditNumbers) -> list[criteria.PartResult]:
    """Table 1: the collapse-prone denominator is tiny, orders of magnitude below normal cases', and the
    numerators are alike (larger / smaller of the two medians)."""
    den, num = n.median_abs_denominator, n.median_numerator
    missing = "needs ROME edits of both groups"
    return [
        criteria.check("denominator", "small-denominator", n.median_ratio[PRONE],
                       testable=n.rome_edits[PRONE] > 0, note="" if n.rome_edits[PRONE] else "no collapse-prone edit"),
        criteria.check("denominator", "orders-of-magnitude", den[PRONE] / den[NORMAL] if _both(n) and den[NORMAL]
                       else None, note=f"{den[PRONE]:.3g} vs {den[NORMAL]:.3g}" if _both(n) else missing),
        criteria.check("denominator", "similar-numerators",
                       _apart(num) if _both(n) else None,
                       note=f"median {num[PRONE]:.3g} (collapse-prone) vs {num[NORMAL]:.3g} (normal)" if _both(n)
                       else missing)]


def collapse_parts(n: EditNumbers) -> list[criteria.PartResult]:
    """Table 2, ROME: most collapse-prone edits collapse the model, (almost) no normal edit does."""
    def part(name, group):
        k, total = n.rome_collapsed[group], n.rome_edits[group]
        return criteria.check("rome-collapses", name, n.share_collapsed(group), testable=total > 0,
                              note=f"{k}/{total}" if total else f"no {group} edit")
    return [part("collapse-prone-collapse", PRONE), part("normal-safe", NORMAL)]


def crome_parts(n: EditNumbers) -> list[criteria.PartResult]:
    """Table 2, C-ROME: no edit collapses and none moves perplexity far from the unedited model's."""
    tested, note = n.crome_edits > 0, "" if n.crome_edits else "no C-ROME edit"
    return [criteria.check("c-rome-safe", "no-collapse", n.crome_collapsed, testable=tested,
                           note=f"of {n.crome_edits}" if tested else note),
            criteria.check("c-rome-safe", "perplexity-kept", n.crome_worst_factor, testable=tested, note=note)]


def findings(n: EditNumbers, verdicts: dict[str, str]) -> str:
    """The findings in Markdown, from the numbers (``verdicts``: claim id → verdict)."""
    ratio, den, num = n.median_ratio, n.median_abs_denominator, n.median_numerator
    return (
        f"**{n.setting} setting.** Table 1 (`denominator` {verdicts['denominator']}): median denominator ratio "
        f"{ratio[PRONE]:.3g} (collapse-prone) vs {ratio[NORMAL]:.3g} (normal), median |denominator| {den[PRONE]:.3g} "
        f"vs {den[NORMAL]:.3g}; median numerator {num[PRONE]:.3g} vs {num[NORMAL]:.3g} "
        f"({_apart(num) or NAN:.2g}× apart). Table 2 (`rome-collapses` "
        f"{verdicts['rome-collapses']}): ROME collapses {n.rome_collapsed[PRONE]}/{n.rome_edits[PRONE]} "
        f"collapse-prone edits (median ME-PPL {n.prone_ppl_median:.4g}, largest {n.prone_ppl_max:.4g}, unedited "
        f"{n.ppl_before:.4g}) and {n.rome_collapsed[NORMAL]}/{n.rome_edits[NORMAL]} normal ones; (`c-rome-safe` "
        f"{verdicts['c-rome-safe']}) C-ROME collapses {n.crome_collapsed}/{n.crome_edits}, worst "
        f"{n.crome_worst_factor:.3g}× the unedited perplexity.")


def judge_denominators(edits: pd.DataFrame, model: str, setting: str) -> Judgement:
    """Notebook 01, one setting: the verdicts of ``denominator``, ``rome-collapses`` and ``c-rome-safe``, each
    from its parts in ``criteria.CRITERIA`` (``criteria.combine``)."""
    n = edit_numbers(edits, setting)
    den, num = n.median_abs_denominator, n.median_numerator
    measured = {
        "denominator": f"median |denominator| {den[PRONE]:.3g} vs {den[NORMAL]:.3g}; ratio {n.median_ratio[PRONE]:.3g}"
                       f" vs {n.median_ratio[NORMAL]:.3g}; numerator {num[PRONE]:.3g} vs {num[NORMAL]:.3g}",
        "rome-collapses": f"{n.rome_collapsed[PRONE]}/{n.rome_edits[PRONE]} collapse-prone and "
                          f"{n.rome_collapsed[NORMAL]}/{n.rome_edits[NORMAL]} normal ROME edits over "
                          f"{COLLAPSE_FACTOR:g}× ME-PPL; median {n.prone_ppl_median:.0f}, max {n.prone_ppl_max:.0f} "
                          f"(unedited {n.ppl_before:.0f})",
        "c-rome-safe": f"{n.crome_collapsed}/{n.crome_edits} C-ROME edits collapse; worst {n.crome_worst_factor:.2f}× "
                       "the unedited perplexity"}
    parts = {"denominator": denominator_parts(n), "rome-collapses": collapse_parts(n), "c-rome-safe": crome_parts(n)}
    verdicts = [Verdict.from_parts(c, model, measured[c], p, setting) for c, p in parts.items()]
    text = findings(n, {v.claim_id: v.verdict for v in verdicts})
    return Judgement(verdicts, text, tuple(p for ps in parts.values() for p in ps))
