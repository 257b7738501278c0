"""The claims table: validation, the CSV round trip, and the overview's layout."""
import pandas as pd
import pytest

from rome_collapse import claims


@pytest.fixture
def claims_home(tmp_path, monkeypatch):
    monkeypatch.setattr(claims, "figures_dir", lambda profile="full": tmp_path / profile)
    return tmp_path


def test_verdict_rejects_unknown_claim_bad_verdict_and_empty_measurement():
    with pytest.raises(ValueError, match="unknown claim_id 'tabel-1'"):
        claims.Verdict("tabel-1", "m", "x", "holds")
    with pytest.raises(ValueError, match="claim 'bos': verdict 'yes'"):
        claims.Verdict("bos", "m", "x", "yes")
    with pytest.raises(ValueError, match="claim 'bos': 'measured' is empty"):
        claims.Verdict("bos", "m", "  ", "holds")
    with pytest.raises(ValueError, match="claim 'bos': setting 'memit'"):
        claims.Verdict("bos", "m", "x", "holds", setting="memit")


def test_save_and_load_round_trip(claims_home):
    found = [claims.Verdict("denominator", "smol", "ratio 0.01 vs 0.9", "holds", "rome"),
             claims.Verdict("rome-collapses", "smol", "3/12 | over 10×", "holds in part", "rome"),
             claims.Verdict("rome-collapses", "smol", "12/12 over 10×", "holds", "paper")]
    path = claims.save(found, "01_denominators", "smol", profile="smoke")
    assert path == claims_home / "smoke" / "claims" / "01_denominators_smol.csv"
    table = claims.load("smoke")
    assert list(table["claim_id"]) == ["denominator", "rome-collapses", "rome-collapses"]
    assert list(table["verdict"]) == ["holds", "holds in part", "holds"]
    assert list(table["setting"]) == ["rome", "rome", "paper"]
    assert table["measured"].iloc[1] == "3/12 | over 10×"
    assert claims.load("full").empty  # profiles are kept apart


def test_a_claim_judged_twice_keeps_the_run_on_that_model(claims_home):
    # notebook 03 judges the BOS claim on the BOS model whichever model it runs on
    claims.save([claims.Verdict("bos", "gemma", "from the gemma run", "does not hold")], "03_first_token", "gemma")
    claims.save([claims.Verdict("bos", "gemma", "from the smol run", "holds")], "03_first_token", "smol")
    table = claims.load()
    assert len(table) == 1 and table["measured"].iloc[0] == "from the gemma run"


def test_load_refuses_files_naming_unknown_claims(claims_home):
    claims.claims_dir().joinpath("x_m.csv").write_text(
        "notebook,run_model,profile,claim_id,model,measured,verdict,setting\nx,m,full,nonsense,m,1,holds,any\n")
    with pytest.raises(ValueError, match="nonsense"):
        claims.load()


def test_overview_has_every_claim_in_order_and_blank_cells_where_not_judged():
    verdicts = pd.DataFrame([{"claim_id": "bos", "model": "gemma", "measured": "0/4 collapse", "verdict": "holds"},
                             {"claim_id": "denominator", "model": "smol", "measured": "0.01", "verdict": "holds"}])
    table = claims.overview(verdicts, ["smol", "gemma"])
    assert list(table["claim_id"]) == list(claims.CLAIMS)
    row = table.set_index("claim_id")
    assert row.loc["bos", "gemma"] == "holds: 0/4 collapse" and row.loc["bos", "smol"] == ""
    assert row.loc["denominator", "smol"] == "holds: 0.01"
    grid = claims.verdict_grid(verdicts, ["smol", "gemma"])
    assert grid.loc[("bos", "any"), "gemma"] == "holds" and grid.loc[("bos", "any"), "smol"] == ""
    empty = claims.verdict_grid(verdicts.iloc[:0], ["smol"])
    assert empty.shape == (len(claims.CLAIMS), 1) and (empty == "").all().all()


