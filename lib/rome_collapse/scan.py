"""Pre-flight scan of many edit requests: ROME's denominator ratio from the keys alone, no v*.

The prefixed keys of all requests share the same context templates, so the keys of every (case, template)
pair are computed together: length-sorted batches under a token budget, each text cut right after the
subject's last token (in a causal model nothing later changes the key there). :func:`case_keys_batch`
gives the same :class:`~rome_collapse.keys.CaseKeys` as :func:`~rome_collapse.keys.case_keys` case by case.

:func:`scan_cases` turns them into one :class:`ScanRow` per case (the ratio (kᵘ·C⁻¹k̄)/(k̄·C⁻¹k̄),
cos(kᵘ, k̄), where the subject sits, its stratum) and a :class:`ScanSummary` with the throughput and the counts per
stratum (``python -m rome_collapse scan``). How well these numbers predict a collapse:
:mod:`rome_collapse.studies.screening`.
"""
from __future__ import annotations

import copy
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import torch
from tqdm.auto import tqdm

from .collapse import RISK_THRESHOLD
from .data import CaseError, EditCase, fill
from .keys import CaseKeys
from .models import Bundle
from .stats import SecondMoment
from .strata import STRATA, stratum_of_span
from .tokens import pad_batch, subject_token_span, token_ids
from .trace import down_proj_input

COUNTERFACT_CASES = 21_919  # records in the official CounterFact file, for the projected time
DEFAULT_THRESHOLD = RISK_THRESHOLD  # as rome.collapse_risk


# --------------------------------------------------------------------------------------------
# Keys of many requests at once
# --------------------------------------------------------------------------------------------
@dataclass
class _Row:
    case: int  # index of the request
    ids: list[int]  # token ids, cut after ``position`` when truncating
    position: int  # the subject's last token


def _rows(bundle: Bundle, cases: list[EditCase], templates: list[str],
          truncate: bool) -> tuple[list[_Row], list[tuple[int, int]]]:
    """One row per (case, template), and each case's subject span in the prompt as given (template "{}")."""
    rows, spans = [], []
    for i, case in enumerate(cases):
        try:
            for j, template in enumerate(templates):
                full_prompt = template.format(case.prompt)
                first, last = subject_token_span(bundle, full_prompt, case.subject)
                ids = token_ids(bundle, fill(full_prompt, case.subject))
                rows.append(_Row(i, ids[:last + 1] if truncate else ids, last))
                if j == 0:
                    spans.append((first, last))
        except (ValueError, IndexError) as exc:
            raise CaseError(f"case {case.case_id}: {exc}") from exc
    return rows, spans


def _batches(rows: list[_Row], token_budget: int, max_padding: float = 0.25):
    """Indices of length-sorted rows in batches of at most ``token_budget`` tokens (padding counted), cut
    where padding would exceed ``max_padding`` of a batch (short rows of many lengths: padding would cost more
    than the extra forward calls)."""
    order = sorted(range(len(rows)), key=lambda r: len(rows[r].ids))
    batch: list[int] = []
    real = 0
    for r in order:
        width = len(rows[r].ids)  # the longest so far: rows are sorted
        padded = width * (len(batch) + 1)
        if batch and (padded > token_budget or padded > (1 + max_padding) * (real + width)):
            yield batch
            batch, real = [], 0
        batch.append(r)
        real += width
    if batch:
        yield batch


def _common_prefix(rows: list[_Row], members: list[int]) -> int:
    """Tokens every row of ``members`` starts with, stopping before the earliest key position (the key must
    be computed in the suffix). Compared as token ids, so a tokeniser that merges across the template's end
    only shortens the shared part."""
    first = rows[members[0]].ids
    p = min(rows[r].position for r in members)
    for r in members[1:]:
        ids, q = rows[r].ids, 0
        while q < p and ids[q] == first[q]:
            q += 1
        p = q
    return p


