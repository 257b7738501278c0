"""The interactive explorer of notebook 07: one ROME edit, checked before it is made and undone after.

This module owns the explorer: a few plain functions that do the work (:func:`read_case` validates what a person
typed, :func:`top_tokens` and :func:`read_model` say what the model predicts, :func:`make_edit` builds ROME's
update) and the :class:`Explorer`, which only wires them to ipywidgets. Everything it shows goes into its widgets
(HTML and a progress bar), never to stdout, and an input error is a red message, never a traceback. The tests
drive it headless: set the widgets' values, call ``button.click()``, read the HTML widgets' ``value``.

One edit at a time: every edit starts from the unedited weights, and Undo puts them back bit for bit
(``rome.EditSession``). Each number is labelled with the setting it comes from: ``paper`` (no C⁻¹, the left
vector is k̄, as the paper's authors ran) or ``rome`` (C⁻¹k̄, Meng et al.'s original).
"""
from __future__ import annotations

import html
import logging
import math
from contextlib import contextmanager
from dataclasses import dataclass

import ipywidgets as w
import torch

from . import data, keys, metrics, models, rome, stats, values
from .collapse import collapsed
from .profiles import get_profile
from .tokens import encode, subject_token_span
from .trace import lm_logits, run_base

log = logging.getLogger(__name__)

SETTING_LABELS = {"paper": "paper (k̄, no C⁻¹)", "rome": "rome (C⁻¹k̄)"}
SETTING_NOTES = {"paper": "paper: no C⁻¹, left vector k̄ (as the paper's authors ran)",
                 "rome": "rome: left vector C⁻¹k̄ (Meng et al.'s original ROME)"}
VARIANT_NAMES = {"rome": "ROME", "c-rome": "C-ROME"}
RISK_THRESHOLD = 0.1  # rome.collapse_risk's: below this ratio a ROME edit is at risk of collapse
FREE_TEXT_ID = "free text"


class InputError(ValueError):
    """Something typed into the explorer that cannot be edited; the message says what to fix."""


# --------------------------------------------------------------------------------------------
# Plain functions: what the buttons do
# --------------------------------------------------------------------------------------------
def read_case(prompt: str, subject: str, target_new: str = "", target_true: str = "",
              curated: data.EditCase | None = None, need_targets: bool = True) -> data.EditCase:
    """The edit request typed into the explorer, validated; the curated case itself when nothing was changed
    (it keeps its paraphrases and neighbours). Raises :class:`InputError` with a message a person can act on."""
    if curated is not None and (prompt, subject, target_new, target_true) == (
            curated.prompt, curated.subject, curated.target_new, curated.target_true):
        return curated
    if "{}" not in prompt:
        hint = (f": replace “{subject.strip()}” in it by {{}}" if subject.strip() and subject.strip() in prompt
                else ", e.g. “{} is located in”")
        raise InputError(f"The prompt has no {{}}. Write {{}} where the subject goes{hint}.")
    if prompt.count("{}") > 1:
        raise InputError("The prompt has more than one {}: keep one, where the subject goes.")
    if not subject.strip():
        raise InputError("The subject is not in the prompt: type the subject that fills the {} (it is empty).")
    if need_targets:
        for name, value in (("target_new", target_new), ("target_true", target_true)):
            if not value.strip():
                raise InputError(f"{name} is empty: type the {'new' if name == 'target_new' else 'true'} "
                                 "object of the fact (what should follow the prompt).")
    else:  # the pre-flight check reads the prompt and the subject only
        target_new, target_true = "?", "??"
    record = {"case_id": FREE_TEXT_ID, "requested_rewrite": {
        "prompt": prompt, "subject": subject, "target_new": {"str": target_new},
        "target_true": {"str": target_true}}}
    try:
        return data.parse_case(record)
    except data.CaseError as exc:
        raise InputError(str(exc).replace(f"case {FREE_TEXT_ID}: ", "")) from exc


def check_subject(bundle: models.Bundle, case: data.EditCase) -> None:
    """Raise :class:`InputError` when the subject cannot be found among the prompt's tokens."""
    try:
        subject_token_span(bundle, case.prompt, case.subject)
    except ValueError as exc:
        raise InputError(f"The subject “{case.subject}” is not in the prompt's tokens ({exc}).") from exc


