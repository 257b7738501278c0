"""Notebook 10's study: does the way v* is set up limit C-ROME's efficacy with a test-time prefix?

ROME bounds ‖δ‖ by ``clamp_norm_factor`` × ‖W kᵘ + b‖ taken at the unprefixed prompt and starts v* there.
For a subject-first case that output is the very first token's, several times smaller than at later tokens
and far from W k̄ + b, the output C-ROME's update writes to. The variants below change one thing each
(``rome.ValueOptions`` or the clamp factor); every edit is C-ROME, applied alone and measured:
efficacy, generalisation and locality without and with a test-time prefix, ME-PPL perplexity, and what
the v* optimisation itself ended with (target probability, ‖δ‖ against its bound, steps).
None of the variants is the paper's, except the first, which is ROME's v* as the authors ran it.
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field

import pandas as pd
from tqdm.auto import tqdm

from . import metrics, rome
from .data import EditCase
from .experiments import COLLAPSE_FACTOR
from .keys import case_keys
from .models import Bundle
from .stats import SecondMoment
from .tokens import subject_is_first_token

log = logging.getLogger(__name__)

SCORES = ("efficacy", "generalization", "locality")


@dataclass(frozen=True)
class ValueVariant:
    """One way of setting up v*: ``options`` for the optimisation and, if given, another clamp factor."""
    name: str
    description: str
    options: rome.ValueOptions = field(default_factory=rome.ValueOptions)
    clamp_factor: float | None = None  # None: the model's clamp_norm_factor (4 for every model here)

    def bundle_for(self, bundle: Bundle) -> Bundle:
        """The same model and weights with this variant's clamp factor."""
        if self.clamp_factor is None:
            return bundle
        return dataclasses.replace(bundle, hparams=bundle.hparams.replace(clamp_norm_factor=self.clamp_factor))


LARGER_CLAMP_FACTOR = 10.0  # 2.5 × ROME's 4: between ROME's bound and the prefixed clamp's (about 5× on SmolLM2)

VALUE_VARIANTS = (
    ValueVariant("(i) paper clamp", "ROME's v*: starts at W kᵘ + b, ‖δ‖ ≤ 4‖W kᵘ + b‖, loss over all templates"),
    ValueVariant("(ii) prefixed clamp", "‖δ‖ ≤ 4‖W k̄ + b‖ (the mean output over the templates)",
                 rome.ValueOptions(clamp_reference="prefixed")),
    ValueVariant("(iii) larger factor", f"‖δ‖ ≤ {LARGER_CLAMP_FACTOR:g}‖W kᵘ + b‖ (ROME's clamp, a larger factor)",
                 clamp_factor=LARGER_CLAMP_FACTOR),
    ValueVariant("(iv) prefixed loss", "target loss over the prefixed templates only (paper clamp)",
                 rome.ValueOptions(loss_templates="prefixed")),
    ValueVariant("(v) prefixed start", "v* = W k̄ + b + δ, ‖δ‖ ≤ 4‖W k̄ + b‖: C-ROME writes exactly what was optimised",
                 rome.ValueOptions(start="prefixed", clamp_reference="prefixed")),
)


def variant_table(variants=VALUE_VARIANTS) -> pd.DataFrame:
    """What each variant changes, one row each."""
    return pd.DataFrame([{"variant": v.name, "what": v.description, **v.options.to_dict(),
                          "clamp factor": v.clamp_factor or "model's"} for v in variants])


def values_by_variant(bundle: Bundle, cases: list[EditCase], templates: list[str], variants=VALUE_VARIANTS,
                      progress: bool = True) -> dict[str, list[rome.ValueResult]]:
    """v* of every case under every variant (cached; the first variant shares the other notebooks' entries)."""
    out = {}
    for v in variants:
        log.info("v* for %d cases: %s", len(cases), v.name)
        out[v.name] = rome.values_for(v.bundle_for(bundle), cases, templates, options=v.options, progress=progress)
    return out