def _forward(bundle: Bundle, layer: int, rows: list[_Row], groups: list[list[int]], token_budget: int):
    """Keys at every row's position, in row order, and the number of tokens run.

    Rows of one group (one template) share their first tokens: those run once, into a cache, and every
    batch of the group runs only its rows' remaining tokens on top of it (positions and mask continuing)."""
    keys = None
    n_tokens = 0
    dev = bundle.device
    for members in groups:
        shared = _common_prefix(rows, members) if len(members) > 1 else 0
        cache = None
        if shared:
            from transformers import DynamicCache

            cache = DynamicCache(config=bundle.model.config)
            prefix = torch.tensor([rows[members[0]].ids[:shared]], device=dev)
            down_proj_input(bundle, layer, input_ids=prefix, attention_mask=torch.ones_like(prefix),
                            cache=cache, use_cache=True)
            n_tokens += shared
        suffixes = [_Row(rows[r].case, rows[r].ids[shared:], rows[r].position - shared) for r in members]
        for part in _batches(suffixes, token_budget):
            batch = pad_batch(bundle, [suffixes[i].ids for i in part])
            if cache is None:
                inputs = down_proj_input(bundle, layer, batch)
            else:
                n, width = batch.input_ids.shape
                batch_cache = copy.deepcopy(cache)
                batch_cache.batch_repeat_interleave(n)
                mask = torch.cat([torch.ones(n, shared, dtype=batch.attention_mask.dtype, device=dev),
                                  batch.attention_mask], 1)
                positions = (shared + torch.arange(width, device=dev)).expand(n, width)
                inputs = down_proj_input(bundle, layer, input_ids=batch.input_ids, attention_mask=mask,
                                         position_ids=positions, cache=batch_cache, use_cache=True)
            if keys is None:
                keys = inputs.new_empty(len(rows), inputs.shape[-1])
            at = torch.arange(len(part), device=inputs.device)
            pos = torch.tensor([suffixes[i].position for i in part], device=inputs.device)
            where = torch.tensor([members[i] for i in part], device=inputs.device)
            keys[where] = inputs[at, pos]
            n_tokens += int(batch.attention_mask.sum())
    return keys, n_tokens


def _case_keys_batch(bundle, cases, templates, layer, token_budget, truncate, share_prefix):
    if not templates or templates[0] != "{}":
        raise ValueError("the first context template must be '{}' (the unprefixed prompt)")
    rows, spans = _rows(bundle, cases, templates, truncate)
    t = len(templates)
    # rows are case-major (case i, template j at i * t + j); a template's rows share its opening tokens
    groups = [list(range(j, len(rows), t)) for j in range(t)] if share_prefix else [list(range(len(rows)))]
    keys, n_tokens = _forward(bundle, layer, rows, groups, token_budget)
    keys = keys.view(len(cases), t, -1)
    result = [CaseKeys(keys[i, 0], keys[i].mean(0), keys[i])
              for i in range(len(cases))]
    return result, spans, n_tokens, sum(len(r.ids) for r in rows)


def case_keys_batch(bundle: Bundle, cases: list[EditCase], templates: list[str], layer: int | None = None,
                    token_budget: int = 8192, truncate: bool = True, share_prefix: bool = True,
                    threads: int | None = None) -> list[CaseKeys]:
    """:func:`keys.case_keys` for many requests in a few batched, truncated forward passes (equal to it up to
    float rounding). ``truncate`` cuts each text after the subject (causal models only: every bundle is one);
    ``share_prefix`` runs each template's opening once; ``threads`` as in :func:`scan_cases`.
    A request whose subject cannot be found raises a :class:`~rome_collapse.data.CaseError` naming it."""
    layer = bundle.edit_layer(layer)
    with _threads(threads):
        return _case_keys_batch(bundle, cases, templates, layer, token_budget, truncate, share_prefix)[0]


