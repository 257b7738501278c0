"""Notebook 05 (Appendix A.5 and A.3): claims ``concentration`` and ``encoder``.

Both read one table of MLP-key spreads (one row per setting, token set and layer: ``mean_distance``, the raw mean
distance to the set's centroid, the paper's Eq. 4; ``representations.layer_key_concentration`` and
``representations.encoder_concentration``) and compare, layer by layer, a first token's spread with the later
tokens' (:func:`layer_ratios`). The first token is the first of the text: position 0 without a BOS, the first word
after the BOS (or after an encoder's [CLS]) with one. numpy/pandas only, no torch.
"""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from .. import criteria
from ..claims import Judgement, Verdict

FIRST_TOKEN, BOS_TOKEN, CLS_TOKEN = "first token (pos 0)", "BOS (pos 0)", "[CLS] (pos 0)"
FIRST_WORD, LATER = "first word (pos 1)", "later token (pos ≥ 2)"
LAYER_BAR = 0.5  # a layer counts as concentrated when the first token's spread is under this share of later tokens'
NAN = float("nan")


def layer_ratios(table: pd.DataFrame, setting: str, first: str) -> pd.Series:
    """Per layer (index), ``first``'s mean key distance over the later tokens' in ``setting``."""
    rows = table[table["setting"] == setting]
    wide = rows.pivot_table(index="layer", columns="token set", values="mean_distance")
    return (wide[first] / wide[LATER]).sort_index()


def first_set(table: pd.DataFrame, setting: str) -> str:
    """The token set that is the text's first token in ``setting``: the first word when a special token leads."""
    present = set(table.loc[table["setting"] == setting, "token set"])
    return FIRST_WORD if FIRST_WORD in present else FIRST_TOKEN


@dataclass(frozen=True)
class LayerNumbers:
    """How a first token's key spread compares with later tokens' across one setting's layers."""
    setting: str
    first: str  # the token set compared with the later tokens
    layers: int
    share_below: float  # share of layers with ratio < LAYER_BAR
    median_ratio: float
    first_third: float  # median ratio over the first third of the layers
    last_third: float  # … over the last third
    depth_factor: float  # last_third / first_third (NaN with fewer than 3 layers)


def layer_numbers(table: pd.DataFrame, setting: str, first: str | None = None) -> LayerNumbers:
    first = first or first_set(table, setting)
    r = layer_ratios(table, setting, first)
    third = len(r) // 3
    lo, hi = (float(r.iloc[:third].median()), float(r.iloc[-third:].median())) if third else (NAN, NAN)
    return LayerNumbers(setting, first, len(r), float((r < LAYER_BAR).mean()) if len(r) else NAN,
                        float(r.median()), lo, hi, hi / lo if third and lo > 0 else NAN)


def summary_frame(table: pd.DataFrame, sets: dict[str, str] | None = None) -> pd.DataFrame:
    """One row of :class:`LayerNumbers` per (setting, first-token set) in ``sets`` (default: every setting with its
    :func:`first_set`)."""
    sets = sets or {s: first_set(table, s) for s in dict.fromkeys(table["setting"])}
    return pd.DataFrame([layer_numbers(table, s, f).__dict__ for s, f in sets.items()])


def concentration_parts(n: LayerNumbers) -> list[criteria.PartResult]:
    """First tokens' keys are concentrated at most layers, and markedly more so in the last third than the first."""
    return [criteria.check("concentration", "first-concentrated", n.share_below, note=f"{n.first}, {n.layers} layers",
                           testable=n.layers > 0),
            criteria.check("concentration", "grows-with-depth", n.depth_factor,
                           note=f"median ratio {n.first_third:.3g} → {n.last_third:.3g}" if n.layers >= 3
                           else "fewer than 3 layers")]


def pattern(parts: list[criteria.PartResult]) -> str:
    """Which of the paper's patterns the parts show."""
    verdict = criteria.combine(parts)
    return {"holds": "GPT-2-XL / GPT-J's pattern", "does not hold": "the Llama family's pattern (not concentrated)",
            "holds in part": "between GPT-2-XL / GPT-J's and the Llama family's patterns"}.get(verdict, "untested")