def top_tokens(bundle: models.Bundle, text: str, k: int = 5) -> list[tuple[str, float]]:
    """The ``k`` most likely next tokens after ``text`` and their probabilities (BOS per the bundle's switch)."""
    with torch.no_grad():  # logits at the last position only (Gemma-3's vocabulary has 262,144 tokens)
        logits = lm_logits(bundle, run_base(bundle, encode(bundle, [text])).last_hidden_state[0, -1]).float()
    probs = torch.softmax(logits, -1)
    top = torch.topk(probs.nan_to_num(0.0), k)
    return [(bundle.tokenizer.decode([i]), p) for i, p in zip(top.indices.tolist(), top.values.tolist())]


@dataclass
class Reading:
    """What the model says about one case at one moment (before or after the edit)."""
    perplexity: float  # ME-PPL
    scores: metrics.CaseMetrics  # CounterFact's scores
    rewrite_acc: float  # the paper's efficacy: share of target_new's tokens that are the argmax (teacher-forced)
    top: list[tuple[str, float]]
    continuation: str


def read_model(bundle: models.Bundle, case: data.EditCase, ppl_texts: list[str], test_prefix: str | None = None,
               perplexity: float | None = None, max_new_tokens: int = 16) -> Reading:
    """ME-PPL (unless given), the case's scores, top-5 next tokens and greedy continuation of its prompt."""
    prompt = metrics.prefixed(case.text, test_prefix) if test_prefix else case.text
    if perplexity is None:
        perplexity = metrics.perplexity(bundle, ppl_texts).mean
    scores = metrics.evaluate_cases(bundle, [case], test_prefix=test_prefix, prefix_only_first_token=False)[0]
    rewrite_acc = metrics.prediction_accuracy(bundle, [prompt], [case.target_new])[0]
    return Reading(perplexity, scores, rewrite_acc, top_tokens(bundle, prompt),
                   metrics.continuations(bundle, [prompt], max_new_tokens)[0])


def make_edit(bundle: models.Bundle, case: data.EditCase, templates: list[str], covariance: stats.SecondMoment,
              variant: str, cache: bool = True, on_step=None) -> rome.Edit:
    """ROME's edit of ``case`` at the bundle's layer: v* (from the cache or optimised, ``on_step`` after each
    step), the keys, and the rank-one update of ``variant``. Same as ``rome.edit``, with a progress hook."""
    value = values.values_for(bundle, [case], templates, cache=cache, progress=False, on_step=on_step)[0]
    case_keys = keys.case_keys(bundle, case.prompt, case.subject, templates)
    return rome.make_edit(bundle, case, value, case_keys, covariance, variant)


# --------------------------------------------------------------------------------------------
# Formatting (HTML for the widgets)
# --------------------------------------------------------------------------------------------
def _num(x: float | None) -> str:
    if x is None:
        return "–"
    if not math.isfinite(x):
        return str(x)
    return f"{x:.3g}" if abs(x) >= 1e4 or (x != 0 and abs(x) < 1e-2) else f"{x:.4g}"


def _esc(text: str) -> str:
    return html.escape(text).replace("\n", "⏎")


def _row(title: str, widget: w.Widget) -> w.HBox:
    """A widget with a label in the same column as the descriptions of the others."""
    label = w.HTML(f"<div style='text-align:right;padding-right:8px'>{title}</div>", layout=w.Layout(width="108px"))
    return w.HBox([label, widget])


def _error(message: str) -> str:
    return f'<div class="rc-error" style="color:#c62828;font-weight:600">⚠ {html.escape(message)}</div>'


def _table(rows: list[tuple], header: tuple | None = None) -> str:
    head = "".join(f"<th style='text-align:left;padding:2px 10px'>{h}</th>" for h in header) if header else ""
    body = "".join("<tr>" + "".join(f"<td style='padding:2px 10px;vertical-align:top'>{c}</td>" for c in row)
                   + "</tr>" for row in rows)
    return f"<table style='border-collapse:collapse'>{'<tr>' + head + '</tr>' if head else ''}{body}</table>"


def _tokens(top: list[tuple[str, float]]) -> str:
    return " · ".join(f"<code>{_esc(repr(t))}</code> {p:.2f}" for t, p in top)


def _efficacy(scores: metrics.CaseMetrics, case: data.EditCase) -> str:
    winner = case.target_new if scores.efficacy else case.target_true
    return (f"{'target_new' if scores.efficacy else 'target_true'} wins (“{_esc(winner)}”); "
            f"P(new) {_num(scores.p_new)}, P(true) {_num(scores.p_true)}")


