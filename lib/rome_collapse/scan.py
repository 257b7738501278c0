"""Pre-flight scan of many edit requests: ROME's denominator ratio from the keys alone, no v*.

The prefixed keys of all requests share the same context templates, so the keys of every (case, template)
pair are computed together (:func:`rome_collapse.keys.key_batch`): length-sorted batches under a token budget,
each text cut right after the subject's last token, each template's opening run once.

:func:`scan_cases` turns them into one :class:`ScanRow` per case (the ratio (kᵘ·C⁻¹k̄)/(k̄·C⁻¹k̄),
cos(kᵘ, k̄), where the subject sits, its stratum) and a :class:`ScanSummary` with the throughput and the counts per
stratum (``python -m rome_collapse scan``). How well these numbers predict a collapse:
:mod:`rome_collapse.studies.screening`.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import torch
from tqdm.auto import tqdm

from .collapse import RISK_THRESHOLD
from .data import EditCase
from .keys import key_batch
from .models import Bundle
from .stats import SecondMoment
from .strata import STRATA, stratum_of_span

COUNTERFACT_CASES = 21_919  # records in the official CounterFact file, for the projected time
DEFAULT_THRESHOLD = RISK_THRESHOLD  # as rome.collapse_risk


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
    from .rome import denominator_ratio

    if not cases:
        raise ValueError("no cases to scan")
    layer = bundle.edit_layer(layer)
    start = time.perf_counter()
    rows: list[ScanRow] = []
    n_tokens = n_text = 0
    with _threads(threads), tqdm(total=len(cases), desc="scanning", unit="case", disable=not progress) as bar:
        for at in range(0, len(cases), chunk):
            part = cases[at:at + chunk]
            batch = key_batch(bundle, part, templates, [layer], token_budget, share_prefix=share_prefix)
            ck, spans = batch.keys[layer], batch.spans
            n_tokens += batch.tokens
            n_text += batch.text_tokens
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
    summary = ScanSummary(bundle.name, second_moment.setting, layer, threshold, len(templates), len(cases),
                          sum(r.at_risk for r in rows), sum(r.subject_first_token for r in rows),
                          {name: sum(r.stratum == name for r in rows) for name in STRATA},
                          {name: sum(r.at_risk and r.stratum == name for r in rows) for name in STRATA}, seconds,
                          n_text, n_tokens,
                          n_tokens / seconds if seconds > 0 else float("inf"), per_s,
                          COUNTERFACT_CASES / per_s if per_s else float("inf"))
    return rows, summary
