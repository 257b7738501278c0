"""The verdicts of the notebooks beyond the paper: 08 (``predict-collapse``), 09 (``sequential``) and 10
(``clamp-study``).

Each rule measures the parts of its claim that ``criteria.CRITERIA`` lists and returns a ``claims.Judgement``
(verdicts, findings in Markdown, the parts). The thresholds are the table's; the findings are rendered from the
numbers apart from the rule. numpy/pandas only, no torch.
"""
from __future__ import annotations

import math

import pandas as pd

from .. import criteria
from ..claims import Judgement, Verdict
from ..collapse import COLLAPSE_FACTOR, collapsed
from ..studies.sequential_results import crossing, crossing_window, measured_rows


def _difference(a: float, b: float) -> float:
    """a − b without float noise (0.6 − 0.5 is 0.1 here, not 0.0999…): the values are means of a few shares."""
    return round(float(a) - float(b), 12)


# --------------------------------------------------------------------------------------------
# Notebook 08: does the pre-flight ratio predict the collapse?
# --------------------------------------------------------------------------------------------
def strict_and_mild(definitions: dict[str, float]) -> tuple[str, str]:
    """The names of the collapse definitions with the largest and the smallest perplexity factor."""
    ordered = sorted(definitions, key=definitions.get)
    return ordered[-1], ordered[0]


def _two_classes(row) -> bool:
    return row["collapses"] > 0 and row["harmless"] > 0


def _one_class_note(row, definition: str) -> str:
    return f"no {'collapse' if row['collapses'] == 0 else 'harmless edit'} ({definition}) among these edits"


def _beats_simpler(screens: pd.DataFrame, strict: str, ratio_auc: float) -> criteria.PartResult:
    """The ratio's AUC margin over the best simpler sign. The largest margin the ratio can reach is 1 − that
    sign's AUC: when that room is not above the threshold, the part cannot pass on these cases — not testable."""
    simpler = screens[(screens["collapse"] == strict) & (screens["predictor"] != "ratio")]
    if not len(simpler):
        return criteria.check("predict-collapse", "beats-simpler", None, "no simpler sign was screened")
    best = simpler.loc[simpler["auc"].idxmax()]
    margin = _difference(ratio_auc, best["auc"])
    if _difference(1.0, best["auc"]) <= criteria.criterion("predict-collapse", "beats-simpler").threshold:
        return criteria.check("predict-collapse", "beats-simpler", margin, testable=False, note=(
            f"'{best['predictor']}' already has AUC {best['auc']:.2f}, so on these cases no sign can beat it by "
            "the margin"))
    return criteria.check("predict-collapse", "beats-simpler", margin,
                          f"best simpler sign: '{best['predictor']}', AUC {best['auc']:.2f}")


def predict_collapse_parts(screens: pd.DataFrame, definitions: dict[str, float]) -> list[criteria.PartResult]:
    """The parts of ``predict-collapse`` from ``studies.screening.screens`` (one row per collapse definition and
    predictor: auc, collapses, harmless, catch_all_threshold, false_refusals, false_refusal_rate; the ratio's
    predictor is named "ratio"). The strict definition (largest factor) is the collapse; the mildest gives
    ``separates-mild``."""
    claim = "predict-collapse"
    by = screens.set_index(["collapse", "predictor"])
    strict, mild = strict_and_mild(definitions)
    r = by.loc[(strict, "ratio")]
    if _two_classes(r):
        parts = [criteria.check(claim, "separates", r["auc"]),
                 criteria.check(claim, "few-false-refusals", r["false_refusal_rate"],
                                f"{int(r['false_refusals'])}/{int(r['harmless'])} refused at ratio ≤ "
                                f"{r['catch_all_threshold']:.3g}"),
                 _beats_simpler(screens, strict, r["auc"])]
    else:
        why = _one_class_note(r, strict)
        parts = [criteria.check(claim, p, None, why) for p in ("separates", "few-false-refusals", "beats-simpler")]
    m = by.loc[(mild, "ratio")]
    if mild == strict:
        parts.append(criteria.check(claim, "separates-mild", None, "only one collapse definition was screened"))
    elif _two_classes(m):
        parts.append(criteria.check(claim, "separates-mild", m["auc"], f"{int(m['collapses'])} blow-ups {mild}"))
    else:
        parts.append(criteria.check(claim, "separates-mild", None, _one_class_note(m, mild)))
    order = [c.part for c in criteria.parts_of(claim)]
    return sorted(parts, key=lambda p: order.index(p.part))


