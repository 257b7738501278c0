"""Sequential editing: many ROME (or C-ROME) edits one after another, and how perplexity fares.

A *stream* is a seeded sequence of edit cases (``build_stream``): a realistic mix (about one in five
subject-first, i.e. collapse-prone) or normal cases only. ``run_stream`` applies its edits in order to
one model, each v* optimised on the model as edited so far (no batching across steps, no v* cache: the
single-edit cache is keyed by the weights as loaded, not as edited), and records one ``StepRow`` per edit:
the update's anatomy, the model's ME-PPL perplexity (every ``ppl_every`` edits) and, every
``retain_every`` edits, the efficacy that all edits of the stream so far still have. The records and the
tables over runs (``summary``, ``trajectories``) live in ``sequential_results`` and are re-exported here.

The run's state (the accumulated ΔW in float64 and the rows so far) is saved atomically to the cache
(``cache.py``) after every edit, keyed by everything that changes it; a stopped run resumes from its last completed
edit, and a finished one is read back. Whatever happens, the model's original weights are restored
when ``run_stream`` returns or raises.
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import pandas as pd
import torch
from tqdm.auto import tqdm

from .. import metrics, rome, values
from ..cache import digest, entry_path, load_tensors, save_tensors
from ..collapse import collapsed
from ..config import CACHE_VERSION
from ..data import EditCase
from ..keys import case_keys
from ..models import Bundle
from ..samples import case_group
from ..stats import SecondMoment
from .sequential_results import THRESHOLDS, SequentialResult, StepRow, summary, trajectories  # noqa: F401

log = logging.getLogger(__name__)

STREAMS = ("mixed", "normal")
STATE_VERSION = 2  # bumped when what a saved state holds changes
FIRST_SHARE = 0.2  # the mixed stream: about one edit in five has its subject as the first token


# --------------------------------------------------------------------------------------------
# Streams
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Stream:
    """Edit cases in the order they are applied, with each one's group (``samples.case_group``)."""
    name: str
    cases: tuple[EditCase, ...]
    groups: tuple[str, ...]
    seed: int

    def __len__(self) -> int:
        return len(self.cases)

    @property
    def case_ids(self) -> list[str]:
        return [str(c.case_id) for c in self.cases]

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame([{"stream": self.name, "step": i + 1, "case_id": str(c.case_id), "group": g,
                              "subject": c.subject, "prompt": c.prompt, "target_true": c.target_true,
                              "target_new": c.target_new} for i, (c, g) in enumerate(zip(self.cases, self.groups))])


def _relation_targets(cases: list[EditCase]) -> dict[str, list[str]]:
    targets: dict[str, set] = {}
    for c in cases:
        targets.setdefault(c.relation_id, set()).update((c.target_new, c.target_true))
    return {r: sorted(t) for r, t in targets.items()}


def _draw(cases: list[EditCase], n: int, rng: random.Random, targets: dict[str, list[str]]) -> list[EditCase]:
    """``n`` cases: first each case once (seeded order); beyond that, further passes over the cases, each case
    with a new target_new of its relation (another curated case's object) and an id ``<case_id>/<pass>``."""
    out = list(rng.sample(cases, len(cases)))[:n]
    used = {c.case_id: {c.target_true, c.target_new} for c in cases}
    rewrite = 0
    while len(out) < n:
        rewrite += 1
        added = 0
        for c in rng.sample(cases, len(cases)):
            new = [t for t in targets.get(c.relation_id, []) if t not in used[c.case_id]]
            if not new or len(out) == n:
                continue
            target = rng.choice(new)
            used[c.case_id].add(target)
            out.append(dataclasses.replace(c, case_id=f"{c.case_id}/{rewrite}", target_new=target))
            added += 1
        if not added:
            raise ValueError(f"only {len(out)} edits can be drawn from these {len(cases)} cases "
                             f"(their relations have no further targets); asked for {n}")
    return out


