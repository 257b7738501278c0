"""Helpers for the appendix notebooks: position swaps next to plain ROME (A.4), and how concentrated
a set of token representations is at every layer (A.5).

* :func:`position_swap_outcomes`: for each case, the plain ROME edit and the same edit with kᵘ
  recomputed under a position swap (same v*, same k̄, same C), each applied alone and measured.
* :func:`concentration`, :func:`layer_concentration`, :func:`key_concentration`: mean distance to the
  centroid of a set of vectors, raw and divided by the set's mean norm, per layer or at the edit layer.
* :func:`denominator_ratios`: ROME's denominator ratio of each case as if edited at each of several layers.
"""
from __future__ import annotations

import dataclasses
import random

import torch

from . import experiments, interventions, keys, metrics, rome
from .data import EditCase
from .models import Bundle
from .stats import SecondMoment
from .tokens import token_ids

PLAIN = "none (ROME)"


# --------------------------------------------------------------------------------------------
# Appendix A.4: position swaps
# --------------------------------------------------------------------------------------------
def position_swap_outcomes(bundle: Bundle, cases: list[EditCase], values: list[rome.ValueResult],
                           templates: list[str], second_moment: SecondMoment, kind: str, ppl_texts: list[str],
                           ppl_before: float | None = None, same_tol: float = 1e-6,
                           progress: bool = True) -> list[dict]:
    """Plain ROME edit and the ``kind`` position-swapped edit of every case, each applied alone.

    Both edits use the case's v* (``values[i]``, from the ordinary run), k̄ and C; only kᵘ differs, and
    with it ROME's numerator v* − W kᵘ − b and denominator (C⁻¹k̄)ᵀkᵘ. One row per case and intervention:
    ``rome.EditReport`` fields, ``key_shift`` = ‖kᵘ_swap − kᵘ‖ / ‖kᵘ‖, perplexity after the edit on
    ``ppl_texts`` and ``collapsed`` (as in ``experiments.measure_edits``). When the swapped ΔW equals the
    plain one to ``same_tol`` (relative Frobenius norm) its perplexity is not measured twice:
    ``measured`` is False and the plain edit's perplexity is reported.
    """
    if len(values) != len(cases):
        raise ValueError("one v* per case is needed")
    if ppl_before is None:
        ppl_before = metrics.perplexity(bundle, ppl_texts).mean
    plain, swapped, shifts = [], [], []
    for case, value in zip(cases, values):
        if value.case_id != case.case_id:
            raise ValueError(f"v* of case {value.case_id} given for case {case.case_id}")
        ck = keys.case_keys(bundle, case.prompt, case.subject, templates)
        sk = interventions.swapped_unprefixed_keys(bundle, case, ck, kind)
        plain.append(rome.make_edit(bundle, case, value, ck, second_moment, "rome"))
        swapped.append(rome.make_edit(bundle, case, value, sk, second_moment, "rome"))
        shifts.append(((sk.unprefixed_key - ck.unprefixed_key).norm() / ck.unprefixed_key.norm()).item())
    groups = {c.case_id: experiments.case_group(bundle, c) for c in cases}
    same = [(s.delta - p.delta).norm().item() <= same_tol * p.delta.norm().item() for p, s in zip(plain, swapped)]
    plain_out = experiments.measure_edits(bundle, plain, groups, ppl_texts, ppl_before, scores=False,
                                          progress=progress)
    todo = [s for s, is_same in zip(swapped, same) if not is_same]
    measured = iter(experiments.measure_edits(bundle, todo, groups, ppl_texts, ppl_before, scores=False,
                                              progress=progress))
    rows = []
    for p_edit, s_edit, p_out, is_same, shift in zip(plain, swapped, plain_out, same, shifts):
        if is_same:  # identical update: same perplexity, the swapped edit's own anatomy
            r = s_edit.report
            s_out = dataclasses.replace(p_out, numerator_norm=r.numerator_norm, denominator=r.denominator,
                                        ratio=r.ratio, delta_norm=r.delta_norm)
        else:
            s_out = next(measured)
        rows.append({"intervention": PLAIN, "key_shift": 0.0, "measured": True,
                     "key_distance": p_edit.report.key_distance, **p_out.to_dict()})
        rows.append({"intervention": kind, "key_shift": shift, "measured": not is_same,
                     "key_distance": s_edit.report.key_distance, **s_out.to_dict()})
    return rows


# --------------------------------------------------------------------------------------------
# Appendix A.5: concentration of token representations
# --------------------------------------------------------------------------------------------
def concentration(representations: torch.Tensor) -> dict:
    """Mean distance to the centroid of a (n, d) set, its mean norm, and their ratio (scale-free).

    The ratio is 0 when all vectors are equal and about √2 for random directions of equal norm.
    """
    reps = representations.double()
    distance = metrics.mean_distance_to_centroid(reps)
    norm = reps.norm(dim=1).mean().item()
    return {"mean_distance": distance, "mean_norm": norm, "normalised": distance / norm if norm > 0 else float("nan")}


