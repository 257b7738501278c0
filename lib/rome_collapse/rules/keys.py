"""Notebooks 02 and 03: where the keys sit (Figure 2, Figure 3) and the BOS model (Appendix A.2).

Claims ``key-mismatch`` (02), ``first-token`` (03, a model without a BOS), ``first-token-bos`` (03, a model with one:
the BOS protects, removing it exposes) and ``bos`` (03, Part 2). Each rule measures its parts' quantities, compares
them with ``criteria.CRITERIA`` and renders the findings from the same numbers. numpy/pandas only, no torch.
"""
from __future__ import annotations

import pandas as pd

from .. import criteria
from ..claims import Judgement, Verdict
from ..collapse import COLLAPSE_FACTOR, collapsed

PRONE, NORMAL = "collapse-prone", "normal"
WITH, WITHOUT = "with BOS", "without BOS"


# --------------------------------------------------------------------------------------------
# Figure 2 (notebook 02): kᵘ against k̄
# --------------------------------------------------------------------------------------------
def judge_key_mismatch(table: pd.DataFrame, model: str) -> Judgement:
    """Claim ``key-mismatch`` from one row per case (group, cos_ku_kbar, ratio): mean cos(kᵘ, k̄) per group against
    its threshold. A group without cases leaves its part not testable (a BOS model has no collapse-prone case)."""
    by = table.groupby("group")["cos_ku_kbar"]
    mean, low, high = by.mean(), by.min(), by.max()
    ratio = table.groupby("group")["ratio"].mean()

    def part(name, group):
        there = group in mean.index
        return criteria.check("key-mismatch", name, float(mean[group]) if there else None, testable=there,
                              note=f"{int(by.size()[group])} cases, range {low[group]:.2f}–{high[group]:.2f}" if there
                              else f"no {group} case (with a BOS the subject is never the first token)")

    parts = [part("collapse-apart", PRONE), part("normal-together", NORMAL)]
    shown = {g: f"{mean[g]:.2f}" if g in mean.index else "—" for g in (PRONE, NORMAL)}
    verdict = Verdict.from_parts("key-mismatch", model, f"mean cos(kᵘ, k̄) {shown[PRONE]} (collapse-prone) vs "
                                 f"{shown[NORMAL]} (normal)", parts)
    text = f"the claim **{verdict.verdict}**. Mean cos(kᵘ, k̄): {shown[PRONE]} for collapse-prone cases, " \
           f"{shown[NORMAL]} for normal ones"
    if {PRONE, NORMAL} <= set(mean.index):
        apart = high[PRONE] < low[NORMAL]
        text += (f" (the groups {'do not overlap' if apart else 'overlap'}: collapse-prone at most "
                 f"{high[PRONE]:.2f}, normal at least {low[NORMAL]:.2f}); mean denominator ratio {ratio[PRONE]:.3f} "
                 f"vs {ratio[NORMAL]:.3f}")
    return Judgement([verdict], text + ".", tuple(parts))


# --------------------------------------------------------------------------------------------
# Figure 3 (notebook 03, Part 1): the centroids the case keys sit nearest
# --------------------------------------------------------------------------------------------
def _share(centroids: pd.DataFrame, key_set: str, reference: str) -> float | None:
    """Share of ``key_set`` nearest the ``reference`` centroid (None when the set is missing or empty)."""
    near = centroids.set_index("set")
    if key_set not in near.index or near.loc[key_set].get("n", 1) == 0:
        return None
    return float(near.loc[key_set, f"nearest_{reference}"])


def _share_part(claim_id, part, centroids, key_set, reference) -> criteria.PartResult:
    value = _share(centroids, key_set, reference)
    return criteria.check(claim_id, part, value, note="" if value is not None else f"no '{key_set}' keys")


def _num(value: float | None) -> float:
    return float("nan") if value is None else value


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value:.0%}"


def judge_first_token(centroids: pd.DataFrame, model: str, bos: bool) -> Judgement:
    """Notebook 03, Part 1, from ``representations.centroid_table`` (one row per key set with ``nearest_<ref>``
    shares). Without a BOS: claim ``first-token`` (collapse kᵘ nearest the first tokens, normal and prefixed
    collapse kᵘ nearest later tokens). With a BOS (``bos``): claim ``first-token-bos`` (subject-first and normal kᵘ
    nearest later tokens; with the BOS removed, the subject-first kᵘ nearest the BOS-free first tokens)."""
    normal = _share_part("first-token-bos" if bos else "first-token", "normal-near-later", centroids, "normal kᵘ",
                         "later")
    if not bos:
        parts = [_share_part("first-token", "collapse-near-first", centroids, "collapse kᵘ", "first"), normal,
                 _share_part("first-token", "prefix-moves-back", centroids, "collapse kᵘ, prefixed", "later")]
        measured = (f"{_pct(parts[0].value)} of collapse kᵘ nearest the first-token centroid, {_pct(normal.value)} of "
                    f"normal kᵘ and {_pct(parts[2].value)} of prefixed collapse kᵘ nearest later tokens")
        verdict = Verdict.from_parts("first-token", model, measured, parts)
    else:
        parts = [_share_part("first-token-bos", "bos-protects-keys", centroids, "collapse kᵘ", "later"), normal,
                 _share_part("first-token-bos", "removal-exposes", centroids, "collapse kᵘ, BOS removed",
                             "first_nobos")]
        measured = (f"with the BOS {_pct(parts[0].value)} of subject-first kᵘ and {_pct(normal.value)} of normal kᵘ "
                    f"nearest later tokens; BOS removed: {_pct(parts[2].value)} nearest BOS-free first tokens")
        verdict = Verdict.from_parts("first-token-bos", model, measured, parts)
    return Judgement([verdict], f"`{verdict.claim_id}` **{verdict.verdict}**: {measured}.", tuple(parts))


