"""Notebook 04 (Appendix A.4, Tables 6 and 7): claim ``position``.

The paper: Second2First (a collapse case's first token given the second position) mitigates the collapse on
GPT-2-XL and is ineffective on GPT-J and Llama2-7b; First2Second (a normal case's subject given the first position)
collapses some edits on GPT-2-XL and Llama2-7b and none on GPT-J. Position codes contribute on some models and are
not the whole cause. The rule reads the rows of ``interventions.position_swap_outcomes`` (intervention, case_id,
key_shift, ratio, ppl_after, collapsed, measured), measures each part (:func:`swap_numbers`) and renders the findings
from the same numbers (:func:`findings`). numpy/pandas only, no torch.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import pandas as pd

from .. import criteria
from ..claims import Judgement, Verdict
from ..collapse import COLLAPSE_FACTOR

CLAIM = "position"
NAN = float("nan")
# A swap "moves" kᵘ when it shifts it by more than this (relative). On a rotary model Second2First changes only the
# order of float operations in a lone first token's attention: kᵘ moves by about 1e-6, which a tiny denominator can
# still amplify into a different ΔW and perplexity in the last digits. That is noise, not a test of the claim.
KEY_MOVED = 1e-4


@dataclass(frozen=True)
class SwapNumbers:
    """One table: the plain ROME edits of its cases against the same edits with kᵘ under the swap."""
    kind: str  # "second2first" or "first2second"
    cases: int
    plain_collapsed: int  # plain ROME edits over the collapse line
    swap_collapsed: int
    changed: int  # cases whose kᵘ the swap moves (over KEY_MOVED) and whose update differs (``measured``)
    kept_collapsing: int  # plain collapsed, update changed, swapped still collapsed
    collapsing_changed: int  # plain collapsed and update changed
    pushed_over: int  # plain not collapsed, swapped collapsed
    not_collapsing: int  # plain not collapsed
    key_shift_max: float  # largest ‖kᵘ_swap − kᵘ‖ / ‖kᵘ‖
    ratio_plain_median: float  # denominator ratio
    ratio_swap_median: float
    ratio_swap_min: float
    ppl_plain_median: float
    ppl_swap_median: float

    def to_dict(self) -> dict:
        return asdict(self)


def swap_numbers(table: pd.DataFrame, kind: str) -> SwapNumbers:
    """The quantities of one table (rows of ``interventions.position_swap_outcomes``: the swap's named ``kind``, the
    others the plain edits'), paired by case."""
    swapped = table["intervention"] == kind
    plain, swap = table[~swapped].set_index("case_id"), table[swapped].set_index("case_id")
    swap = swap.reindex(plain.index)
    p_col, s_col = plain["collapsed"].astype(bool), swap["collapsed"].astype(bool)
    changed = swap["measured"].astype(bool) & (swap["key_shift"] > KEY_MOVED)

    def med(frame, column):
        return float(frame[column].median()) if len(frame) else NAN

    return SwapNumbers(
        kind=kind, cases=len(plain), plain_collapsed=int(p_col.sum()), swap_collapsed=int(s_col.sum()),
        changed=int(changed.sum()), kept_collapsing=int((p_col & changed & s_col).sum()),
        collapsing_changed=int((p_col & changed).sum()), pushed_over=int((~p_col & s_col).sum()),
        not_collapsing=int((~p_col).sum()),
        key_shift_max=float(swap["key_shift"].max()) if len(swap) else NAN,
        ratio_plain_median=med(plain, "ratio"), ratio_swap_median=med(swap, "ratio"),
        ratio_swap_min=float(swap["ratio"].min()) if len(swap) else NAN,
        ppl_plain_median=med(plain, "ppl_after"), ppl_swap_median=med(swap, "ppl_after"))


def swap_frame(second2first: SwapNumbers, first2second: SwapNumbers) -> pd.DataFrame:
    """Both tables' numbers side by side (what notebook 04 shows before its verdict)."""
    return pd.DataFrame({"Table 6 (collapse-prone, Second2First)": second2first.to_dict(),
                         "Table 7 (normal, First2Second)": first2second.to_dict()}).T.drop(columns="kind")


def _share(k: int, n: int) -> float:
    return k / n if n else NAN


def position_parts(s2f: SwapNumbers, f2s: SwapNumbers) -> list[criteria.PartResult]:
    """Second2First does not remove every collapse (testable only on collapsing edits whose update the swap
    changes); First2Second pushes some normal edits over the collapse line, but not all."""
    if not s2f.cases:
        why = "no collapse-prone case"
    elif not s2f.plain_collapsed:
        why = "no plain ROME edit of a collapse-prone case collapsed, so there is no collapse to remove"
    elif not s2f.collapsing_changed:
        why = (f"not testable on this model: Second2First left kᵘ unchanged to float precision (largest relative "
               f"shift {s2f.key_shift_max:.1g}, under {KEY_MOVED:g}); with rotary positions a lone first token "
               "attends only to itself, whatever its position")
    else:
        why = f"{s2f.kept_collapsing}/{s2f.collapsing_changed} still collapse"
    f2s_note = f"{f2s.pushed_over}/{f2s.not_collapsing}" if f2s.not_collapsing else "no non-collapsing normal edit"
    f2s_value = _share(f2s.pushed_over, f2s.not_collapsing)
    return [
        criteria.check(CLAIM, "second2first-not-whole-cause", _share(s2f.kept_collapsing, s2f.collapsing_changed),
                       note=why, testable=s2f.collapsing_changed > 0),
        criteria.check(CLAIM, "first2second-contributes", f2s_value, note=f2s_note, testable=f2s.not_collapsing > 0),
        criteria.check(CLAIM, "first2second-partial", f2s_value, note=f2s_note, testable=f2s.not_collapsing > 0)]


def paper_pattern(s2f: SwapNumbers, f2s: SwapNumbers) -> str:
    """Which of the paper's models the swaps behave like, in words."""
    if not s2f.collapsing_changed:
        second = "Second2First: not testable (kᵘ moves only by float noise)"
    elif s2f.kept_collapsing < s2f.collapsing_changed:
        second = "Second2First mitigates the collapse (as on GPT-2-XL)"
    else:
        second = "Second2First is ineffective (as on GPT-J and Llama2-7b)"
    if not f2s.not_collapsing:
        first = "First2Second: not testable"
    elif f2s.pushed_over == 0:
        first = "First2Second leaves every normal edit stable (as on GPT-J)"
    elif f2s.pushed_over < f2s.not_collapsing:
        first = "First2Second gives a partial collapse (as on GPT-2-XL and Llama2-7b)"
    else:
        first = "First2Second collapses every normal edit (unlike any of the paper's models)"
    return f"{second}; {first}"


def findings(s2f: SwapNumbers, f2s: SwapNumbers, verdict: str) -> str:
    """The findings in Markdown, from the numbers."""
    lines = [f"Table 6 (Second2First, {s2f.cases} collapse-prone cases): plain ROME collapsed {s2f.plain_collapsed}, "
             f"swapped {s2f.swap_collapsed}; the swap changed the update of {s2f.changed}; kᵘ moved by at most "
             f"{s2f.key_shift_max:.2g} (relative); median denominator ratio {s2f.ratio_plain_median:.3g} → "
             f"{s2f.ratio_swap_median:.3g}; median ME-PPL {s2f.ppl_plain_median:.4g} → {s2f.ppl_swap_median:.4g}",
             f"Table 7 (First2Second, {f2s.cases} normal cases): plain ROME collapsed {f2s.plain_collapsed}, swapped "
             f"{f2s.swap_collapsed} ({f2s.pushed_over} of {f2s.not_collapsing} pushed over {COLLAPSE_FACTOR:g}×); kᵘ "
             f"moved by up to {f2s.key_shift_max:.2g}; median denominator ratio {f2s.ratio_plain_median:.3g} → "
             f"{f2s.ratio_swap_median:.3g} (lowest {f2s.ratio_swap_min:.3g}); median ME-PPL "
             f"{f2s.ppl_plain_median:.4g} → {f2s.ppl_swap_median:.4g}",
             f"pattern: {paper_pattern(s2f, f2s)}"]
    return f"the claim **{verdict}**.\n\n- " + "\n- ".join(lines)


def judge_position(table6: pd.DataFrame, table7: pd.DataFrame, model: str, setting: str) -> Judgement:
    """Notebook 04: the verdict of ``position`` from Table 6 (Second2First on collapse-prone cases) and Table 7
    (First2Second on normal cases), each part against its row of ``criteria.CRITERIA``."""
    s2f, f2s = swap_numbers(table6, "second2first"), swap_numbers(table7, "first2second")
    parts = position_parts(s2f, f2s)
    measured = (f"{paper_pattern(s2f, f2s)}; First2Second: {f2s.pushed_over}/{f2s.not_collapsing} normal edits over "
                f"{COLLAPSE_FACTOR:g}×, median ratio {f2s.ratio_plain_median:.2f} → {f2s.ratio_swap_median:.2f}")
    verdict = Verdict.from_parts(CLAIM, model, measured, parts, setting)
    return Judgement([verdict], findings(s2f, f2s, verdict.verdict), tuple(parts))
