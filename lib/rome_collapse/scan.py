"""Pre-flight scan of many edit requests: ROME's denominator ratio from the keys alone, no v*.

The prefixed keys of all requests share the same context templates, so the keys of every (case, template)
pair are computed together: length-sorted batches under a token budget, each text cut right after the
subject's last token (in a causal model nothing later changes the key there). :func:`case_keys_batch`
gives the same :class:`~rome_collapse.keys.CaseKeys` as :func:`~rome_collapse.keys.case_keys` case by case.

:func:`scan_cases` turns them into one :class:`ScanRow` per case (the ratio (kᵘ·C⁻¹k̄)/(k̄·C⁻¹k̄),
cos(kᵘ, k̄), where the subject sits) and a :class:`ScanSummary` with the throughput (``python -m rome_collapse
scan``). :func:`roc_auc`, :func:`roc_curve` and :func:`catch_all` say how well a score predicts a label (numpy
only); :func:`screens`, :func:`roc_points` and :func:`plot_prediction` apply them to the pre-flight numbers against
the perplexity each edit really caused (notebook 08).
"""
from __future__ import annotations

import copy
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from .collapse import collapsed
from .data import CaseError, EditCase, fill
from .keys import CaseKeys
from .models import Bundle
from .stats import SecondMoment
from .tokens import pad_batch, subject_token_span, token_ids
from .trace import down_proj_input

COUNTERFACT_CASES = 21_919  # records in the official CounterFact file, for the projected time
DEFAULT_THRESHOLD = 0.1  # as rome.collapse_risk


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
    subject_first_token: bool  # one-token subject that is the very first token the model sees
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
                                    first == last == 0, float(ratio[i]), float(cos[i]), float(norm_u[i]),
                                    float(norm_bar[i]), float(dist[i]), bool(ratio[i] < threshold)))
            bar.update(len(part))
    seconds = time.perf_counter() - start
    per_s = len(cases) / seconds if seconds > 0 else float("inf")
    summary = ScanSummary(bundle.name, bundle.setting, layer, threshold, len(templates), len(cases),
                          sum(r.at_risk for r in rows), sum(r.subject_first_token for r in rows), seconds, n_text,
                          n_tokens,
                          n_tokens / seconds if seconds > 0 else float("inf"), per_s,
                          COUNTERFACT_CASES / per_s if per_s else float("inf"))
    return rows, summary


