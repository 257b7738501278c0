"""Notebook 10's study: does the way v* is set up limit C-ROME's efficacy with a test-time prefix?

ROME bounds ‖δ‖ by ``clamp_norm_factor`` × ‖W kᵘ + b‖ taken at the unprefixed prompt and starts v* there.
For a subject-first case that output is the very first token's, several times smaller than at later tokens
and far from W k̄ + b, the output C-ROME's update writes to. The variants below change one thing each
(``values.ValueOptions`` or the clamp factor); every edit is C-ROME, applied alone and measured:
the paper's (EasyEdit) metrics — rewrite accuracy (efficacy) without and with a test-time editing prefix,
rephrase accuracy (generalisation), locality accuracy —, CounterFact's scores, ME-PPL perplexity, and what
the v* optimisation itself ended with (target probability, ‖δ‖ against its bound, steps).
None of the variants is the paper's, except the first, which is ROME's v* as the authors ran it.
:func:`clamp_checks` summarises the study per variant; the verdict's rule is ``rules.beyond.judge_clamp_study``,
about the prefixed clamp (ii) against ROME's clamp (i).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import pandas as pd

from .. import criteria, metrics, outcomes, rome
from ..data import EditCase
from ..keys import case_keys
from ..models import Bundle
from ..stats import SecondMoment
from ..values import ValueOptions, ValueResult, values_for

log = logging.getLogger(__name__)

PAPER_SCORES = ("rewrite_acc", "rephrase_acc", "locality_acc", "rewrite_acc_prefix")  # outcomes.EditOutcome's
CF_SCORES = ("efficacy", "generalization", "locality")  # outcomes.EditOutcome's cf_<name>


@dataclass(frozen=True)
class ValueVariant:
    """One way of setting up v*: ``options`` for the optimisation and, if given, another clamp factor."""
    name: str
    description: str
    options: ValueOptions = field(default_factory=ValueOptions)
    clamp_factor: float | None = None  # None: the model's clamp_norm_factor (4 for every model here)

    def bundle_for(self, bundle: Bundle) -> Bundle:
        """The same model and weights with this variant's clamp factor."""
        if self.clamp_factor is None:
            return bundle
        return bundle.with_hparams(clamp_norm_factor=self.clamp_factor)


LARGER_CLAMP_FACTOR = 10.0  # 2.5 × ROME's 4: between ROME's bound and the prefixed clamp's (about 5× on SmolLM2)

PAPER_CLAMP, PREFIXED_CLAMP = "(i) paper clamp", "(ii) prefixed clamp"  # the verdict compares these two

VALUE_VARIANTS = (
    ValueVariant(PAPER_CLAMP, "ROME's v*: starts at W kᵘ + b, ‖δ‖ ≤ 4‖W kᵘ + b‖, loss over all templates"),
    ValueVariant(PREFIXED_CLAMP, "‖δ‖ ≤ 4‖W k̄ + b‖ (the mean output over the templates)",
                 ValueOptions(clamp_reference="prefixed")),
    ValueVariant("(iii) larger factor", f"‖δ‖ ≤ {LARGER_CLAMP_FACTOR:g}‖W kᵘ + b‖ (ROME's clamp, a larger factor)",
                 clamp_factor=LARGER_CLAMP_FACTOR),
    ValueVariant("(iv) prefixed loss", "target loss over the prefixed templates only (paper clamp)",
                 ValueOptions(loss_templates="prefixed")),
    ValueVariant("(v) prefixed start", "v* = W k̄ + b + δ, ‖δ‖ ≤ 4‖W k̄ + b‖: C-ROME writes exactly what was optimised",
                 ValueOptions(start="prefixed", clamp_reference="prefixed")),
)


def variant_table(variants=VALUE_VARIANTS) -> pd.DataFrame:
    """What each variant changes, one row each."""
    return pd.DataFrame([{"variant": v.name, "what": v.description, **v.options.to_dict(),
                          "clamp factor": v.clamp_factor or "model's"} for v in variants])


def values_by_variant(bundle: Bundle, cases: list[EditCase], templates: list[str], variants=VALUE_VARIANTS,
                      progress: bool = True) -> dict[str, list[ValueResult]]:
    """v* of every case under every variant (cached; the first variant shares the other notebooks' entries)."""
    out = {}
    for v in variants:
        log.info("v* for %d cases: %s", len(cases), v.name)
        out[v.name] = values_for(v.bundle_for(bundle), cases, templates, options=v.options, progress=progress)
    return out