def test_overview_has_a_row_per_setting_that_judged_a_claim():
    verdicts = pd.DataFrame([
        {"claim_id": "rome-collapses", "model": "smol", "measured": "3/12", "verdict": "holds in part", "setting": "rome"},
        {"claim_id": "rome-collapses", "model": "smol", "measured": "12/12", "verdict": "holds", "setting": "paper"},
        {"claim_id": "key-mismatch", "model": "smol", "measured": "cos 0.05", "verdict": "holds", "setting": "any"}])
    table = claims.overview(verdicts, ["smol"])
    rows = table[table["claim_id"] == "rome-collapses"]
    assert list(rows["setting"]) == ["paper", "rome"]  # the paper's setting first
    assert list(rows["smol"]) == ["holds: 12/12", "holds in part: 3/12"]
    assert table.loc[table["claim_id"] == "key-mismatch", "setting"].tolist() == ["any"]
    assert len(table) == len(claims.CLAIMS) + 1
    grid = claims.verdict_grid(verdicts, ["smol"])
    assert grid.loc[("rome-collapses", "paper"), "smol"] == "holds"
    assert grid.loc[("rome-collapses", "rome"), "smol"] == "holds in part"


def test_markdown_escapes_pipes():
    text = claims.to_markdown(pd.DataFrame({"a": ["x|y"], "b": [1]}))
    assert text.splitlines() == ["| a | b |", "|---|---|", "| x\\|y | 1 |"]


# --------------------------------------------------------------------------------------------
# The verdict rules, on small hand-made tables
# --------------------------------------------------------------------------------------------
def verdicts_of(judgement):
    return {(v.claim_id, v.model): v.verdict for v in judgement.verdicts}


def edit_rows(setting, group, variant, ratios, ppl_after, before=100.0):
    return [{"setting": setting, "group": group, "variant": variant, "ratio": r, "denominator": 5 * r,
             "ppl_before": before, "ppl_after": p, "collapsed": not p <= 10 * before} for r, p in zip(ratios, ppl_after)]


def denominator_edits(cp_ratios, rome_cp_ppl, crome_ppl, normal_ratios=(0.9, 1.1)):
    rows = (edit_rows("paper", "collapse-prone", "rome", cp_ratios, rome_cp_ppl)
            + edit_rows("paper", "normal", "rome", normal_ratios, [105.0] * len(normal_ratios))
            + edit_rows("paper", "collapse-prone", "c-rome", [1.0] * len(cp_ratios), crome_ppl[:len(cp_ratios)])
            + edit_rows("paper", "normal", "c-rome", [1.0] * len(normal_ratios), crome_ppl[len(cp_ratios):])
            # another setting's rows, which must not count
            + edit_rows("rome", "collapse-prone", "rome", [0.9] * len(cp_ratios), [100.0] * len(cp_ratios)))
    return pd.DataFrame(rows)


def test_judge_denominators_holds_holds_in_part_and_does_not_hold():
    holds = claims.judge_denominators(denominator_edits([0.01, 0.02], [5e4, 3e3], [101.0] * 4), "m", "paper")
    assert verdicts_of(holds) == {("denominator", "m"): "holds", ("rome-collapses", "m"): "holds",
                                  ("c-rome-safe", "m"): "holds"}
    assert all(v.setting == "paper" for v in holds.verdicts)
    assert "the claim holds" in holds.text and "2/2 ROME edits over 10× ME-PPL" in holds.verdicts[1].measured
    # one of three collapse-prone ROME edits collapses: part of the claim
    part = claims.judge_denominators(denominator_edits([0.01, 0.02, 0.03], [5e4, 300.0, 200.0], [101.0] * 5), "m", "paper")
    assert verdicts_of(part)[("rome-collapses", "m")] == "holds in part"
    assert "the claim holds in part" in part.text
    # the denominator is not small, nothing collapses, and C-ROME triples perplexity
    none = claims.judge_denominators(denominator_edits([0.5, 0.6], [150.0, 120.0], [300.0, 101.0, 101.0, 101.0]),
                                     "m", "paper")
    assert set(verdicts_of(none).values()) == {"does not hold"}
    assert "the claim does not hold" in none.text


