"""What a sequential-editing run records, and the tables over runs (notebook 09).

:class:`StepRow`: one edit of a stream and the model right after it; :class:`SequentialResult`: a run's rows,
with the first edit after which perplexity is over a factor (``collapse.collapsed``: NaN or inf count as over)
and the edits since the measurement before it. :func:`summary` (one row per run) and :func:`trajectories`
(every run's rows) are the tables; ``sequential`` runs the streams and re-exports these names.
"""
from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from ..collapse import COLLAPSE_FACTOR, collapsed

if TYPE_CHECKING:
    from .sequential import Stream

THRESHOLDS = (2.0, COLLAPSE_FACTOR)  # perplexity factors marked on the trajectories


@dataclass
class StepRow:
    """One edit of a stream and the model right after it. ``ppl`` and ``retained_efficacy`` are None at the
    steps where they were not measured (every ``ppl_every`` / ``retain_every`` edits, and the last one)."""
    stream: str
    variant: str
    setting: str
    step: int  # 1-based: the number of edits in the model
    case_id: str
    group: str
    subject_first: bool
    subject: str
    target_new: str
    ratio: float  # (kᵘ·C⁻¹k̄)/(k̄·C⁻¹k̄) of this edit
    denominator: float
    numerator_norm: float
    update_norm: float  # ‖ΔW‖ of this edit
    total_update_norm: float  # ‖W − W₀‖ after it: all edits so far
    v_steps: int
    v_loss: float
    efficacy: float  # this edit's efficacy right after it (target_new beats target_true on its prompt)
    ppl: float | None = None
    ppl_ratio: float | None = None  # ppl / the unedited model's
    retained_efficacy: float | None = None  # mean efficacy over every fact edited so far (its latest target)
    retained_of: int | None = None  # how many facts that mean is over
    retained_first: float | None = None  # the same mean over the subject-first facts only (None: none yet)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class SequentialResult:
    stream: Stream
    variant: str
    setting: str
    ppl_before: float
    rows: list[StepRow]
    stopped: str | None = None  # why the run ended before the stream's end (None: it ran to the end)
    resumed_from: int = 0  # edits read back from a saved state when this run started
    state_path: Path | None = None
    ppl_every: int = 1

    @property
    def finished(self) -> bool:
        return self.stopped is not None or len(self.rows) == len(self.stream)

    def to_frame(self, with_start: bool = True) -> pd.DataFrame:
        """The rows as a table; ``with_start`` adds a step-0 row with the unedited model's perplexity."""
        rows = [r.to_dict() for r in self.rows]
        if with_start:
            rows.insert(0, {"stream": self.stream.name, "variant": self.variant, "setting": self.setting,
                            "step": 0, "ppl": self.ppl_before, "ppl_ratio": 1.0})
        return pd.DataFrame(rows, columns=[f.name for f in dataclasses.fields(StepRow)])

    def first_crossing(self, factor: float) -> StepRow | None:
        """The first edit after which the measured perplexity is over ``factor`` × the unedited one
        (:func:`crossing`). With ``ppl_every`` > 1 the crossing happened within the edits since the previous
        measurement (``window``)."""
        rows, measured = self._measured()
        hit = crossing(rows, measured, factor)
        return None if hit is None else self.rows[hit]

    def window(self, row: StepRow) -> list[StepRow]:
        """The edits since the previous perplexity measurement, up to and including ``row``."""
        rows, measured = self._measured()
        return [self.rows[i] for i in crossing_window(rows, measured, self.rows.index(row)).index]

    def _measured(self) -> tuple[pd.DataFrame, pd.Series]:
        """The rows as a table and which were measured. The rows themselves tell (``ppl`` None: not measured; NaN:
        measured on non-finite weights), so a run read back before its last measurement is not taken as crossing
        at its last edit, as :func:`measured_rows` must assume for a table."""
        return self.to_frame(with_start=False), pd.Series([r.ppl is not None for r in self.rows], dtype=bool)


# --------------------------------------------------------------------------------------------
# A run's table (``to_frame``/``trajectories`` rows of one run): where it first crossed a factor
# --------------------------------------------------------------------------------------------
def measured_rows(steps: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series]:
    """One run's edits (step > 0, indexed from 0) and which of them had perplexity measured. A run measures after
    its last edit whatever happens, and a measurement of non-finite weights is NaN: so the last edit counts as
    measured."""
    rows = steps[steps["step"] > 0].reset_index(drop=True)
    measured = rows["ppl"].notna()
    if len(rows):
        measured.iloc[-1] = True
    return rows, measured


def crossing(rows: pd.DataFrame, measured: pd.Series, factor: float) -> int | None:
    """Index of the first measured edit with perplexity over ``factor`` × the unedited one (``collapse.collapsed``:
    NaN or inf count as over), None if none."""
    over = measured & collapsed(rows["ppl_ratio"].astype(float), factor)
    return int(over.idxmax()) if over.any() else None


def crossing_window(rows: pd.DataFrame, measured: pd.Series, hit: int) -> pd.DataFrame:
    """The edits since the previous measurement, up to and including edit ``hit``."""
    before = rows.index[measured & (rows.index < hit)]
    start = before[-1] + 1 if len(before) else 0
    return rows.loc[start:hit]


def summary(results: list[SequentialResult], factors: tuple[float, ...] = THRESHOLDS) -> pd.DataFrame:
    """One row per run: edits done, the last measured perplexity, the first edit over each factor with what
    lies in its window (whether it holds a subject-first edit, and the group of the window's largest ‖ΔW‖),
    and the last measured retained efficacy."""
    out = []
    for res in results:
        measured = [r for r in res.rows if r.ppl is not None]
        retained = [r for r in res.rows if r.retained_efficacy is not None]
        row = {"stream": res.stream.name, "variant": res.variant, "setting": res.setting, "edits": len(res.rows),
               "of": len(res.stream), "subject_first_edits": sum(r.subject_first for r in res.rows),
               "ppl_before": res.ppl_before, "last_ppl": measured[-1].ppl if measured else float("nan"),
               "last_ppl_ratio": measured[-1].ppl_ratio if measured else float("nan"),
               "max_edit_update_norm": max((r.update_norm for r in res.rows), default=float("nan")),
               "retained_efficacy": retained[-1].retained_efficacy if retained else float("nan"),
               "retained_first": retained[-1].retained_first if retained else float("nan"),
               "stopped": res.stopped or ""}
        for f in factors:
            hit = res.first_crossing(f)
            window = res.window(hit) if hit else []
            biggest = max(window, key=lambda r: r.update_norm) if window else None
            row[f"first_{f:g}x"] = hit.step if hit else None
            row[f"first_{f:g}x_window"] = f"{window[0].step}–{window[-1].step}" if window else ""
            row[f"first_{f:g}x_subject_first_in_window"] = any(r.subject_first for r in window) if window else None
            row[f"first_{f:g}x_largest_edit_group"] = biggest.group if biggest else ""
        out.append(row)
    table = pd.DataFrame(out)
    for f in factors:
        if len(table):
            table[f"first_{f:g}x"] = table[f"first_{f:g}x"].astype("Int64")  # None where never crossed
    return table


def trajectories(results: list[SequentialResult]) -> pd.DataFrame:
    """Every run's rows in one table, with a step-0 row per run for the unedited model."""
    return pd.concat([r.to_frame() for r in results], ignore_index=True)
