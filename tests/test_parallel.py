"""Work on several threads, each with its own copy of the model, and work done once instead of per edit: the same
results as doing all of it on one thread, in the same order, and the caller's weights left as they were."""
import threading
import time

import pytest
import torch

from rome_collapse import data, metrics, outcomes, parallel, rome, stats, values
from tolerances import V_STAR_FLOAT32, assert_agree, rounding


def test_map_on_copies_keeps_order_and_never_shares_a_model_between_running_calls(tiny):
    lock, running, used, overlaps = threading.Lock(), set(), set(), []

    def fn(b, item):
        with lock:
            overlaps.append(id(b.model) in running)
            running.add(id(b.model))
            used.add(id(b.model))
        time.sleep(0.01)  # long enough for the calls to overlap
        with lock:
            running.discard(id(b.model))
        return item * 2

    assert parallel.map_on_copies(tiny, fn, range(12), workers=3, progress=False) == [i * 2 for i in range(12)]
    assert not any(overlaps)  # no model used by two calls at once
    assert len(used) == 3 and id(tiny.model) in used  # the bundle itself and two copies
    assert parallel.map_on_copies(tiny, fn, [], workers=2, progress=False) == []
    with pytest.raises(ValueError, match="workers must be at least 1"):
        parallel.map_on_copies(tiny, fn, [1], workers=0)


def test_model_copies_are_deep_and_share_the_cache_identity(tiny):
    original, copy_ = parallel.model_copies(tiny, 2)
    assert original is tiny
    assert copy_.model is not tiny.model and copy_.weights_id == tiny.weights_id
    w = copy_.weight(1)
    with torch.no_grad():
        w.add_(1.0)
    assert not torch.equal(w, tiny.weight(1))  # editing the copy leaves the original alone


def test_an_error_in_a_worker_is_raised(tiny):
    def fn(b, item):
        if item == 3:
            raise RuntimeError("item 3 failed")
        return item

    with pytest.raises(RuntimeError, match="item 3 failed"):
        parallel.map_on_copies(tiny, fn, range(6), workers=2, progress=False)


def test_values_and_measured_edits_on_two_workers_equal_one(tiny, curated):
    tiny = tiny  # C = I: no statistics needed
    cases = curated[:5]
    templates = ["{}", "The weather is nice. {}", "I went home. {}"]
    one = values.values_for(tiny, cases, templates, cache=False, progress=False, batch_size=2)
    two = values.values_for(tiny, cases, templates, cache=False, progress=False, batch_size=2, workers=2)
    for a, b in zip(one, two):
        assert a.case_id == b.case_id and a.steps == b.steps
        assert_agree(b.v_star, a.v_star, V_STAR_FLOAT32)  # equal within rounding (README, Speed: 1.2e-6), not by construction

    weight = tiny.weight(1).clone()
    edits = rome.compute_edits(tiny, cases, templates, stats.SecondMoment.identity(), cache=False, progress=False)
    measured = [e for v in rome.VARIANTS for e in edits[v]]
    groups = {c.case_id: "g" for c in cases}
    texts = data.meppl("50:4")
    serial = outcomes.measure_edits(tiny, measured, groups, texts, progress=False)
    threaded = outcomes.measure_edits(tiny, measured, groups, texts, progress=False, workers=2)
    assert [o.to_dict() for o in threaded] == [o.to_dict() for o in serial]
    assert torch.equal(tiny.weight(1), weight)


def test_second_moment_on_two_workers_equals_one(tiny):
    texts = data.meppl("50")[:24]
    one, n_one = stats.compute_second_moment(tiny, 1, texts, token_budget=128, progress=False)
    two, n_two = stats.compute_second_moment(tiny, 1, texts, token_budget=128, progress=False, workers=2)
    assert n_one == n_two > 0
    # The same keys (the same batches), summed in float64 into two running sums that are then added: another order.
    assert_agree(two, one, rounding(torch.float64, n_one))


def test_perplexity_with_the_lower_blocks_run_once_is_the_same_to_the_bit(tiny, curated):
    tiny = tiny
    texts = data.meppl("50")[:6]
    edit = rome.compute_edits(tiny, curated[:1], ["{}", "I went home. {}"], stats.SecondMoment.identity(),
                              ("rome",), cache=False, progress=False)["rome"][0]
    lower = metrics.LowerStates(edit.layer)
    before = metrics.perplexity(tiny, texts, batch_size=4, lower=lower)  # fills the states, unedited
    assert before.per_text == metrics.perplexity(tiny, texts, batch_size=4).per_text
    with rome.applied(tiny, edit):
        full = metrics.perplexity(tiny, texts, batch_size=4)
        reused = metrics.perplexity(tiny, texts, batch_size=4, lower=lower)
    assert full.per_text != before.per_text  # the edit changed the model
    assert reused.per_text == full.per_text
    assert metrics.perplexity(tiny, texts, batch_size=4, lower=metrics.LowerStates(0)).per_text == before.per_text