def run_study(bundle: Bundle, cases: list[EditCase], groups: dict, templates: list[str],
              second_moments: list[SecondMoment], ppl_texts: list[str], test_prefixes: list[str],
              variants=VALUE_VARIANTS, progress: bool = True) -> pd.DataFrame:
    """One row per setting, variant and case: the C-ROME edit from that variant's v*, applied alone and measured
    by ``outcomes.measure_edits`` (weights restored after each).

    ``second_moments``: one C per setting (``stats.covariance``). v* does not depend on C, so each variant's v*
    is computed once and edited in every setting. Columns: the paper's
    metrics (``PAPER_SCORES``: locality against the unedited model's tokens; ``rewrite_acc_prefix`` the mean over
    ``test_prefixes``, for every case), CounterFact's (``cf_*``), perplexity after the edit and its ratio to the
    unedited one (``ppl_ratio``), ``collapsed`` (``collapse.collapsed``), and v*'s own numbers: ``target_prob``
    (mean probability of target_new over the loss's templates at the last step), ``delta_norm`` ‖δ‖,
    ``clamp_bound``, ``clamped`` (‖δ‖ at the bound), ``start_norm`` ‖target_init‖, ``steps``; and ‖ΔW‖
    (``update_norm``).
    """
    values = values_by_variant(bundle, cases, templates, variants, progress)
    case_keys_ = [case_keys(bundle, c.prompt, c.subject, templates) for c in cases]
    ppl_before = metrics.perplexity_before(bundle, ppl_texts)  # the same weights in every setting
    rows = []
    for C in second_moments:
        # one measure_edits call per setting: the blocks below the edited layer run once for all its edits
        jobs = [(v, k) for v in variants for k in range(len(cases))]
        edits = [rome.make_edit(bundle, cases[k], values[v.name][k], case_keys_[k], C, "c-rome")
                 for v, k in jobs]
        measured = outcomes.measure_edits(bundle, edits, groups, ppl_texts, ppl_before, test_prefixes=test_prefixes,
                                          progress=progress)
        for (variant, k), outcome in zip(jobs, measured):
            value = values[variant.name][k]
            delta_norm, bound = value.delta.norm().item(), value.clamp_bound
            rows.append({
                "setting": C.setting, "variant": variant.name, "case_id": outcome.case_id, "group": outcome.group,
                "subject": outcome.subject, "target_new": outcome.target_new,
                **{s: getattr(outcome, s) for s in (*PAPER_SCORES, *(f"cf_{s}" for s in CF_SCORES))},
                "ppl_before": outcome.ppl_before, "ppl_after": outcome.ppl_after, "ppl_ratio": outcome.ppl_ratio,
                "collapsed": outcome.collapsed, "target_prob": value.target_prob, "delta_norm": delta_norm,
                "clamp_bound": bound, "clamped": bound is not None and delta_norm >= 0.999 * bound,
                "start_norm": value.target_init.norm().item(), "steps": value.steps,
                "update_norm": outcome.update_norm})
    return pd.DataFrame(rows)


def summary(study: pd.DataFrame) -> pd.DataFrame:
    """Means per setting, group and variant (in the study's variant order), with the worst perplexity ratio."""
    order = list(dict.fromkeys(study["variant"]))
    cols = [*PAPER_SCORES, *(f"cf_{s}" for s in CF_SCORES), "target_prob", "delta_norm", "clamp_bound"]
    out = study.groupby(["setting", "group", "variant"], sort=False).agg(
        edits=("case_id", "size"), **{c: (c, "mean") for c in cols}, clamped=("clamped", "mean"),
        ppl_ratio_max=("ppl_ratio", "max"), collapsed=("collapsed", "sum")).reset_index()
    out["variant"] = pd.Categorical(out["variant"], order, ordered=True)
    return out.sort_values(["setting", "group", "variant"]).reset_index(drop=True)


def _meets(part: str, values: pd.Series) -> pd.Series:
    """Whether each value meets the ``clamp-study`` part's rule in ``criteria.CRITERIA`` (NaN: no)."""
    c = criteria.criterion("clamp-study", part)
    return criteria.OPERATORS[c.op](values, c.threshold) & values.notna()


def clamp_checks(study: pd.DataFrame, setting: str, baseline: str = PAPER_CLAMP) -> pd.DataFrame:
    """One row per v* variant (in the study's order) of one setting, from :func:`run_study`'s table: ``cases``
    (collapse-prone), their mean ``efficacy`` (rewrite accuracy) without and ``with prefix``, ``normal efficacy``,
    mean ``locality`` (locality accuracy, all cases), the worst perplexity ratio, collapses, v*'s mean target
    probability on collapse-prone cases; and, for comparison, each variant held to the rules the verdict holds the
    prefixed clamp to (``reaches bar``, ``no collapse``, ``locality kept`` against ``baseline``, all three:
    ``would restore``)."""
    rows = study[study["setting"] == setting]
    checks = []
    for name, r in rows.groupby("variant", sort=False):
        prone, normal = r[r["group"] == "collapse-prone"], r[r["group"] == "normal"]
        checks.append({"variant": name, "cases": prone["case_id"].nunique(), "efficacy": prone["rewrite_acc"].mean(),
                       "efficacy with prefix": prone["rewrite_acc_prefix"].mean(),
                       "normal efficacy": normal["rewrite_acc"].mean() if len(normal) else float("nan"),
                       "locality": r["locality_acc"].mean(), "ppl_ratio_max": r["ppl_ratio"].max(skipna=False),
                       "collapsed": int(r["collapsed"].sum()), "target_prob": prone["target_prob"].mean()})
    checks = pd.DataFrame(checks).set_index("variant")
    checks["reaches bar"] = _meets("restores", checks["efficacy with prefix"])
    checks["no collapse"] = _meets("no-collapse", checks["ppl_ratio_max"])
    loss = (checks.loc[baseline, "locality"] - checks["locality"]).round(12)  # 0.6 − 0.5 is 0.1, not 0.0999…
    checks["locality kept"] = _meets("locality-kept", loss)
    checks["would restore"] = checks["reaches bar"] & checks["no collapse"] & checks["locality kept"]
    return checks