def build_stream(bundle: Bundle, cases: list[EditCase], kind: str, n_edits: int, seed: int = 0,
                 first_share: float = FIRST_SHARE) -> Stream:
    """A seeded stream of ``n_edits`` edits from ``cases`` (e.g. ``data.curated_cases()``).

    ``kind="mixed"``: ``round(first_share · n)`` collapse-prone cases (subject = first token; at least one when
    n ≥ 2) at random positions among cases of the other groups. ``kind="normal"``: normal cases only.
    Each case is used once; a stream longer than its pool goes round again with new targets (the same fact
    rewritten to another object of its relation), so that GPU-sized streams of 500+ edits can be drawn from
    the 161 curated cases. Later rewrites of a fact supersede earlier ones (see ``run_stream``'s retention).
    """
    if kind not in STREAMS:
        raise ValueError(f"unknown stream {kind!r}; use one of {', '.join(STREAMS)}")
    if n_edits < 1:
        raise ValueError("a stream needs at least one edit")
    rng = random.Random(f"{kind}-{seed}")
    groups = {c.case_id: case_group(bundle, c) for c in cases}
    targets = _relation_targets(cases)
    if kind == "normal":
        chosen = _draw([c for c in cases if groups[c.case_id] == "normal"], n_edits, rng, targets)
    else:
        n_first = round(first_share * n_edits)
        n_first = max(n_first, 1) if n_edits >= 2 and first_share > 0 else n_first
        first = _draw([c for c in cases if groups[c.case_id] == "collapse-prone"], n_first, rng, targets)
        rest = _draw([c for c in cases if groups[c.case_id] != "collapse-prone"], n_edits - n_first, rng, targets)
        at = set(rng.sample(range(n_edits), n_first))
        first_it, rest_it = iter(first), iter(rest)
        chosen = [next(first_it) if i in at else next(rest_it) for i in range(n_edits)]
    return Stream(kind, tuple(chosen), tuple(case_group(bundle, c) for c in chosen), seed)


# --------------------------------------------------------------------------------------------
# State on disk
# --------------------------------------------------------------------------------------------
def _tensor_digest(t: torch.Tensor) -> str:
    return hashlib.sha256(t.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes()).hexdigest()


def _state_key(bundle: Bundle, stream: Stream, variant: str, templates: list[str], second_moment: SecondMoment,
               ppl_texts: list[str], ppl_every: int, retain_every: int, stop_factor: float | None,
               original: torch.Tensor) -> dict:
    return {"model": bundle.weights_id, "add_bos": bundle.add_bos, "setting": second_moment.setting,
            "variant": variant, "hparams": asdict(bundle.hparams), "original_weight": _tensor_digest(original),
            "dtype": str(original.dtype), "stream": stream.name, "seed": stream.seed,
            "cases": digest([c.to_dict() for c in stream.cases]), "n_edits": len(stream),
            "templates": digest(templates), "second_moment": digest(second_moment.metadata),
            "ppl_texts": digest(ppl_texts), "ppl_every": ppl_every, "retain_every": retain_every,
            "stop_factor": stop_factor, "code_version": [CACHE_VERSION, STATE_VERSION]}


def state_path(key: dict) -> Path:
    """Where the state of the run with this key lives:
    ``<cache>/sequential/<model>/<stream>-<variant>-<setting>-<digest>.safetensors``."""
    return entry_path("sequential", key, ".safetensors", label=f"{key['stream']}-{key['variant']}-{key['setting']}")


def _save_state(path: Path, key: dict, delta: torch.Tensor, weight_digest: str, ppl_before: float,
                rows: list[StepRow], stopped: str | None) -> None:
    """Accumulated ΔW (float64) with the rows in the header: one file, replaced atomically."""
    save_tensors(path, key, {"delta": delta}, weight_digest=weight_digest, ppl_before=ppl_before,
                 rows=[r.to_dict() for r in rows], stopped=stopped)


def load_state(path: Path, key: dict | None = None) -> tuple[torch.Tensor, dict] | None:
    """(accumulated ΔW, header) of a saved state; None when missing, unreadable (a warning) or saved under
    another key (``key=None``: under any key). The stream then starts again."""
    entry = load_tensors(path, key)
    if entry is None or "delta" not in entry[0]:
        return None
    return entry[0]["delta"], entry[1]