def risk_html(report: rome.RiskReport, case: data.EditCase, layer: int) -> str:
    verdict = (f"<b style='color:#c62828'>at risk</b>: ROME's denominator is {_num(report.ratio)} × C-ROME's; "
               "a ROME edit will likely collapse the model" if report.at_risk else
               "<b style='color:#2e7d32'>safe</b>: ROME's denominator is close to C-ROME's")
    rows = [("denominator ratio (kᵘ·C⁻¹k̄)/(k̄·C⁻¹k̄)", f"<b>{_num(report.ratio)}</b>"),
            ("subject is the first token", f"<b>{'yes' if report.subject_first_token else 'no'}</b>"),
            ("‖kᵘ − k̄‖", _num(report.key_distance)), ("verdict", verdict)]
    return (f"<div class='rc-risk-report' style='margin-top:6px'><b>Pre-flight check</b> of “{_esc(case.text)}” "
            f"(no v*), layer {layer}, setting <b>{SETTING_NOTES[report.setting]}</b>"
            f"<div class='rc-risk-line'>ratio {_num(report.ratio)} · first token: "
            f"{'yes' if report.subject_first_token else 'no'}</div>{_table(rows)}</div>")


def edit_html(edit: rome.Edit, before: Reading, after: Reading, prompt: str, ppl_sentences: int) -> str:
    r, value = edit.report, edit.value
    is_collapsed = collapsed(after.perplexity / before.perplexity)
    anatomy = [("numerator ‖v* − Wk − b‖", _num(r.numerator_norm)),
               ("denominator k·u", _num(r.denominator)),
               ("ratio (kᵘ·C⁻¹k̄)/(k̄·C⁻¹k̄)", _num(r.ratio)),
               ("‖ΔW‖", f"<b>{_num(r.update_norm)}</b>"),
               ("v*", f"{value.steps} steps, loss {_num(value.final_loss)}, P(target_new) {_num(value.target_prob)}"
                if value else "–")]
    side = [(f"ME-PPL ({ppl_sentences} sentences)", _num(before.perplexity),
             f"<b style='color:{'#c62828' if is_collapsed else 'inherit'}'>{_num(after.perplexity)}"
             f"{' (collapsed)' if is_collapsed else ''}</b>"),
            ("rewrite accuracy (the paper's efficacy)", _num(before.rewrite_acc), f"<b>{_num(after.rewrite_acc)}</b>"),
            ("CounterFact's efficacy", _efficacy(before.scores, edit.case), _efficacy(after.scores, edit.case)),
            *([("generalisation / locality", f"{_num(before.scores.generalization)} / {_num(before.scores.locality)}",
                f"{_num(after.scores.generalization)} / {_num(after.scores.locality)}")]
              if edit.case.paraphrase_prompts and edit.case.neighborhood_prompts else []),
            ("top-5 next tokens", _tokens(before.top), _tokens(after.top)),
            ("greedy continuation", f"<i>{_esc(before.continuation)}</i>", f"<i>{_esc(after.continuation)}</i>")]
    title = (f"<b>{VARIANT_NAMES[r.variant]} edit</b> of “{_esc(edit.case.text)}” → “{_esc(edit.case.target_new)}”, "
             f"layer {r.layer}, setting <b>{SETTING_NOTES[r.setting]}</b>")
    asked = f"prompt shown to the model: “{_esc(prompt)}”"
    return (f"<div class='rc-edit-report' style='margin-top:10px'>{title}{_table(anatomy)}<div>{asked}</div>"
            f"{_table(side, ('', 'before', f'after ({VARIANT_NAMES[r.variant]}, {r.setting})'))}</div>")