def snippets(texts: list[str], n: int, max_words: int = 24, seed: int = 0) -> list[str]:
    """A seeded sample of ``n`` texts, each cut to its first ``max_words`` words (whitespace-joined).

    A causal model's representation of a token depends only on the tokens before it, so cutting the
    texts leaves the early positions as they were and keeps the forward passes short.
    """
    chosen = random.Random(seed).sample(texts, min(n, len(texts)))
    return [" ".join(t.split()[:max_words]) for t in chosen]


def random_positions(lengths: list[int], start: int = 2, seed: int = 0) -> list[int]:
    """One seeded random position in ``[start, length - 1]`` per sequence length."""
    rng = random.Random(seed)
    if any(n <= start for n in lengths):
        raise ValueError(f"every text needs more than {start} tokens")
    return [rng.randint(start, n - 1) for n in lengths]


def later_positions(bundle: Bundle, texts: list[str], start: int = 2, seed: int = 0) -> list[int]:
    """A random position ≥ ``start`` in each text, counted as the bundle tokenises it (BOS included)."""
    return random_positions([len(token_ids(bundle, t)) for t in texts], start, seed)


def shortest_prefix(bundle: Bundle, text: str, position: int) -> str:
    """The shortest run of leading words of ``text`` whose tokens 0..``position`` are those of the whole text.

    A causal model's states at positions ≤ ``position`` are then exactly those of the whole text, for
    a fraction of the compute (the first token needs only the first word).
    """
    full = token_ids(bundle, text)
    if position >= len(full):
        raise ValueError(f"position {position} is past the end of a {len(full)}-token text")
    words = text.split(" ")
    for k in range(1, len(words) + 1):
        prefix = " ".join(words[:k])
        ids = token_ids(bundle, prefix)
        if len(ids) > position and ids[:position + 1] == full[:position + 1]:
            return prefix
    return text


def _cut_and_sort(bundle: Bundle, texts: list[str], positions: list[int]) -> tuple[list[str], list[int]]:
    """Each text cut to what its position needs, shortest first (less padding); the order of a set
    does not change its concentration."""
    if len(texts) != len(positions):
        raise ValueError("one position per text is needed")
    pairs = sorted(((shortest_prefix(bundle, t, p), p) for t, p in zip(texts, positions)), key=lambda x: len(x[0]))
    return [t for t, _ in pairs], [p for _, p in pairs]


def layer_concentration(bundle: Bundle, texts: list[str], positions: list[int], batch_size: int = 32) -> list[dict]:
    """Concentration of the residual stream at ``positions[i]`` of ``texts[i]``, one row per layer.

    Layer 0 is the embedding output, layer ℓ the output of block ℓ (``keys.hidden_states_at``).
    """
    texts, positions = _cut_and_sort(bundle, texts, positions)
    states = torch.cat([keys.hidden_states_at(bundle, texts[i:i + batch_size], positions[i:i + batch_size]).cpu()
                        for i in range(0, len(texts), batch_size)], dim=1)
    return [{"layer": layer, **concentration(states[layer])} for layer in range(states.shape[0])]


def key_concentration(bundle: Bundle, texts: list[str], positions: list[int], layer: int | None = None) -> dict:
    """Concentration of the edited MLP's keys (its down-projection's input) at ``positions`` (edit layer
    by default); for one fixed position this is ``keys.token_keys``."""
    layer = bundle.hparams.layer if layer is None else layer
    texts, positions = _cut_and_sort(bundle, texts, positions)
    k = keys.keys_at(bundle, layer, [keys.Lookup(t, p) for t, p in zip(texts, positions)])
    return {"layer": layer, **concentration(k.cpu())}


# --------------------------------------------------------------------------------------------
# The denominator ratio at every layer (is the collapse tied to the edit layer?)
# --------------------------------------------------------------------------------------------
def denominator_ratios(bundle: Bundle, groups: dict[str, list[EditCase]], templates: list[str], layers: list[int],
                       n_samples: int, texts: list[str] | None = None, corpus: str = "meppl-10k-minus-50",
                       progress: bool = True) -> list[dict]:
    """ROME's denominator ratio (kᵘ·C⁻¹k̄)/(k̄·C⁻¹k̄) and cos(kᵘ, k̄) of every case as if it were edited at
    each of ``layers``: one row per layer and case. Needs no v*, only the keys there and, in the "rome"
    setting, C at each layer (over the first ``n_samples`` of ``texts``, default the statistics corpus;
    cached like the edit layer's C). In the "paper" setting C is the identity and nothing else is run."""
    from tqdm.auto import tqdm

    from .stats import covariance

    rows = []
    for layer in tqdm(layers, desc=f"{bundle.name} layers", disable=not progress, leave=False):
        C = covariance(bundle, layer=layer, texts=texts, corpus=corpus, n_samples=n_samples, progress=False)
        for group, cases in groups.items():
            for case in cases:
                ck = keys.case_keys(bundle, case.prompt, case.subject, templates, layer=layer)
                rows.append({"layer": layer, "group": group, "case_id": case.case_id, "subject": case.subject,
                             "ratio": rome.denominator_ratio(C, ck.unprefixed_key, ck.prefixed_key),
                             "cos_ku_kbar": torch.cosine_similarity(ck.unprefixed_key, ck.prefixed_key, dim=0).item()})
    return rows
