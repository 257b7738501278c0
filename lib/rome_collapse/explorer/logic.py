"""What the explorer's buttons do, as plain functions (no widgets): validate what a person typed
(:func:`read_case`, :func:`check_subject`), say what the model predicts (:func:`top_tokens`, :func:`read_model`)
and measure an edit that then stays in the model until undone (:func:`apply_and_read`).

The edit itself is ``rome.edit`` and its perplexity before and after (and the collapse verdict) is
``outcomes.measure_edit``: the explorer builds and measures an edit the way the notebooks do.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from .. import data, metrics, models, outcomes, rome
from ..tokens import encode, subject_token_span
from ..trace import lm_logits, run_base

FREE_TEXT_ID = "free text"


class InputError(ValueError):
    """Something typed into the explorer that cannot be edited; the message says what to fix."""


def read_case(prompt: str, subject: str, target_new: str = "", target_true: str = "",
              curated: data.EditCase | None = None, need_targets: bool = True) -> data.EditCase:
    """The edit request typed into the explorer, validated; the curated case itself when nothing was changed
    (it keeps its paraphrases and neighbours). Raises :class:`InputError` with a message a person can act on."""
    if curated is not None and (prompt, subject, target_new, target_true) == (
            curated.prompt, curated.subject, curated.target_new, curated.target_true):
        return curated
    if "{}" not in prompt:
        hint = (f": replace “{subject.strip()}” in it by {{}}" if subject.strip() and subject.strip() in prompt
                else ", e.g. “{} is located in”")
        raise InputError(f"The prompt has no {{}}. Write {{}} where the subject goes{hint}.")
    if prompt.count("{}") > 1:
        raise InputError("The prompt has more than one {}: keep one, where the subject goes.")
    if not subject.strip():
        raise InputError("The subject is not in the prompt: type the subject that fills the {} (it is empty).")
    if need_targets:
        for name, value in (("target_new", target_new), ("target_true", target_true)):
            if not value.strip():
                raise InputError(f"{name} is empty: type the {'new' if name == 'target_new' else 'true'} "
                                 "object of the fact (what should follow the prompt).")
    else:  # the pre-flight check reads the prompt and the subject only
        target_new, target_true = "?", "??"
    record = {"case_id": FREE_TEXT_ID, "requested_rewrite": {
        "prompt": prompt, "subject": subject, "target_new": {"str": target_new},
        "target_true": {"str": target_true}}}
    try:
        return data.parse_case(record)
    except data.CaseError as exc:
        raise InputError(str(exc).replace(f"case {FREE_TEXT_ID}: ", "")) from exc


def check_subject(bundle: models.Bundle, case: data.EditCase) -> None:
    """Raise :class:`InputError` when the subject cannot be found among the prompt's tokens."""
    try:
        subject_token_span(bundle, case.prompt, case.subject)
    except ValueError as exc:
        raise InputError(f"The subject “{case.subject}” is not in the prompt's tokens ({exc}).") from exc


def top_tokens(bundle: models.Bundle, text: str, k: int = 5) -> list[tuple[str, float]]:
    """The ``k`` most likely next tokens after ``text`` and their probabilities (BOS per the bundle's switch)."""
    with torch.no_grad():  # logits at the last position only (Gemma-3's vocabulary has 262,144 tokens)
        logits = lm_logits(bundle, run_base(bundle, encode(bundle, [text])).last_hidden_state[0, -1]).float()
    probs = torch.softmax(logits, -1)
    top = torch.topk(probs.nan_to_num(0.0), k)
    return [(bundle.tokenizer.decode([i]), p) for i, p in zip(top.indices.tolist(), top.values.tolist())]


@dataclass
class Reading:
    """What the model says about one case at one moment (before or after the edit)."""
    perplexity: float  # ME-PPL
    scores: metrics.CaseMetrics  # CounterFact's scores
    rewrite_acc: float  # the paper's efficacy: share of target_new's tokens that are the argmax (teacher-forced)
    top: list[tuple[str, float]]
    continuation: str


def read_model(bundle: models.Bundle, case: data.EditCase, perplexity: float, test_prefix: str | None = None,
               max_new_tokens: int = 16) -> Reading:
    """The case's scores, top-5 next tokens and greedy continuation of its prompt (behind ``test_prefix`` when
    given), next to the model's ME-PPL ``perplexity`` measured by the caller."""
    prompt = metrics.prefixed(case.text, test_prefix) if test_prefix else case.text
    scores = metrics.evaluate_cases(bundle, [case], test_prefix=test_prefix, prefix_only_first_token=False)[0]
    rewrite_acc = metrics.prediction_accuracy(bundle, [prompt], [case.target_new])[0]
    return Reading(perplexity, scores, rewrite_acc, top_tokens(bundle, prompt),
                   metrics.continuations(bundle, [prompt], max_new_tokens)[0])


def apply_and_read(session: rome.EditSession, edit: rome.Edit, ppl_texts: list[str],
                   test_prefix: str | None = None, ppl_before: float | None = None,
                   on_stage: Callable[[str], None] | None = None) -> tuple[outcomes.EditOutcome, Reading, Reading]:
    """Measure ``edit`` on the unedited model of ``session`` and leave it applied there (until ``undo_all``).

    The perplexity before and after and the collapse verdict are ``outcomes.measure_edit``'s (``ppl_before``:
    the unedited ME-PPL when known). What the explorer shows besides (CounterFact's scores and the rewrite
    accuracy behind the one test-time prefix chosen in the widget, top tokens, a continuation, before and after)
    is not in an outcome row, so it is read here, with the edit out and then in. ``on_stage(text)`` says what
    is being measured."""
    say = on_stage or (lambda text: None)
    bundle = session.bundle
    say("measuring ME-PPL before and after the edit…")
    outcome = outcomes.measure_edit(bundle, edit, ppl_texts, ppl_before, scores=False)  # restores the weights
    say("measuring the unedited model…")
    before = read_model(bundle, edit.case, outcome.ppl_before, test_prefix)
    say("measuring the edited model…")
    session.apply(edit)
    after = read_model(bundle, edit.case, outcome.ppl_after, test_prefix)
    return outcome, before, after
