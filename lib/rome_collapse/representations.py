"""Where keys and token representations sit: the measurements behind Figures 2–3 and Appendix A.3 and A.5.

* :func:`mean_distance_to_centroid`, :func:`concentration`: how concentrated a set of vectors is (the paper's
  measure, App. A.5), raw and divided by the set's mean norm.
* :func:`layer_concentration`, :func:`key_concentration`: that for the residual stream at every layer and for the
  edited MLP's keys, at given positions of given texts (each text run only as far as its position needs,
  :func:`shortest_prefix`).
* :func:`centroid_table`, :func:`first_token_statistics`: how close sets of vectors are to reference centroids,
  and one scale-free summary of how special first-token vectors are next to later ones;
  :func:`first_token_sets`: the key sets of Figure 3 (first and later tokens of ordinary text, cases' kᵘ).
* :func:`case_key_vectors`, :func:`denominator_ratios`: kᵘ, k̄ and C⁻¹k̄ of edit cases with their cosine and
  ROME's denominator ratio, at the edit layer or as if edited at each of several layers.
* :func:`layer_key_concentration`: the MLP keys' concentration at every layer (the paper's Eq. 4, App. A.5).
* :func:`encoder_layer_keys`, :func:`encoder_concentration`: the same keys in a bidirectional encoder (BERT's MLP
  output projection) at every layer, for [CLS], the first word and later words (App. A.3).
* :func:`tsne_table`: one t-SNE map of several vector sets (each vector scaled to unit norm).
"""
from __future__ import annotations

from contextlib import ExitStack

import numpy as np
import pandas as pd
import torch

from . import keys
from .data import EditCase
from .keys import Lookup
from .models import Bundle
from .rome import denominator_ratio
from .stats import SecondMoment, covariance
from .tokens import token_ids
from .trace import forward_hook


# --------------------------------------------------------------------------------------------
# Concentration of a set of vectors
# --------------------------------------------------------------------------------------------
def mean_distance_to_centroid(vectors: torch.Tensor) -> float:
    """How concentrated a set of vectors is: mean Euclidean distance to their centroid (paper, App. A.5)."""
    v = vectors.double()
    return (v - v.mean(0)).norm(dim=1).mean().item()


def concentration(vectors: torch.Tensor) -> dict:
    """Mean distance to the centroid of a (n, d) set, its mean norm, and their ratio (scale-free).

    The ratio is 0 when all vectors are equal and about √2 for random directions of equal norm.
    """
    v = vectors.double()
    distance = mean_distance_to_centroid(v)
    norm = v.norm(dim=1).mean().item()
    return {"mean_distance": distance, "mean_norm": norm, "normalised": distance / norm if norm > 0 else float("nan")}


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


def _cut_and_sort(bundle: Bundle, lookups: list[Lookup]) -> tuple[list[str], list[int]]:
    """Each text cut to what its position needs, shortest first (less padding); the order of a set
    does not change its concentration."""
    pairs = sorted(((shortest_prefix(bundle, lk.text, lk.position), lk.position) for lk in lookups),
                   key=lambda x: len(x[0]))
    return [t for t, _ in pairs], [p for _, p in pairs]


def layer_concentration(bundle: Bundle, lookups: list[Lookup], batch_size: int = 32) -> list[dict]:
    """Concentration of the residual stream at the ``lookups`` (a text and a position each), one row per layer.

    Layer 0 is the embedding output, layer ℓ the output of block ℓ (``keys.hidden_states_at``).
    """
    texts, positions = _cut_and_sort(bundle, lookups)
    states = torch.cat([keys.hidden_states_at(bundle, texts[i:i + batch_size], positions[i:i + batch_size]).cpu()
                        for i in range(0, len(texts), batch_size)], dim=1)
    return [{"layer": layer, **concentration(states[layer])} for layer in range(states.shape[0])]


def layer_key_concentration(bundle: Bundle, lookups: list[Lookup], layers: list[int] | None = None) -> list[dict]:
    """Concentration of the MLP keys (every block's down-projection input) at the ``lookups``, one row per layer
    (default every block), all layers read from the same forward passes (``keys.keys_at_layers``). The raw
    ``mean_distance`` is the paper's Eq. 4 (App. A.5)."""
    layers = list(range(bundle.num_layers)) if layers is None else layers
    texts, positions = _cut_and_sort(bundle, lookups)
    by_layer = keys.keys_at_layers(bundle, layers, [Lookup(t, p) for t, p in zip(texts, positions)])
    return [{"layer": layer, **concentration(by_layer[layer].cpu())} for layer in layers]


