"""rules.beyond: the verdicts of notebooks 08 (predict-collapse), 09 (sequential) and 10 (clamp-study), each part
at its threshold's edges, on small hand-made tables."""
import pandas as pd
import pytest

from rome_collapse import criteria
from rome_collapse.rules import beyond

DEFINITIONS = {"> 2×": 2.0, "> 10×": 10.0}


def status(parts, name):
    return {p.part: p for p in parts}[name].status


# --------------------------------------------------------------------------------------------
# Notebook 08
# --------------------------------------------------------------------------------------------
def screens(auc=1.0, refusal=0.0, mild_auc=None, simpler_auc=0.5, collapses=3, harmless=10):
    """screening.screens' table: the ratio and one simpler sign at both definitions."""
    rows = []
    for collapse in DEFINITIONS:
        ratio_auc = mild_auc if collapse == "> 2×" and mild_auc is not None else auc
        for predictor, a, rate in (("ratio", ratio_auc, refusal), ("subject is the first token", simpler_auc, 0.0)):
            rows.append({"collapse": collapse, "predictor": predictor, "auc": a, "collapses": collapses,
                         "harmless": harmless, "catch_all_threshold": 0.02, "false_refusals": round(rate * harmless),
                         "false_refusal_rate": rate})
    return pd.DataFrame(rows)


EDITS = pd.DataFrame({"ppl_ratio": [500.0, 30.0, float("nan"), 3.0, 1.0], "at_risk": [True, True, True, True, False],
                      "group": ["collapse-prone"] * 3 + ["normal"] * 2})


@pytest.mark.parametrize("auc, expected", [(0.94, "fails"), (0.95, "holds"), (0.96, "holds")])
def test_separates_at_its_edge(auc, expected):
    parts = beyond.predict_collapse_parts(screens(auc=auc, mild_auc=1.0), DEFINITIONS)
    assert status(parts, "separates") == expected


@pytest.mark.parametrize("auc, expected", [(0.94, "fails"), (0.95, "holds"), (0.96, "holds")])
def test_separates_mild_at_its_edge(auc, expected):
    parts = beyond.predict_collapse_parts(screens(mild_auc=auc), DEFINITIONS)
    assert status(parts, "separates-mild") == expected and status(parts, "separates") == "holds"


@pytest.mark.parametrize("rate, expected", [(0.09, "holds"), (0.1, "holds"), (0.11, "fails")])
def test_few_false_refusals_at_its_edge(rate, expected):
    assert status(beyond.predict_collapse_parts(screens(refusal=rate), DEFINITIONS), "few-false-refusals") == expected


@pytest.mark.parametrize("ratio_auc, simpler_auc, expected", [
    (0.985, 0.975, "fails"),  # margin 0.01: not above it
    (0.98, 0.975, "fails"),  # just below
    (0.99, 0.975, "holds"),  # just above
    (1.0, 0.989, "holds"),  # room 0.011 for the ratio: testable, and it wins by 0.011
    (1.0, 0.99, "not testable"),  # room 0.01 only: no margin above 0.01 is possible
    (1.0, 1.0, "not testable"),  # the simpler sign is perfect
])
def test_beats_simpler_at_its_edge_and_without_room(ratio_auc, simpler_auc, expected):
    parts = beyond.predict_collapse_parts(screens(auc=ratio_auc, simpler_auc=simpler_auc), DEFINITIONS)
    assert status(parts, "beats-simpler") == expected


def test_a_perfect_simpler_sign_makes_the_verdict_not_holds_and_says_why():
    judged = beyond.judge_predict_collapse(screens(simpler_auc=1.0), EDITS, "m", "paper", DEFINITIONS)
    (v,) = judged.verdicts
    assert (v.claim_id, v.verdict, v.setting) == ("predict-collapse", "holds in part", "paper")
    assert "not testable: beats-simpler" in v.measured
    assert "'subject is the first token' already has AUC 1.00" in judged.text
    assert "Does it beat simpler signs? cannot be told on this model" in judged.text
    assert "> 10×: 3 collapses, AUC 1.00" in v.measured
    assert "CLI default 0.1 catches 3/3 (> 10×), refuses 1/2" in v.measured
    shown = criteria.parts_frame(list(judged.parts))
    assert list(shown["part"]) == ["separates", "few-false-refusals", "separates-mild", "beats-simpler"]
    # the simpler sign is no better than chance: the ratio beats it and the claim holds
    better = beyond.judge_predict_collapse(screens(simpler_auc=0.5), EDITS, "m", "paper", DEFINITIONS)
    assert better.verdicts[0].verdict == "holds" and "Does it beat simpler signs? yes, by 0.50" in better.text