# --------------------------------------------------------------------------------------------
# How well a score predicts a label (numpy only)
# --------------------------------------------------------------------------------------------
def _check(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    scores, labels = np.asarray(scores, dtype=float), np.asarray(labels, dtype=bool)
    if scores.shape != labels.shape or scores.ndim != 1:
        raise ValueError("scores and labels must be 1-D and of the same length")
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN")
    return scores, labels


def roc_auc(scores, labels) -> float:
    """Area under the ROC curve of "score is high" predicting ``labels``: the chance that a random positive
    scores above a random negative, ties counting half (NaN when either class is empty)."""
    scores, labels = _check(scores, labels)
    pos, neg = scores[labels], scores[~labels]
    if not len(pos) or not len(neg):
        return float("nan")
    above = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(above / (len(pos) * len(neg)))


def roc_curve(scores, labels) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(false-positive rate, true-positive rate, thresholds) of "score ≥ threshold", thresholds falling,
    starting at (0, 0) with threshold +inf. Needs both classes present."""
    scores, labels = _check(scores, labels)
    if labels.all() or not labels.any():
        raise ValueError("the ROC curve needs positives and negatives")
    thresholds = np.unique(scores)[::-1]
    tpr = np.array([(scores[labels] >= t).mean() for t in thresholds])
    fpr = np.array([(scores[~labels] >= t).mean() for t in thresholds])
    return np.r_[0.0, fpr], np.r_[0.0, tpr], np.r_[np.inf, thresholds]


@dataclass
class CatchAll:
    """The least strict threshold on a score that flags every positive, and what it costs."""
    threshold: float  # flag when score ≥ threshold (NaN when there is no positive)
    positives: int
    negatives: int
    false_alarms: int  # negatives flagged too

    @property
    def false_alarm_rate(self) -> float:
        return self.false_alarms / self.negatives if self.negatives else float("nan")


def catch_all(scores, labels) -> CatchAll:
    """Flag every positive (score ≥ the lowest positive score) and count the negatives flagged with them."""
    scores, labels = _check(scores, labels)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if not n_pos:
        return CatchAll(float("nan"), 0, n_neg, 0)
    t = float(scores[labels].min())
    return CatchAll(t, n_pos, n_neg, int((scores[~labels] >= t).sum()))


# --------------------------------------------------------------------------------------------
# Screens: does a pre-flight number tell the edits that collapse from those that do not?
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Predictor:
    """A pre-flight number (a column of the scan) and which end of it is risky: "low", "high", or "either"
    (whichever separates better, said in the result: a simple predictor gets its best chance)."""
    name: str
    column: str
    risky: str


PREDICTORS = (
    Predictor("ratio", "ratio", "low"),
    Predictor("subject is the first token", "subject_first_token", "high"),
    Predictor("cos(kᵘ, k̄)", "cos_ku_kbar", "low"),
    Predictor("‖kᵘ‖", "unprefixed_key_norm", "either"),
)


def _risk(values, risky: str) -> np.ndarray:
    values = np.asarray(values, dtype=float)
    return -values if risky == "low" else values


def screen(values, labels, risky: str) -> dict:
    """AUC of ``values`` as a collapse screen, and the least strict threshold that catches every collapse with
    the harmless edits it would refuse. The threshold is in the values' own units: refuse at or below it
    (risky "low") or at or above it ("high")."""
    if risky == "either":
        low = roc_auc(_risk(values, "low"), labels)
        risky = "low" if np.isnan(low) or low >= 0.5 else "high"
    risk = _risk(values, risky)
    found = catch_all(risk, labels)
    threshold = found.threshold if risky == "high" or np.isnan(found.threshold) else -found.threshold
    return {"risky": risky, "auc": roc_auc(risk, labels), "collapses": found.positives, "harmless": found.negatives,
            "catch_all_threshold": threshold, "false_refusals": found.false_alarms,
            "false_refusal_rate": found.false_alarm_rate}


def screens(table, definitions: dict[str, float], predictors=PREDICTORS):
    """One row per collapse definition (name → perplexity factor) and predictor: :func:`screen` of the
    predictor's column of ``table`` against ``table["blowup"]`` above the factor."""
    import pandas as pd

    rows = []
    for definition, factor in definitions.items():
        labels = collapsed(table["blowup"], factor)
        for p in predictors:
            rows.append({"collapse": definition, "predictor": p.name, **screen(table[p.column], labels, p.risky)})
    return pd.DataFrame(rows)


def roc_points(table, definitions: dict[str, float], predictors=PREDICTORS):
    """The ROC curve of every predictor at every definition, long format (collapse, predictor, fpr, tpr), each
    predictor in the direction :func:`screen` uses; definitions with a single class are left out."""
    import pandas as pd

    parts = []
    for definition, factor in definitions.items():
        labels = collapsed(table["blowup"], factor)
        if labels.all() or not labels.any():
            continue
        for p in predictors:
            risky = screen(table[p.column], labels, p.risky)["risky"]
            fpr, tpr, _ = roc_curve(_risk(table[p.column], risky), labels)
            parts.append(pd.DataFrame({"collapse": definition, "predictor": p.name, "fpr": fpr, "tpr": tpr}))
    columns = ["collapse", "predictor", "fpr", "tpr"]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=columns)


def _outcomes(blowup, definitions: dict[str, float]) -> tuple[np.ndarray, list[str]]:
    """Each edit's outcome by the strictest definition its blow-up passes ("harmless" below the mildest), and the
    outcomes from the strictest down."""
    ordered = sorted(definitions, key=definitions.get)
    harmless = f"harmless (≤ {definitions[ordered[0]]:g}×)"
    out = np.full(len(blowup), harmless, dtype=object)
    for name in ordered:
        out[collapsed(blowup, definitions[name])] = f"blow-up {name}"
    return out, [f"blow-up {n}" for n in ordered[::-1]] + [harmless]


def _roc_panels(table, definitions: dict[str, float]) -> list[list[str]]:
    """The definitions grouped by the edits they call collapses: one ROC panel per group (identical panels
    would repeat each other)."""
    groups: dict[tuple, list[str]] = {}
    for name, factor in definitions.items():
        groups.setdefault(tuple(collapsed(table["blowup"], factor)), []).append(name)
    return list(groups.values())