def key_concentration(bundle: Bundle, lookups: list[Lookup], layer: int | None = None) -> dict:
    """Concentration of the edited MLP's keys (its down-projection's input) at the ``lookups`` (edit layer
    by default); for one fixed position this is ``keys.token_keys``."""
    layer = bundle.edit_layer(layer)
    texts, positions = _cut_and_sort(bundle, lookups)
    k = keys.keys_at(bundle, layer, [Lookup(t, p) for t, p in zip(texts, positions)])
    return {"layer": layer, **concentration(k.cpu())}


# --------------------------------------------------------------------------------------------
# Sets of vectors against reference centroids (Figure 3, Appendix A.3)
# --------------------------------------------------------------------------------------------
def _cosine_to(vectors: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cosine_similarity(vectors, centre[None], dim=1)


def centroid_table(sets: dict[str, torch.Tensor], references: dict[str, torch.Tensor]) -> pd.DataFrame:
    """For each set: mean cosine and mean Euclidean distance to each reference set's centroid.

    Also the set's size, mean norm, its spread (mean distance to its own centroid) and
    ``nearest_<ref>``: the share of its vectors whose most similar centroid (by cosine) is that reference.
    """
    centres = {name: ref.double().mean(0) for name, ref in references.items()}
    rows = []
    for name, vecs in sets.items():
        v = vecs.double()
        row = {"set": name, "n": v.shape[0], "mean_norm": v.norm(dim=1).mean().item(),
               "spread": mean_distance_to_centroid(v)}
        cos = {ref: _cosine_to(v, c) for ref, c in centres.items()}
        for ref, c in centres.items():
            row[f"cos_to_{ref}"] = cos[ref].mean().item()
            row[f"dist_to_{ref}"] = (v - c).norm(dim=1).mean().item()
        best = torch.stack(list(cos.values())).argmax(0)
        for i, ref in enumerate(centres):
            row[f"nearest_{ref}"] = (best == i).double().mean().item()
        rows.append(row)
    return pd.DataFrame(rows)


def editing_prefix(templates: list[str], case_id, seed: int = 0) -> str:
    """The one editing prefix (of ``templates[1:]``) put in front of a case in Figure 3, seeded by case."""
    import random

    return random.Random(f"{seed}-{case_id}").choice(templates[1:])


def first_token_sets(bundle: Bundle, texts: list[str], collapse_cases: list[EditCase], normal_cases: list[EditCase],
                     templates: list[str], seed: int = 0, without_bos: Bundle | None = None) -> dict[str, torch.Tensor]:
    """Figure 3's key sets at the edit layer: the first token of ``texts`` (with a BOS also their first word), a few
    later tokens of them, the collapse and normal cases' kᵘ, and the collapse cases' kᵘ behind one seeded editing
    prefix (``templates[1:]``). With ``without_bos`` (the same model, BOS removed) also the first token of the texts
    and the collapse cases' kᵘ without the BOS."""
    from .samples import later_lookups

    layer = bundle.hparams.layer
    sets = {"first token (pos 0, BOS)" if bundle.add_bos else "first token (pos 0)":
            keys.token_keys(bundle, texts, position=0)}
    if bundle.add_bos:
        sets["first word (pos 1)"] = keys.token_keys(bundle, texts, position=1)
    sets["later tokens"] = keys.keys_at(bundle, layer, later_lookups(bundle, texts, per_text=4, max_position=48,
                                                                     seed=seed))
    for label, cases in (("collapse kᵘ", collapse_cases), ("normal kᵘ", normal_cases)):
        sets[label] = torch.stack([keys.unprefixed_key(bundle, c.prompt, c.subject) for c in cases])
    prefixes = [editing_prefix(templates, c.case_id, seed) for c in collapse_cases]
    sets["collapse kᵘ, prefixed"] = torch.cat([keys.keys_at(bundle, layer, keys.subject_lookups(
        bundle, c.prompt, c.subject, [t])) for c, t in zip(collapse_cases, prefixes)])
    if without_bos is not None and bundle.add_bos:
        sets["first token, BOS removed"] = keys.token_keys(without_bos, texts, position=0)
        sets["collapse kᵘ, BOS removed"] = torch.stack([keys.unprefixed_key(without_bos, c.prompt, c.subject)
                                                       for c in collapse_cases])
    return sets


def first_token_statistics(first: torch.Tensor, later: torch.Tensor) -> dict[str, float]:
    """How special first-token vectors are next to later-token vectors, in scale-free numbers.

    * ``separation``: mean distance of first-token vectors to the later-token centroid, over the later
      tokens' own mean distance to it (≈ 1: first tokens look like any token; far from 1: special).
    * ``concentration``: first-token spread over later-token spread (≪ 1: first tokens bunch together).
    * ``cos_first_later``: cosine between the two centroids.
    * ``norm_ratio``: mean norm of first-token vectors over that of later ones.
    """
    f, lt = first.double(), later.double()
    centre = lt.mean(0)
    later_spread = mean_distance_to_centroid(lt)
    return {"separation": (f - centre).norm(dim=1).mean().item() / later_spread,
            "concentration": mean_distance_to_centroid(f) / later_spread,
            "cos_first_later": torch.nn.functional.cosine_similarity(f.mean(0), centre, dim=0).item(),
            "norm_ratio": (f.norm(dim=1).mean() / lt.norm(dim=1).mean()).item()}


# --------------------------------------------------------------------------------------------
# The keys of edit cases: kᵘ against k̄ (Figure 2), at the edit layer or at every layer
# --------------------------------------------------------------------------------------------
def case_key_vectors(bundle: Bundle, selection: dict[str, list[EditCase]], templates: list[str],
                     second_moment: SecondMoment) -> tuple[pd.DataFrame, dict[str, torch.Tensor]]:
    """kᵘ, k̄ and C⁻¹k̄ for every selected case (rows in the order of ``selection``).

    Returns a table (case_id, group, subject, prompt, cos(kᵘ, k̄), denominator ratio, norms) and the
    stacked vectors ``{"unprefixed": (n, d), "prefixed": (n, d), "left": (n, d)}`` (float64).
    """
    rows, ku, kb = [], [], []
    for group, cases in selection.items():
        for case in cases:
            k = keys.case_keys(bundle, case.prompt, case.subject, templates)
            ku.append(k.unprefixed_key.double().cpu())
            kb.append(k.prefixed_key.double().cpu())
            rows.append({"case_id": case.case_id, "group": group, "subject": case.subject, "prompt": case.prompt,
                         "cos_ku_kbar": torch.nn.functional.cosine_similarity(ku[-1], kb[-1], dim=0).item(),
                         "ratio": denominator_ratio(second_moment, k.unprefixed_key, k.prefixed_key),
                         "norm_ku": ku[-1].norm().item(), "norm_kbar": kb[-1].norm().item()})
    d = bundle.weight(bundle.hparams.layer).shape[1]
    stack = lambda xs: torch.stack(xs) if xs else torch.zeros(0, d, dtype=torch.float64)  # noqa: E731
    prefixed = stack(kb)
    left = second_moment.solve(prefixed).cpu() if len(kb) else prefixed.clone()
    return pd.DataFrame(rows), {"unprefixed": stack(ku), "prefixed": prefixed, "left": left}


def denominator_ratios(bundle: Bundle, groups: dict[str, list[EditCase]], templates: list[str], layers: list[int],
                       n_samples: int, setting: str, texts: list[str] | None = None,
                       corpus: str = "meppl-10k-minus-50", progress: bool = True) -> list[dict]:
    """ROME's denominator ratio (kᵘ·C⁻¹k̄)/(k̄·C⁻¹k̄) and cos(kᵘ, k̄) of every case as if it were edited at
    each of ``layers``: one row per layer and case. Needs no v*, only the keys there and, in the "original"
    ``setting``, C at each layer (over the first ``n_samples`` of ``texts``, default the statistics corpus;
    cached like the edit layer's C). In the "paper" setting C is the identity and nothing else is run. The keys
    at every layer come from the same forward passes (``keys.key_batch``)."""
    from tqdm.auto import tqdm

    cases = [(group, case) for group, cs in groups.items() for case in cs]
    # untruncated, in order, 64 rows a forward: keys.case_keys's way, at every layer at once
    by_layer = keys.key_batch(bundle, [case for _, case in cases], templates, layers, truncate=False,
                              share_prefix=False, batch_size=64).keys
    rows = []
    for layer in tqdm(layers, desc=f"{bundle.name} layers", disable=not progress, leave=False):
        C = covariance(bundle, setting, layer=layer, texts=texts, corpus=corpus, n_samples=n_samples, progress=False)
        for (group, case), k in zip(cases, by_layer[layer]):
            rows.append({"layer": layer, "group": group, "case_id": case.case_id, "subject": case.subject,
                         "ratio": denominator_ratio(C, k.unprefixed_key, k.prefixed_key),
                         "cos_ku_kbar": torch.cosine_similarity(k.unprefixed_key, k.prefixed_key, dim=0).item()})
    return rows


# --------------------------------------------------------------------------------------------
# A bidirectional encoder's keys (Appendix A.3)
# --------------------------------------------------------------------------------------------
ENCODER_SETS = ("[CLS] (pos 0)", "first word (pos 1)", "later token (pos ≥ 2)")


def encoder_layer_keys(model: torch.nn.Module, tokenizer, texts: list[str], layers: list[int] | None = None,
                       max_length: int = 64, batch_size: int = 32) -> dict[int, dict[str, torch.Tensor]]:
    """Keys of a BERT-style encoder at each of ``layers`` (default all): the input of
    ``model.encoder.layer[l].output.dense`` (the MLP's output projection, the matrix ROME would edit), read with
    forward hooks in one pass per batch.

    Returns layer → {``ENCODER_SETS[0]``: (n_texts, d) at [CLS], ``ENCODER_SETS[1]``: (n_texts, d) at the first word
    token right after [CLS], ``ENCODER_SETS[2]``: (n_later, d) at every later non-special, non-padding token},
    float32 on the CPU.
    """
    layers = list(range(model.config.num_hidden_layers)) if layers is None else layers
    device = next(model.parameters()).device
    found = {layer: {name: [] for name in ENCODER_SETS} for layer in layers}
    for start in range(0, len(texts), batch_size):
        enc = tokenizer(texts[start:start + batch_size], padding=True, truncation=True, max_length=max_length,
                        return_tensors="pt", return_special_tokens_mask=True)
        special = enc.pop("special_tokens_mask").bool()
        if special[:, 1].any():
            raise ValueError("a text has no word token after [CLS] (empty text?)")
        captured = {}
        with ExitStack() as hooks, torch.no_grad():
            for layer in layers:
                hooks.enter_context(forward_hook(model.encoder.layer[layer].output.dense,
                                                 lambda mod, args, out, layer=layer:
                                                 captured.__setitem__(layer, args[0].detach())))
            model(**{k: v.to(device) for k, v in enc.items()})
        positions = torch.arange(special.shape[1])[None]
        is_later = enc["attention_mask"].bool() & ~special & (positions > 1)
        for layer in layers:
            k = captured[layer].float().cpu()
            for name, rows in zip(ENCODER_SETS, (k[:, 0], k[:, 1], k[is_later])):
                found[layer][name].append(rows)
    return {layer: {name: torch.cat(parts) for name, parts in sets.items()} for layer, sets in found.items()}


def encoder_mlp_keys(model: torch.nn.Module, tokenizer, texts: list[str], layer: int,
                     max_length: int = 64, batch_size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """``(first_word_keys, later_keys)`` of :func:`encoder_layer_keys` at one layer."""
    sets = encoder_layer_keys(model, tokenizer, texts, [layer], max_length, batch_size)[layer]
    return sets[ENCODER_SETS[1]], sets[ENCODER_SETS[2]]


def encoder_concentration(model: torch.nn.Module, tokenizer, texts: list[str],
                          layers: list[int] | None = None) -> list[dict]:
    """:func:`concentration` of each of the encoder's key sets (``ENCODER_SETS``) at every layer: one row per
    token set and layer, as :func:`layer_key_concentration` gives for a causal model."""
    by_layer = encoder_layer_keys(model, tokenizer, texts, layers)
    return [{"token set": name, "layer": layer, **concentration(vectors)}
            for name in ENCODER_SETS for layer, sets in by_layer.items() for vectors in [sets[name]]]


# --------------------------------------------------------------------------------------------
# t-SNE maps
# --------------------------------------------------------------------------------------------
def unit(vectors: torch.Tensor | np.ndarray) -> np.ndarray:
    """Rows scaled to unit norm (vectors living at different scales, before t-SNE)."""
    v = np.asarray(vectors, dtype=np.float64)
    return v / np.clip(np.linalg.norm(v, axis=1, keepdims=True), 1e-12, None)


def tsne_table(named: dict[str, np.ndarray | torch.Tensor], meta: pd.DataFrame | None = None,
               seed: int = 0) -> pd.DataFrame:
    """One openTSNE map of several vector sets, each row scaled to unit norm first.

    ``named``: label -> (n_i, d) vectors. With ``meta`` (one row per vector, the same rows for every
    label, e.g. the case table), its columns are repeated next to each label's points.
    Returns columns x, y, vector (the label) and the meta columns.
    """
    from .plots import tsne

    points = np.concatenate([unit(v) for v in named.values()])
    xy = tsne(points, seed=seed)
    parts = []
    for label, v in named.items():
        part = meta.reset_index(drop=True).copy() if meta is not None else pd.DataFrame(index=range(len(v)))
        if len(part) != len(v):
            raise ValueError(f"{label}: {len(v)} vectors for {len(part)} meta rows")
        part.insert(0, "vector", label)
        parts.append(part)
    table = pd.concat(parts, ignore_index=True)
    table.insert(0, "y", xy[:, 1])
    table.insert(0, "x", xy[:, 0])
    return table
