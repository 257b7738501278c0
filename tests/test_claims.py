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
    with pytest.raises(ValueError, match="claim 'bos': setting 'rome'"):  # "rome" is a variant, not a setting
        claims.Verdict("bos", "m", "x", "holds", setting="rome")


def test_save_and_load_round_trip(claims_home):
    found = [claims.Verdict("denominator", "smol", "ratio 0.01 vs 0.9", "holds", "original"),
             claims.Verdict("rome-collapses", "smol", "3/12 | over 10×", "holds in part", "original"),
             claims.Verdict("rome-collapses", "smol", "12/12 over 10×", "holds", "paper")]
    path = claims.save(found, "01_denominators", "smol", profile="smoke")
    assert path == claims_home / "smoke" / "claims" / "01_denominators_smol.csv"
    table = claims.load("smoke")
    assert list(table["claim_id"]) == ["denominator", "rome-collapses", "rome-collapses"]
    assert list(table["verdict"]) == ["holds", "holds in part", "holds"]
    assert list(table["setting"]) == ["original", "original", "paper"]
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
    assert grid.loc[("bos", "any", "curated"), "gemma"] == "holds" and grid.loc[("bos", "any", "curated"), "smol"] == ""
    empty = claims.verdict_grid(verdicts.iloc[:0], ["smol"])
    assert empty.shape == (len(claims.CLAIMS), 1) and (empty == "").all().all()


def test_overview_has_a_row_per_setting_that_judged_a_claim():
    verdicts = pd.DataFrame([
        {"claim_id": "rome-collapses", "model": "smol", "measured": "3/12", "verdict": "holds in part", "setting": "original"},
        {"claim_id": "rome-collapses", "model": "smol", "measured": "12/12", "verdict": "holds", "setting": "paper"},
        {"claim_id": "key-mismatch", "model": "smol", "measured": "cos 0.05", "verdict": "holds", "setting": "any"}])
    table = claims.overview(verdicts, ["smol"])
    rows = table[table["claim_id"] == "rome-collapses"]
    assert list(rows["setting"]) == ["paper", "original"]  # the paper's setting first
    assert list(rows["smol"]) == ["holds: 12/12", "holds in part: 3/12"]
    assert table.loc[table["claim_id"] == "key-mismatch", "setting"].tolist() == ["any"]
    assert len(table) == len(claims.CLAIMS) + 1
    grid = claims.verdict_grid(verdicts, ["smol"])
    assert grid.loc[("rome-collapses", "paper", "curated"), "smol"] == "holds"
    assert grid.loc[("rome-collapses", "original", "curated"), "smol"] == "holds in part"


def test_overview_has_a_row_per_data_after_the_curated_one():
    verdicts = pd.DataFrame([
        {"claim_id": "rome-collapses", "model": "smol", "measured": "30/30", "verdict": "holds", "setting": "paper",
         "data": "CounterFact"},
        {"claim_id": "rome-collapses", "model": "smol", "measured": "12/12", "verdict": "holds", "setting": "paper"}])
    table = claims.overview(verdicts, ["smol"])
    rows = table[table["claim_id"] == "rome-collapses"]
    assert list(rows["data"]) == ["curated", "CounterFact"] and list(rows["smol"]) == ["holds: 12/12", "holds: 30/30"]
    grid = claims.verdict_grid(verdicts, ["smol"])
    assert grid.loc[("rome-collapses", "paper", "CounterFact"), "smol"] == "holds"


def test_a_verdict_names_known_data_only():
    verdict = claims.Verdict("bos", "gemma", "0/4", "holds")
    assert verdict.data == "curated" and verdict.on("CounterFact").data == "CounterFact"
    with pytest.raises(ValueError, match="data"):
        verdict.on("elsewhere")


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


def test_claims_loads_no_torch():
    import subprocess
    import sys

    code = "import sys, rome_collapse.claims; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "False", out.stderr[-2000:]
