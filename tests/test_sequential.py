"""Sequential editing (notebook 09): seeded streams, resuming an interrupted run, weights restored, and v*
optimised on the model as edited so far. On the tiny random Llama: the bookkeeping must hold on any weights."""
import collections
import dataclasses

import pytest
import torch

from rome_collapse import keys, stats, values
from rome_collapse.samples import case_group
from rome_collapse.studies import sequential

N = 3  # edits per test stream


class Interrupted(RuntimeError):
    pass


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ROME_COLLAPSE_CACHE", str(tmp_path))
    return tmp_path


@pytest.fixture(scope="module")
def paper(tiny):
    """The tiny model in the paper's setting (C = I, no statistics needed), with a short v* optimisation."""
    paper = tiny
    return paper.with_hparams(v_num_grad_steps=4)


@pytest.fixture(scope="module")
def setup(tiny, curated):
    templates = keys.context_templates(tiny, seed=0, cache=False)
    stream = sequential.build_stream(tiny, curated, "mixed", N, seed=0)
    texts = ["The cat sat on the mat and looked out of the window.", "Paris is the capital city of France."]
    return templates, stream, texts


def run(bundle, setup, variant="rome", **kwargs):
    templates, stream, texts = setup
    kwargs = {"ppl_every": 2, "progress": False, **kwargs}
    return sequential.run_stream(bundle, stream, variant, templates, stats.covariance(bundle), texts, **kwargs)


def weight(tiny):
    return tiny.down_proj(tiny.hparams.layer).weight


def snapshots(tiny, store, fail_at=None):
    """on_step: keep the weights after each edit; raise after edit ``fail_at`` (an interruption)."""
    def on_step(row):
        store[row.step] = weight(tiny).detach().clone()
        if row.step == fail_at:
            raise Interrupted(f"stopped after edit {row.step}")
    return on_step


def comparable(rows):
    return [{k: v for k, v in r.to_dict().items() if k != "seconds"} for r in rows]


def test_streams_are_seeded_and_mixed_as_asked(tiny, curated):
    mixed = sequential.build_stream(tiny, curated, "mixed", 20, seed=0)
    assert len(mixed) == 20 and collections.Counter(mixed.groups)["collapse-prone"] == 4
    assert mixed.groups == tuple(case_group(tiny, c) for c in mixed.cases)
    assert len(set(mixed.case_ids)) == 20
    assert sequential.build_stream(tiny, curated, "mixed", 20, seed=0) == mixed
    assert sequential.build_stream(tiny, curated, "mixed", 20, seed=1).case_ids != mixed.case_ids
    assert "collapse-prone" in sequential.build_stream(tiny, curated, "mixed", 2, seed=0).groups
    normal = sequential.build_stream(tiny, curated, "normal", 20, seed=0)
    assert set(normal.groups) == {"normal"}
    with pytest.raises(ValueError, match="unknown stream"):
        sequential.build_stream(tiny, curated, "random", 3)


def test_streams_longer_than_the_pool_rewrite_facts_to_new_targets(tiny, curated):
    n_normal = sum(case_group(tiny, c) == "normal" for c in curated)
    long = sequential.build_stream(tiny, curated, "normal", n_normal + 30, seed=0)
    assert len(set(long.case_ids)) == len(long) and set(long.groups) == {"normal"}
    by_fact = collections.defaultdict(list)
    for c in long.cases:
        assert c.target_new != c.target_true
        by_fact[(c.prompt, c.subject)].append(c.target_new)
    assert any(len(targets) > 1 for targets in by_fact.values())
    assert all(len(set(targets)) == len(targets) for targets in by_fact.values())  # a new target each time
    with pytest.raises(ValueError, match="can be drawn"):
        sequential.build_stream(tiny, curated[:3], "normal", 500)