def roc_note(screens: pd.DataFrame, table: pd.DataFrame, definitions: dict[str, float]) -> str:
    """Why the ROC figure looks as it does, in words ("" when nothing is degenerate). ``table``: one row per
    ROME edit (ppl_ratio, and group where known)."""
    notes = []
    labels = {d: collapsed(table["ppl_ratio"], f) for d, f in definitions.items()}
    names = list(definitions)
    if len(names) > 1 and all((labels[n] == labels[names[0]]).all() for n in names[1:]):
        notes.append(f"the definitions ({', '.join(names)}) mark the same {int(labels[names[0]].sum())} edits as "
                     "collapses — no edit's blow-up lies between them — so one ROC panel stands for all")
    perfect = [d for d in names if len(screens[screens["collapse"] == d])
               and (screens.loc[screens["collapse"] == d, "auc"] == 1.0).all()]
    if perfect:
        note = (f"every sign separates the edits perfectly ({', '.join(perfect)}: AUC 1.00 for each), so every ROC "
                "curve runs straight up the left edge and along the top: the curves say no more than the AUC, and "
                "the distribution of the ratio per outcome shows how wide the gap is")
        if "group" in table:
            hit = labels[strict_and_mild(definitions)[0]]
            prone = (table["group"] == "collapse-prone").to_numpy()
            if prone.any() and (hit == prone).all():
                note += ("; the reason: every collapse-prone (subject-first) edit collapses and no other does, so any "
                         "sign that tells subject-first cases apart is perfect here")
        notes.append(note)
    return ("The ROC panel is degenerate: " + "; ".join(notes) + ".") if notes else ""


def _answers(parts: dict[str, criteria.PartResult]) -> tuple[str, str]:
    """The notebook's two questions answered from the parts: a screen? better than simpler signs?"""
    screen = [parts["separates"], parts["few-false-refusals"]]
    if any(p.passed is None for p in screen):
        first = "not testable on these edits (" + screen[0].note + ")"
    elif all(p.passed for p in screen):
        first = "yes — on these edits the keys alone tell the collapsing edits as well as running them"
        if parts["separates-mild"].passed is False:
            first += ", though not the milder blow-ups"
    else:
        first = "no — it misses collapses or refuses too many harmless edits"
    b = parts["beats-simpler"]
    if b.passed is None:
        second = f"cannot be told on this model — {b.note} (not testable, which is not a yes)"
    elif b.passed:
        second = f"yes, by {b.value:.2f} in AUC ({b.note})"
    else:
        second = f"no — {b.note}, as good as the ratio (margin {b.value:+.2f})"
    return first, second


def judge_predict_collapse(screens: pd.DataFrame, table: pd.DataFrame, model: str, setting: str,
                           definitions: dict[str, float]) -> Judgement:
    """Notebook 08: claim ``predict-collapse`` (parts: separates, few-false-refusals, separates-mild,
    beats-simpler; see :func:`predict_collapse_parts`). ``table``: one row per ROME edit (ppl_ratio, at_risk: the
    CLI's default threshold). Why the ROC figure is degenerate, when it is, is :func:`roc_note`."""
    parts = predict_collapse_parts(screens, definitions)
    by = screens.set_index(["collapse", "predictor"])
    strict, mild = strict_and_mild(definitions)
    at_risk, hit = table["at_risk"].astype(bool), collapsed(table["ppl_ratio"], definitions[strict])

    def line(d):
        r = by.loc[(d, "ratio")]
        return (f"{d}: {int(r['collapses'])} collapses, AUC {r['auc']:.2f}, refusing ratio ≤ "
                f"{r['catch_all_threshold']:.3g} catches all and refuses {int(r['false_refusals'])}/"
                f"{int(r['harmless'])} harmless edits")

    measured = "; ".join([f"{len(table)} ROME edits ({setting})"] + [line(d) for d in dict.fromkeys((strict, mild))]
                         + [f"CLI default 0.1 catches {int((at_risk & hit).sum())}/{int(hit.sum())} "
                            f"(> {definitions[strict]:g}×), refuses {int((at_risk & ~hit).sum())}/{int((~hit).sum())}"])
    verdict = Verdict.from_parts("predict-collapse", model, measured, parts, setting)
    first, second = _answers({p.part: p for p in parts})
    simpler = screens[(screens["collapse"] == strict) & (screens["predictor"] != "ratio")]
    simple = "; ".join(f"{r['predictor']}: AUC {r['auc']:.2f}, catch-all refuses {int(r['false_refusals'])}/"
                       f"{int(r['harmless'])}" for _, r in simpler.iterrows())
    text = (f"the claim **{verdict.verdict}**. Can the ratio replace running the edit as a collapse screen? {first}. "
            f"Does it beat simpler signs? {second}.\n\n- {measured}.\n- Simpler signs ({strict}) — {simple or 'none'}.")
    return Judgement([verdict], text, tuple(parts))