def plot_prediction(table, points, found, definitions: dict[str, float], threshold: float = DEFAULT_THRESHOLD):
    """Left: each edit's perplexity blow-up against its pre-flight |ratio| (log-log, a cross where the ratio is
    negative), coloured by group. Middle: |ratio| of the edits per outcome (the strictest definition each passes),
    with the CLI's threshold (dotted) and the ratio's catch-all threshold at the strictest definition (dashed): the
    gap between the outcomes is what a threshold has to fall in. Right: the ROC curve of every predictor (AUC in the
    legend), one panel per set of definitions that mark the same edits. ``table`` has blowup, ratio and group;
    ``points`` is :func:`roc_points`, ``found`` :func:`screens`. Returns the figure."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    panels = _roc_panels(table, definitions)
    fig, axes = plt.subplots(1, 2 + len(panels), figsize=(5.0 * (2 + len(panels)), 4.4), squeeze=False)
    ax = axes[0, 0]
    blowup = table["blowup"].astype(float)
    top = float(np.nanmax(blowup[np.isfinite(blowup)])) * 3 if np.isfinite(blowup).any() else 1e6
    outcome, order = _outcomes(blowup, definitions)
    shown = table.assign(abs_ratio=table["ratio"].abs(), shown_blowup=blowup.where(np.isfinite(blowup), top),
                         sign=np.where(table["ratio"] < 0, "ratio < 0", "ratio ≥ 0"), outcome=outcome)
    markers = {"ratio ≥ 0": "o", "ratio < 0": "X"}
    palette = dict(zip(dict.fromkeys(shown["group"]), sns.color_palette()))
    sns.scatterplot(data=shown, x="abs_ratio", y="shown_blowup", hue="group", palette=palette, style="sign",
                    style_order=list(markers), markers=markers, s=45, ax=ax)
    for name, factor in definitions.items():
        ax.axhline(factor, color="grey", ls="--", lw=0.8)
        ax.text(shown["abs_ratio"].min(), factor * 1.08, f"collapse: {name}", fontsize=8, color="grey")
    ax.axvline(threshold, color="black", ls=":", lw=0.8)
    ax.set(xscale="log", yscale="log", xlabel="|pre-flight ratio| (kᵘ·C⁻¹k̄)/(k̄·C⁻¹k̄)",
           ylabel="ME-PPL after / before", title="perplexity blow-up of each ROME edit")
    ax.legend(fontsize=8, loc="upper right")
    ax = axes[0, 1]
    order = [o for o in order if (shown["outcome"] == o).any()]
    jitter = np.random.default_rng(0).uniform(-0.2, 0.2, len(shown))  # seeded: the same picture every run
    rows = shown.assign(y=shown["outcome"].map({o: i for i, o in enumerate(order)}) + jitter)
    for (group, sign), part in rows.groupby(["group", "sign"], sort=False):
        ax.scatter(part["abs_ratio"], part["y"], color=palette[group], marker=markers[sign], s=30)
    ax.set(xscale="log", yticks=range(len(order)), yticklabels=order, ylim=(len(order) - 0.5, -0.5))
    ax.axvline(threshold, color="black", ls=":", lw=0.8, label=f"CLI threshold {threshold:g}")
    strict = max(definitions, key=definitions.get)
    catch = found[(found["collapse"] == strict) & (found["predictor"] == "ratio")]["catch_all_threshold"]
    if len(catch) and catch.iloc[0] > 0:
        ax.axvline(catch.iloc[0], color="tab:red", ls="--", lw=0.8, label=f"catches all {strict}: {catch.iloc[0]:.3g}")
    ax.set(xlabel="|pre-flight ratio|", ylabel="", title="the ratio per outcome")
    ax.legend(fontsize=8, loc="lower right")
    styles = [("-", 5.0, 0.4), ("--", 3.0, 0.8), ("-.", 2.0, 0.9), (":", 1.6, 1.0)]  # thick to thin: all visible
    for ax, names in zip(axes[0, 2:], panels):
        name = names[0]
        part = points[points["collapse"] == name]
        for (predictor, curve), (ls, lw, alpha) in zip(part.groupby("predictor", sort=False), styles * 2):
            row = found[(found["collapse"] == name) & (found["predictor"] == predictor)].iloc[0]
            ax.plot(curve["fpr"], curve["tpr"], ls=ls, lw=lw, alpha=alpha, label=f"{predictor} (AUC {row['auc']:.2f})")
        ax.plot([0, 1], [0, 1], color="grey", lw=0.6, ls=":")
        n = found[found["collapse"] == name].iloc[0]
        same = " (same edits)" if len(names) > 1 else ""
        ax.set(xlim=(-0.02, 1.02), ylim=(-0.02, 1.02), xlabel="harmless edits refused (false-positive rate)",
               ylabel="collapses caught (true-positive rate)",
               title=f"ROC for blow-ups {', '.join(names)}{same}\n"
                     f"{n['collapses']} of {n['collapses'] + n['harmless']} edits")
        if len(part):
            ax.legend(fontsize=8, loc="lower right")
        else:
            ax.text(0.5, 0.5, "one class only: no ROC", ha="center", va="center")
    fig.tight_layout()
    return fig