def test_no_collapse_at_the_strict_definition_is_not_testable():
    parts = beyond.predict_collapse_parts(screens(collapses=0), DEFINITIONS)
    assert {p.part: p.status for p in parts if p.part != "separates-mild"} == dict.fromkeys(
        ["separates", "few-false-refusals", "beats-simpler"], "not testable")
    assert "no collapse (> 10×)" in parts[0].note


def test_roc_note_says_why_the_roc_is_degenerate():
    perfect = screens(simpler_auc=1.0)
    # the 30× edit lies between the two definitions: they differ, but every sign is perfect at each
    note = beyond.roc_note(perfect, EDITS, DEFINITIONS)
    assert "every sign separates the edits perfectly" in note and "mark the same" not in note
    same = EDITS.assign(ppl_ratio=[500.0, 30.0, float("nan"), 1.5, 1.0])  # no blow-up between 2× and 10×
    note = beyond.roc_note(perfect, same, DEFINITIONS)
    assert "mark the same 3 edits" in note and "every collapse-prone (subject-first) edit collapses" in note
    assert beyond.roc_note(screens(simpler_auc=0.7), EDITS, DEFINITIONS) == ""


# --------------------------------------------------------------------------------------------
# Notebook 09
# --------------------------------------------------------------------------------------------
def run_steps(variant, groups, norms, ppl_ratios, setting="paper", stream="mixed"):
    """One run of notebook 09's trajectories: a step-0 row, then one row per edit (ppl_ratio None: not measured)."""
    rows = [{"stream": stream, "variant": variant, "setting": setting, "step": 0, "ppl": 100.0, "ppl_ratio": 1.0}]
    for i, (g, d, r) in enumerate(zip(groups, norms, ppl_ratios)):
        rows.append({"stream": stream, "variant": variant, "setting": setting, "step": i + 1, "group": g,
                     "subject_first": g == "collapse-prone", "ratio": 0.01 if g == "collapse-prone" else 0.9,
                     "update_norm": d, "ppl": None if r is None else 100 * r, "ppl_ratio": r})
    return rows


GROUPS = ["normal", "collapse-prone", "normal", "normal"]
COLLAPSING = [None, 50.0, None, 80.0]  # measured every 2 edits: over 10× at edit 2
SAFE = [None, 1.01, None, 1.02]


def sequential(rome_runs, crome_runs, groups=GROUPS, norms=(1.0, 50.0, 2.0, 1.0)):
    rows = [r for i, ratios in enumerate(rome_runs) for r in run_steps("rome", groups, norms, ratios, stream=f"s{i}")]
    rows += [r for i, ratios in enumerate(crome_runs) for r in run_steps("c-rome", groups, [1.0] * 4, ratios,
                                                                         stream=f"s{i}")]
    rows += run_steps("rome", groups, [1.0] * 4, [1.0] * 4, setting="original")  # another setting: must not count
    return beyond.judge_sequential(pd.DataFrame(rows), "m", "paper")


def test_sequential_holds_with_the_same_lines_as_before():
    judged = sequential([COLLAPSING], [SAFE])
    (v,) = judged.verdicts
    assert v.verdict == "holds"
    assert v.measured == ("C-ROME s0: ≤ 1.02× in 4 edits; ROME s0: over 10× at edit 2 (50×), "
                          "subject-first edit 2 the largest")
    assert "the subject-first edits are [2]" in judged.text
    assert judged.text.startswith("**paper setting: the claim holds.**")


@pytest.mark.parametrize("crome, expected", [([SAFE, SAFE], "holds"), ([SAFE, [None, 1.0, None, 10.01]], "fails"),
                                             ([SAFE, [None, 1.0, None, 10.0]], "holds"),
                                             ([SAFE, [None, 1.0, None, float("nan")]], "fails")])