def test_judge_key_mismatch():
    def table(cos_first):
        return pd.DataFrame({"group": ["collapse-prone", "collapse-prone", "normal", "normal"],
                             "cos_ku_kbar": [cos_first, cos_first + 0.1, 0.9, 0.8], "ratio": [0.01, 0.02, 0.9, 1.0]})

    assert claims.judge_key_mismatch(table(0.1), "m").verdicts[0].verdict == "holds"
    assert claims.judge_key_mismatch(table(0.1), "m").verdicts[0].measured == \
        "mean cos(kᵘ, k̄) 0.15 (collapse-prone) vs 0.85 (normal)"
    assert claims.judge_key_mismatch(table(0.5), "m").verdicts[0].verdict == "does not hold"
    normal_only = table(0.1)[lambda t: t.group == "normal"]
    assert claims.judge_key_mismatch(normal_only, "m").verdicts[0].verdict == "not testable"


def centroid_table(collapse_first, normal_later, prefixed_later, exposed=None):
    def row(name, first, later, first_nobos=0.0):
        return {"set": name, "cos_to_first": first, "cos_to_later": later, "cos_to_first_nobos": first_nobos,
                "nearest_first": first, "nearest_later": later, "nearest_first_nobos": first_nobos}

    rows = [row("collapse kᵘ", collapse_first, 1 - collapse_first), row("normal kᵘ", 1 - normal_later, normal_later),
            row("collapse kᵘ, prefixed", 1 - prefixed_later, prefixed_later)]
    if exposed is not None:
        rows.append(row("collapse kᵘ, BOS removed", 0.0, 1 - exposed, exposed))
    return pd.DataFrame(rows)


def test_judge_first_token_without_and_with_a_bos():
    assert claims.judge_first_token(centroid_table(1.0, 1.0, 0.75), "m", bos=False).verdicts[0].verdict == "holds"
    assert claims.judge_first_token(centroid_table(0.25, 1.0, 1.0), "m", bos=False).verdicts[0].verdict == "does not hold"
    assert claims.judge_first_token(centroid_table(0.0, 1.0, 1.0), "m", bos=False).verdicts[0].verdict == "does not hold"
    # with a BOS the collapse kᵘ must sit with later tokens, and join the BOS-free first tokens once it is removed
    assert claims.judge_first_token(centroid_table(0.0, 1.0, 1.0, exposed=0.75), "g", bos=True).verdicts[0].verdict \
        == "holds"
    hidden = claims.judge_first_token(centroid_table(0.0, 1.0, 1.0, exposed=0.25), "g", bos=True)
    assert hidden.verdicts[0].verdict == "does not hold" and "does not expose" in hidden.text


def bos_table(rome_with, rome_without, crome_without=False):
    rows = []
    for bos, variant, collapsed in [("with BOS", "rome", rome_with), ("without BOS", "rome", rome_without),
                                    ("with BOS", "c-rome", False), ("without BOS", "c-rome", crome_without)]:
        for case_id in (1, 2):
            rows.append({"BOS": bos, "variant": variant, "case_id": case_id, "ratio": 0.5, "ppl_before": 100.0,
                         "ppl_factor": 50.0 if collapsed else 1.1, "collapsed": collapsed})
    return pd.DataFrame(rows)


def test_judge_bos():
    assert claims.judge_bos(bos_table(False, True), "g", "paper").verdicts[0].verdict == "holds"
    part = claims.judge_bos(bos_table(False, False), "g", "paper").verdicts[0]
    assert part.verdict == "holds in part" and part.measured.startswith("ROME collapses 0% of 2 edits with the BOS")
    assert claims.judge_bos(bos_table(True, True), "g", "paper").verdicts[0].verdict == "does not hold"
    assert claims.judge_bos(bos_table(False, True, crome_without=True), "g", "paper").verdicts[0].verdict \
        == "holds in part"