def test_an_interrupted_run_resumes_and_ends_as_an_uninterrupted_one(paper, setup, cache, tmp_path, monkeypatch):
    original = weight(paper).detach().clone()
    straight = {}
    full = run(paper, setup, on_step=snapshots(paper, straight))
    assert full.finished and full.resumed_from == 0 and [r.step for r in full.rows] == list(range(1, N + 1))
    assert torch.equal(weight(paper), original)  # restored bit for bit after the run
    assert [r.ppl is not None for r in full.rows] == [False, True, True]  # every 2nd edit and the last
    assert [r.retained_of for r in full.rows] == [None, 2, 3]

    monkeypatch.setenv("ROME_COLLAPSE_CACHE", str(tmp_path / "second"))  # a fresh cache for the second try
    resumed = {}
    with pytest.raises(Interrupted):
        run(paper, setup, on_step=snapshots(paper, resumed, fail_at=2))
    assert torch.equal(weight(paper), original)  # restored bit for bit after a failure
    (path,) = (tmp_path / "second" / "sequential").rglob("*.safetensors")
    delta, meta = sequential.load_state(path)
    assert len(meta["rows"]) == 2 and meta["stopped"] is None

    again = run(paper, setup, on_step=snapshots(paper, resumed))
    assert again.resumed_from == 2 and sorted(resumed) == [1, 2, 3]
    assert comparable(again.rows) == comparable(full.rows)
    assert again.ppl_before == full.ppl_before
    for step in range(1, N + 1):
        assert torch.equal(resumed[step], straight[step]), step  # the weights after every edit, bit for bit
    final, _ = sequential.load_state(again.state_path)
    assert torch.equal((original.double() + final).float(), straight[N])
    assert torch.equal(weight(paper), original)

    # A finished run is read back: no v* is optimised again.
    monkeypatch.setattr(values, "optimize_values", lambda *a, **k: pytest.fail("finished run recomputed"))
    cached = run(paper, setup)
    assert cached.resumed_from == N and comparable(cached.rows) == comparable(full.rows)


def test_v_star_is_optimised_on_the_edited_model_not_read_from_the_cache(paper, setup, cache, monkeypatch):
    seen = []
    real = values.optimize_values

    def spy(bundle, cases, *args, **kwargs):
        seen.append(weight(bundle).detach().clone())
        return real(bundle, cases, *args, **kwargs)

    monkeypatch.setattr(values, "optimize_values", spy)
    monkeypatch.setattr(values, "values_for", lambda *a, **k: pytest.fail("the single-edit v* cache was used"))
    after = {}
    original = weight(paper).detach().clone()
    run(paper, setup, on_step=snapshots(paper, after))
    assert len(seen) == N
    assert torch.equal(seen[0], original)
    for step in range(1, N):
        assert torch.equal(seen[step], after[step])  # edit step+1's v* saw the model with `step` edits
    assert not (cache / "values").exists()


def test_each_variant_setting_and_schedule_has_its_own_state(paper, setup, cache):
    templates, stream, texts = setup
    short = (templates, dataclasses.replace(stream, cases=stream.cases[:2], groups=stream.groups[:2]), texts)
    a, b, c = run(paper, short), run(paper, short, "c-rome"), run(paper, short, ppl_every=1)
    # ROME's original setting, with C from a few texts (computed here, not cached)
    with_c = stats.second_moment(paper, texts=texts * 4, corpus="test", cache=False, progress=False)
    d = sequential.run_stream(paper, short[1], "rome", templates, with_c, texts, ppl_every=2, progress=False)
    assert len({a.state_path, b.state_path, c.state_path, d.state_path}) == 4 and d.setting == "original"
    assert "-rome-original-" in d.state_path.name and all(r.setting == "original" for r in d.rows)
    # Edits to W do not change W's own input: both variants see the same keys, so the same ratios.
    assert [r.ratio for r in a.rows] == [r.ratio for r in b.rows]
    assert a.rows[0].v_loss == b.rows[0].v_loss and a.rows[0].update_norm != b.rows[0].update_norm
    measured = ("ppl", "ppl_ratio", "retained_efficacy", "retained_of", "retained_first")  # every edit, not every 2nd
    assert comparable(c.rows)[0] == {**comparable(a.rows)[0], **{k: getattr(c.rows[0], k) for k in measured}}
    assert a.rows[0].ppl is None and c.rows[0].ppl is not None