def _line(n: LayerNumbers) -> str:
    return (f"{n.setting}, {n.first}: key spread under ½ of later tokens' at {n.share_below:.0%} of {n.layers} "
            f"layers; median ratio {n.median_ratio:.3g}, {n.first_third:.3g} over the first third of the layers → "
            f"{n.last_third:.3g} over the last ({n.depth_factor:.2g}×)")


def judge_concentration(table: pd.DataFrame, judged: dict[str, str]) -> Judgement:
    """Notebook 05, Appendix A.5: one ``concentration`` verdict per model, ``judged``: setting → model (each
    model as it runs, its first token the text's first: the first word after a BOS). The other settings of
    ``table`` (causal models only; e.g. a BOS model with its BOS removed) are reported in the text, not judged."""
    verdicts, all_parts, lines = [], [], []
    for setting in dict.fromkeys(table["setting"]):
        n = layer_numbers(table, setting)
        parts = concentration_parts(n)
        if setting in judged:
            v = Verdict.from_parts("concentration", judged[setting], f"{pattern(parts)}: {n.first} spread under ½ "
                                   f"of later tokens' at {n.share_below:.0%} of {n.layers} layers, median ratio "
                                   f"{n.first_third:.2g} (first third) → {n.last_third:.2g} (last third)", parts)
            verdicts.append(v)
            all_parts += parts
            lines.append(f"**{v.verdict}** on {judged[setting]} ({pattern(parts)}): {_line(n)}")
        else:
            lines.append(f"not judged, {pattern(parts)}: {_line(n)}")
    return Judgement(verdicts, "- " + "\n- ".join(lines), tuple(all_parts))


def judge_encoder(table: pd.DataFrame, encoder: str, causal: str | None, model: str) -> Judgement:
    """Notebook 05, Appendix A.3: the ``encoder`` verdict. ``encoder``, ``causal``: the settings of ``table`` to pair
    (the causal one with a BOS, so both first words sit behind a special token; None: no such model was run, the
    contrast is not testable); ``model``: the model the verdict is recorded on. Position 0 of both and any BOS-free
    causal first token are reported in the text."""
    enc = layer_numbers(table, encoder, FIRST_WORD)
    cau = layer_numbers(table, causal, FIRST_WORD) if causal else None
    parts = [criteria.check("encoder", "encoder-first-not-special", enc.share_below, note=f"{enc.layers} layers"),
             criteria.check("encoder", "causal-first-special", cau.share_below if cau else None,
                            note=f"{causal}, {cau.layers} layers" if cau else "no causal model with a BOS was run",
                            testable=cau is not None)]
    measured = (f"first word after [CLS] / BOS: key spread under ½ of later tokens' at {enc.share_below:.0%} of "
                f"{encoder}'s layers (median ratio {enc.median_ratio:.2f})" + (
                    f" vs {cau.share_below:.0%} of {causal}'s ({cau.median_ratio:.2f})" if cau else ""))
    verdict = Verdict.from_parts("encoder", model, measured, parts)
    lines = [_line(enc)] + ([_line(cau)] if cau else [])
    lines.append(_line(layer_numbers(table, encoder, CLS_TOKEN)) + " (position 0: the same token in every text)")
    if causal:
        lines.append(_line(layer_numbers(table, causal, BOS_TOKEN)) + " (position 0: a causal BOS sees only itself)")
    free = [s for s in dict.fromkeys(table["setting"]) if first_set(table, s) == FIRST_TOKEN]
    lines += [_line(layer_numbers(table, s, FIRST_TOKEN)) + " (a causal first word at position 0, no BOS)"
              for s in free]
    if parts[0].passed and parts[1].passed is False:
        lines.append("like with like, neither first word is special: behind a special token a causal model's first "
                     "word is as ordinary as a bidirectional one's, so this pairing does not show the paper's contrast")
    return Judgement([verdict], f"the claim **{verdict.verdict}**.\n\n- " + "\n- ".join(lines), tuple(parts))
