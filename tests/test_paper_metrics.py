"""The paper's editing metrics (EasyEdit's token accuracies) against a hand-worked count on the tiny model: a plain
forward pass of the model, the argmax at each position before a target token, and the share that match."""
from __future__ import annotations

import pytest
import torch

from rome_collapse import metrics, rome
from rome_collapse.data import EditCase, load_cases

CASE = EditCase("paris", "{} is located in", "Paris", "Italy", "France",
                paraphrase_prompts=("Paris lies in the country of", "The city of Paris is in"),
                neighborhood_prompts=("Lyon is located in", "Marseille is a city in"))
PREFIXES = ["The weather is nice. {}", "I went home. {}"]


def by_hand(bundle, prompt: str, target: str) -> tuple[list[int], float]:
    """Argmax tokens at the target's positions and their share of hits, from the model's own forward pass."""
    tok = bundle.tokenizer
    prompt_ids = tok(prompt, add_special_tokens=False).input_ids
    full = tok(prompt + " " + target, add_special_tokens=False).input_ids
    with torch.no_grad():
        logits = bundle.model(torch.tensor([full])).logits[0]
    labels = full[len(prompt_ids):]
    answers = logits[len(prompt_ids) - 1:len(full) - 1].argmax(-1).tolist()
    return answers, sum(a == b for a, b in zip(answers, labels)) / len(labels)


def test_prediction_accuracy_is_the_share_of_target_tokens_that_are_the_argmax(tiny):
    prompts = [CASE.text, "Lyon is located in", "A much longer prompt, with more words, about"]
    targets = ["Italy", "the south of France", "Danielle Darrieux and friends"]
    got = metrics.prediction_accuracy(tiny, prompts, targets)  # one right-padded batch
    assert got == [by_hand(tiny, p, t)[1] for p, t in zip(prompts, targets)]
    assert all(0.0 <= g <= 1.0 for g in got)


def test_locality_is_the_share_of_tokens_the_edit_leaves_unchanged(tiny):
    reference = metrics.locality_reference(tiny, CASE)
    assert reference == [by_hand(tiny, p, "France")[0] for p in CASE.neighborhood_prompts]
    assert metrics.paper_scores(tiny, CASE, reference).locality_acc == 1.0  # no edit: nothing changed
    layer = tiny.hparams.layer
    torch.manual_seed(1)
    delta = torch.randn_like(tiny.weight(layer)) * 5  # a large random edit moves some argmax tokens
    edit = rome.Edit(CASE, layer, delta, report=None)
    with rome.applied(tiny, edit):
        after = [by_hand(tiny, p, "France")[0] for p in CASE.neighborhood_prompts]
        got = metrics.paper_scores(tiny, CASE, reference).locality_acc
    want = sum(sum(a == b for a, b in zip(post, pre)) / len(pre) for post, pre in zip(after, reference)) / 2
    assert got == pytest.approx(want) and got < 1.0


def test_rewrite_rephrase_and_prefix_scores(tiny):
    got = metrics.paper_scores(tiny, CASE, None, PREFIXES)
    assert got.rewrite_acc == by_hand(tiny, CASE.text, "Italy")[1]
    assert got.rephrase_acc == pytest.approx(sum(by_hand(tiny, p, "Italy")[1] for p in CASE.paraphrase_prompts) / 2)
    assert got.rewrite_acc_prefix == pytest.approx(
        sum(by_hand(tiny, p.format(CASE.text), "Italy")[1] for p in PREFIXES) / 2)
    assert got.locality_acc is None  # no reference given
    bare = metrics.paper_scores(tiny, EditCase("x", "{} is in", "Paris", "Italy", "France"))
    assert bare.rephrase_acc is None and bare.locality_acc is None and bare.rewrite_acc_prefix is None


def test_a_flat_record_scores_locality_against_its_own_ground_truth(tiny):
    case = load_cases([{"case_id": 1, "prompt": "Paris is located in", "subject": "Paris", "target_new": "Italy",
                        "ground_truth": "France", "rephrase_prompt": "Paris lies in the {| country of",
                        "locality_prompt": "Berlin is located in", "locality_ground_truth": "Germany"}])[0]
    assert case.prompt == "{} is located in" and case.text == "Paris is located in"
    assert metrics.locality_reference(tiny, case) == [by_hand(tiny, "Berlin is located in", "Germany")[0]]
    assert metrics.paper_scores(tiny, case).rephrase_acc == by_hand(tiny, "Paris lies in the {| country of",
                                                                    "Italy")[1]