def test_judge_encoder():
    def table(causal):
        return pd.DataFrame({"model / token": ["causal", "encoder"], "concentration": [causal, 1.0],
                             "separation": [3.0, 1.0], "norm_ratio": [0.2, 1.0]})

    assert claims.judge_encoder(table(0.05), "m", "minilm").verdicts[0].verdict == "holds"
    assert claims.judge_encoder(table(0.8), "m", "minilm").verdicts[0].verdict == "does not hold"


PLAIN = "none (ROME)"  # interventions.PLAIN (claims reads the swap's rows by their kind, the others as plain)


def swap_table(kind, plain_collapsed, swap_collapsed):
    rows = []
    for i, (p, s) in enumerate(zip(plain_collapsed, swap_collapsed)):
        for intervention, collapsed in ((PLAIN, p), (kind, s)):
            rows.append({"case_id": i, "intervention": intervention, "key_shift": 0.0 if intervention == PLAIN
                         else 0.5, "ratio": 0.01 if collapsed else 0.9, "ppl_after": 1e4 if collapsed else 110.0,
                         "ppl_factor": 100.0 if collapsed else 1.1, "collapsed": collapsed})
    return pd.DataFrame(rows, columns=["case_id", "intervention", "key_shift", "ratio", "ppl_after", "ppl_factor",
                                       "collapsed"])


def test_position_checks_and_judge_position():
    table6 = swap_table("second2first", [True] * 5, [True] * 5)
    keeps = claims.position_checks(table6, swap_table("first2second", [False] * 5, [False, False, False, False, True]))
    assert list(keeps["same_status"]) == [1.0, 0.8] and list(keeps["cases"]) == [5, 5]
    assert claims.judge_position(keeps, "m", "paper").verdicts[0].verdict == "holds"
    moved = claims.position_checks(table6, swap_table("first2second", [False] * 5, [False, False, False, True, True]))
    judged = claims.judge_position(moved, "m", "paper")
    assert judged.verdicts[0].verdict == "does not hold" and "status kept for 60%" in judged.verdicts[0].measured
    empty = swap_table("second2first", [], [])
    nothing = claims.judge_position(claims.position_checks(empty, empty), "m", "paper").verdicts[0]
    assert (nothing.verdict, nothing.measured) == ("not testable", "no cases")


def test_concentration_summary_reads_the_bos_and_the_edit_layer_from_the_tables():
    rows = []
    for setting, first, first_value in [("a", "first token (pos 0)", 0.2), ("b (BOS)", "BOS (pos 0)", 0.0),
                                        ("b (BOS)", "first word (pos 1)", 0.9)]:
        for layer in range(4):
            rows.append({"setting": setting, "token set": first, "layer": layer, "normalised": first_value,
                         "mean_distance": first_value})
    for setting in ("a", "b (BOS)"):
        rows += [{"setting": setting, "token set": claims.LATER_TOKEN, "layer": layer, "normalised": 1.0,
                  "mean_distance": 1.0} for layer in range(4)]
    keys_ = pd.DataFrame([{"setting": s, "token set": t, "layer": 2, "normalised": v}
                          for s, t, v in [("a", "first token (pos 0)", 0.3), ("a", claims.LATER_TOKEN, 0.9),
                                          ("b (BOS)", "BOS (pos 0)", 0.0), ("b (BOS)", claims.LATER_TOKEN, 0.9)]])
    summary = claims.concentration_summary(pd.DataFrame(rows), keys_).set_index("setting")
    assert list(summary.index) == ["a", "b (BOS)"]
    assert not summary.loc["a", "BOS"] and summary.loc["b (BOS)", "BOS"]
    assert summary.loc["a", "share_below_half"] == 1.0 and summary.loc["a", "layers"] == 4
    assert summary.loc["a", "edit_layer"] == 2 and summary.loc["a", "key_first"] == 0.3
    assert summary.loc["b (BOS)", "pos1_median_ratio"] == pytest.approx(0.9)


def concentration_row(setting, share, bos=False):
    return {"setting": setting, "first": "BOS (pos 0)" if bos else "first token (pos 0)", "BOS": bos, "layers": 10,
            "share_below_half": share, "median_ratio": 0.3, "embedding_ratio": 0.9, "raw_share_below": 0.5,
            "edit_layer": 3, "key_first": 0.3, "key_later": 0.9, "pos1_median_ratio": 0.9 if bos else None,
            "pos1_share_below_half": 0.0 if bos else None}


