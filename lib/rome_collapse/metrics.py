"""How an edit is scored, with the model as it is (``outcomes.measure_edits`` applies each edit around them).

* The paper's editing metrics (Tables 4 and 5 report EasyEdit's): :func:`paper_scores` — rewrite, rephrase and
  locality accuracy as token shares (:func:`prediction_accuracy`, :func:`locality_reference`), and the rewrite
  accuracy with a test-time editing prefix placed as the authors place it.
* CounterFact's probability scores (ROME's own test, a second family): :func:`evaluate_cases`.
* Perplexity as the paper's ME-PPL script computes it (:func:`perplexity`; the unedited model's, measured once:
  :func:`perplexity_before`) and greedy :func:`continuations`.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from tqdm.auto import tqdm

from .data import EditCase
from .models import Bundle
from .tokens import encode, pad_batch, subject_is_first_token, token_ids
from .trace import block_input, blocks_skipped, lm_logits, run_base


# --------------------------------------------------------------------------------------------
# The paper's metrics: EasyEdit's token accuracies (evaluate_utils.test_prediction_acc, editor.py)
# --------------------------------------------------------------------------------------------
def _argmax_at_targets(bundle: Bundle, prompts: list[str], targets: list[str],
                       batch_size: int = 16) -> list[tuple[list[int], list[int]]]:
    """For each prompt, teacher-forced on ``prompt + " " + target`` (tokenised together, BOS per the bundle): the
    model's argmax token at each position before a target token, and the target tokens themselves.

    As EasyEdit counts it: the target starts where the prompt tokenised alone ends, so the prompt's length is that
    of ``token_ids(prompt)`` even where the joint tokenisation splits the boundary differently. Right padding
    leaves every real position's logits as they are for a causal model; logits are computed only where read."""
    out = []
    for start in range(0, len(prompts), batch_size):
        rows, spans = [], []
        for prompt, target in zip(prompts[start:start + batch_size], targets[start:start + batch_size]):
            full = token_ids(bundle, prompt + " " + target)
            prompt_len = len(token_ids(bundle, prompt))
            if not 0 < prompt_len < len(full):
                raise ValueError(f"prompt {prompt!r} with target {target!r}: no target token to score")
            rows.append(full)
            spans.append((prompt_len, full[prompt_len:]))
        batch = pad_batch(bundle, rows)
        with torch.no_grad():
            hidden = run_base(bundle, batch).last_hidden_state
        for i, (prompt_len, labels) in enumerate(spans):
            positions = torch.arange(prompt_len - 1, prompt_len - 1 + len(labels), device=hidden.device)
            answers = lm_logits(bundle, hidden[i, positions]).argmax(-1).tolist()
            out.append((answers, labels))
    return out


def prediction_accuracy(bundle: Bundle, prompts: list[str], targets: list[str]) -> list[float]:
    """EasyEdit's ``test_prediction_acc``, one number per prompt: the share of the target's tokens that are the
    model's argmax at the position before them, teacher-forced on ``prompt + " " + target``."""
    return [sum(a == b for a, b in zip(answers, labels)) / len(labels)
            for answers, labels in _argmax_at_targets(bundle, prompts, targets)]


def locality_texts(case: EditCase) -> tuple[list[str], list[str]]:
    """(prompts, teacher-forced targets) of a case's locality check: EasyEdit's ``locality_prompt`` with its
    ``locality_ground_truth``, or ROME-format neighbourhood prompts with ``target_true``."""
    target = case.locality_target if case.locality_target is not None else case.target_true
    return list(case.neighborhood_prompts), [target] * len(case.neighborhood_prompts)


def locality_reference(bundle: Bundle, case: EditCase) -> list[list[int]]:
    """The unedited model's argmax tokens on the case's locality texts (take them before editing): EasyEdit's
    ``pre`` locality output, against which the edited model's tokens are compared."""
    prompts, targets = locality_texts(case)
    return [answers for answers, _ in _argmax_at_targets(bundle, prompts, targets)] if prompts else []


@dataclass
class PaperScores:
    """The paper's (EasyEdit's) metrics of one edit, each a share of tokens in [0, 1]; None where not measured."""
    rewrite_acc: float  # the rewrite prompt
    rephrase_acc: float | None  # mean over the paraphrase prompts
    locality_acc: float | None  # mean over the locality prompts: tokens unchanged by the edit
    rewrite_acc_prefix: float | None  # the rewrite prompt behind an editing prefix, mean over the prefixes

    def to_dict(self) -> dict:
        return asdict(self)


