"""Notebook 06 (Tables 4 and 5): the claims ``c-rome-normal`` and ``test-prefix``, judged on the paper's metrics.

Both read one table with a row per edit (``outcomes.EditOutcome``): setting, variant, group, collapsed,
rewrite_acc, rephrase_acc, locality_acc and rewrite_acc_prefix (the rewrite accuracy with an editing prefix in front
of the rewrite prompt only, the authors' placement, averaged over every editing prefix).
"""
from __future__ import annotations

import pandas as pd

from .. import criteria
from ..claims import Judgement, Verdict

METRICS = {"rewrite_acc": "efficacy", "rephrase_acc": "generalization", "locality_acc": "locality"}


def table4(per_edit: pd.DataFrame) -> pd.DataFrame:
    """Mean paper metrics (and the rewrite accuracy behind a prefix) per setting, variant and group."""
    return per_edit.groupby(["setting", "variant", "group"])[[*METRICS, "rewrite_acc_prefix"]].mean()


def judge_fix(per_edit: pd.DataFrame, model: str, setting: str, n_prefixes: int) -> Judgement:
    """The two claims in one setting; the parts and thresholds are ``criteria.CRITERIA``'s rows of
    ``c-rome-normal`` (no C-ROME edit collapses; on normal cases ROME's mean rewrite, rephrase and locality
    accuracy exceed C-ROME's by at most the threshold) and ``test-prefix`` (C-ROME's collapse-prone rewrite
    accuracy low without a prefix, high with one). A part whose group has no edit is not testable."""
    e = per_edit[per_edit["setting"] == setting]
    means = table4(e)

    def mean(variant: str, group: str, column: str) -> float:
        return means[column].get((setting, variant, group), float("nan"))

    crome = e[e["variant"] == "c-rome"]
    normal = [criteria.check("c-rome-normal", "no-collapse", float(crome["collapsed"].astype(bool).sum()),
                             testable=bool(len(crome)))]
    for column, word in METRICS.items():
        gap = mean("rome", "normal", column) - mean("c-rome", "normal", column)
        normal.append(criteria.check("c-rome-normal", f"{word}-kept", gap,
                                     note=f"ROME {mean('rome', 'normal', column):.2f}, "
                                          f"C-ROME {mean('c-rome', 'normal', column):.2f}"))
    without, with_ = mean("c-rome", "collapse-prone", "rewrite_acc"), mean("c-rome", "collapse-prone",
                                                                            "rewrite_acc_prefix")
    prefix = [criteria.check("test-prefix", "low-without", without),
              criteria.check("test-prefix", "prefix-restores", with_, note=f"mean over {n_prefixes} prefixes")]
    keeps = "; ".join(f"{word} {mean('c-rome', 'normal', c):.2f} vs {mean('rome', 'normal', c):.2f}"
                      for c, word in METRICS.items())
    verdicts = [
        Verdict.from_parts("c-rome-normal", model, f"C-ROME vs ROME on normal cases: {keeps}; "
                           f"{int(crome['collapsed'].astype(bool).sum())}/{len(crome)} C-ROME edits collapse",
                           normal, setting),
        Verdict.from_parts("test-prefix", model, f"C-ROME's collapse-prone rewrite accuracy {without:.2f} without a "
                           f"prefix → {with_:.2f} with one (mean over {n_prefixes} editing prefixes)", prefix, setting)]
    rome_prone = (mean("rome", "collapse-prone", "rewrite_acc"), mean("rome", "collapse-prone", "locality_acc"))
    text = (f"**{setting} setting.** Table 4 (`c-rome-normal`) **{verdicts[0].verdict}**: {verdicts[0].measured}. "
            f"Table 5 (`test-prefix`) **{verdicts[1].verdict}**: {verdicts[1].measured}; C-ROME's rephrase accuracy on "
            f"those cases stays {mean('c-rome', 'collapse-prone', 'rephrase_acc'):.2f} (the authors never prefix "
            f"rephrase prompts). For reference, ROME on collapse-prone cases: rewrite accuracy {rome_prone[0]:.2f}, "
            f"locality {rome_prone[1]:.2f}.")
    return Judgement(verdicts, text, tuple(normal + prefix))