def test_c_rome_stays_at_its_edge(crome, expected):
    """Over 10× is collapse.collapsed's rule, as in sequential.summary's first_10x: 10.0 itself is not over, NaN is."""
    assert status(sequential([COLLAPSING], crome).parts, "c-rome-stays") == expected  # 0 runs over: holds; 1: fails


def test_rome_collapses_at_its_edge():
    assert status(sequential([COLLAPSING, COLLAPSING], [SAFE]).parts, "rome-collapses") == "holds"  # share 1
    half = sequential([COLLAPSING, [None, 3.0, None, 9.99]], [SAFE])  # share 0.5; the other only over 2×
    assert status(half.parts, "rome-collapses") == "fails" and half.verdicts[0].verdict == "holds in part"
    assert "no collapse in 4 edits (over 2× at edit 2; last 9.99×)" in half.text


def test_at_subject_first_at_its_edge():
    # both collapse at edit 2; with the normal edit 1 the largest, that run's collapse is not blamed on edit 2
    blamed = sequential([COLLAPSING], [SAFE], norms=(1.0, 50.0, 2.0, 1.0))
    elsewhere = sequential([COLLAPSING], [SAFE], norms=(60.0, 5.0, 2.0, 1.0))
    assert status(blamed.parts, "at-subject-first") == "holds"
    assert status(elsewhere.parts, "at-subject-first") == "fails"
    assert "largest edit 1 is normal" in elsewhere.verdicts[0].measured
    # a window without a subject-first edit
    none = sequential([[None, 1.0, None, 50.0]], [SAFE], norms=(1.0, 5.0, 60.0, 1.0))
    assert status(none.parts, "at-subject-first") == "fails" and "the subject-first edits are none" in none.text


def test_sequential_not_testable_parts():
    # ROME never crosses: nothing to blame
    within = sequential([[None, 1.5, None, 1.8]], [SAFE])
    assert status(within.parts, "at-subject-first") == "not testable"
    assert within.verdicts[0].verdict == "holds in part"  # C-ROME stays; ROME does not collapse
    # no subject-first edit in ROME's stream, no C-ROME run
    normal_only = sequential([COLLAPSING], [], groups=["normal"] * 4)
    assert normal_only.verdicts[0].verdict == "not testable"


def test_a_non_finite_last_measurement_counts_as_a_collapse():
    steps = pd.DataFrame(run_steps("rome", GROUPS[:2], [1.0, 50.0], [1.0, float("nan")])
                         + run_steps("c-rome", GROUPS[:2], [1.0, 1.0], [1.0, 1.01]))
    assert beyond.judge_sequential(steps, "m", "paper").verdicts[0].verdict == "holds"


# --------------------------------------------------------------------------------------------
# Notebook 10
# --------------------------------------------------------------------------------------------
BASE, PREFIXED = "(i) paper clamp", "(ii) prefixed clamp"


def checks(efficacy=1.0, base_efficacy=0.5, ppl=1.1, locality=0.8, base_locality=0.8, cases=6, other=True):
    """clamp_checks' table: the baseline, the prefixed clamp, and another variant that would pass everything."""
    rows = [{"variant": BASE, "cases": cases, "efficacy with prefix": base_efficacy, "locality": base_locality,
             "ppl_ratio_max": 1.0},
            {"variant": PREFIXED, "cases": cases, "efficacy with prefix": efficacy, "locality": locality,
             "ppl_ratio_max": ppl}]
    if other:
        rows.append({"variant": "(iii) larger factor", "cases": cases, "efficacy with prefix": 1.0, "locality": 0.9,
                     "ppl_ratio_max": 1.0})
    return pd.DataFrame(rows).set_index("variant")