def test_judge_concentration_judges_each_setting_without_a_bos():
    summary = pd.DataFrame([concentration_row("a", 0.9), concentration_row("g (BOS)", 1.0, bos=True),
                            concentration_row("g (no BOS)", 0.5)])
    judged = claims.judge_concentration(summary)
    assert verdicts_of(judged) == {("concentration", "a"): "holds", ("concentration", "g"): "does not hold"}
    assert judged.verdicts[1].measured.startswith("no BOS: first token's spread < ½ of later tokens' at 50% of 10")
    assert "the claim **holds only partly**" in judged.text
    assert "the claim **holds**" in claims.judge_concentration(summary.iloc[:2]).text
    assert "the claim **does not hold**" in claims.judge_concentration(summary.iloc[2:]).text


def fix_tables(crome_ppl_after, crome_normal_efficacy, without, with_prefix):
    per_edit = pd.DataFrame(edit_rows("paper", "normal", "c-rome", [1.0] * len(crome_ppl_after), crome_ppl_after)
                            + edit_rows("paper", "collapse-prone", "rome", [0.01], [1e5]))
    table4 = pd.DataFrame([
        {"setting": "paper", "variant": v, "group": g, "efficacy": e, "generalization": 0.9, "locality": 0.8}
        for v, g, e in [("c-rome", "collapse-prone", without), ("c-rome", "normal", crome_normal_efficacy),
                        ("rome", "collapse-prone", 1.0), ("rome", "normal", 1.0)]]).set_index(["setting", "variant", "group"])
    table5 = pd.DataFrame([{"setting": "paper", "test prompt": p, "efficacy": e, "generalization": 0.5, "locality": 0.9}
                           for p, e in [("without prefix", without), ("with templates[1]", with_prefix),
                                        ("with a prefix (mean of 3)", with_prefix)]]).set_index(["setting", "test prompt"])
    return per_edit, table4, table5


def test_judge_fix():
    holds = claims.judge_fix(*fix_tables([101.0, 102.0], 1.0, 0.0, 0.9), "m", "paper", 3)
    assert verdicts_of(holds) == {("c-rome-normal", "m"): "holds", ("test-prefix", "m"): "holds"}
    assert "the claim holds." in holds.text
    part = claims.judge_fix(*fix_tables([101.0, 102.0], 0.95, 0.0, 0.67), "m", "paper", 3)
    assert verdicts_of(part) == {("c-rome-normal", "m"): "holds", ("test-prefix", "m"): "holds in part"}
    assert part.verdicts[1].measured == "collapse-prone efficacy 0.00 without a prefix → 0.67 with one (mean of 3)"
    none = claims.judge_fix(*fix_tables([101.0, 2e4], 0.5, 0.6, 0.6), "m", "paper", 3)
    assert set(verdicts_of(none).values()) == {"does not hold"} and "the claim does not hold" in none.text
    # C-ROME edits normal cases 0.15 worse than ROME; the efficacy was not low without a prefix
    worse = claims.judge_fix(*fix_tables([101.0, 102.0], 0.85, 0.6, 0.9), "m", "paper", 3)
    assert verdicts_of(worse) == {("c-rome-normal", "m"): "does not hold", ("test-prefix", "m"): "does not hold"}
    assert "the claim holds in part" in worse.text  # the prefix still recovers efficacy


def screens(strict_auc, mild_auc, strict_collapses=3, refusal=0.0):
    rows = []
    for collapse, auc, collapses in (("> 2×", mild_auc, 4), ("> 10×", strict_auc, strict_collapses)):
        for predictor in ("ratio", "subject is the first token"):
            rows.append({"collapse": collapse, "predictor": predictor, "auc": auc, "collapses": collapses,
                         "harmless": 5, "catch_all_threshold": 0.02, "false_refusals": int(refusal * 5),
                         "false_refusal_rate": refusal})
    return pd.DataFrame(rows)


