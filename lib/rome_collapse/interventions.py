"""Interventions of the paper's appendix: moving tokens to other positions (A.4), and removing the BOS (A.2).

Positions are changed through ``position_ids``: for rotary models (Llama, Gemma, GPT-J) they set
the rotation angles, for learned absolute positions (GPT-2) they choose the rows of the position
embedding, so one mechanism serves both kinds. :func:`position_swap_outcomes` edits each case with kᵘ
computed under a swap, next to its plain ROME edit, and measures both (Tables 6 and 7).
"""
from __future__ import annotations

import dataclasses

import pandas as pd
import torch

from . import metrics, outcomes, rome
from .data import EditCase
from .keys import CaseKeys, case_keys
from .models import Bundle
from .samples import case_group
from .stats import SecondMoment
from .tokens import encode, subject_last_index
from .trace import down_proj_input
from .values import ValueResult

PLAIN = "none (ROME)"  # the intervention column's label of the plain ROME edit in position_swap_outcomes' rows


def second_to_first(length: int) -> torch.Tensor:
    """Second2First: the first token is given the second position, [1, 1, 2, 3, …]."""
    positions = torch.arange(length)
    positions[0] = 1
    return positions


def token_to_first(length: int, index: int) -> torch.Tensor:
    """First2Second (paper's naming): the token at ``index`` (a subject after other words) takes position 0."""
    positions = torch.arange(length)
    positions[index] = 0
    return positions


def key_with_positions(bundle: Bundle, text: str, lookup: int, position_ids: torch.Tensor,
                       layer: int | None = None) -> torch.Tensor:
    """The key at ``lookup`` when the text's tokens carry ``position_ids``."""
    layer = bundle.edit_layer(layer)
    batch = encode(bundle, [text])
    if position_ids.shape[-1] != batch.input_ids.shape[1]:
        raise ValueError(f"position_ids has {position_ids.shape[-1]} entries for {batch.input_ids.shape[1]} tokens")
    inputs = down_proj_input(bundle, layer, batch, position_ids=position_ids.view(1, -1).to(bundle.device))
    return inputs[0, lookup]


def swapped_unprefixed_keys(bundle: Bundle, case: EditCase, keys: CaseKeys, kind: str,
                            layer: int | None = None) -> CaseKeys:
    """The case's keys with kᵘ recomputed under a position swap (k̄ is left as it is).

    ``kind="second2first"``: the first token (a collapse case's subject) gets position 1.
    ``kind="first2second"``: the subject's last token (after other words) gets position 0.
    """
    text = case.text
    lookup = subject_last_index(bundle, case.prompt, case.subject)
    length = encode(bundle, [text]).input_ids.shape[1]
    if kind == "second2first":
        positions = second_to_first(length)
    elif kind == "first2second":
        positions = token_to_first(length, lookup)
    else:
        raise ValueError(f"kind must be 'second2first' or 'first2second', got {kind!r}")
    key = key_with_positions(bundle, text, lookup, positions, layer)
    return dataclasses.replace(keys, unprefixed_key=key)


def without_bos(bundle: Bundle) -> Bundle:
    """The paper's Appendix A.2: the same model with its leading BOS token removed."""
    return bundle.with_bos(False)


def position_swap_outcomes(bundle: Bundle, cases: list[EditCase], values: list[ValueResult],
                           templates: list[str], second_moment: SecondMoment, kind: str, ppl_texts: list[str],
                           ppl_before: float | None = None, measured: pd.DataFrame | None = None,
                           same_tol: float = 1e-6, progress: bool = True) -> list[dict]:
    """Plain ROME edit and the ``kind`` position-swapped edit of every case, each applied alone.

    Both edits use the case's v* (``values[i]``, from the ordinary run), k̄ and C; only kᵘ differs, and
    with it ROME's numerator v* − W kᵘ − b and denominator (C⁻¹k̄)ᵀkᵘ. One row per case and intervention
    (``PLAIN`` or ``kind``): ``rome.EditReport`` fields, ``key_shift`` = ‖kᵘ_swap − kᵘ‖ / ‖kᵘ‖, perplexity after
    the edit on ``ppl_texts`` and ``collapsed`` (``outcomes.measure_edits``). When the swapped ΔW equals the
    plain one to ``same_tol`` (relative Frobenius norm) its perplexity is not measured twice: ``measured`` is
    False and the plain edit's perplexity is reported. ``measured``: a per-edit table that already holds the
    plain edits (notebook 01's, checked by ``outcomes.saved_edits``): their perplexity is read from it, not
    measured again.
    """
    if len(values) != len(cases):
        raise ValueError("one v* per case is needed")
    ppl_before = metrics.perplexity_before(bundle, ppl_texts, ppl_before)
    plain, swapped, shifts = [], [], []
    for case, value in zip(cases, values):
        if value.case_id != case.case_id:
            raise ValueError(f"v* of case {value.case_id} given for case {case.case_id}")
        ck = case_keys(bundle, case.prompt, case.subject, templates)
        sk = swapped_unprefixed_keys(bundle, case, ck, kind)
        plain.append(rome.make_edit(bundle, case, value, ck, second_moment, "rome"))
        swapped.append(rome.make_edit(bundle, case, value, sk, second_moment, "rome"))
        shifts.append(((sk.unprefixed_key - ck.unprefixed_key).norm() / ck.unprefixed_key.norm()).item())
    groups = {c.case_id: case_group(bundle, c) for c in cases}
    same = [(s.delta - p.delta).norm().item() <= same_tol * p.delta.norm().item() for p, s in zip(plain, swapped)]
    if measured is None:
        plain_out = outcomes.measure_edits(bundle, plain, groups, ppl_texts, ppl_before, scores=False,
                                           progress=progress)
    else:
        found = outcomes.saved_edits(measured, {"rome": plain}, ppl_before=ppl_before)
        if found is None:
            raise ValueError("`measured` does not hold every plain ROME edit (same case, setting, denominator and "
                             "perplexity before editing)")
        plain_out = [outcomes.EditOutcome.from_row(row) for _, row in found.iterrows()]
    todo = [s for s, is_same in zip(swapped, same) if not is_same]
    swapped_out = iter(outcomes.measure_edits(bundle, todo, groups, ppl_texts, ppl_before, scores=False,
                                              progress=progress))
    rows = []
    for p_edit, s_edit, p_out, is_same, shift in zip(plain, swapped, plain_out, same, shifts):
        if is_same:  # identical update: same perplexity, the swapped edit's own anatomy
            r = s_edit.report
            s_out = dataclasses.replace(p_out, numerator_norm=r.numerator_norm, denominator=r.denominator,
                                        ratio=r.ratio, update_norm=r.update_norm)
        else:
            s_out = next(swapped_out)
        rows.append({"intervention": PLAIN, "key_shift": 0.0, "measured": True,
                     "key_distance": p_edit.report.key_distance, **p_out.to_dict()})
        rows.append({"intervention": kind, "key_shift": shift, "measured": not is_same,
                     "key_distance": s_edit.report.key_distance, **s_out.to_dict()})
    return rows