# --------------------------------------------------------------------------------------------
# Running a stream
# --------------------------------------------------------------------------------------------
def _weight(bundle: Bundle, layer: int) -> torch.Tensor:
    return bundle.down_proj(layer).weight  # the parameter as stored (GPT-2's Conv1D: transposed)


def _efficacy(bundle: Bundle, cases: list[EditCase]) -> list[float]:
    """Efficacy only (rewrite prompt, target_new against target_true): two short prompts per case."""
    bare = [dataclasses.replace(c, paraphrase_prompts=(), neighborhood_prompts=()) for c in cases]
    return [m.efficacy for m in metrics.evaluate_cases(bundle, bare)]


def _perplexity_now(bundle: Bundle, ppl_texts: list[str], ppl_before: float, finite: bool) -> tuple[float, float]:
    """(perplexity, ppl_ratio) of the model as it stands: every edit of the stream so far, none undone. Not
    ``outcomes.measure_edit``, which applies one edit to the unedited weights and restores them after. Non-finite
    weights give NaN without a forward pass (``collapse.collapsed`` counts it as collapsed)."""
    ppl = metrics.perplexity(bundle, ppl_texts).mean if finite else float("nan")
    return ppl, ppl / ppl_before


def _latest_per_fact(edits: list[tuple[EditCase, str]]) -> list[tuple[EditCase, str]]:
    """(case, group) of the last edit of each fact (prompt and subject): what the model should hold now."""
    latest: dict[tuple[str, str], tuple[EditCase, str]] = {}
    for c, g in edits:
        latest.pop((c.prompt, c.subject), None)
        latest[(c.prompt, c.subject)] = (c, g)
    return list(latest.values())


