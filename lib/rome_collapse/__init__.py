"""rome_collapse: the math of ROME edits and of their collapse, for the workbook's notebooks.

Modules: models (loading, architecture spec, hyper-parameters), tokens (BOS switch, subject
positions), data (edit cases, ME-PPL), cache (every disk cache: keys, digests, atomic writes), stats (key
second moment C, which is the setting: "paper" or "original"), keys (context templates, prefixed and
unprefixed keys), values (v*, optimised and cached), rome (the rank-one update, the pre-flight check,
applying edits), trace (hooks), metrics (efficacy, generalisation, locality, perplexity), collapse (what
counts as a collapse), samples (cases by group, texts, positions), outcomes (edits applied alone and
measured), representations (where keys and token states sit, their concentration), interventions (position
swaps, BOS removal), plots; studies/ (the studies of notebooks 08-10: screening, sequential, clamp_study)
and rules/ (the verdicts).

The names most uses need are here at the top (``rome_collapse.edit``, ``rome_collapse.measure_edit``, ...),
each loaded from its module when first asked for, so that ``import rome_collapse`` loads no torch::

    import rome_collapse as rc
    bundle = rc.load_model("smollm2-135m")
    templates = rc.context_templates(bundle)
    edit = rc.edit(bundle, case, templates, rc.covariance(bundle, "paper"))  # "original": with C⁻¹
    outcome = rc.measure_edit(bundle, edit, ppl_texts=texts)
"""
import importlib
import logging

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())

# Public name -> (module, name in that module).
_EXPORTS = {
    "load_model": ("models", "load_model"),
    "EditCase": ("data", "EditCase"),
    "load_cases": ("data", "load_cases"),
    "edit": ("rome", "edit"),
    "compute_edits": ("rome", "compute_edits"),
    "collapse_risk": ("rome", "collapse_risk"),
    "applied": ("rome", "applied"),
    "EditSession": ("rome", "EditSession"),
    "measure_edit": ("outcomes", "measure_edit"),
    "measure_edits": ("outcomes", "measure_edits"),
    "scan_cases": ("scan", "scan_cases"),
    "covariance": ("stats", "covariance"),
    "context_templates": ("keys", "context_templates"),
    "perplexity": ("metrics", "perplexity"),
    "collapsed": ("collapse", "collapsed"),
    "RISK_THRESHOLD": ("collapse", "RISK_THRESHOLD"),
    "COLLAPSE_FACTOR": ("collapse", "COLLAPSE_FACTOR"),
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    """A public name, imported from its module on first use (PEP 562); submodules import as usual."""
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, attribute = _EXPORTS[name]
    return getattr(importlib.import_module(f".{module}", __name__), attribute)


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