@pytest.mark.parametrize("part, kwargs, expected", [
    ("clamp-limits", dict(efficacy=0.9, base_efficacy=0.81), "fails"),
    ("clamp-limits", dict(efficacy=0.9, base_efficacy=0.8), "holds"),
    ("clamp-limits", dict(efficacy=0.9, base_efficacy=0.79), "holds"),
    ("restores", dict(efficacy=0.89), "fails"),
    ("restores", dict(efficacy=0.9), "holds"),
    ("restores", dict(efficacy=0.91), "holds"),
    ("no-collapse", dict(ppl=1.99), "holds"),
    ("no-collapse", dict(ppl=2.0), "holds"),
    ("no-collapse", dict(ppl=2.01), "fails"),
    ("no-collapse", dict(ppl=float("nan")), "fails"),  # non-finite weights: a collapse
    ("locality-kept", dict(locality=0.76), "holds"),
    ("locality-kept", dict(locality=0.75), "holds"),
    ("locality-kept", dict(locality=0.74), "fails"),
    ("enough-cases", dict(cases=5), "fails"),
    ("enough-cases", dict(cases=6), "holds"),
    ("enough-cases", dict(cases=7), "holds"),
])
def test_clamp_study_parts_at_their_edges(part, kwargs, expected):
    assert status(beyond.clamp_study_parts(checks(**kwargs), PREFIXED, BASE), part) == expected


def test_clamp_study_is_about_the_prefixed_clamp_only():
    # the prefixed clamp loses locality; another variant would pass everything: the verdict does not take it
    judged = beyond.judge_clamp_study(checks(locality=0.5), "m", "original", PREFIXED, BASE)
    (v,) = judged.verdicts
    assert (v.claim_id, v.verdict, v.setting) == ("clamp-study", "holds in part", "original")
    assert v.measured.startswith("(ii) prefixed clamp: collapse-prone efficacy with a test-time prefix 1.00 vs 0.50")
    assert "6 collapse-prone cases" in v.measured and "fails: locality-kept" in v.measured
    assert "(iii) larger factor 1.00 (locality 0.90)" in judged.text
    few = beyond.judge_clamp_study(checks(cases=1), "m", "original", PREFIXED, BASE)
    assert few.verdicts[0].verdict == "holds in part" and "fails: enough-cases" in few.verdicts[0].measured
    assert beyond.judge_clamp_study(checks(), "m", "original", PREFIXED, BASE).verdicts[0].verdict == "holds"


def study_rows(variant, prefix_efficacy, locality, ppl_ratio=1.0, setting="paper", cases=2):
    """clamp_study.run_study's table: ``cases`` collapse-prone rows and one normal row of one variant."""
    prone = [{"setting": setting, "variant": variant, "case_id": k, "group": "collapse-prone", "rewrite_acc": 0.0,
              "rewrite_acc_prefix": prefix_efficacy, "locality_acc": locality, "ppl_ratio": ppl_ratio,
              "collapsed": ppl_ratio > 10, "target_prob": 0.5} for k in range(cases)]
    normal = {**prone[0], "case_id": 99, "group": "normal", "rewrite_acc": 1.0, "rewrite_acc_prefix": 1.0,
              "ppl_ratio": 1.0, "collapsed": False}
    return prone + [normal]


def test_clamp_checks_summarise_each_variant_and_hold_it_to_the_verdicts_rules():
    from rome_collapse.studies import clamp_study

    study = pd.DataFrame(study_rows(BASE, 0.5, 0.8) + study_rows(PREFIXED, 0.9, 0.75)
                         + study_rows("(v) prefixed start", 1.0, 0.74)
                         + study_rows("(iii) larger factor", 1.0, 0.8, 2.01)
                         + study_rows(PREFIXED, 0.0, 0.0, setting="original"))  # another setting: must not count
    found = clamp_study.clamp_checks(study, "paper")
    assert list(found.index) == [BASE, PREFIXED, "(v) prefixed start", "(iii) larger factor"]
    assert found.loc[PREFIXED, "cases"] == 2 and found.loc[PREFIXED, "efficacy with prefix"] == 0.9
    assert found.loc[PREFIXED, "normal efficacy"] == 1.0
    assert list(found["would restore"]) == [False, True, False, False]  # below 0.9; passes; locality; perplexity
    judged = beyond.judge_clamp_study(found, "m", "paper", PREFIXED, BASE)
    assert status(judged.parts, "enough-cases") == "fails" and status(judged.parts, "restores") == "holds"