def test_judge_predict_collapse():
    table = pd.DataFrame({"blowup": [500.0, 30.0, float("nan"), 3.0, 1.0], "at_risk": [True, True, True, True, False]})
    definitions = {"> 2×": 2.0, "> 10×": 10.0}

    def verdict(found):
        return claims.judge_predict_collapse(found, table, "m", "paper", definitions).verdicts[0]

    assert verdict(screens(1.0, 0.97)).verdict == "holds"
    assert verdict(screens(1.0, 0.97)).measured.endswith("CLI default 0.1 catches 3/3 (> 10×), refuses 1/2")
    assert verdict(screens(1.0, 0.8)).verdict == "holds in part"
    assert verdict(screens(1.0, 1.0, refusal=0.2)).verdict == "does not hold"
    assert verdict(screens(0.9, 1.0)).verdict == "does not hold"
    assert verdict(screens(1.0, 1.0, strict_collapses=0)).verdict == "not testable"


def run_steps(variant, groups, deltas, ppl_ratios, setting="paper", stream="mixed"):
    """One run of notebook 09's trajectories: a step-0 row, then one row per edit (ppl_ratio None: not measured)."""
    rows = [{"stream": stream, "variant": variant, "setting": setting, "step": 0, "ppl": 100.0, "ppl_ratio": 1.0}]
    for i, (g, d, r) in enumerate(zip(groups, deltas, ppl_ratios)):
        rows.append({"stream": stream, "variant": variant, "setting": setting, "step": i + 1, "group": g,
                     "subject_first": g == "collapse-prone", "ratio": 0.01 if g == "collapse-prone" else 0.9,
                     "delta_norm": d, "ppl": None if r is None else 100 * r, "ppl_ratio": r})
    return rows


GROUPS = ["normal", "collapse-prone", "normal", "normal"]


def test_judge_sequential():
    def judged(rome_ratios, crome_ratios, groups=GROUPS, deltas=(1.0, 50.0, 2.0, 1.0)):
        steps = pd.DataFrame(run_steps("rome", groups, deltas, rome_ratios) + run_steps("c-rome", groups, [1.0] * 4,
                                                                                         crome_ratios)
                             + run_steps("rome", groups, [1.0] * 4, [1.0] * 4, setting="rome"))  # not this setting
        return claims.judge_sequential(steps, "m", "paper")

    # perplexity measured every 2 edits: ROME is over 10× at edit 2, whose window (edits 1–2) holds the
    # subject-first edit 2, the largest
    holds = judged([None, 50.0, None, 80.0], [None, 1.01, None, 1.02])
    assert holds.verdicts[0].verdict == "holds"
    assert holds.verdicts[0].measured == ("C-ROME mixed: ≤ 1.02× in 4 edits; ROME mixed: over 10× at edit 2 (50×), "
                                          "subject-first edit 2 the largest")
    assert "the subject-first edits are [2]" in holds.text
    # over 2× but never 10×: part of the claim
    assert judged([None, 3.0, None, 5.0], [None, 1.0, None, 1.0]).verdicts[0].verdict == "holds in part"
    # the collapse comes in a window with the subject-first edit, but its largest edit is a normal one: in part
    blamed_elsewhere = judged([None, 50.0, None, 80.0], [None, 1.0, None, 1.0], deltas=(60.0, 5.0, 2.0, 1.0))
    assert blamed_elsewhere.verdicts[0].verdict == "holds in part"
    assert "largest edit 1 is normal" in blamed_elsewhere.verdicts[0].measured
    # …or in a window without a subject-first edit
    no_first = judged([None, 1.0, None, 50.0], [None, 1.0, None, 1.0], deltas=(1.0, 5.0, 60.0, 1.0))
    assert no_first.verdicts[0].verdict == "holds in part" and "the subject-first edits are none" in no_first.text
    # C-ROME collapses too; and ROME staying within 2×
    assert judged([None, 50.0, None, 80.0], [None, 1.0, None, 20.0]).verdicts[0].verdict == "does not hold"
    assert judged([None, 1.5, None, 1.8], [None, 1.0, None, 1.0]).verdicts[0].verdict == "does not hold"
    # no subject-first edit in ROME's stream: nothing to test
    assert judged([None, 50.0, None, 80.0], [None, 1.0, None, 1.0], groups=["normal"] * 4).verdicts[0].verdict \
        == "not testable"


