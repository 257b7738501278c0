"""Where keys sit: the diagnostics behind the paper's Figures 2–3 and Appendix A.3.

* :func:`case_key_vectors`: kᵘ, k̄ and C⁻¹k̄ of selected cases, with their cosine and denominator ratio.
* :func:`ordinary_texts`, :func:`later_token_lookups`: ordinary sentences and the positions read in them.
* :func:`centroid_table`: how close each set of vectors is to reference centroids (cosine and distance).
* :func:`first_token_statistics`: one scale-free summary of how special the first token is.
* :func:`encoder_mlp_keys`: the same keys in a bidirectional encoder (BERT's MLP output projection).
"""
from __future__ import annotations

import random

import numpy as np
import pandas as pd
import torch

from .data import EditCase
from .keys import Lookup, case_keys
from .metrics import mean_distance_to_centroid
from .models import Bundle
from .rome import denominator_ratio
from .stats import SecondMoment
from .tokens import token_ids


def case_key_vectors(bundle: Bundle, selection: dict[str, list[EditCase]], templates: list[str],
                     second_moment: SecondMoment) -> tuple[pd.DataFrame, dict[str, torch.Tensor]]:
    """kᵘ, k̄ and C⁻¹k̄ for every selected case (rows in the order of ``selection``).

    Returns a table (case_id, group, subject, prompt, cos(kᵘ, k̄), denominator ratio, norms) and the
    stacked vectors ``{"unprefixed": (n, d), "prefixed": (n, d), "left": (n, d)}`` (float64).
    """
    rows, ku, kb = [], [], []
    for group, cases in selection.items():
        for case in cases:
            k = case_keys(bundle, case.prompt, case.subject, templates)
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


def ordinary_texts(texts: list[str], n: int, exclude: set[str] | None = None, seed: int = 0,
                   max_chars: int = 300) -> list[str]:
    """A seeded sample of ``n`` texts not in ``exclude``, each cut after a word before ``max_chars``.

    Cutting keeps the text's beginning as it is, so in a causal model the keys of the kept tokens
    are those of the whole text (only the forward pass gets cheaper).
    """
    exclude = exclude or set()
    pool = [t for t in texts if t.strip() and t not in exclude]
    picked = random.Random(seed).sample(pool, min(n, len(pool)))
    cut = []
    for t in picked:
        if len(t) > max_chars:
            space = t.rfind(" ", 0, max_chars)
            t = t[:space] if space > 0 else t[:max_chars]
        cut.append(t)
    return cut


def later_token_lookups(bundle: Bundle, texts: list[str], per_text: int = 4, seed: int = 0,
                        first: int | None = None, max_position: int = 48) -> list[Lookup]:
    """``per_text`` random positions in each text after its first real token (BOS and first word skipped).

    ``first``: the first position that counts as "later" (default: 2 with a BOS, else 1).
    """
    first = (2 if bundle.add_bos else 1) if first is None else first
    rng = random.Random(seed)
    lookups = []
    for text in texts:
        length = min(len(token_ids(bundle, text)), max_position)
        positions = list(range(first, length))
        lookups += [Lookup(text, p) for p in sorted(rng.sample(positions, min(per_text, len(positions))))]
    return lookups


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


def encoder_mlp_keys(model: torch.nn.Module, tokenizer, texts: list[str], layer: int,
                     max_length: int = 64, batch_size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys of a BERT-style encoder: the input of ``model.encoder.layer[layer].output.dense`` (the MLP's
    output projection, the matrix ROME would edit), read with a forward hook.

    Returns ``(first_word_keys, later_keys)``: (n_texts, d) at position 1 (the first word token, right
    after [CLS]) and (n_later, d) at every later non-special, non-padding token, float32 on the CPU.
    """
    module = model.encoder.layer[layer].output.dense
    device = next(model.parameters()).device
    first, later = [], []
    for start in range(0, len(texts), batch_size):
        enc = tokenizer(texts[start:start + batch_size], padding=True, truncation=True, max_length=max_length,
                        return_tensors="pt", return_special_tokens_mask=True)
        special = enc.pop("special_tokens_mask").bool()
        captured = {}
        handle = module.register_forward_hook(lambda mod, args, out: captured.__setitem__("keys", args[0].detach()))
        try:
            with torch.no_grad():
                model(**{k: v.to(device) for k, v in enc.items()})
        finally:
            handle.remove()
        keys = captured["keys"].float().cpu()
        if special[:, 1].any():
            raise ValueError("a text has no word token after [CLS] (empty text?)")
        first.append(keys[:, 1])
        positions = torch.arange(keys.shape[1])[None]
        is_later = enc["attention_mask"].bool() & ~special & (positions > 1)
        later.append(keys[is_later])
    return torch.cat(first), torch.cat(later)


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