# --------------------------------------------------------------------------------------------
# Notebook 09: sequential editing
# --------------------------------------------------------------------------------------------
def _rome_run(stream: str, rows: pd.DataFrame, measured: pd.Series, factor: float) -> tuple[bool | None, str, str]:
    """(blamed: the first crossing's window holds a subject-first edit that is its largest ‖ΔW‖, None without a
    crossing; the long line; the short line) of one ROME run."""
    hit, hit2 = crossing(rows, measured, factor), crossing(rows, measured, 2.0)
    if hit is None:
        last = rows.loc[measured, "ppl_ratio"].iloc[-1]
        over2 = f"over 2× at edit {int(rows.step[hit2])}" if hit2 is not None else "within 2×"
        return (None, f"ROME, {stream} stream: no collapse in {len(rows)} edits ({over2}; last {last:.3g}×)",
                f"ROME {stream}: no collapse in {len(rows)} edits")
    window = crossing_window(rows, measured, hit)
    biggest = window.loc[window["update_norm"].idxmax()]
    firsts = [int(s) for s, first in zip(window["step"], window["subject_first"]) if bool(first)]
    biggest_first = bool(biggest["subject_first"])
    at, at2 = rows.loc[hit], rows.loc[hit2]
    long = (f"ROME, {stream} stream: over 2× at edit {int(at2.step)}, over {factor:g}× at edit {int(at.step)} "
            f"({at.ppl_ratio:.3g}×); since the previous measurement (edits {int(window.step.iloc[0])}–"
            f"{int(at.step)}) the subject-first edits are {firsts or 'none'}, the largest ‖ΔW‖ "
            f"({biggest.update_norm:.3g}) is edit {int(biggest.step)} ({biggest.group}, ratio {biggest.ratio:.3g})")
    short = (f"ROME {stream}: over {factor:g}× at edit {int(at.step)} ({at.ppl_ratio:.3g}×), "
             + (f"subject-first edit {int(biggest.step)} the largest" if biggest_first
                else f"largest edit {int(biggest.step)} is {biggest.group}"))
    return bool(firsts) and biggest_first, long, short


def judge_sequential(steps: pd.DataFrame, model: str, setting: str, factor: float = COLLAPSE_FACTOR) -> Judgement:
    """Notebook 09: claim ``sequential`` in one setting, from ``studies.sequential.trajectories`` (one row per edit
    of every run, step 0 the unedited model; columns stream, variant, setting, step, group, subject_first, ratio,
    update_norm, ppl, ppl_ratio). ROME runs that count are those whose edits include a subject-first one.

    Parts: ``c-rome-stays`` (C-ROME runs whose measured perplexity goes over ``factor`` × the unedited),
    ``rome-collapses`` (share of counted ROME runs that do), ``at-subject-first`` (share of those collapses whose
    window — the edits since the previous measurement — holds a subject-first edit that is its largest ‖ΔW‖)."""
    claim = "sequential"
    runs = list(steps[steps["setting"] == setting].groupby(["stream", "variant"], sort=False))
    long, short, crome_over, collapses, blamed = [], [], [], [], []
    for (stream, variant), run in runs:
        rows, measured = measured_rows(run)
        if variant == "c-rome":
            crome_over.append(crossing(rows, measured, factor) is not None)
            worst = rows.loc[measured, "ppl_ratio"].max()
            long.append(f"C-ROME, {stream} stream: at most {worst:.3g}× the unedited perplexity in {len(rows)} edits")
            short.append(f"C-ROME {stream}: ≤ {worst:.2f}× in {len(rows)} edits")
    for (stream, variant), run in runs:
        if variant != "rome":
            continue
        rows, measured = measured_rows(run)
        blame, line, brief = _rome_run(stream, rows, measured, factor)
        long.append(line)
        short.append(brief)
        if "collapse-prone" in set(rows["group"]):
            collapses.append(blame is not None)
            if blame is not None:
                blamed.append(blame)
    parts = [
        criteria.check(claim, "c-rome-stays", sum(crome_over), f"{sum(crome_over)} of {len(crome_over)} C-ROME "
                       f"runs over {factor:g}×" if crome_over else "no C-ROME run in this setting",
                       testable=bool(crome_over)),
        criteria.check(claim, "rome-collapses", sum(collapses) / len(collapses) if collapses else None,
                       f"{sum(collapses)} of {len(collapses)} ROME runs with a subject-first edit" if collapses
                       else "no ROME run with a subject-first edit in this setting"),
        criteria.check(claim, "at-subject-first", sum(blamed) / len(blamed) if blamed else None,
                       f"{sum(blamed)} of {len(blamed)} collapses" if blamed
                       else f"no ROME run with a subject-first edit went over {factor:g}×")]
    verdict = Verdict.from_parts(claim, model, "; ".join(short), parts, setting)
    return Judgement([verdict], f"**{setting} setting: the claim {verdict.verdict}.** {'; '.join(long)}.", tuple(parts))


