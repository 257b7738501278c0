"""The batch of v*'s optimisation: the rows of several requests, and the cut at the subject.

:func:`build_rows` lays every prompt of K requests (each context template's prompt with the target teacher-
forced, and the "<subject> is a" KL anchor) into one right-padded batch, with where δ goes and which positions
the loss reads. :func:`split_at_subject` cuts selected rows at the subject's last token, so that what comes
before it (which never sees δ) runs once. This is bookkeeping that only saves work: the numbers are those of
one request at a time (``values.optimize_values`` uses it; tests/test_engine.py checks it).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .data import EditCase, fill
from .models import Bundle, get_module
from .tokens import pad_batch, subject_last_index, token_ids
from .trace import cache_view


@dataclass
class Rows:
    """All prompts of K requests in one right-padded batch, with where to read and write."""
    input_ids: torch.Tensor  # (N, T)
    attention_mask: torch.Tensor
    case: torch.Tensor  # (N,) request of each row
    lookup: torch.Tensor  # (N,) subject's last token: where delta is added
    target_row: torch.Tensor  # (M,) one entry per target token to score
    target_pos: torch.Tensor  # position whose logits predict it
    target_tok: torch.Tensor
    target_weight: torch.Tensor  # 1 / (len(target) * n_templates): NLL averaged as in ROME
    kl_row: torch.Tensor  # (K,) the "{} is a" row of each request
    first_row: torch.Tensor  # (K,) the unprefixed rewriting row of each request


def build_rows(bundle: Bundle, cases: list[EditCase], templates: list[str], loss_templates: str = "all") -> Rows:
    """``loss_templates="prefixed"``: the unprefixed prompt's row is kept (v* may start there) but not scored."""
    scored = range(len(templates)) if loss_templates == "all" else range(1, len(templates))
    if not scored:
        raise ValueError("loss_templates='prefixed' needs context templates besides '{}'")
    ids, case_of, lookup = [], [], []
    t_row, t_pos, t_tok, t_w, kl_row, first_row = [], [], [], [], [], []
    for k, case in enumerate(cases):
        target = bundle.tokenizer(" " + case.target_new, add_special_tokens=False).input_ids
        if not target:
            raise ValueError(f"case {case.case_id}: target_new tokenises to nothing")
        first_row.append(len(ids))
        for t, template in enumerate(templates):
            prompt = template.format(case.prompt)
            prompt_ids = token_ids(bundle, fill(prompt, case.subject))
            row = len(ids)
            # Teacher forcing: the prompt, then all target tokens but the last.
            ids.append(prompt_ids + target[:-1])
            case_of.append(k)
            lookup.append(subject_last_index(bundle, prompt, case.subject))
            if t not in scored:
                continue
            for j, tok in enumerate(target):
                t_row.append(row)
                t_pos.append(len(prompt_ids) - 1 + j)
                t_tok.append(tok)
                t_w.append(1.0 / (len(target) * len(scored)))
        # KL anchor: keep "<subject> is a" predicting what it did (ROME reads it at the subject).
        kl_row.append(len(ids))
        ids.append(token_ids(bundle, f"{case.subject} is a"))
        case_of.append(k)
        lookup.append(subject_last_index(bundle, "{} is a", case.subject))
    batch = pad_batch(bundle, ids)
    dev = bundle.device
    as_long = lambda xs: torch.tensor(xs, dtype=torch.long, device=dev)
    return Rows(batch.input_ids, batch.attention_mask, as_long(case_of), as_long(lookup), as_long(t_row),
                 as_long(t_pos), as_long(t_tok), torch.tensor(t_w, device=dev), as_long(kl_row),
                 as_long(first_row))


@dataclass
class Split:
    """Selected rows cut at the subject's last token s: tokens before s never see delta.

    Their keys and values are computed once (``prefix_cache``); every optimisation step then runs
    only the suffix (positions ≥ s) on top of that cache. The blocks below the edit layer never see
    delta either: their output (``lower_output``, the edit block's input) is computed once too, and
    each step runs the edit layer's block and those above it. Same numbers, far less work.
    """
    suffix_ids: torch.Tensor  # (n, S), right-padded
    attention_mask: torch.Tensor  # (n, P + S): left-padded prefix, then the suffix
    position_ids: torch.Tensor | None  # (n, S): true positions of the suffix tokens
    prefix_cache: object | None
    lower_output: torch.Tensor | None = None  # (n, S, d): input of the edit layer's block

    def inputs(self) -> dict:
        """Keyword arguments of one forward over these rows (a fresh view of the prefix cache)."""
        cache = cache_view(self.prefix_cache)
        return {"input_ids": self.suffix_ids, "attention_mask": self.attention_mask,
                "position_ids": self.position_ids, "cache": cache, "use_cache": cache is not None}


def split_at_subject(bundle: Bundle, rows: Rows, sel: torch.Tensor) -> Split:
    """Rows ``sel`` of ``rows`` cut at each one's subject's last token, the tokens before it run once into a cache."""
    ids, lengths, cut = rows.input_ids[sel], rows.attention_mask[sel].sum(1), rows.lookup[sel]
    pad, width = bundle.tokenizer.pad_token_id, ids.shape[1]
    n_prefix, n_suffix = int(cut.max()), int((lengths - cut).max())
    suffix_at = cut[:, None] + torch.arange(n_suffix, device=ids.device)
    suffix_valid = suffix_at < lengths[:, None]
    suffix_ids = ids.gather(1, suffix_at.clamp(max=width - 1)).masked_fill(~suffix_valid, pad)
    prefix_at = cut[:, None] - n_prefix + torch.arange(n_prefix, device=ids.device)
    prefix_valid = prefix_at >= 0
    cache = None
    if n_prefix:
        prefix_ids = ids.gather(1, prefix_at.clamp(min=0)).masked_fill(~prefix_valid, pad)
        with torch.no_grad():
            cache = get_module(bundle.model, bundle.spec.base)(
                input_ids=prefix_ids, attention_mask=prefix_valid.long(), position_ids=prefix_at.clamp(min=0),
                use_cache=True).cache
    return Split(suffix_ids, torch.cat([prefix_valid, suffix_valid], 1).long(),
                  suffix_at.clamp(max=width - 1), cache)