def test_a_stop_factor_ends_the_run_at_the_first_measurement_over_it(paper, setup, cache):
    res = run(paper, setup, ppl_every=1, stop_factor=1e-6)
    assert len(res.rows) == 1 and res.finished and "stop at" in res.stopped
    assert run(paper, setup, ppl_every=1, stop_factor=1e-6).stopped == res.stopped  # read back, not rerun


def test_first_crossing_window_and_summary():
    stream = sequential.Stream("mixed", (), (), 0)
    rows = [sequential.StepRow("mixed", "rome", "paper", i, str(i), g, g == "collapse-prone", "s", "t", 1.0, 1.0,
                               1.0, d, 1.0, 1, 0.0, 1.0, ppl=p, ppl_ratio=None if p is None else p / 10)
            for i, g, d, p in [(1, "normal", 1.0, None), (2, "normal", 2.0, None), (3, "normal", 1.0, 15.0),
                               (4, "collapse-prone", 50.0, None), (5, "normal", 1.0, None), (6, "normal", 3.0, float("inf"))]]
    res = sequential.SequentialResult(dataclasses.replace(stream, cases=(None,) * 6), "rome", "paper", 10.0, rows)
    assert res.first_crossing(1.2).step == 3 and res.first_crossing(10).step == 6
    assert [r.step for r in res.window(res.first_crossing(10))] == [4, 5, 6]
    table = sequential.summary([res])
    assert table.loc[0, "first_10x"] == 6 and table.loc[0, "first_10x_window"] == "4–6"
    assert table.loc[0, "first_10x_subject_first_in_window"] and table.loc[0, "first_10x_largest_edit_group"] == "collapse-prone"
    assert table.loc[0, "first_2x"] == 6 and table.loc[0, "edits"] == 6


def test_first_crossing_follows_the_collapse_rule():
    """Over the factor, as collapse.collapsed: a ratio exactly at it is not over; NaN (non-finite weights) is."""
    rows = [sequential.StepRow("normal", "rome", "paper", i, str(i), "normal", False, "s", "t", 1.0, 1.0, 1.0, 1.0,
                               1.0, 1, 0.0, 1.0, ppl=10.0 * ratio, ppl_ratio=ratio)
            for i, ratio in [(1, 10.0), (2, float("nan"))]]
    res = sequential.SequentialResult(sequential.Stream("normal", (None,) * 2, ("normal",) * 2, 0), "rome", "paper",
                                      10.0, rows)
    assert res.first_crossing(10).step == 2 and res.first_crossing(9.99).step == 1


def test_an_unfinished_run_does_not_cross_at_an_unmeasured_last_edit():
    """A run read back before its last measurement: its last row has no perplexity yet, and is not a crossing."""
    rows = [sequential.StepRow("normal", "rome", "paper", i, str(i), "normal", False, "s", "t", 1.0, 1.0, 1.0, 1.0,
                               1.0, 1, 0.0, 1.0, ppl=p, ppl_ratio=None if p is None else p / 10.0)
            for i, p in [(1, 12.0), (2, None)]]
    res = sequential.SequentialResult(sequential.Stream("normal", (None,) * 4, ("normal",) * 4, 0), "rome", "paper",
                                      10.0, rows)
    assert not res.finished and res.first_crossing(10) is None and res.first_crossing(1.1).step == 1

def test_a_truncated_state_is_not_trusted(paper, setup, cache):
    templates, stream, texts = setup
    one = (templates, dataclasses.replace(stream, cases=stream.cases[:1], groups=stream.groups[:1]), texts)
    first = run(paper, one)
    first.state_path.write_bytes(first.state_path.read_bytes()[:100])  # an interrupted write of another tool
    again = run(paper, one)
    assert again.resumed_from == 0 and comparable(again.rows) == comparable(first.rows)
    assert sequential.load_state(again.state_path) is not None