def paper_scores(bundle: Bundle, case: EditCase, locality_before: list[list[int]] | None = None,
                 prefixes: list[str] | None = None) -> PaperScores:
    """The paper's metrics of ``case`` on the model as it is now (wrap in ``rome.applied`` to score an edit).

    ``locality_before``: :func:`locality_reference` of the unedited model (no locality without it). ``prefixes``:
    editing prefixes (context templates other than "{}"); as the authors' editor does (editor.py 359–362) each is
    put in front of the *rewrite prompt only* — rephrase and locality prompts are never prefixed — for every
    request, and ``rewrite_acc_prefix`` is the mean over all of them: the expectation of their random choice."""
    texts = [case.text] + [p.format(case.text) for p in prefixes or []]
    paraphrases = list(case.paraphrase_prompts)
    acc = prediction_accuracy(bundle, texts + paraphrases, [case.target_new] * (len(texts) + len(paraphrases)))
    rewrite, with_prefix, rephrase = acc[0], acc[1:len(texts)], acc[len(texts):]
    locality = None
    if locality_before is not None and case.neighborhood_prompts:
        after = locality_reference(bundle, case)
        locality = sum(sum(a == b for a, b in zip(post, pre)) / len(pre)
                       for post, pre in zip(after, locality_before)) / len(after)
    return PaperScores(rewrite, sum(rephrase) / len(rephrase) if rephrase else None, locality,
                       sum(with_prefix) / len(with_prefix) if with_prefix else None)


# --------------------------------------------------------------------------------------------
# CounterFact's probability scores (ROME's own test)
# --------------------------------------------------------------------------------------------
def target_nll(bundle: Bundle, prompts: list[str], targets: list[str], batch_size: int = 32) -> torch.Tensor:
    """Mean negative log-probability per token of " " + target after each prompt (as CounterFact scores it)."""
    scores = []
    for start in range(0, len(prompts), batch_size):
        rows, where = [], []
        for prompt, target in zip(prompts[start:start + batch_size], targets[start:start + batch_size]):
            p = token_ids(bundle, prompt)
            t = bundle.tokenizer(" " + target, add_special_tokens=False).input_ids
            rows.append(p + t[:-1])
            where.append((len(p) - 1, t))
        batch = pad_batch(bundle, rows)
        with torch.no_grad():
            hidden = run_base(bundle, batch).last_hidden_state
        for i, (first, target_ids) in enumerate(where):
            positions = torch.arange(first, first + len(target_ids), device=hidden.device)
            log_probs = torch.log_softmax(lm_logits(bundle, hidden[i, positions]).float(), -1)
            picked = log_probs[torch.arange(len(target_ids)), torch.tensor(target_ids, device=hidden.device)]
            scores.append(-picked.mean())
    return torch.stack(scores).cpu()


def prefixed(prompt_text: str, prefix_template: str) -> str:
    """A test-time prefix: one of the editing templates ("<text>. {}") put in front of the prompt."""
    return prefix_template.format(prompt_text)


@dataclass
class CaseMetrics:
    case_id: int | str
    efficacy: float  # 1 if target_new beats target_true on the rewrite prompt
    generalization: float | None  # share of paraphrases where target_new wins
    locality: float | None  # share of neighbourhood prompts where target_true still wins
    p_new: float  # probability (per-token geometric mean) of target_new on the rewrite prompt
    p_true: float
    test_prefix: bool

    def to_dict(self) -> dict:
        return asdict(self)


def evaluate_cases(bundle: Bundle, cases: list[EditCase], test_prefix: str | None = None,
                   prefix_only_first_token: bool = True) -> list[CaseMetrics]:
    """Score each case with the model as it is now (wrap in ``rome.applied`` to score an edit).

    ``test_prefix`` (a template such as ``"The weather is nice. {}"``) is put in front of the
    prompts of cases whose subject is the very first token — the paper's test-time fix — or of
    every case when ``prefix_only_first_token`` is False.
    """
    prompts, targets, owners = [], [], []
    for k, case in enumerate(cases):
        use_prefix = test_prefix is not None and (
            not prefix_only_first_token or subject_is_first_token(bundle, case.prompt, case.subject))
        groups = {"rewrite": [case.text], "paraphrase": list(case.paraphrase_prompts),
                  "neighborhood": list(case.neighborhood_prompts)}
        for group, texts in groups.items():
            for text in texts:
                text = prefixed(text, test_prefix) if use_prefix else text
                for which, target in (("new", case.target_new), ("true", case.target_true)):
                    prompts.append(text)
                    targets.append(target)
                    owners.append((k, group, which, use_prefix))
    nll = target_nll(bundle, prompts, targets)
    table: dict = {}
    for (k, group, which, used), value in zip(owners, nll.tolist()):
        table.setdefault((k, group), {"new": [], "true": []})[which].append(value)
        table[(k, "prefix")] = used
    results = []
    for k, case in enumerate(cases):
        rewrite = table[(k, "rewrite")]

        def share(group, new_wins):
            if (k, group) not in table:
                return None
            g = table[(k, group)]
            wins = [(n < t) if new_wins else (t < n) for n, t in zip(g["new"], g["true"])]
            return sum(wins) / len(wins)

        results.append(CaseMetrics(case.case_id, float(rewrite["new"][0] < rewrite["true"][0]),
                                   share("paraphrase", True), share("neighborhood", False),
                                   math.exp(-rewrite["new"][0]), math.exp(-rewrite["true"][0]),
                                   table[(k, "prefix")]))
    return results