# --------------------------------------------------------------------------------------------
# The scan
# --------------------------------------------------------------------------------------------
@dataclass
class ScanRow:
    """The pre-flight numbers of one request."""
    case_id: int | str
    subject: str
    prompt: str
    subject_position: int  # token index of the subject's first token in the prompt as given (BOS counted)
    subject_tokens: int
    subject_first_token: bool  # one-token subject that is the very first token the model sees (no BOS before it)
    stratum: str  # strata.STRATA: first and single-token (at 0 or right after the BOS), first and multi-token, later
    ratio: float  # (kᵘ·C⁻¹k̄)/(k̄·C⁻¹k̄): ROME's denominator relative to the consistent one
    cos_ku_kbar: float  # cos(kᵘ, k̄)
    unprefixed_key_norm: float  # ‖kᵘ‖
    prefixed_key_norm: float  # ‖k̄‖
    key_distance: float  # ‖kᵘ − k̄‖
    at_risk: bool  # ratio < threshold

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class ScanSummary:
    model: str
    setting: str
    layer: int
    threshold: float
    templates: int
    cases: int
    at_risk: int
    subject_first: int
    strata: dict[str, int]  # cases per stratum (strata.STRATA, zeros included)
    at_risk_by_stratum: dict[str, int]  # at-risk cases per stratum
    seconds: float  # keys and ratios (tokenisation included), the model and templates already loaded
    text_tokens: int  # tokens of all (case, template) texts up to the subject's last token
    tokens: int  # tokens run through the truncated model (padding not counted): shared openings run once
    tokens_per_s: float
    cases_per_s: float
    counterfact_projected_s: float  # COUNTERFACT_CASES at this rate

    def to_dict(self) -> dict:
        return asdict(self)

    def lines(self) -> list[str]:
        return [f"{self.cases} cases scanned on {self.model} (layer {self.layer}, setting {self.setting}, "
                f"{self.templates} templates): {self.at_risk} at risk (ratio < {self.threshold:g}), "
                f"{self.subject_first} with the subject as first token",
                "per stratum (at risk / cases): " + ", ".join(
                    f"{name} {self.at_risk_by_stratum[name]} / {self.strata[name]}" for name in self.strata),
                f"{self.seconds:.1f} s: {self.cases_per_s:.1f} cases/s, {self.tokens_per_s:,.0f} tokens/s "
                f"({self.tokens:,} tokens run for {self.text_tokens:,} text tokens); CounterFact's "
                f"{COUNTERFACT_CASES:,} cases would take about {self.counterfact_projected_s / 60:.1f} min"]


@contextmanager
def _threads(n: int | None):
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def scan_cases(bundle: Bundle, cases: list[EditCase], templates: list[str], second_moment: SecondMoment,
               threshold: float = DEFAULT_THRESHOLD, layer: int | None = None, chunk: int = 128,
               token_budget: int = 8192, share_prefix: bool = True, threads: int | None = None,
               progress: bool = True) -> tuple[list[ScanRow], ScanSummary]:
    """Every request's pre-flight ratio, ``chunk`` requests at a time (so that memory stays flat on big files).

    ``threads``: torch's intra-op threads during the scan (restored after; None leaves torch's own). On an idle
    2-core CPU torch's two threads scanned the curated set in 6.5 s against 9.4 s with one; one thread is the
    better choice only when other processes compete for the cores."""
    from .rome import check_covariance, denominator_ratio

    if not cases:
        raise ValueError("no cases to scan")
    check_covariance(bundle, second_moment)
    layer = bundle.edit_layer(layer)
    start = time.perf_counter()
    rows: list[ScanRow] = []
    n_tokens = n_text = 0
    with _threads(threads), tqdm(total=len(cases), desc="scanning", unit="case", disable=not progress) as bar:
        for at in range(0, len(cases), chunk):
            part = cases[at:at + chunk]
            ck, spans, tokens, text_tokens = _case_keys_batch(bundle, part, templates, layer, token_budget, True,
                                                              share_prefix)
            n_tokens += tokens
            n_text += text_tokens
            k_u = torch.stack([c.unprefixed_key for c in ck]).double()
            k_bar = torch.stack([c.prefixed_key for c in ck]).double()
            ratio = denominator_ratio(second_moment, k_u, k_bar).cpu()
            cos = torch.nn.functional.cosine_similarity(k_u, k_bar, dim=1).cpu()
            norm_u, norm_bar = k_u.norm(dim=1).cpu(), k_bar.norm(dim=1).cpu()
            dist = (k_u - k_bar).norm(dim=1).cpu()
            for i, (case, (first, last)) in enumerate(zip(part, spans)):
                rows.append(ScanRow(case.case_id, case.subject, case.prompt, first, last - first + 1,
                                    first == last == 0, stratum_of_span(first, last, bundle.add_bos),
                                    float(ratio[i]), float(cos[i]), float(norm_u[i]), float(norm_bar[i]),
                                    float(dist[i]), bool(ratio[i] < threshold)))
            bar.update(len(part))
    seconds = time.perf_counter() - start
    per_s = len(cases) / seconds if seconds > 0 else float("inf")
    summary = ScanSummary(bundle.name, bundle.setting, layer, threshold, len(templates), len(cases),
                          sum(r.at_risk for r in rows), sum(r.subject_first_token for r in rows),
                          {name: sum(r.stratum == name for r in rows) for name in STRATA},
                          {name: sum(r.at_risk and r.stratum == name for r in rows) for name in STRATA}, seconds,
                          n_text, n_tokens,
                          n_tokens / seconds if seconds > 0 else float("inf"), per_s,
                          COUNTERFACT_CASES / per_s if per_s else float("inf"))
    return rows, summary