def run_stream(bundle: Bundle, stream: Stream, variant: str, templates: list[str], second_moment: SecondMoment,
               ppl_texts: list[str], ppl_every: int = 1, retain_every: int | None = None,
               stop_factor: float | None = None, resume: bool = True, progress: bool = True,
               on_step: Callable[[StepRow], None] | None = None, ppl_before: float | None = None) -> SequentialResult:
    """Apply the stream's edits one after another with ``variant`` in ``second_moment``'s setting.

    Each step optimises v* on the model as edited so far (``values.optimize_values``: never the v* cache),
    reads the keys, makes the rank-one update, adds it to W, and measures: the edit's own efficacy;
    ME-PPL perplexity on ``ppl_texts`` every ``ppl_every`` edits and after the last; every ``retain_every``
    edits (default ``ppl_every``) and after the last, the mean efficacy of every fact edited so far.
    ``stop_factor``: end the run at the first measured perplexity over that many times the unedited one
    (or non-finite), e.g. 100 to spend no time on a model long collapsed; non-finite weights always end it.

    After each edit the state is saved to the cache, then ``on_step(row)`` is called (tests interrupt a run
    from there). With ``resume`` a run finds the state of an interrupted run with the same key, restores
    its weights and goes on from its last completed edit; a finished run is returned as saved.
    ``ppl_before``: the unedited model's perplexity on ``ppl_texts`` when already known (else measured here).
    The layer's original weights are put back, bit for bit, when this returns or raises.
    """
    if variant not in rome.VARIANTS:
        raise ValueError(f"variant must be one of {rome.VARIANTS}, got {variant!r}")
    ppl_every = max(1, int(ppl_every))
    retain_every = max(1, int(retain_every or ppl_every))
    layer = bundle.hparams.layer
    weight = _weight(bundle, layer)
    original = weight.detach().clone()
    key = _state_key(bundle, stream, variant, templates, second_moment, ppl_texts, ppl_every, retain_every,
                     stop_factor, original)
    path = state_path(key)
    cases = list(stream.cases)
    rows: list[StepRow] = []
    stopped, bar = None, None
    try:
        saved = load_state(path, key) if resume else None
        if saved is not None:
            delta, meta = saved
            with torch.no_grad():
                weight.copy_((original.double() + delta.to(original.device)).to(original.dtype))
            if _tensor_digest(weight) == meta["weight_digest"]:
                rows = [StepRow(**r) for r in meta["rows"]]
                ppl_before, stopped = meta["ppl_before"], meta["stopped"]
            else:  # cannot happen short of a changed torch; never continue from other weights
                log.warning("sequential state %s does not restore the saved weights; starting again", path)
                with torch.no_grad():
                    weight.copy_(original)
        setting = second_moment.setting
        result = SequentialResult(stream, variant, setting, float("nan"), rows, stopped, len(rows), path, ppl_every)
        result.ppl_before = ppl_before = metrics.perplexity_before(bundle, ppl_texts, ppl_before)
        if result.finished:
            return result
        bar = tqdm(total=len(stream), initial=len(rows), desc=f"{stream.name} stream, {variant} ({setting})",
                   disable=not progress)
        for i in range(len(rows), len(stream)):
            start, case, step = time.perf_counter(), cases[i], i + 1
            value = values.optimize_values(bundle, [case], templates)[0]
            case_k = case_keys(bundle, case.prompt, case.subject, templates, layer)
            edit = rome.make_edit(bundle, case, value, case_k, second_moment, variant, layer)
            rome.add_to_weight(bundle, edit)  # the run keeps the original W itself (to resume from saved states)
            r = edit.report
            row = StepRow(stream.name, variant, setting, step, str(case.case_id), stream.groups[i],
                          stream.groups[i] == "collapse-prone", case.subject, case.target_new, r.ratio,
                          r.denominator, r.numerator_norm, r.update_norm,
                          (weight.detach().double() - original.double()).norm().item(), value.steps,
                          value.final_loss, _efficacy(bundle, [case])[0])
            del edit, value
            finite = bool(torch.isfinite(weight).all())
            last = step == len(stream)
            if step % ppl_every == 0 or last or not finite:
                row.ppl, row.ppl_ratio = _perplexity_now(bundle, ppl_texts, ppl_before, finite)
            if step % retain_every == 0 or last:
                facts = _latest_per_fact(list(zip(cases[:step], stream.groups[:step])))
                scores = _efficacy(bundle, [c for c, _ in facts]) if finite else [float("nan")] * len(facts)
                first = [x for x, (_, g) in zip(scores, facts) if g == "collapse-prone"]
                row.retained_efficacy, row.retained_of = sum(scores) / len(scores), len(scores)
                row.retained_first = sum(first) / len(first) if first else None
            row.seconds = round(time.perf_counter() - start, 2)
            rows.append(row)
            if not finite:
                stopped = f"non-finite weights after edit {step}"
            elif stop_factor is not None and row.ppl_ratio is not None and collapsed(row.ppl_ratio, stop_factor):
                stopped = f"perplexity {row.ppl_ratio:.3g}× the unedited after edit {step} (stop at {stop_factor:g}×)"
            result.stopped = stopped
            delta = weight.detach().double() - original.double()
            _save_state(path, key, delta, _tensor_digest(weight), ppl_before, rows, stopped)
            bar.update(1)
            if row.ppl is not None:
                bar.set_postfix(ppl=f"{row.ppl:.4g}")
            if on_step is not None:
                on_step(row)
            if stopped:
                break
        return result
    finally:
        if bar is not None:
            bar.close()
        with torch.no_grad():
            weight.copy_(original)


def run_streams(bundle: Bundle, streams: list[Stream], variants: list[str], templates: list[str],
                second_moments: list[SecondMoment], ppl_texts: list[str], **kwargs) -> list[SequentialResult]:
    """``run_stream`` for every setting (one C each, ``second_moments``), stream and variant; the unedited
    model's perplexity is measured once for all."""
    kwargs["ppl_before"] = metrics.perplexity_before(bundle, ppl_texts, kwargs.get("ppl_before"))
    return [run_stream(bundle, stream, v, templates, C, ppl_texts, **kwargs)
            for C in second_moments for stream in streams for v in variants]
