"""The notebook table helpers (no model needed)."""
from types import SimpleNamespace

import pandas as pd

from rome_collapse import tables


def _edit(case_id, variant, denominator):
    return SimpleNamespace(case=SimpleNamespace(case_id=case_id),
                           report=SimpleNamespace(variant=variant, denominator=denominator))


def test_group_stats_flat_columns():
    df = pd.DataFrame({"group": ["a", "a", "b"], "x": [1.0, 3.0, 5.0]})
    out = tables.group_stats(df, ["x"])
    assert list(out.columns) == ["group", "x mean", "x min", "x max"]
    assert out.set_index("group").loc["a", "x mean"] == 2.0


def test_saved_edits_matches_only_the_same_edits(tmp_path):
    path = tmp_path / "edits.csv"
    assert tables.saved_edits(path, {"rome": [_edit(1, "rome", 0.5)]}, "paper") is None  # no file
    pd.DataFrame({"case_id": [1, 2, 1, 1], "variant": ["rome", "rome", "c-rome", "rome"],
                  "denominator": [0.5, 2.0, 3.0, 0.5], "setting": ["paper", "paper", "paper", "rome"],
                  "ppl_after": [10.0, 11.0, 12.0, 99.0]}).to_csv(path, index=False)
    edits = {"rome": [_edit(1, "rome", 0.5)], "c-rome": [_edit(1, "c-rome", 3.0)]}
    table = tables.saved_edits(path, edits, "paper")
    assert table is not None and sorted(table["ppl_after"]) == [10.0, 12.0]  # the other setting's row is not read
    assert tables.saved_edits(path, edits, "rome") is None  # no c-rome row in that setting
    assert tables.saved_edits(path, {"rome": [_edit(1, "rome", 0.6)]}, "paper") is None  # other denominator
    assert tables.saved_edits(path, {"rome": [_edit(3, "rome", 0.5)]}, "paper") is None  # case not in the table