def _scores(bundle: Bundle, case: EditCase, test_prefixes: list[str]) -> dict:
    """Scores without a prefix and, for a subject-first case, the mean over the test-time prefixes."""
    plain = metrics.evaluate_cases(bundle, [case])[0]
    row = {s: getattr(plain, s) for s in SCORES}
    row["p_new"] = plain.p_new
    prefixed = [plain]
    if test_prefixes and subject_is_first_token(bundle, case.prompt, case.subject):
        prefixed = [metrics.evaluate_cases(bundle, [case], test_prefix=p)[0] for p in test_prefixes]
    for s in SCORES:
        values = [getattr(m, s) for m in prefixed if getattr(m, s) is not None]
        row[f"{s} with prefix"] = sum(values) / len(values) if values else None
    row["p_new with prefix"] = sum(m.p_new for m in prefixed) / len(prefixed)
    return row


def run_study(bundles: dict[str, Bundle], cases: list[EditCase], groups: dict, templates: list[str],
              second_moments: dict[str, SecondMoment], ppl_texts: list[str], test_prefixes: list[str],
              variants=VALUE_VARIANTS, progress: bool = True) -> pd.DataFrame:
    """One row per setting, variant and case: the C-ROME edit from that variant's v*, applied alone.

    ``bundles`` and ``second_moments`` map each setting to its bundle (the same weights) and C. v* does not
    depend on C, so each variant's v* is computed once and edited into both settings. Columns: the scores
    without and with the prefix (mean over ``test_prefixes``; for cases whose subject is not first the two
    are the same), perplexity after the edit and its ratio to the unedited one, ``collapsed`` (over
    ``COLLAPSE_FACTOR``×), and v*'s own numbers: ``target_prob`` (mean probability of target_new over the
    loss's templates at the last step), ``delta_norm`` ‖δ‖, ``clamp_bound``, ``clamped`` (‖δ‖ at the bound),
    ``start_norm`` ‖target_init‖, ``steps``; and ‖ΔW‖ (``update_norm``).
    """
    first = next(iter(bundles.values()))
    values = values_by_variant(first, cases, templates, variants, progress)
    case_keys_ = [case_keys(first, c.prompt, c.subject, templates) for c in cases]
    ppl_before = metrics.perplexity(first, ppl_texts).mean
    rows = []
    jobs = [(s, v, k) for s in bundles for v in variants for k in range(len(cases))]
    for setting, variant, k in tqdm(jobs, desc="C-ROME edits", disable=not progress):
        bundle, case, value = bundles[setting], cases[k], values[variant.name][k]
        edit = rome.make_edit(bundle, case, value, case_keys_[k], second_moments[setting], "c-rome")
        with rome.applied(bundle, edit):
            ppl_after = metrics.perplexity(bundle, ppl_texts).mean
            scores = _scores(bundle, case, test_prefixes)
        bound = value.clamp_bound
        rows.append({
            "setting": setting, "variant": variant.name, "case_id": case.case_id, "group": groups.get(case.case_id, "?"),
            "subject": case.subject, "target_new": case.target_new, **scores,
            "ppl_before": ppl_before, "ppl_after": ppl_after, "ppl_ratio": ppl_after / ppl_before,
            "collapsed": not ppl_after < COLLAPSE_FACTOR * ppl_before,
            "target_prob": value.target_prob, "delta_norm": value.delta.norm().item(), "clamp_bound": bound,
            "clamped": bound is not None and value.delta.norm().item() >= 0.999 * bound,
            "start_norm": value.target_init.norm().item(), "steps": value.steps,
            "update_norm": edit.report.delta_norm})
    return pd.DataFrame(rows)


def summary(study: pd.DataFrame) -> pd.DataFrame:
    """Means per setting, group and variant (in the study's variant order), with the worst perplexity ratio."""
    order = list(dict.fromkeys(study["variant"]))
    cols = ["efficacy", "efficacy with prefix", "generalization", "generalization with prefix", "locality",
            "locality with prefix", "target_prob", "delta_norm", "clamp_bound"]
    out = study.groupby(["setting", "group", "variant"], sort=False).agg(
        edits=("case_id", "size"), **{c: (c, "mean") for c in cols}, clamped=("clamped", "mean"),
        ppl_ratio_max=("ppl_ratio", "max"), collapsed=("collapsed", "sum")).reset_index()
    out["variant"] = pd.Categorical(out["variant"], order, ordered=True)
    return out.sort_values(["setting", "group", "variant"]).reset_index(drop=True)


