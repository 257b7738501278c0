"""The interactive explorer of notebook 07: one ROME edit, checked before it is made and undone after.

Three parts: ``logic`` (plain functions that do the work: :func:`read_case` validates what a person typed,
:func:`top_tokens` and :func:`read_model` say what the model predicts, :func:`apply_and_read` measures an edit
made by ``rome.edit`` through ``outcomes.measure_edit``), ``render`` (the HTML the widgets show) and ``widgets``
(:class:`Explorer`, which only wires them to ipywidgets). The tests drive it headless: set the widgets' values,
call ``button.click()``, read the HTML widgets' ``value``.

Each number is labelled with the setting it comes from: ``paper`` (no C⁻¹, the left vector is k̄, as the paper's
authors ran) or ``rome`` (C⁻¹k̄, Meng et al.'s original).
"""
from .logic import FREE_TEXT_ID, InputError, Reading, apply_and_read, check_subject, read_case, read_model, top_tokens
from .render import SETTING_LABELS, SETTING_NOTES, VARIANT_NAMES, edit_html, risk_html
from .widgets import Explorer

__all__ = ["Explorer", "FREE_TEXT_ID", "InputError", "Reading", "SETTING_LABELS", "SETTING_NOTES", "VARIANT_NAMES",
           "apply_and_read", "check_subject", "edit_html", "read_case", "read_model", "risk_html", "top_tokens"]