def test_judge_sequential_counts_a_non_finite_last_measurement_as_a_collapse():
    steps = pd.DataFrame(run_steps("rome", GROUPS[:2], [1.0, 50.0], [1.0, float("nan")])
                         + run_steps("c-rome", GROUPS[:2], [1.0, 1.0], [1.0, 1.01]))
    assert claims.judge_sequential(steps, "m", "paper").verdicts[0].verdict == "holds"


def test_claims_loads_no_torch():
    import subprocess
    import sys

    code = "import sys, rome_collapse.claims; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "False", out.stderr[-2000:]


def study_rows(variant, efficacy_with_prefix, locality, ppl_ratio=1.0, normal_efficacy=1.0, setting="paper"):
    prone = {"setting": setting, "variant": variant, "group": "collapse-prone", "efficacy": 0.0,
             "efficacy with prefix": efficacy_with_prefix, "locality with prefix": locality, "ppl_ratio": ppl_ratio,
             "collapsed": ppl_ratio > 10, "target_prob": 0.5}
    normal = {**prone, "group": "normal", "efficacy": normal_efficacy, "efficacy with prefix": normal_efficacy,
              "ppl_ratio": 1.0, "collapsed": False}
    return [prone, normal]


@pytest.mark.parametrize("rows, verdict, passing", [
    ([("base", 0.6, 0.8), ("good", 0.95, 0.78)], "holds", ["good"]),
    ([("base", 0.6, 0.8), ("costly", 1.0, 0.5)], "holds in part", []),  # reaches the bar, loses locality
    ([("base", 0.6, 0.8), ("collapsing", 1.0, 0.8, 50.0)], "holds in part", []),
    ([("base", 0.6, 0.8), ("better", 0.75, 0.8)], "holds in part", []),  # intact, +0.15 but short of 0.9
    ([("base", 0.6, 0.8), ("same", 0.65, 0.8)], "does not hold", []),
    ([("base", 0.6, 0.8), ("breaks normal", 0.95, 0.8, 1.0, 0.5)], "holds in part", []),
])
def test_judge_clamp_study(rows, verdict, passing):
    study = pd.DataFrame([r for args in rows for r in study_rows(*args)]
                         # another setting's rows, where every variant would pass, must not count
                         + [r for name, *_ in rows for r in study_rows(name, 1.0, 0.8, setting="rome")])
    checks = claims.clamp_checks(study, "paper")
    assert list(checks.index) == [name for name, *_ in rows]  # the study's order; the first is the baseline
    assert list(checks.index[checks["passes"]]) == passing
    judged = claims.judge_clamp_study(checks, "m", "paper")
    (found,) = judged.verdicts
    assert (found.claim_id, found.model, found.verdict, found.setting) == ("clamp-study", "m", verdict, "paper")
    assert judged.text == (f"**paper setting: the claim {verdict}.** {found.measured}; "
                           f"restoring: {', '.join(passing) or 'none'}.")
    assert f"{len(passing)} of 1 variants reach 0.9 with locality kept" in found.measured


def test_clamp_checks_measure_against_the_baseline_named():
    study = pd.DataFrame(study_rows("low locality", 0.6, 0.5) + study_rows("high locality", 0.95, 0.8))
    # against the first variant, locality 0.8 is no loss; against the second, 0.5 would be
    assert bool(claims.clamp_checks(study, "paper").loc["high locality", "intact"])
    named = claims.clamp_checks(study, "paper", baseline="high locality")
    assert not bool(named.loc["low locality", "intact"]) and bool(named.loc["high locality", "passes"])
    judged = claims.judge_clamp_study(named, "m", "paper", baseline="high locality")
    assert judged.verdicts[0].measured.startswith("collapse-prone efficacy with a test-time prefix 0.95 with ROME's v*")