# --------------------------------------------------------------------------------------------
# Notebook 10: does ROME's clamp hold C-ROME back?
# --------------------------------------------------------------------------------------------
def clamp_study_parts(checks: pd.DataFrame, variant: str, baseline: str) -> list[criteria.PartResult]:
    """The parts of ``clamp-study`` for ``variant`` (the prefixed clamp) against ``baseline`` (ROME's clamp),
    from ``studies.clamp_study.clamp_checks`` (one row per v* variant: cases, efficacy with prefix, locality,
    ppl_ratio_max). A NaN perplexity (non-finite weights) counts as a collapse."""
    claim = "clamp-study"
    v, b = checks.loc[variant], checks.loc[baseline]
    worst = v["ppl_ratio_max"]
    worst = math.inf if pd.isna(worst) else float(worst)
    return [
        criteria.check(claim, "clamp-limits", _difference(v["efficacy with prefix"], b["efficacy with prefix"]),
                       f"{b['efficacy with prefix']:.2f} → {v['efficacy with prefix']:.2f}"),
        criteria.check(claim, "restores", v["efficacy with prefix"]),
        criteria.check(claim, "no-collapse", worst),
        criteria.check(claim, "locality-kept", _difference(b["locality"], v["locality"]),
                       f"{b['locality']:.2f} → {v['locality']:.2f}"),
        criteria.check(claim, "enough-cases", int(v["cases"]), "collapse-prone cases the verdict rests on")]


def judge_clamp_study(checks: pd.DataFrame, model: str, setting: str, variant: str, baseline: str) -> Judgement:
    """Notebook 10: claim ``clamp-study`` in one setting. The question names ROME's clamp ‖δ‖ ≤ 4‖W kᵘ + b‖; the
    verdict is about ``variant``, the same clamp at the prefixed output (‖δ‖ ≤ 4‖W k̄ + b‖), against
    ``baseline``, ROME's own v*. The other variants of ``checks`` are reported, not judged."""
    parts = clamp_study_parts(checks, variant, baseline)
    v, b = checks.loc[variant], checks.loc[baseline]
    measured = (f"{variant}: collapse-prone efficacy with a test-time prefix {v['efficacy with prefix']:.2f} vs "
                f"{b['efficacy with prefix']:.2f} with ROME's clamp; locality {v['locality']:.2f} vs "
                f"{b['locality']:.2f}; worst perplexity {v['ppl_ratio_max']:.2f}×; "
                f"{int(v['cases'])} collapse-prone cases")
    verdict = Verdict.from_parts("clamp-study", model, measured, parts, setting)
    others = [name for name in checks.index if name not in (variant, baseline)]
    also = "; ".join(f"{name} {checks.loc[name, 'efficacy with prefix']:.2f} "
                     f"(locality {checks.loc[name, 'locality']:.2f})" for name in others)
    text = f"**{setting} setting: the claim {verdict.verdict}.** {measured}."
    if also:
        text += f" Not judged, for comparison — efficacy with the prefix under the other variants: {also}."
    return Judgement([verdict], text, tuple(parts))
