"""The explorer's widgets: :class:`Explorer` wires the plain functions of ``logic`` and the HTML of ``render`` to
ipywidgets. Everything it shows goes into its widgets (HTML and a progress bar), never to stdout, and an input
error is a red message, never a traceback.

One edit at a time: every edit starts from the unedited weights, and Undo puts them back bit for bit
(``rome.EditSession``): so the edit stays in the model after it is measured, until Undo or the next edit.
"""
from __future__ import annotations

import html
import logging
from contextlib import contextmanager

import ipywidgets as w

from .. import data, keys, metrics, models, rome, stats
from ..profiles import get_profile
from .logic import InputError, Reading, apply_and_read, check_subject, read_case
from .render import SETTING_LABELS, VARIANT_NAMES, edit_html, error_html, history_html, risk_html

log = logging.getLogger(__name__)


def _row(title: str, widget: w.Widget) -> w.HBox:
    """A widget with a label in the same column as the descriptions of the others."""
    label = w.HTML(f"<div style='text-align:right;padding-right:8px'>{title}</div>", layout=w.Layout(width="108px"))
    return w.HBox([label, widget])


class Explorer:
    """The explorer's widgets (``.ui``) around ``logic``'s functions.

    ``load(name)`` returns a Bundle (default: ``models.load_model`` on ``device``); tests pass a tiny model.
    ``v_steps`` and ``ppl_sentences`` shorten v* and ME-PPL (None: the model's own steps, the whole ME-PPL set).
    """

    def __init__(self, model: str = models.DEFAULT_MODEL, setting: str = stats.DEFAULT_SETTING,
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
        self.setting = w.ToggleButtons(options=[(SETTING_LABELS[s], s) for s in stats.SETTINGS],
                                       value=stats.check_setting(setting), **toggle)
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
        self.message, self.risk, self.result = w.HTML(), w.HTML(), w.HTML()
        # the history's twelve columns are wider than a narrow notebook: the table scrolls, not the whole explorer
        self.history = w.HTML(layout=w.Layout(max_width="100%", overflow="auto"))
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
        """The chosen model with the chosen edit layer and v* steps (the same weights; the setting is the C,
        :meth:`covariance`)."""
        base = self._bundles[self.model.value]
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
        """The chosen setting's C for this bundle's layer (kept per model, BOS and layer)."""
        setting = self.setting.value
        key = (bundle.weights_id, bundle.add_bos, setting, bundle.hparams.layer)
        if key not in self._covariances:
            if setting != "paper":
                self._say(f"computing C at layer {bundle.hparams.layer} over {self.profile.stats_samples} texts "
                          "(once; cached on disk)…")
            with self.log:
                self._covariances[key] = stats.covariance(bundle, setting, n_samples=self.profile.stats_samples,
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
            self._say(error_html(str(exc)))
        except Exception as exc:  # noqa: BLE001 — shown in the widget; the log keeps the traceback
            log.exception("explorer")
            self._say(error_html(f"{type(exc).__name__}: {exc}"))
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
                # at risk below collapse.RISK_THRESHOLD, collapse_risk's default
                self.last_risk = rome.collapse_risk(bundle, case, self.templates(), self.covariance(bundle))
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

            edit = rome.edit(bundle, case, templates, covariance, variant=self.variant.value, cache=self.cache,
                             on_step=on_step)
            self.progress.value = self.progress.max
            self.progress_label.value = f"v*: {edit.value.steps} steps" + ("" if steps_run else " (from the cache)")
            test_prefix = templates[1] if self.prefix.value and len(templates) > 1 else None
            prompt = metrics.prefixed(case.text, test_prefix) if test_prefix else case.text
            ppl_key = (bundle.weights_id, bundle.add_bos)
            outcome, before, after = apply_and_read(self.session, edit, self.ppl_texts, test_prefix,
                                                    self._ppl.get(ppl_key), on_stage=self._say)
            self._ppl[ppl_key] = outcome.ppl_before
            self.last_edit = edit
            self.result.value = edit_html(edit, before, after, outcome.collapsed, prompt, len(self.ppl_texts))
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
                          "rewrite_acc_after": after.rewrite_acc, "efficacy_after": after.scores.efficacy,
                          "test_prefix": after.scores.test_prefix})
        self.history.value = history_html(self.runs)
