"""Per-edit tables: reading an earlier run's measurement back only for exactly the same edits, the outcome's
round trip through a CSV, and the group summaries (no model needed); one edit measured (the tiny model)."""
from types import SimpleNamespace

import pandas as pd
import pytest
import torch

from rome_collapse import keys, outcomes, rome, stats
from rome_collapse.data import EditCase


def _edit(case_id, variant, denominator, numerator=1.0, setting="paper"):
    """An edit as saved_edits sees it: its case, its setting and its update's anatomy (ratio and ‖ΔW‖ follow the
    others)."""
    return SimpleNamespace(case=SimpleNamespace(case_id=case_id),
                           report=SimpleNamespace(variant=variant, setting=setting, denominator=denominator,
                                                  numerator_norm=numerator,
                                                  ratio=denominator / 4, update_norm=numerator / denominator))


def _anatomy(denominators, numerators=None):
    numerators = numerators or [1.0] * len(denominators)
    return {"denominator": denominators, "numerator_norm": numerators, "ratio": [d / 4 for d in denominators],
            "update_norm": [n / d for n, d in zip(numerators, denominators)]}


def test_group_stats_flat_columns():
    df = pd.DataFrame({"group": ["a", "a", "b"], "x": [1.0, 3.0, 5.0]})
    out = outcomes.group_stats(df, ["x"])
    assert list(out.columns) == ["group", "x mean", "x min", "x max"]
    assert out.set_index("group").loc["a", "x mean"] == 2.0


def test_saved_edits_matches_only_the_same_edits(tmp_path):
    path = tmp_path / "edits.csv"
    assert outcomes.saved_edits(path, {"rome": [_edit(1, "rome", 0.5)]}) is None  # no file
    pd.DataFrame({"case_id": [1, 2, 1, 1], "variant": ["rome", "rome", "c-rome", "rome"],
                  **_anatomy([0.5, 2.0, 3.0, 0.5]), "setting": ["paper", "paper", "paper", "original"],
                  "ppl_before": [9.0, 9.0, 9.0, 8.0], "ppl_after": [10.0, 11.0, 12.0, 99.0]}).to_csv(path, index=False)
    edits = {"rome": [_edit(1, "rome", 0.5)], "c-rome": [_edit(1, "c-rome", 3.0)]}
    table = outcomes.saved_edits(path, edits)
    assert table is not None and list(table["ppl_after"]) == [10.0, 12.0]  # the other setting's row is not read
    original = {v: [_edit(1, v, d, setting="original")] for v, d in (("rome", 0.5), ("c-rome", 3.0))}
    assert outcomes.saved_edits(path, original) is None  # no c-rome row in that setting
    assert list(outcomes.saved_edits(path, {"rome": original["rome"]})["ppl_after"]) == [99.0]  # its own row
    assert outcomes.saved_edits(path, {"rome": [_edit(1, "rome", 0.6)]}) is None  # other denominator
    # the same keys and C with another v*: only the numerator (and ΔW) differ, by as little as float noise
    assert outcomes.saved_edits(path, {"rome": [_edit(1, "rome", 0.5, 1.0 + 1e-7)]}) is None
    assert outcomes.saved_edits(path, {"rome": [_edit(3, "rome", 0.5)]}) is None  # case not in the table
    # the perplexity before editing must agree too (other texts, other model)
    assert outcomes.saved_edits(path, edits, ppl_before=9.0) is not None
    assert outcomes.saved_edits(path, edits, ppl_before=9.5) is None


def test_saved_edits_follows_the_order_of_the_edits_and_looks_where_asked():
    table = pd.DataFrame({"case_id": ["a", "b", "a", "b"], "variant": ["rome"] * 4, "setting": ["paper"] * 4,
                          **_anatomy([1.0, 2.0, 5.0, 6.0]), "ppl_after": [10.0, 20.0, 50.0, 60.0],
                          "BOS": ["with", "with", "without", "without"]})
    edits = {"rome": [_edit("b", "rome", 2.0), _edit("a", "rome", 1.0)]}
    assert outcomes.saved_edits(table, edits) is None  # each edit twice: ambiguous
    found = outcomes.saved_edits(table, edits, where={"BOS": "with"})
    assert list(found["ppl_after"]) == [20.0, 10.0]
    assert outcomes.saved_edits(table, edits, where={"BOS": "without"}) is None  # other denominators
    assert outcomes.saved_edits(table, edits, where={"other": 1}) is None  # no such column


def test_an_outcome_survives_a_csv_round_trip(tmp_path):
    scored = outcomes.EditOutcome(7, "normal", "rome", "paper", "Paris", "{} is in", "Rome", 1.5, 0.25, 0.125, 3.0,
                                  10.0, 1e3 / 3, True, 1.0, 0.5, None, 0.75, 1.0, 0.0, None)
    unscored = outcomes.EditOutcome(8, "collapse-prone", "c-rome", "rome", "Italy", "{} is", "Lisbon", 2.0, 1.0,
                                    1.0, 2.0, 10.0, float("inf"), True)
    path = tmp_path / "t.csv"
    pd.DataFrame([o.to_dict() for o in (scored, unscored)]).assign(extra=1).to_csv(path, index=False)
    back = [outcomes.EditOutcome.from_row(r) for _, r in pd.read_csv(path).iterrows()]
    assert back[0] == scored and back[0].locality_acc is None and back[0].rewrite_acc_prefix == 0.75
    assert back[1].ppl_after == float("inf") and back[1].rewrite_acc is None and back[1].case_id == 8
    assert back[0].ppl_ratio == pytest.approx(1e2 / 3) and back[1].ppl_ratio == float("inf")


PARIS = EditCase("paris", "{} is located in", "Paris", "Italy", "France", paraphrase_prompts=("Paris lies in",),
                 neighborhood_prompts=("Lyon is located in",))
TEXTS = ["The quick brown fox jumps over the lazy dog.", "Paris is the capital and largest city of France."]


def test_measure_edit_is_measure_edits_of_one_edit(tiny, monkeypatch, tmp_path):
    monkeypatch.setenv("ROME_COLLAPSE_CACHE", str(tmp_path))
    bundle = tiny
    templates = keys.context_templates(bundle, seed=0, cache=False)
    edit = rome.edit(bundle, PARIS, templates, stats.covariance(bundle))
    weight = bundle.weight(edit.layer).clone()
    many = outcomes.measure_edits(bundle, [edit], {"paris": "prone"}, TEXTS, test_prefixes=templates[1:3],
                                  progress=False)[0]
    one = outcomes.measure_edit(bundle, edit, TEXTS, test_prefixes=templates[1:3], group="prone")
    assert one == many
    assert one.group == "prone" and one.case_id == "paris" and one.setting == "paper"
    assert one.ppl_after != one.ppl_before and one.rewrite_acc_prefix is not None
    assert torch.equal(bundle.weight(edit.layer), weight)  # restored
    bare = outcomes.measure_edit(bundle, edit, TEXTS, ppl_before=2.0 * one.ppl_before, scores=False)
    assert bare.group == "?" and bare.ppl_before == 2.0 * one.ppl_before and bare.ppl_after == one.ppl_after
    assert bare.rewrite_acc is None and bare.cf_efficacy is None