EFFICACY_BAR = 0.9  # efficacy with the prefix a variant must reach on collapse-prone cases
MAX_PPL_RATIO = 2.0  # every edit's perplexity within this many times the unedited one
LOCALITY_SLACK = 0.05  # mean locality may fall at most this far below the paper clamp's
NORMAL_EFFICACY_SLACK = 0.1  # normal cases' efficacy may fall at most this far below the paper clamp's


@dataclass
class StudyVerdict:
    """The verdict for one setting: which variants pass, and the numbers behind it."""
    setting: str
    verdict: str  # "holds", "holds in part" or "does not hold" (claims.VERDICTS)
    passing: list[str]  # variants that pass every condition
    best: str  # the variant with the highest efficacy with the prefix among those that keep the model intact
    checks: pd.DataFrame  # per variant: the numbers and each condition
    measured: str  # one line for the claims table


def judge(study: pd.DataFrame, setting: str, baseline: str = VALUE_VARIANTS[0].name) -> StudyVerdict:
    """A variant *restores* C-ROME when, in this setting, collapse-prone efficacy with the prefix is at least
    ``EFFICACY_BAR``, no edit (of either group) collapses or takes perplexity past ``MAX_PPL_RATIO``×, mean
    locality (with the prefix where one is used) is at most ``LOCALITY_SLACK`` below the baseline's, and
    normal cases' efficacy at most ``NORMAL_EFFICACY_SLACK`` below it. The claim holds when some variant
    restores C-ROME; it holds in part when a variant reaches the bar at a cost (collapse, perplexity, locality
    or normal cases' efficacy: the set-up is what limits efficacy, but lifting it harms the model) or an intact
    one lifts efficacy with the prefix by at least 0.1; otherwise it does not hold."""
    rows = study[study["setting"] == setting]
    checks = []
    for name, r in rows.groupby("variant", sort=False):
        prone, normal = r[r["group"] == "collapse-prone"], r[r["group"] == "normal"]
        checks.append({"variant": name, "efficacy": prone["efficacy"].mean(),
                       "efficacy with prefix": prone["efficacy with prefix"].mean(),
                       "normal efficacy": normal["efficacy"].mean() if len(normal) else float("nan"),
                       "locality": r["locality with prefix"].mean(), "ppl_ratio_max": r["ppl_ratio"].max(),
                       "collapsed": int(r["collapsed"].sum()), "target_prob": prone["target_prob"].mean()})
    checks = pd.DataFrame(checks).set_index("variant")
    base = checks.loc[baseline]
    checks["intact"] = ((checks["collapsed"] == 0) & (checks["ppl_ratio_max"] <= MAX_PPL_RATIO)
                        & (checks["locality"] >= base["locality"] - LOCALITY_SLACK)
                        & ~(checks["normal efficacy"] < base["normal efficacy"] - NORMAL_EFFICACY_SLACK))
    checks["reaches bar"] = checks["efficacy with prefix"] >= EFFICACY_BAR
    checks["passes"] = checks["intact"] & checks["reaches bar"]
    passing = list(checks.index[checks["passes"]])
    intact = checks[checks["intact"]]
    best = intact["efficacy with prefix"].idxmax() if len(intact) else baseline
    lift = checks.loc[best, "efficacy with prefix"] - base["efficacy with prefix"]
    verdict = "holds" if passing else "holds in part" if lift >= 0.1 or checks["reaches bar"].any() else "does not hold"
    # the variant to quote: the first that passes, else the best locality among those reaching the bar
    reaching = checks[checks["reaches bar"]]
    top = passing[0] if passing else reaching["locality"].idxmax() if len(reaching) else \
        checks["efficacy with prefix"].idxmax()
    t = checks.loc[top]
    measured = (f"collapse-prone efficacy with a test-time prefix {base['efficacy with prefix']:.2f} with ROME's v* "
                f"(its target probability {base['target_prob']:.2f}); {top}: {t['efficacy with prefix']:.2f} "
                f"(target probability {t['target_prob']:.2f}) with locality {t['locality']:.2f} vs "
                f"{base['locality']:.2f} and worst perplexity {t['ppl_ratio_max']:.2f}×; "
                f"{len(passing)} of {len(checks) - 1} variants reach {EFFICACY_BAR:g} with locality kept")
    return StudyVerdict(setting, verdict, passing, best, checks, measured)