# --------------------------------------------------------------------------------------------
# The widgets
# --------------------------------------------------------------------------------------------
class Explorer:
    """The explorer's widgets (``.ui``) around the functions above.

    ``load(name)`` returns a Bundle (default: ``models.load_model`` on ``device``); tests pass a tiny model.
    ``v_steps`` and ``ppl_sentences`` shorten v* and ME-PPL (None: the model's own steps, the whole ME-PPL set).
    """

    def __init__(self, model: str = models.DEFAULT_MODEL, setting: str = models.DEFAULT_SETTING,
                 profile: str = "smoke", device=None, case_id=None, load=None, model_names=None,
                 cases: list[data.EditCase] | None = None, v_steps: int | None = None,
                 ppl_sentences: int | None = None, cache: bool = True):
        self.profile = get_profile(profile)
        self._load = load or (lambda name: models.load_model(name, device=device))
        self.v_steps, self.cache = v_steps, cache
        self.ppl_texts = data.meppl(self.profile.ppl_set)[:ppl_sentences]
        self.cases = {self._label(c): c for c in (data.curated_cases() if cases is None else cases)}
        self._bundles, self._templates, self._covariances, self._ppl = {}, {}, {}, {}
        self.session: rome.EditSession | None = None
        self.last_risk: rome.RiskReport | None = None
        self.last_edit: rome.Edit | None = None
        self.runs: list[dict] = []
        self._quiet = False  # set while the explorer fills its own inputs: no refresh per field

        names = list(model_names or models.EMBEDDED)
        label = {"style": {"description_width": "100px"}}
        toggle = {"style": {"button_width": "auto"}}
        self.model = w.Dropdown(options=names if model in names else [model, *names], value=model,
                                description="Model", **label)
        self.setting = w.ToggleButtons(options=[(SETTING_LABELS[s], s) for s in models.SETTINGS],
                                       value=models.check_setting(setting), **toggle)
        self.variant = w.ToggleButtons(options=[(VARIANT_NAMES[v], v) for v in rome.VARIANTS], **toggle)
        self.case = w.Combobox(options=list(self.cases), ensure_option=True, description="Curated case",
                               placeholder="type to search the curated cases…", layout=w.Layout(width="680px"),
                               **label)
        text = dict(continuous_update=False, layout=w.Layout(width="680px"), **label)
        self.prompt = w.Text(description="Prompt", placeholder="with {} where the subject goes", **text)
        self.subject = w.Text(description="Subject", **text)
        self.target_new = w.Text(description="target_new", **text)
        self.target_true = w.Text(description="target_true", **text)
        self.layer = w.IntSlider(description="Edit layer", min=0, max=1, continuous_update=False, **label)
        self.prefix = w.Checkbox(description="test-time prefix", indent=False, layout=w.Layout(width="auto"),
                                 tooltip="put a context template before the prompt when testing the edit")
        self.risk_button = w.Button(description="Check risk", icon="stethoscope")
        self.edit_button = w.Button(description="Edit", button_style="primary", icon="pencil")
        self.undo_button = w.Button(description="Undo", icon="undo", disabled=True)
        self.progress = w.IntProgress(description="v*", min=0, max=1, layout=w.Layout(visibility="hidden"))
        self.progress_label = w.Label()
        self.message, self.risk, self.result, self.history = w.HTML(), w.HTML(), w.HTML(), w.HTML()
        self.log = w.Output(layout=w.Layout(max_height="8em", overflow="auto"))  # libraries' bars and warnings
        for widget, name in ((self.model, "model"), (self.setting, "setting"), (self.variant, "variant"),
                             (self.case, "case"), (self.prompt, "prompt"), (self.subject, "subject"),
                             (self.target_new, "target-new"), (self.target_true, "target-true"),
                             (self.layer, "layer"), (self.prefix, "prefix"), (self.risk_button, "risk-button"),
                             (self.edit_button, "edit-button"), (self.undo_button, "undo-button"),
                             (self.message, "message"), (self.risk, "risk"), (self.result, "result"),
                             (self.history, "history")):
            widget.add_class(f"rc-{name}")
        self.ui = w.VBox([
            w.HTML("<h3 style='margin:4px 0'>ROME edit explorer</h3>"),
            self.model, _row("Setting", self.setting), _row("Variant", self.variant), self.case,
            self.prompt, self.subject, self.target_new, self.target_true, w.HBox([self.layer, self.prefix]),
            w.HBox([self.risk_button, self.edit_button, self.undo_button]),
            w.HBox([self.progress, self.progress_label]), self.message, self.risk, self.result, self.history,
            w.Accordion([self.log], titles=["library output"], selected_index=None)])
        self.ui.add_class("rc-explorer")

        self.model.observe(self._on_model, "value")
        self.case.observe(self._on_case, "value")
        for widget in (self.setting, self.layer, self.prompt, self.subject):
            widget.observe(self._on_inputs, "value")
        self.risk_button.on_click(lambda _: self.check_risk())
        self.edit_button.on_click(lambda _: self.edit())
        self.undo_button.on_click(lambda _: self.undo())

        self._use_model(model)
        chosen = [label for label, c in self.cases.items() if c.case_id == case_id]
        if chosen:
            self.case.value = chosen[0]  # fills the inputs and checks the risk

    @staticmethod
    def _label(case: data.EditCase) -> str:
        return f"{case.case_id}: {case.text} → {case.target_new} (was {case.target_true})"

    # ---- state ---------------------------------------------------------------------------
    @property
    def bundle(self) -> models.Bundle:
        """The chosen model with the chosen setting, edit layer and v* steps (the same weights)."""
        base = self._bundles[self.model.value].with_setting(self.setting.value)
        changes = {"layer": self.layer.value}
        if self.v_steps is not None:
            changes["v_num_grad_steps"] = self.v_steps
        return base.with_hparams(**changes)

    def templates(self) -> list[str]:
        name = self.model.value
        if name not in self._templates:
            self._templates[name] = keys.context_templates(self._bundles[name], seed=self.profile.template_seed)
        return self._templates[name]

    def covariance(self, bundle: models.Bundle) -> stats.SecondMoment:
        key = (bundle.weights_id, bundle.add_bos, bundle.setting, bundle.hparams.layer)
        if key not in self._covariances:
            if bundle.hparams.mom2_adjustment:
                self._say(f"computing C at layer {bundle.hparams.layer} over {self.profile.stats_samples} texts "
                          "(once; cached on disk)…")
            with self.log:
                self._covariances[key] = stats.covariance(bundle, n_samples=self.profile.stats_samples,
                                                          progress=False)
        return self._covariances[key]

    def read_inputs(self, need_targets: bool = True) -> data.EditCase:
        return read_case(self.prompt.value, self.subject.value, self.target_new.value, self.target_true.value,
                         self.cases.get(self.case.value), need_targets)

    def _say(self, html_text: str) -> None:
        self.message.value = html_text

    @contextmanager
    def _busy(self):
        """Buttons off while working; any error ends as a red message (input errors as they are)."""
        for button in (self.risk_button, self.edit_button, self.undo_button):
            button.disabled = True
        try:
            yield
        except InputError as exc:
            self._say(_error(str(exc)))
        except Exception as exc:  # noqa: BLE001 — shown in the widget; the log keeps the traceback
            log.exception("explorer")
            self._say(_error(f"{type(exc).__name__}: {exc}"))
        finally:
            self.risk_button.disabled = self.edit_button.disabled = False
            self.undo_button.disabled = not (self.session and self.session.edits)

    @contextmanager
    def _unedited(self):
        """The original weights for the duration (the risk is always the unedited model's), the edit back after."""
        edits = list(self.session.edits) if self.session else []
        if edits:
            self.session.undo_all()
        try:
            yield
        finally:
            for e in edits:
                self.session.apply(e)

    # ---- callbacks -----------------------------------------------------------------------
    def _use_model(self, name: str) -> None:
        with self._busy():
            if self.session is not None:
                self.session.undo_all()
            if name not in self._bundles:
                self._say(f"loading {html.escape(name)}…")
                with self.log:
                    self._bundles[name] = self._load(name)
            bundle = self._bundles[name]
            self.session = rome.EditSession(bundle)
            self._quiet = True
            try:
                self.layer.max = bundle.num_layers - 1
                self.layer.value = bundle.hparams.layer
            finally:
                self._quiet = False
            self._say(f"{html.escape(name)}: {bundle.num_layers} layers, edit layer {bundle.hparams.layer} "
                      f"by default, BOS {'on' if bundle.add_bos else 'off'}.")

    def _on_model(self, change) -> None:
        self._use_model(change["new"])
        self.result.value = ""
        if change["new"] in self._bundles:
            self._refresh_risk()

    def _on_case(self, change) -> None:
        case = self.cases.get(change["new"])
        if case is None:
            return
        self._quiet = True
        try:
            self.prompt.value, self.subject.value = case.prompt, case.subject
            self.target_new.value, self.target_true.value = case.target_new, case.target_true
        finally:
            self._quiet = False
        self._refresh_risk()

    def _on_inputs(self, change) -> None:
        if not self._quiet:
            self._refresh_risk()

    def _refresh_risk(self) -> None:
        """The risk updates at once when the case, layer or setting changes (quietly while inputs are empty)."""
        if self.prompt.value.strip() and self.subject.value.strip():
            self.check_risk()
        else:
            self.risk.value = ""

    def check_risk(self) -> rome.RiskReport | None:
        """Pre-flight: the denominator ratio and the first-token flag, from the keys alone (no v*)."""
        self.last_risk = None
        with self._busy():
            self._risk(self.read_inputs(need_targets=False), self.bundle)
            self._say("")
        if self.last_risk is None:
            self.risk.value = ""
        return self.last_risk

    def _risk(self, case: data.EditCase, bundle: models.Bundle) -> None:
        """The panel keeps the last report until the new one is there (or is emptied on an error)."""
        self.last_risk = None
        try:
            check_subject(bundle, case)
            with self._unedited():
                self.last_risk = rome.collapse_risk(bundle, case, self.templates(), self.covariance(bundle),
                                                    RISK_THRESHOLD)
        finally:
            self.risk.value = risk_html(self.last_risk, case, bundle.hparams.layer) if self.last_risk else ""

    def edit(self) -> rome.Edit | None:
        """Undo any earlier edit, make this one (progress bar over v*), apply it and show before and after."""
        self.last_edit = None
        with self._busy():
            case = self.read_inputs()
            bundle = self.bundle
            self.result.value = ""
            self.session.undo_all()
            self._risk(case, bundle)
            templates, covariance = self.templates(), self.covariance(bundle)
            self._say(f"optimising v* ({bundle.hparams.v_num_grad_steps} steps at most)…")
            self.progress.max, self.progress.value = bundle.hparams.v_num_grad_steps, 0
            self.progress.layout.visibility = "visible"
            self.progress_label.value = ""
            steps_run = []

            def on_step(n: int) -> None:
                steps_run.append(n)
                self.progress.value = n
                self.progress_label.value = f"{n}/{self.progress.max} steps"

            edit = make_edit(bundle, case, templates, covariance, self.variant.value, self.cache, on_step)
            self.progress.value = self.progress.max
            self.progress_label.value = f"v*: {edit.value.steps} steps" + ("" if steps_run else " (from the cache)")
            test_prefix = templates[1] if self.prefix.value and len(templates) > 1 else None
            prompt = metrics.prefixed(case.text, test_prefix) if test_prefix else case.text
            self._say("measuring the unedited model…")
            ppl_key = (bundle.weights_id, bundle.add_bos)
            before = read_model(bundle, case, self.ppl_texts, test_prefix, self._ppl.get(ppl_key))
            self._ppl[ppl_key] = before.perplexity
            self._say("measuring the edited model…")
            self.session.apply(edit)
            after = read_model(bundle, case, self.ppl_texts, test_prefix)
            self.last_edit = edit
            self.result.value = edit_html(edit, before, after, prompt, len(self.ppl_texts))
            self._record(edit, before, after)
            self._say("Edit applied. <b>Undo</b> restores the original weights (bit for bit).")
        return self.last_edit

    def undo(self) -> None:
        with self._busy():
            if self.session is not None and self.session.edits:
                self.session.undo_all()
                self._say("Undone: the weights are the original ones again (bit for bit).")

    def _record(self, edit: rome.Edit, before: Reading, after: Reading) -> None:
        r = edit.report
        self.runs.append({"case": edit.case.text, "target_new": edit.case.target_new, "layer": r.layer,
                          "setting": r.setting, "variant": VARIANT_NAMES[r.variant], "ratio": r.ratio,
                          "denominator": r.denominator, "update_norm": r.update_norm,
                          "ppl_before": before.perplexity, "ppl_after": after.perplexity,
                          "efficacy_after": after.scores.efficacy, "test_prefix": after.scores.test_prefix})
        rows = [(i + 1, f"{_esc(run['case'])} → {_esc(run['target_new'])}", run["layer"], run["setting"],
                 run["variant"], _num(run["ratio"]), _num(run["denominator"]), _num(run["update_norm"]),
                 f"{_num(run['ppl_before'])} → {_num(run['ppl_after'])}", int(run["efficacy_after"]),
                 "yes" if run["test_prefix"] else "no") for i, run in enumerate(self.runs)]
        header = ("#", "case", "layer", "setting", "variant", "ratio", "denominator", "‖ΔW‖", "ME-PPL", "efficacy",
                  "prefix")
        self.history.value = ("<div style='margin-top:10px'><b>Edits so far</b> (each from the unedited model)</div>"
                              + _table(rows, header))
