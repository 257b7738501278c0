"""The explorer's HTML: numbers, tables, the pre-flight report and the before/after report of an edit.

Strings only (no widgets, no model): the widgets put them into their ``value``.
"""
from __future__ import annotations

import html
import math

from .. import data, metrics, rome
from .logic import Reading

SETTING_LABELS = {"paper": "paper (k̄, no C⁻¹)", "original": "original (C⁻¹k̄)"}
SETTING_NOTES = {"paper": "paper: no C⁻¹, left vector k̄ (as the paper's authors ran)",
                 "original": "original: left vector C⁻¹k̄ (Meng et al.'s ROME)"}
VARIANT_NAMES = {"rome": "ROME", "c-rome": "C-ROME"}


def format_number(x: float | None) -> str:
    """Four significant digits, scientific notation for very large or small numbers; "–" for none."""
    if x is None:
        return "–"
    if not math.isfinite(x):
        return str(x)
    return f"{x:.3g}" if abs(x) >= 1e4 or (x != 0 and abs(x) < 1e-2) else f"{x:.4g}"


def escape_text(text: str) -> str:
    """Text for HTML, a line break shown as ⏎ (a continuation stays on one line)."""
    return html.escape(text).replace("\n", "⏎")


def error_html(message: str) -> str:
    return f'<div class="rc-error" style="color:#c62828;font-weight:600">⚠ {html.escape(message)}</div>'


def html_table(rows: list[tuple], header: tuple | None = None) -> str:
    head = "".join(f"<th style='text-align:left;padding:2px 10px'>{h}</th>" for h in header) if header else ""
    body = "".join("<tr>" + "".join(f"<td style='padding:2px 10px;vertical-align:top'>{c}</td>" for c in row)
                   + "</tr>" for row in rows)
    return f"<table style='border-collapse:collapse'>{'<tr>' + head + '</tr>' if head else ''}{body}</table>"


def _tokens(top: list[tuple[str, float]]) -> str:
    return " · ".join(f"<code>{escape_text(repr(t))}</code> {p:.2f}" for t, p in top)


def _efficacy(scores: metrics.CaseMetrics, case: data.EditCase) -> str:
    winner = case.target_new if scores.efficacy else case.target_true
    return (f"{'target_new' if scores.efficacy else 'target_true'} wins (“{escape_text(winner)}”); "
            f"P(new) {format_number(scores.p_new)}, P(true) {format_number(scores.p_true)}")


def risk_html(report: rome.RiskReport, case: data.EditCase, layer: int) -> str:
    """The pre-flight check's panel: the denominator ratio, the first-token flag and the verdict."""
    num = format_number
    verdict = (f"<b style='color:#c62828'>at risk</b>: ROME's denominator is {num(report.ratio)} × C-ROME's; "
               "a ROME edit will likely collapse the model" if report.at_risk else
               "<b style='color:#2e7d32'>safe</b>: ROME's denominator is close to C-ROME's")
    rows = [("denominator ratio (kᵘ·C⁻¹k̄)/(k̄·C⁻¹k̄)", f"<b>{num(report.ratio)}</b>"),
            ("subject is the first token", f"<b>{'yes' if report.subject_first_token else 'no'}</b>"),
            ("‖kᵘ − k̄‖", num(report.key_distance)), ("verdict", verdict)]
    return (f"<div class='rc-risk-report' style='margin-top:6px'><b>Pre-flight check</b> of "
            f"“{escape_text(case.text)}” (no v*), layer {layer}, setting <b>{SETTING_NOTES[report.setting]}</b>"
            f"<div class='rc-risk-line'>ratio {num(report.ratio)} · first token: "
            f"{'yes' if report.subject_first_token else 'no'}</div>{html_table(rows)}</div>")


def edit_html(edit: rome.Edit, before: Reading, after: Reading, is_collapsed: bool, prompt: str,
              ppl_sentences: int) -> str:
    """The edit's report: its anatomy, then the model before and after it side by side. ``is_collapsed``: the
    measured verdict (``outcomes.EditOutcome.collapsed``)."""
    num, esc = format_number, escape_text
    r, value = edit.report, edit.value
    anatomy = [("numerator ‖v* − Wk − b‖", num(r.numerator_norm)),
               ("denominator k·u", num(r.denominator)),
               ("ratio (kᵘ·C⁻¹k̄)/(k̄·C⁻¹k̄)", num(r.ratio)),
               ("‖ΔW‖", f"<b>{num(r.update_norm)}</b>"),
               ("v*", f"{value.steps} steps, loss {num(value.final_loss)}, P(target_new) {num(value.target_prob)}"
                if value else "–")]
    side = [(f"ME-PPL ({ppl_sentences} sentences)", num(before.perplexity),
             f"<b style='color:{'#c62828' if is_collapsed else 'inherit'}'>{num(after.perplexity)}"
             f"{' (collapsed)' if is_collapsed else ''}</b>"),
            ("rewrite accuracy (the paper's efficacy)", num(before.rewrite_acc), f"<b>{num(after.rewrite_acc)}</b>"),
            ("CounterFact's efficacy", _efficacy(before.scores, edit.case), _efficacy(after.scores, edit.case)),
            *([("generalisation / locality", f"{num(before.scores.generalization)} / {num(before.scores.locality)}",
                f"{num(after.scores.generalization)} / {num(after.scores.locality)}")]
              if edit.case.paraphrase_prompts and edit.case.neighborhood_prompts else []),
            ("top-5 next tokens", _tokens(before.top), _tokens(after.top)),
            ("greedy continuation", f"<i>{esc(before.continuation)}</i>", f"<i>{esc(after.continuation)}</i>")]
    title = (f"<b>{VARIANT_NAMES[r.variant]} edit</b> of “{esc(edit.case.text)}” → "
             f"“{esc(edit.case.target_new)}”, layer {r.layer}, setting <b>{SETTING_NOTES[r.setting]}</b>")
    asked = f"prompt shown to the model: “{esc(prompt)}”"
    return (f"<div class='rc-edit-report' style='margin-top:10px'>{title}{html_table(anatomy)}<div>{asked}</div>"
            f"{html_table(side, ('', 'before', f'after ({VARIANT_NAMES[r.variant]}, {r.setting})'))}</div>")


def history_html(runs: list[dict]) -> str:
    """The table of the edits made so far (``Explorer.runs``)."""
    num, esc = format_number, escape_text
    rows = [(i + 1, f"{esc(run['case'])} → {esc(run['target_new'])}", run["layer"], run["setting"],
             run["variant"], num(run["ratio"]), num(run["denominator"]), num(run["update_norm"]),
             f"{num(run['ppl_before'])} → {num(run['ppl_after'])}", num(run["rewrite_acc_after"]),
             int(run["efficacy_after"]), "yes" if run["test_prefix"] else "no") for i, run in enumerate(runs)]
    # both efficacies, named as in the result panel: they can disagree (the target's first token the argmax but
    # not every token, or target_new more likely than target_true without being the argmax)
    header = ("#", "case", "layer", "setting", "variant", "ratio", "denominator", "‖ΔW‖", "ME-PPL",
              "rewrite accuracy", "CounterFact efficacy", "prefix")
    return ("<div style='margin-top:10px'><b>Edits so far</b> (each from the unedited model)</div>"
            f"<div class='rc-history-table'>{html_table(rows, header)}</div>")