# --------------------------------------------------------------------------------------------
# Appendix A.2 (notebook 03, Part 2): a BOS model edited with and without its BOS
# --------------------------------------------------------------------------------------------
def bos_pairs(bos_table: pd.DataFrame) -> pd.DataFrame:
    """One row per BOS setting and case: ROME's denominator ratio, the unedited ME-PPL in that setting, ME-PPL after
    ROME's and after C-ROME's edit, each over the unedited, and ROME's over C-ROME's (same v*, only the key
    differs). ``bos_table``: one row per case, BOS setting and variant (BOS, variant, case_id, ratio, ppl_before,
    ppl_after)."""
    index = ["BOS", "case_id"]
    rome = bos_table[bos_table["variant"] == "rome"].set_index(index)
    crome = bos_table[bos_table["variant"] == "c-rome"].set_index(index)
    pairs = pd.DataFrame({"ratio": rome["ratio"], "ppl_unedited": rome["ppl_before"], "ppl_rome": rome["ppl_after"],
                          "ppl_c_rome": crome["ppl_after"].reindex(rome.index)})
    pairs["rome_factor"] = pairs["ppl_rome"] / pairs["ppl_unedited"]
    pairs["c_rome_factor"] = pairs["ppl_c_rome"] / pairs["ppl_unedited"]
    pairs["rome_over_c_rome"] = pairs["ppl_rome"] / pairs["ppl_c_rome"]
    pairs["rome_worse"] = collapsed(pairs["rome_over_c_rome"])  # NaN or inf counts, as in the collapse rule
    return pairs.reset_index()


def _bos_numbers(pairs: pd.DataFrame, label: str) -> dict:
    p = pairs[pairs["BOS"] == label]
    if not len(p):
        return {"n": 0, "ratio": None, "worse": None, "over": float("nan"), "unedited": float("nan"),
                "rome": float("nan"), "c_rome": float("nan")}
    return {"n": len(p), "ratio": float(p["ratio"].median()), "worse": float(p["rome_worse"].mean()),
            "over": float(p["rome_over_c_rome"].max()), "unedited": float(p["ppl_unedited"].iloc[0]),
            "rome": float(p["rome_factor"].max()), "c_rome": float(p["c_rome_factor"].max())}


def judge_bos(bos_table: pd.DataFrame, bos_model: str, setting: str) -> Judgement:
    """Claim ``bos``: ROME's denominator ratio with and without the BOS, and whether ROME's edit does more than
    ``COLLAPSE_FACTOR`` × the damage of C-ROME's edit of the same case in the same BOS setting (the unedited model
    without its BOS is itself far off, so a factor over it would say nothing)."""
    pairs = bos_pairs(bos_table)
    w, wo = _bos_numbers(pairs, WITH), _bos_numbers(pairs, WITHOUT)

    def part(name, value, n, label):
        return criteria.check("bos", name, value, testable=n > 0, note=f"{n} case{'s' * (n != 1)}" if n else f"no edit {label}")

    parts = [part("bos-keeps-denominator", w["ratio"], w["n"], WITH), part("bos-protects", w["worse"], w["n"], WITH),
             part("removal-shrinks-denominator", wo["ratio"], wo["n"], WITHOUT),
             part("removal-collapses", wo["worse"], wo["n"], WITHOUT)]
    measured = (f"ROME over {COLLAPSE_FACTOR:g}× C-ROME's ME-PPL on the same case: {_pct(w['worse'])} of {w['n']} with "
                f"the BOS (ratio {_num(w['ratio']):.2f}), {_pct(wo['worse'])} of {wo['n']} without "
                f"(ratio {_num(wo['ratio']):.2f}); unedited ME-PPL {w['unedited']:.0f} with the BOS, "
                f"{wo['unedited']:.0f} without")
    verdict = Verdict.from_parts("bos", bos_model, measured, parts, setting)
    return Judgement([verdict], bos_findings(w, wo, verdict.verdict), tuple(parts))


def bos_findings(w: dict, wo: dict, verdict: str) -> str:
    """What the A.2 measurement shows and what it cannot, from the numbers of each BOS setting."""
    return (
        f"`bos` **{verdict}**. With the BOS, ROME's median denominator ratio is {_num(w['ratio']):.2f} and "
        f"its ME-PPL is at most {w['over']:.2f}× C-ROME's on the same case; the edits themselves cost up to "
        f"{w['rome']:.2f}× (ROME) and {w['c_rome']:.2f}× (C-ROME, whose key matches) the unedited "
        f"{w['unedited']:.0f}. Without the BOS the ratio is "
        f"{_num(wo['ratio']):.2f} and ROME's ME-PPL at most {wo['over']:.2f}× C-ROME's. The unedited model "
        f"without its BOS has ME-PPL {wo['unedited']:.0f} ({wo['unedited'] / w['unedited']:.0f}× its value with the "
        f"BOS): it is not a healthy model, so this measurement cannot show a collapse *from a healthy model* once the "
        f"BOS is removed; it shows whether ROME's mismatched key adds damage beyond C-ROME's edit of the same case.")