class LowerStates:
    """The residual stream entering block ``layer`` for each batch of a perplexity run, computed the first time
    and reused after: while only blocks ``layer`` and above change (one edit after another at that layer, each
    alone), blocks below it give the same output for the same tokens, so they are run once instead of per edit
    (``trace.blocks_skipped``; the perplexity is the same to the last bit). Shared by threads measuring edits on
    copies of one model (``parallel``); a state is computed from the weights below ``layer``, which no edit
    measured with it may change."""

    def __init__(self, layer: int):
        self.layer = layer
        self._states: dict[bytes, torch.Tensor] = {}

    def last_hidden_state(self, bundle: Bundle, batch) -> torch.Tensor:
        if self.layer == 0:
            return run_base(bundle, batch).last_hidden_state
        key = batch.input_ids.cpu().numpy().tobytes() + batch.attention_mask.cpu().numpy().tobytes()
        if key not in self._states:
            self._states[key] = block_input(bundle, self.layer, **batch.model_inputs(), use_cache=False)
        with blocks_skipped(bundle, self.layer, self._states[key]):
            return run_base(bundle, batch).last_hidden_state


@dataclass
class Perplexity:
    mean: float
    per_text: list[float]

    def to_dict(self) -> dict:
        return {"mean_perplexity": self.mean}


def perplexity(bundle: Bundle, texts: list[str], batch_size: int = 16, add_start_token: bool | None = None,
               progress: bool = False, logits_chunk: int = 512, lower: LowerStates | None = None) -> Perplexity:
    """Mean over texts of exp(mean token NLL), as the paper's ppl.py computes it.

    The texts are tokenised without special tokens; a BOS is put in front only when asked
    (``add_start_token``; by default when the bundle's BOS switch is on). Logits are computed only
    where a real next token is predicted, ``logits_chunk`` positions at a time: with Gemma-3's 262k
    vocabulary, logits for a whole padded batch would take gigabytes. ``lower``: the blocks below an edited
    layer run once for repeated measurements (:class:`LowerStates`).
    """
    add_start = bundle.add_bos if add_start_token is None else add_start_token
    rows = []
    for text in texts:
        ids = bundle.tokenizer(text, add_special_tokens=False).input_ids
        rows.append(([bundle.tokenizer.bos_token_id] if add_start else []) + ids)
    if any(len(r) < 2 for r in rows):
        raise ValueError("each text needs at least two tokens for perplexity")
    per_text = [0.0] * len(rows)
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
    for start in tqdm(range(0, len(order), batch_size), desc="perplexity", disable=not progress, leave=False):
        idx = order[start:start + batch_size]
        batch = pad_batch(bundle, [rows[i] for i in idx])
        predicts = batch.attention_mask[:, 1:].bool()  # right padding: position t is real when t + 1 is
        with torch.no_grad():
            hidden = (lower.last_hidden_state(bundle, batch) if lower else run_base(bundle, batch).last_hidden_state)
            hidden = hidden[:, :-1][predicts]
            targets = batch.input_ids[:, 1:][predicts]
            nll = torch.cat([torch.nn.functional.cross_entropy(
                lm_logits(bundle, hidden[s:s + logits_chunk]).float(), targets[s:s + logits_chunk], reduction="none")
                for s in range(0, len(targets), logits_chunk)])
        row_of = torch.arange(len(idx), device=nll.device).unsqueeze(1).expand_as(predicts)[predicts]
        nll_sum = torch.zeros(len(idx), dtype=nll.dtype, device=nll.device).index_add_(0, row_of, nll)
        ppl = torch.exp(nll_sum / predicts.sum(1))
        for i, value in zip(idx, ppl.tolist()):
            per_text[i] = value
    return Perplexity(sum(per_text) / len(per_text), per_text)


def perplexity_before(bundle: Bundle, texts: list[str], known: float | None = None,
                      lower: LowerStates | None = None) -> float:
    """The unedited model's mean perplexity on ``texts``, the ``ppl_before`` every edit's perplexity is divided by:
    ``known`` when the caller already measured it (once for many edits, settings or runs), else measured now."""
    return known if known is not None else perplexity(bundle, texts, lower=lower).mean


def continuations(bundle: Bundle, prompts: list[str], max_new_tokens: int = 16) -> list[str]:
    """Greedy continuation of each prompt (BOS per the bundle's switch), the new text only.

    One prompt at a time: no padding, so what is shown is exactly what the model says after that prompt."""
    out = []
    for prompt in prompts:
        batch = encode(bundle, [prompt])
        with torch.no_grad():
            ids = bundle.model.generate(**batch.model_inputs(), do_sample=False, max_new_tokens=max_new_tokens,
                                        pad_token_id=bundle.tokenizer.pad_token_id, top_p=None, top_k=None,
                                        temperature=None)
        out.append(bundle.tokenizer.decode(ids[0, batch.input_ids.shape[1]:], skip_special_tokens=True))
    return out
