"""Small table helpers for the notebooks on denominators (01) and the fix (06).

* ``group_stats``: mean/min/max of some columns per group, with flat column names.
* ``score_edits``: efficacy, generalisation and locality of each edit alone, without perplexity
  (cheap: a few short prompts per edit), optionally with a test-time prefix.
* ``saved_edits``: notebook 01's per-edit table, when it holds exactly the given edits (checked by
  their denominators), so that notebook 06 need not measure the same perplexities again.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from . import metrics, rome
from .models import Bundle


def group_stats(table: pd.DataFrame, columns: list[str], by: list[str] | str = "group",
                stats: tuple[str, ...] = ("mean", "min", "max")) -> pd.DataFrame:
    """``table.groupby(by)[columns]`` summarised by ``stats``; columns named ``<column> <stat>``."""
    out = table.groupby(by)[columns].agg(list(stats))
    out.columns = [f"{col} {stat}" for col, stat in out.columns]
    return out.reset_index()


def score_edits(bundle: Bundle, edits: list[rome.Edit], groups: dict, test_prefix: str | None = None,
                progress: bool = True) -> pd.DataFrame:
    """Apply each edit alone and score its own case (``metrics.evaluate_cases``); weights restored after.

    ``groups`` maps case_id to its group. ``test_prefix`` goes in front of the prompts of cases whose
    subject is the first token (the paper's test-time fix, Table 5). One row per edit.
    """
    rows = []
    for e in tqdm(edits, desc="scoring edits", disable=not progress):
        with rome.applied(bundle, e):
            s = metrics.evaluate_cases(bundle, [e.case], test_prefix=test_prefix)[0]
        rows.append({"case_id": e.case.case_id, "group": groups.get(e.case.case_id, "?"),
                     "variant": e.report.variant, "subject": e.case.subject, "efficacy": s.efficacy,
                     "generalization": s.generalization, "locality": s.locality, "p_new": s.p_new,
                     "p_true": s.p_true, "test_prefix": bool(s.test_prefix)})
    return pd.DataFrame(rows)


def saved_edits(path: str | Path, edits: dict[str, list[rome.Edit]], setting: str, rtol: float = 1e-4) -> pd.DataFrame | None:
    """The per-edit table at ``path`` restricted to ``edits`` of ``setting``, or None when it is missing or does
    not hold every one of them with the same denominator (other C, templates, v* or cases)."""
    path = Path(path)
    if not path.exists():
        return None
    table = pd.read_csv(path)
    if not {"case_id", "variant", "denominator", "setting"} <= set(table.columns):
        return None
    table = table[table["setting"] == setting]
    wanted = {(str(e.case.case_id), v): e.report.denominator for v, es in edits.items() for e in es}
    ids = table["case_id"].astype(str)
    table = table[[(c, v) in wanted for c, v in zip(ids, table["variant"])]]
    ids = table["case_id"].astype(str)
    if len(table) != len(wanted) or len(set(zip(ids, table["variant"]))) != len(table):
        return None
    for c, v, d in zip(ids, table["variant"], table["denominator"]):
        if abs(d - wanted[(c, v)]) > rtol * max(abs(wanted[(c, v)]), 1e-12):
            return None
    return table.reset_index(drop=True)
