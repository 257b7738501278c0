"""The claims table: every notebook records its verdicts here, the overview collects them.

Each claim of the paper has a fixed id (``CLAIMS``) with what the paper says. A notebook ends with
``claims.save([claims.Verdict(...)], notebook=..., run_model=..., profile=...)``: one CSV per notebook
and run under ``<figures>/claims/``. ``claims.load`` reads them all back and ``claims.overview``
turns them into one row per claim with a column per model.

The rules behind the verdicts live here too, one ``judge_*`` function per notebook verdict (``Judgement``: the
verdicts and the findings in words), each taking the tables its notebook has and stating its rule in its docstring.

The paper's column is its finding in words (on GPT-2-XL, GPT-J and Llama2-7b): the paper's tables could not
be read where this workbook was written, so compare the direction and size of the effects, not digits.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from .collapse import COLLAPSE_FACTOR, collapsed
from .plots import figures_dir

VERDICTS = ("holds", "holds in part", "does not hold", "not testable")
# Which setting of ROME a verdict's numbers come from: "paper" (no C⁻¹, as the authors ran), "rome" (C⁻¹, as
# Meng et al.), or "any" where the claim does not involve C (keys, positions, first-token statistics).
SETTING_ORDER = ("paper", "rome", "any")


@dataclass(frozen=True)
class Claim:
    source: str  # where in the paper
    claim: str  # the claim, one sentence
    paper: str  # what the paper reports


CLAIMS: dict[str, Claim] = {
    "denominator": Claim(
        "Table 1", "Collapse cases have a tiny ROME denominator (kᵘ against the left vector: k̄, or C⁻¹k̄ with C); "
        "numerators are alike",
        "|denominator| orders of magnitude smaller for collapse cases than for normal cases"),
    "rome-collapses": Claim(
        "Table 2", "One ROME edit of a collapse case collapses the model",
        "perplexity rises by orders of magnitude after a single edit of a collapse case"),
    "c-rome-safe": Claim(
        "Table 2", "C-ROME (k̄ everywhere) edits the same cases without collapse",
        "perplexity stays at the unedited model's level"),
    "key-mismatch": Claim(
        "Figure 2", "Collapse cases' kᵘ lie apart from their k̄ and C⁻¹k̄; normal cases' do not",
        "t-SNE: collapse cases' kᵘ form a separate cluster, normal cases' kᵘ overlap their k̄"),
    "first-token": Claim(
        "Figure 3", "First tokens of ordinary text sit with collapse cases' kᵘ; a prefix moves those back",
        "first-token keys cluster with collapse kᵘ; prefixed collapse keys join the normal ones"),
    "bos": Claim(
        "App. A.2", "A BOS protects a model; removing the BOS brings the collapse back",
        "Llama2-7b (BOS) does not collapse on collapse cases; without its BOS it does"),
    "encoder": Claim(
        "App. A.3", "In a bidirectional model the first token is not special",
        "T5-3B (encoder-decoder) is much less affected: its first token is not special"),
    "position": Claim(
        "App. A.4", "Position codes do not cause the collapse (Second2First / First2Second swaps)",
        "(as we read Tables 6–7) collapse cases still collapse with the second position, normal ones not with the first"),
    "concentration": Claim(
        "App. A.5", "First-token representations are concentrated at most layers",
        "first tokens' mean distance to their centroid far below later tokens' at almost every layer"),
    "c-rome-normal": Claim(
        "Table 4", "C-ROME keeps efficacy, generalisation and locality on normal cases",
        "on par with ROME on normal cases"),
    "test-prefix": Claim(
        "Tables 4–5", "C-ROME's efficacy on collapse cases is low, and a test-time prefix restores it",
        "low efficacy without a prefix; high efficacy with one of the editing prefixes"),
    "sequential": Claim(
        "Beyond the paper", "Edits applied one after another: ROME collapses within tens of edits, at a "
        "subject-first edit; C-ROME (consistent keys) does not",
        "not studied (single edits only); the butterfly-effect and Rebuilding-ROME studies report ROME collapsing "
        "within tens to hundreds of sequential edits and consistent keys preventing it"),
    "predict-collapse": Claim(
        "Beyond the paper", "The pre-flight denominator ratio (keys only, no v*) tells which ROME edits collapse",
        "not studied: the paper explains the collapse by the small denominator, measured after editing"),
    "clamp-study": Claim(
        "Beyond the paper", "C-ROME's efficacy with a test-time prefix on subject-first cases is held back by how v* "
        "is set up (‖δ‖ clamped at the first token's small output); a v* set up otherwise restores it to at least "
        "0.9 without collapse or loss of locality",
        "not studied: the paper keeps ROME's v* (‖δ‖ ≤ 4‖W kᵘ + b‖, started at W kᵘ + b)"),
}


@dataclass(frozen=True)
class Verdict:
    """What one run found for one claim on one model."""
    claim_id: str
    model: str  # the model the evidence is on (may differ from the notebook's main model)
    measured: str  # the numbers behind the verdict, short
    verdict: str  # one of VERDICTS
    setting: str = "any"  # one of SETTING_ORDER

    def __post_init__(self) -> None:
        if self.claim_id not in CLAIMS:
            raise ValueError(f"unknown claim_id {self.claim_id!r}; known: {', '.join(CLAIMS)}")
        if self.setting not in SETTING_ORDER:
            raise ValueError(f"claim {self.claim_id!r}: setting {self.setting!r} is not one of {SETTING_ORDER}")
        if self.verdict not in VERDICTS:
            raise ValueError(f"claim {self.claim_id!r}: verdict {self.verdict!r} is not one of {VERDICTS}")
        if not self.measured.strip():
            raise ValueError(f"claim {self.claim_id!r}: 'measured' is empty")


def claims_dir(profile: str = "full") -> Path:
    path = figures_dir(profile) / "claims"
    path.mkdir(parents=True, exist_ok=True)
    return path


def save(verdicts: list[Verdict], notebook: str, run_model: str, profile: str = "full") -> Path:
    """Write one notebook run's verdicts to ``<figures>/claims/<notebook>_<run_model>.csv`` (replacing it)."""
    rows = [{"notebook": notebook, "run_model": run_model, "profile": profile, **asdict(v)} for v in verdicts]
    out = claims_dir(profile) / f"{notebook}_{run_model}.csv"
    pd.DataFrame(rows, columns=COLUMNS).to_csv(out, index=False)
    return out


COLUMNS = ["notebook", "run_model", "profile", "claim_id", "model", "measured", "verdict", "setting"]


def load(profile: str = "full") -> pd.DataFrame:
    """Every recorded verdict of a profile. A claim judged on the same model by two runs (notebook 03 judges
    the BOS claim on the BOS model whichever model it runs on) keeps the row of the run on that model."""
    files = sorted(claims_dir(profile).glob("*.csv"))
    if not files:
        return pd.DataFrame(columns=COLUMNS)
    table = pd.concat([pd.read_csv(f, dtype=str, keep_default_na=False) for f in files], ignore_index=True)
    if "setting" not in table.columns:
        raise ValueError(f"claims files under {claims_dir(profile)} have no 'setting' column: run their notebooks again")
    unknown = sorted(set(table["claim_id"]) - set(CLAIMS))
    if unknown:
        raise ValueError(f"claims files under {claims_dir(profile)} name unknown claims: {unknown}")
    own_run = table["run_model"] == table["model"]
    table = pd.concat([table[~own_run], table[own_run]], ignore_index=True)
    return table.drop_duplicates(["claim_id", "model", "setting"], keep="last").reset_index(drop=True)[COLUMNS]


def _rows(verdicts: pd.DataFrame) -> list[tuple[str, str]]:
    """(claim_id, setting) in the paper's order: one per setting that judged the claim, ("id", "") if none did."""
    if "setting" not in verdicts.columns:
        verdicts = verdicts.assign(setting="any")
    rows = []
    for claim_id in CLAIMS:
        judged = set(verdicts.loc[verdicts["claim_id"] == claim_id, "setting"])
        rows += [(claim_id, s) for s in SETTING_ORDER if s in judged] or [(claim_id, "")]
    return rows


def _hit(verdicts: pd.DataFrame, claim_id: str, setting: str, model: str) -> pd.DataFrame:
    settings = verdicts["setting"] if "setting" in verdicts.columns else "any"
    return verdicts[(verdicts["claim_id"] == claim_id) & (settings == setting) & (verdicts["model"] == model)]


def overview(verdicts: pd.DataFrame, models: list[str] | None = None) -> pd.DataFrame:
    """One row per claim and setting that judged it (in the paper's order): source, claim, the paper's finding,
    the setting, and for each model "<verdict>: <measured>" (empty where no run judged it)."""
    models = models or list(dict.fromkeys(verdicts["model"]))
    rows = []
    for claim_id, setting in _rows(verdicts):
        c = CLAIMS[claim_id]
        row = {"claim_id": claim_id, "source": c.source, "claim": c.claim, "paper": c.paper, "setting": setting}
        for m in models:
            hit = _hit(verdicts, claim_id, setting, m)
            row[m] = f"{hit['verdict'].iloc[0]}: {hit['measured'].iloc[0]}" if len(hit) else ""
        rows.append(row)
    return pd.DataFrame(rows)


def verdict_grid(verdicts: pd.DataFrame, models: list[str] | None = None) -> pd.DataFrame:
    """(claim, setting) × models of verdicts ("" where not judged), for a picture of the whole table."""
    models = models or list(dict.fromkeys(verdicts["model"]))
    rows = _rows(verdicts)
    index = pd.MultiIndex.from_tuples(rows, names=["claim_id", "setting"])
    grid = pd.DataFrame("", index=index, columns=models)
    for claim_id, setting in rows:
        for m in models:
            hit = _hit(verdicts, claim_id, setting, m)
            if len(hit):
                grid.loc[(claim_id, setting), m] = hit["verdict"].iloc[0]
    return grid


def to_markdown(table: pd.DataFrame) -> str:
    """A GitHub-markdown table of ``table`` (pipes in cells escaped), without extra dependencies."""
    def cell(value) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")
    lines = ["| " + " | ".join(cell(c) for c in table.columns) + " |",
             "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# The verdict rules: one function per notebook verdict, from the tables the notebook has
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Judgement:
    """What a notebook's verdict cell records and shows: the verdicts, and the findings in Markdown (without the
    notebook's header, which names the run: model, profile, sizes)."""
    verdicts: list[Verdict]
    text: str


def judge_denominators(edits: pd.DataFrame, model: str, setting: str) -> Judgement:
    """Notebook 01 (Tables 1 and 2), one setting: claims ``denominator``, ``rome-collapses`` and ``c-rome-safe``.

    ``edits``: one row per edit (columns setting, variant, group, ratio, denominator, collapsed, ppl_before,
    ppl_after). Rules, on the setting's rows:

    * ``denominator`` holds when the median ROME denominator ratio of collapse-prone cases is below 0.1 and that
      of normal cases above 0.1; else it does not hold.
    * ``rome-collapses`` holds when ROME collapses at least half of the collapse-prone edits, holds in part when
      it collapses some, and does not hold when it collapses none.
    * ``c-rome-safe`` holds when no C-ROME edit collapses and every one keeps perplexity within 2× the original.

    The line shown says "the claim holds" when all three hold, "holds in part" when the denominator or C-ROME's
    safety does, else "does not hold".
    """
    e = edits[edits["setting"] == setting]
    e = e.assign(abs_denominator=e["denominator"].abs(), ppl_ratio=e["ppl_after"] / e["ppl_before"])
    r = e[e["variant"] == "rome"]
    med, den = r.groupby("group")["ratio"].median(), r.groupby("group")["abs_denominator"].median()
    rome_cp, crome = r[r["group"] == "collapse-prone"], e[e["variant"] == "c-rome"]
    small_den = med["collapse-prone"] < 0.1 < med["normal"]
    rome_collapses = rome_cp["collapsed"].mean() >= 0.5
    crome_safe = (not crome["collapsed"].any()) and crome["ppl_ratio"].max() <= 2.0
    n_collapsed = int(rome_cp["collapsed"].sum())
    verdict = ("holds" if small_den and rome_collapses and crome_safe else
               "holds in part" if small_den or crome_safe else "does not hold")
    text = (
        f"**{setting} setting: the claim {verdict}.** (1) denominator {'much smaller' if small_den else 'not clearly smaller'} "
        f"for collapse-prone cases: median ratio {med['collapse-prone']:.3g} vs {med['normal']:.3g} (median |denominator| "
        f"{den['collapse-prone']:.3g} vs {den['normal']:.3g}); (2) ROME collapses {n_collapsed}/{len(rome_cp)} "
        f"collapse-prone edits (median perplexity {rome_cp['ppl_after'].median():.4g}, largest {rome_cp['ppl_after'].max():.4g} "
        f"vs {rome_cp['ppl_before'].iloc[0]:.4g} before) and {int(r['collapsed'].sum()) - n_collapsed}/{len(r) - len(rome_cp)} "
        f"normal ones; (3) C-ROME collapses {int(crome['collapsed'].sum())}/{len(crome)} edits, worst perplexity "
        f"{crome['ppl_ratio'].max():.2f}× the original.")
    verdicts = [
        Verdict("denominator", model, f"median |denominator| {den['collapse-prone']:.3g} vs {den['normal']:.3g}; "
                f"ratio {med['collapse-prone']:.3g} vs {med['normal']:.3g}", "holds" if small_den else "does not hold",
                setting),
        Verdict("rome-collapses", model, f"{n_collapsed}/{len(rome_cp)} ROME edits over {COLLAPSE_FACTOR:g}× "
                f"ME-PPL; median {rome_cp['ppl_after'].median():.0f}, max {rome_cp['ppl_after'].max():.0f} "
                f"(unedited {rome_cp['ppl_before'].iloc[0]:.0f})",
                "holds" if rome_collapses else "holds in part" if n_collapsed else "does not hold", setting),
        Verdict("c-rome-safe", model, f"{int(crome['collapsed'].sum())}/{len(crome)} C-ROME edits collapse; worst "
                f"{crome['ppl_ratio'].max():.2f}× the unedited perplexity", "holds" if crome_safe else "does not hold",
                setting)]
    return Judgement(verdicts, text)


def judge_key_mismatch(table: pd.DataFrame, model: str) -> Judgement:
    """Notebook 02 (Figure 2): claim ``key-mismatch``. ``table``: one row per case (group, cos_ku_kbar, ratio).

    Holds when the collapse-prone cases' mean cos(kᵘ, k̄) is below 0.5 and the normal cases' is at least 0.5;
    does not hold otherwise; not testable without both groups (a BOS model has no collapse-prone case).
    """
    stats_by = table.groupby("group")[["cos_ku_kbar", "ratio"]]
    mean, lo, hi = stats_by.mean(), stats_by.min(), stats_by.max()
    if not {"collapse-prone", "normal"} <= set(mean.index):
        return Judgement([Verdict("key-mismatch", model, "no collapse-prone cases (BOS)", "not testable")],
                         "cannot be judged: the model has no collapse-prone cases (with a BOS the subject is never "
                         "the first token).")
    cos_c, cos_n = mean.loc["collapse-prone", "cos_ku_kbar"], mean.loc["normal", "cos_ku_kbar"]
    holds = cos_c < 0.5 <= cos_n
    apart = hi.loc["collapse-prone", "cos_ku_kbar"] < lo.loc["normal", "cos_ku_kbar"]
    text = (f"the claim {'holds' if holds else 'does not hold'}. "
            f"Mean cos(kᵘ, k̄) is {cos_c:.2f} for collapse-prone cases and {cos_n:.2f} for normal ones "
            f"(the groups {'do not overlap' if apart else 'overlap'}: collapse max {hi.loc['collapse-prone', 'cos_ku_kbar']:.2f}, "
            f"normal min {lo.loc['normal', 'cos_ku_kbar']:.2f}); the denominator ratio is "
            f"{mean.loc['collapse-prone', 'ratio']:.3f} vs {mean.loc['normal', 'ratio']:.3f}.")
    return Judgement([Verdict("key-mismatch", model, f"mean cos(kᵘ, k̄) {cos_c:.2f} (collapse-prone) vs {cos_n:.2f} "
                              "(normal)", "holds" if holds else "does not hold")], text)


def judge_first_token(centroids: pd.DataFrame, model: str, bos: bool) -> Judgement:
    """Notebook 03, Part 1 (Figure 3): claim ``first-token``. ``centroids``: ``representations.centroid_table`` (one
    row per key set, with the share of each set nearest each reference centroid); ``bos``: the model prepends a BOS.

    Without a BOS: holds when at least half of the collapse cases' kᵘ are nearest the first-token centroid and at
    least half of the normal kᵘ and of the prefixed collapse kᵘ are nearest the later-token centroid. With a BOS:
    holds when at least half of the collapse cases' kᵘ and of the normal kᵘ are nearest the later tokens (the BOS
    protects them) and, with the BOS removed, at least half of the collapse kᵘ are nearest the first tokens of
    BOS-free text. Otherwise it does not hold.
    """
    near = centroids.set_index("set")

    def share(s, ref):
        return near.loc[s, f"nearest_{ref}"]

    normal_later, prefixed_later = share("normal kᵘ", "later"), share("collapse kᵘ, prefixed", "later")
    numbers = (f"collapse kᵘ closest to the first-token centroid: {share('collapse kᵘ', 'first'):.0%} "
               f"(mean cos {near.loc['collapse kᵘ', 'cos_to_first']:.2f} vs {near.loc['collapse kᵘ', 'cos_to_later']:.2f} "
               f"to later tokens); normal kᵘ closest to later tokens: {normal_later:.0%}; prefixed collapse kᵘ closest "
               f"to later tokens: {prefixed_later:.0%}")
    if not bos:
        holds = share("collapse kᵘ", "first") >= 0.5 and normal_later >= 0.5 and prefixed_later >= 0.5
        text = ("first tokens of ordinary text sit with the collapse cases' kᵘ and a prefix moves them back" if holds
                else "the key sets do not fall as claimed") + f": {numbers}"
        measured = (f"{share('collapse kᵘ', 'first'):.0%} of collapse kᵘ nearest the first-token centroid, "
                    f"{prefixed_later:.0%} of prefixed ones nearest later tokens")
    else:
        exposed = share("collapse kᵘ, BOS removed", "first_nobos")
        holds = share("collapse kᵘ", "later") >= 0.5 and normal_later >= 0.5 and exposed >= 0.5
        removed = near.loc["collapse kᵘ, BOS removed"]
        text = (f"with its BOS, {share('collapse kᵘ', 'later'):.0%} of the subject-first cases' kᵘ (subject at position 1) "
                f"sit with later tokens rather than with the BOS key, so the BOS protects them ({numbers}); with the BOS "
                f"removed, {exposed:.0%} of them are closest to the first tokens of BOS-free text (mean cos "
                f"{removed['cos_to_first_nobos']:.2f} to those vs {removed['cos_to_later']:.2f} to later tokens), so "
                f"removing the BOS {'exposes' if exposed >= 0.5 else 'does not expose'} them")
        measured = (f"with BOS {share('collapse kᵘ', 'later'):.0%} of subject-first kᵘ nearest later tokens; "
                    f"BOS removed: {exposed:.0%} nearest BOS-free first tokens")
    verdict = "holds" if holds else "does not hold"
    return Judgement([Verdict("first-token", model, measured, verdict)], f"the claim {verdict}: {text}.")


def judge_bos(bos_table: pd.DataFrame, bos_model: str, setting: str) -> Judgement:
    """Notebook 03, Part 2 (Appendix A.2): claim ``bos``. ``bos_table``: one row per edit of a subject-first case
    (columns BOS "with BOS" / "without BOS", variant, case_id, ratio, ppl_before, ppl_factor, collapsed).

    Three checks: ROME collapses no edit with the BOS; ROME collapses at least half of them without it; C-ROME
    collapses none either way. Holds when all three pass, holds in part when only the first does not fail
    (the protection alone is half the claim), else does not hold.
    """
    share_c = bos_table.groupby(["BOS", "variant"]).collapsed.mean()

    def get(s, v):
        return share_c.get((s, v), float("nan"))

    checks = {"ROME does not collapse with the BOS": get("with BOS", "rome") == 0,
              "ROME collapses without the BOS": get("without BOS", "rome") >= 0.5,
              "C-ROME does not collapse with or without the BOS":
                  get("with BOS", "c-rome") == 0 and get("without BOS", "c-rome") == 0}
    verdict = ("holds" if all(checks.values()) else "holds in part" if checks["ROME does not collapse with the BOS"]
               else "does not hold")
    ratio, before = bos_table.groupby(["BOS", "variant"]).ratio.mean(), bos_table.groupby("BOS").ppl_before.first()
    factor = bos_table.groupby(["BOS", "variant"]).ppl_factor.max()
    n_edits = bos_table["case_id"].nunique()
    text = (f"the claim {verdict} (" + "; ".join(f"{c}: {'yes' if ok else 'no'}" for c, ok in checks.items())
            + f"). ROME collapses {get('with BOS', 'rome'):.0%} of the edits with the BOS (mean denominator ratio "
            f"{ratio[('with BOS', 'rome')]:.3f}) and {get('without BOS', 'rome'):.0%} without it (ratio "
            f"{ratio[('without BOS', 'rome')]:.3f}); C-ROME collapses {get('with BOS', 'c-rome'):.0%} and "
            f"{get('without BOS', 'c-rome'):.0%}. Largest perplexity factor: "
            + ", ".join(f"{s} {v} {f:.2f}×" for (s, v), f in factor.items())
            + f". Unedited perplexity: {before.get('with BOS', float('nan')):.1f} with the BOS, "
            f"{before.get('without BOS', float('nan')):.1f} without it.")
    measured = (f"ROME collapses {get('with BOS', 'rome'):.0%} of {n_edits} edits with the BOS "
                f"(ratio {ratio[('with BOS', 'rome')]:.2f}), {get('without BOS', 'rome'):.0%} without "
                f"(ratio {ratio[('without BOS', 'rome')]:.2f}); unedited ME-PPL {before.get('with BOS', float('nan')):.0f} "
                f"with BOS, {before.get('without BOS', float('nan')):.0f} without")
    return Judgement([Verdict("bos", bos_model, measured, verdict, setting)], text)


def judge_encoder(encoder_table: pd.DataFrame, model: str, encoder: str) -> Judgement:
    """Notebook 03, Part 3 (Appendix A.3): claim ``encoder``. ``encoder_table``: one row per model / token set with
    concentration, separation and norm_ratio; the first row is the causal model's first token without a BOS, the
    last the encoder's first word.

    Holds when the causal model's first-token concentration is below 0.5 and the encoder's is at least 0.5.
    """
    causal, enc = encoder_table.iloc[0], encoder_table.iloc[-1]
    holds = causal.concentration < 0.5 <= enc.concentration
    verdict = "holds" if holds else "does not hold"
    text = (f"the claim {verdict}. Concentration of first-token keys: {causal.concentration:.3f} in the causal model "
            f"(no BOS) vs {enc.concentration:.3f} for the encoder's first word; separation {causal.separation:.2f} vs "
            f"{enc.separation:.2f}; norm ratio {causal.norm_ratio:.2f} vs {enc.norm_ratio:.2f}.")
    return Judgement([Verdict("encoder", model, f"first-token concentration {causal.concentration:.2f} ({model}, "
                              f"no BOS) vs {enc.concentration:.2f} ({encoder})", verdict)], text)


def _swap_check(table: pd.DataFrame, kind: str) -> dict:
    swapped = table.intervention == kind  # the other rows are the plain ROME edits
    plain, swap = table[~swapped].set_index("case_id"), table[swapped].set_index("case_id")
    return {"cases": len(plain), "same_status": float((plain.collapsed == swap.collapsed).mean()),
            "plain_collapsed": int(plain.collapsed.sum()), "swap_collapsed": int(swap.collapsed.sum()),
            "plain_ppl_median": plain.ppl_after.median(), "swap_ppl_median": swap.ppl_after.median(),
            "plain_factor_max": plain.ppl_factor.max(), "plain_ratio_mean": plain.ratio.mean(),
            "swap_ratio_mean": swap.ratio.mean(), "plain_ratio_max": plain.ratio.max(),
            "swap_ratio_min": swap.ratio.min(), "key_shift_max": swap.key_shift.max()}


def position_checks(table6: pd.DataFrame, table7: pd.DataFrame) -> pd.DataFrame:
    """Notebook 04: per table (rows), the plain ROME edits against the swapped ones (Second2First on the
    collapse-prone cases of ``table6``, First2Second on the normal ones of ``table7``; the rows of
    ``interventions.position_swap_outcomes``: the swap's named by its kind, the others the plain edits'): cases,
    share of cases whose collapse status the swap keeps, collapses, median perplexities, denominator ratios and
    how far kᵘ moved."""
    return pd.DataFrame({"Table 6 (collapse-prone, Second2First)": _swap_check(table6, "second2first"),
                         "Table 7 (normal, First2Second)": _swap_check(table7, "first2second")}).T


def judge_position(checks: pd.DataFrame, model: str, setting: str) -> Judgement:
    """Notebook 04 (Appendix A.4, Tables 6 and 7): claim ``position``, from ``position_checks``.

    Holds when, in every table with cases, the swap keeps the collapse status of at least 80% of the cases;
    does not hold otherwise; not testable when neither table has a case. The text also says whether the plain
    collapse-prone edits collapsed at all (if not, Table 6 cannot show that collapse survives the swap).
    """
    t6, t7 = checks.iloc[0], checks.iloc[1]
    tested = checks[checks.cases > 0]
    holds = not tested.empty and bool((tested.same_status >= 0.8).all())
    lines = [f"{name}: collapse status unchanged for {r.same_status:.0%} of {r.cases:.0f} cases (plain ROME collapsed "
             f"{r.plain_collapsed:.0f}, swapped {r.swap_collapsed:.0f}); median perplexity {r.plain_ppl_median:.1f} → "
             f"{r.swap_ppl_median:.1f}; mean denominator ratio {r.plain_ratio_mean:.3f} → {r.swap_ratio_mean:.3f}; "
             f"kᵘ moved by at most {r.key_shift_max:.1e} (relative)" for name, r in tested.iterrows()]
    if t6.cases:
        lines.append("Second2First left kᵘ unchanged to float precision: a lone first token is position-invariant "
                     "here, so its specialness comes from causal attention (it sees only itself), not from its "
                     "position code" if t6.key_shift_max < 1e-4
                     else f"Second2First moved kᵘ by up to {t6.key_shift_max:.2f} (relative)")
        if t6.plain_collapsed == 0:
            lines.append(f"no plain ROME edit of a collapse-prone case collapsed in this run (max "
                         f"{t6.plain_factor_max:.1f}× perplexity), so Table 6 can only show that the swap changes "
                         "nothing, not that collapse survives it")
    if t6.cases and t7.cases:
        lines.append(f"First2Second took the normal cases' denominator ratio down to {t7.swap_ratio_min:.3f} at lowest; "
                     f"the collapse-prone cases' own kᵘ reach at most {t6.plain_ratio_max:.3f}: position 0 alone "
                     + ("does not make a key anomalous" if t7.swap_ratio_min > 2 * t6.plain_ratio_max else "comes close"))
    text = (f"the claim **{'holds' if holds else 'does not hold'}** — position swaps "
            f"{'do not move' if holds else 'move'} cases across the collapse line.\n\n- " + "\n- ".join(lines))
    measured = "; ".join(f"{name.split(' (')[0]}: status kept for {r.same_status:.0%}, ratio {r.plain_ratio_mean:.3f} → "
                         f"{r.swap_ratio_mean:.3f}" for name, r in tested.iterrows())
    if t6.cases and t6.plain_collapsed == 0:
        measured += " (no plain ROME edit collapsed, so Table 6 is weak)"
    verdict = ("holds" if holds else "does not hold") if not tested.empty else "not testable"
    return Judgement([Verdict("position", model, measured or "no cases", verdict, setting)], text)


LATER_TOKEN = "later token (pos ≥ 2)"


def concentration_summary(table: pd.DataFrame, key_table: pd.DataFrame) -> pd.DataFrame:
    """Notebook 05: one row per model setting (in the order of ``table``), from the per-layer spreads ``table``
    (setting, token set, layer, normalised, mean_distance) and the edit layer's key spreads ``key_table``
    (setting, token set, layer, normalised). The first token is the BOS where the setting has a "BOS (pos 0)" set.
    Ratios are first-token spread / later-token spread per layer: the share of layers below ½, the median, the
    embedding layer's; the raw spread's share below 1; the keys' normalised spreads; for a BOS, the first word's."""
    wide = table.pivot_table(index=["setting", "layer"], columns="token set", values=["normalised", "mean_distance"])
    keyn = key_table.set_index(["setting", "token set"]).normalised
    rows = []
    for shown_as in dict.fromkeys(table["setting"]):
        bos = "BOS (pos 0)" in set(table.loc[table["setting"] == shown_as, "token set"])
        w, first = wide.loc[shown_as], "BOS (pos 0)" if bos else "first token (pos 0)"
        ratio, raw = (w[m][first] / w[m][LATER_TOKEN] for m in ("normalised", "mean_distance"))
        pos1 = w["normalised"]["first word (pos 1)"] / w["normalised"][LATER_TOKEN] if bos else None
        edit_layer = int(key_table.loc[key_table["setting"] == shown_as, "layer"].iloc[0])
        rows.append({"setting": shown_as, "first": first, "BOS": bos, "layers": len(w),
                     "share_below_half": float((ratio < 0.5).mean()), "median_ratio": ratio.median(),
                     "embedding_ratio": ratio.iloc[0], "raw_share_below": float((raw < 1).mean()),
                     "edit_layer": edit_layer, "key_first": keyn[(shown_as, first)],
                     "key_later": keyn[(shown_as, LATER_TOKEN)],
                     "pos1_median_ratio": None if pos1 is None else pos1.median(),
                     "pos1_share_below_half": None if pos1 is None else float((pos1 < 0.5).mean())})
    return pd.DataFrame(rows)


def judge_concentration(summary: pd.DataFrame) -> Judgement:
    """Notebook 05 (Appendix A.5, Figure 8): claim ``concentration``, one verdict per setting without a BOS (a BOS
    is the same token in every text, trivially concentrated), from ``concentration_summary``.

    A setting holds when the first token's normalised spread is below half the later tokens' at more than half of
    the layers (``share_below_half`` > 0.5), else it does not hold. The text's overall word: holds when every
    BOS-free setting holds, holds only partly when some do, else does not hold.
    """
    lines = []
    for r in summary.itertuples():
        text = (f"{r.setting}: {r.first}{' (trivially concentrated: the same token in every text)' if r.BOS else ''} "
                f"spread < ½ of later tokens' at {r.share_below_half:.0%} of {r.layers} layers; median ratio "
                f"{r.median_ratio:.2f} (embedding layer {r.embedding_ratio:.2f}); raw spread below later tokens' at "
                f"{r.raw_share_below:.0%} of layers; MLP keys at layer {r.edit_layer}: "
                f"{r.key_first:.3f} vs {r.key_later:.3f}")
        if r.BOS:
            text += (f"; first word (pos 1): median ratio {r.pos1_median_ratio:.2f}, < ½ at "
                     f"{r.pos1_share_below_half:.0%} of layers")
        lines.append(text if r.BOS else f"**{'holds' if r.share_below_half > 0.5 else 'does not hold'}** on {text}")
    free = summary[~summary.BOS.astype(bool)]
    passed = list(free.setting[free.share_below_half > 0.5])
    overall = "holds" if len(passed) == len(free) else "holds only partly" if passed else "does not hold"
    text = (f"the claim **{overall}** — first-token representations are far more concentrated than later tokens at "
            f"most layers in {len(passed)} of {len(free)} settings without a BOS ({', '.join(passed) or 'none'}).\n\n- "
            + "\n- ".join(lines))
    verdicts = [Verdict("concentration", r.setting.replace(" (no BOS)", ""),
                        f"{'no BOS: ' if r.setting.endswith('(no BOS)') else ''}first token's spread < ½ of later "
                        f"tokens' at {r.share_below_half:.0%} of {r.layers} layers (MLP keys {r.key_first:.2f} vs "
                        f"{r.key_later:.2f})", "holds" if r.share_below_half > 0.5 else "does not hold")
                for r in free.itertuples()]
    return Judgement(verdicts, text)


SCORES = ["efficacy", "generalization", "locality"]


def judge_fix(per_edit: pd.DataFrame, table4: pd.DataFrame, table5: pd.DataFrame, model: str, setting: str,
              n_prefixes: int) -> Judgement:
    """Notebook 06 (Tables 4 and 5), one setting: claims ``c-rome-normal`` and ``test-prefix``.

    ``per_edit``: one row per edit (setting, variant, collapsed, ppl_before, ppl_after); ``table4``: mean scores
    indexed by (setting, variant, group); ``table5``: C-ROME's collapse-prone scores indexed by (setting, test
    prompt), the first row without a prefix and the last the mean over the ``n_prefixes`` prefixes tried.

    * ``c-rome-normal`` holds when no C-ROME edit collapses, every one keeps perplexity within 2× the original and
      C-ROME's normal-case efficacy is at most 0.1 below ROME's; else it does not hold.
    * ``test-prefix`` holds when collapse-prone efficacy is below 0.5 without the prefix and at least 0.8 with
      one; holds in part when it is low without and rises by more than 0.2 with one; else does not hold.

    The line shown says "the claim holds" when all of these hold, "holds in part" when C-ROME keeps its
    performance or the prefix recovers efficacy, else "does not hold".
    """
    crome_ppl = per_edit[(per_edit["setting"] == setting) & (per_edit["variant"] == "c-rome")]
    t4, t5 = table4.loc[setting], table5.loc[setting]
    worst = (crome_ppl["ppl_after"] / crome_ppl["ppl_before"]).max()
    eff_normal = t4.loc[("c-rome", "normal"), "efficacy"], t4.loc[("rome", "normal"), "efficacy"]
    keeps = (not crome_ppl["collapsed"].any()) and worst <= 2.0 and eff_normal[0] >= eff_normal[1] - 0.1
    without, with_ = t5["efficacy"].iloc[0], t5["efficacy"].iloc[-1]
    low, recovers = without < 0.5, with_ >= 0.8
    verdict = "holds" if keeps and low and recovers else "holds in part" if keeps or recovers else "does not hold"
    text = (
        f"**{setting} setting: the claim {verdict}.** (1) C-ROME collapses {int(crome_ppl['collapsed'].sum())}/"
        f"{len(crome_ppl)} edits, worst perplexity {worst:.2f}× the original, normal-case efficacy {eff_normal[0]:.2f} "
        f"vs ROME {eff_normal[1]:.2f}; (2) collapse-prone efficacy without the prefix {without:.2f} "
        f"({'low' if low else 'not low'}); (3) with a prefix {with_:.2f} (mean over {n_prefixes} prefixes; "
        f"{'recovers' if recovers else f'does not recover, {0.8 - with_:.2f} below the 0.8 bar'}; {with_ - without:+.2f}); "
        f"generalisation {t5['generalization'].iloc[0]:.2f} → {t5['generalization'].iloc[-1]:.2f}. For reference, ROME "
        f"on collapse-prone cases: efficacy {t4.loc[('rome', 'collapse-prone'), 'efficacy']:.2f}, locality "
        f"{t4.loc[('rome', 'collapse-prone'), 'locality']:.2f}.")
    verdicts = [
        Verdict("c-rome-normal", model, "C-ROME / ROME on normal cases: " + ", ".join(
            f"{c} {t4.loc[('c-rome', 'normal'), c]:.2f} / {t4.loc[('rome', 'normal'), c]:.2f}" for c in SCORES),
            "holds" if keeps else "does not hold", setting),
        Verdict("test-prefix", model, f"collapse-prone efficacy {without:.2f} without a prefix → {with_:.2f} with "
                f"one (mean of {n_prefixes})", "holds" if low and recovers else
                "holds in part" if low and with_ > without + 0.2 else "does not hold", setting)]
    return Judgement(verdicts, text)


PREDICT_ANSWERS = {
    "holds": "yes — on these cases the ratio from the keys alone tells the collapsing edits as well as running them",
    "holds in part": "for the real collapses, yes; for milder blow-ups it misses some or refuses too many",
    "does not hold": "no — it misses collapses or refuses too many harmless edits",
    "not testable": "not testable on these cases (no collapse or no harmless edit)"}


def judge_predict_collapse(screens: pd.DataFrame, table: pd.DataFrame, model: str, setting: str,
                           definitions: dict[str, float]) -> Judgement:
    """Notebook 08: claim ``predict-collapse``. ``screens``: ``scan.screens`` (per collapse definition and
    predictor: auc, collapses, harmless, catch_all_threshold, false_refusals, false_refusal_rate); ``table``: one
    row per ROME edit (blowup, at_risk); ``definitions``: name → perplexity factor, the milder first.

    A screen is good when there are collapses and harmless edits, its AUC is at least 0.95 and its catch-all
    threshold refuses at most 10% of the harmless edits. Holds when the ratio's screen is good at both
    definitions, holds in part when at the strict one only, does not hold otherwise; not testable when the strict
    definition gives no collapse or no harmless edit.
    """
    by = screens.set_index(["collapse", "predictor"])
    strict, mild = list(definitions)[::-1]

    def good(r):
        return r["collapses"] > 0 and r["harmless"] > 0 and r["auc"] >= 0.95 and r["false_refusal_rate"] <= 0.10

    r_strict, r_mild = by.loc[(strict, "ratio")], by.loc[(mild, "ratio")]
    if r_strict["collapses"] == 0 or r_strict["harmless"] == 0:
        verdict = "not testable"
    else:
        verdict = "holds" if good(r_strict) and good(r_mild) else "holds in part" if good(r_strict) else "does not hold"
    at_risk, hit = table["at_risk"].astype(bool), collapsed(table["blowup"], definitions[strict])
    simple = "; ".join(f"{p}: AUC {r['auc']:.2f}, catch-all refuses {r['false_refusals']}/{r['harmless']}"
                       for (d, p), r in by.iterrows() if d == strict and p != "ratio")

    def line(d, r):
        return (f"{d}: {r['collapses']} collapses, AUC {r['auc']:.2f}, refusing ratio ≤ "
                f"{r['catch_all_threshold']:.3g} catches all and refuses {r['false_refusals']}/{r['harmless']} "
                "harmless edits")

    measured = (f"{len(table)} ROME edits ({setting}); " + line(strict, r_strict) + "; " + line(mild, r_mild) +
                f"; CLI default 0.1 catches {int((at_risk & hit).sum())}/{int(hit.sum())} (> {definitions[strict]:g}×), "
                f"refuses {int((at_risk & ~hit).sum())}/{int((~hit).sum())}")
    text = (f"the claim **{verdict}**. Can the ratio replace running the edit as a collapse screen? "
            f"{PREDICT_ANSWERS[verdict]}.\n\n- {measured}.\n- Simpler predictors ({strict}) — {simple}.")
    return Judgement([Verdict("predict-collapse", model, measured, verdict, setting)], text)


def _run_rows(steps: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series]:
    """One run's edits (step > 0) and which of them had perplexity measured. A run measures after its last edit
    whatever happens, and a measurement of non-finite weights is NaN: so the last edit counts as measured."""
    rows = steps[steps["step"] > 0].reset_index(drop=True)
    measured = rows["ppl"].notna()
    if len(rows):
        measured.iloc[-1] = True
    return rows, measured


def _first_crossing(rows: pd.DataFrame, measured: pd.Series, factor: float):
    """Index of the first measured edit with perplexity over ``factor`` × the unedited one (NaN counts as over)."""
    over = measured & ~(rows["ppl_ratio"] < factor)
    return over.idxmax() if over.any() else None


def _window(rows: pd.DataFrame, measured: pd.Series, hit: int) -> pd.DataFrame:
    """The edits since the previous measurement, up to and including edit ``hit``."""
    before = rows.index[measured & (rows.index < hit)]
    start = before[-1] + 1 if len(before) else 0
    return rows.loc[start:hit]


def judge_sequential(steps: pd.DataFrame, model: str, setting: str, factor: float = COLLAPSE_FACTOR) -> Judgement:
    """Notebook 09: claim ``sequential`` in one setting, from ``sequential.trajectories`` (one row per edit of every
    run, step 0 the unedited model; columns stream, variant, setting, step, group, subject_first, ratio, delta_norm,
    ppl, ppl_ratio). ROME runs that count are those whose edits include a subject-first (collapse-prone) one.

    Holds when (1) no C-ROME run goes over ``factor`` × the unedited perplexity, (2) every counted ROME run does,
    and (3) the window of each one's first measured edit over ``factor`` (the edits since the previous
    measurement) holds a subject-first edit that is also the window's largest ‖ΔW‖. Holds in part when (1) holds
    and some counted ROME run goes over 2×; does not hold otherwise (C-ROME collapses, or ROME stays within 2×);
    not testable without a counted ROME run.
    """
    runs = [(keys, run) for keys, run in steps[steps["setting"] == setting].groupby(
        ["stream", "variant", "setting"], sort=False)]
    long, short, crome_ok, has_crome = [], [], True, False
    collapsed_, blamed, over2, counted = [], [], [], 0
    for (stream, variant, _), run in runs:
        rows, measured = _run_rows(run)
        if variant == "c-rome":
            has_crome = True
            crome_ok = crome_ok and _first_crossing(rows, measured, factor) is None
            worst = rows.loc[measured, "ppl_ratio"].max()
            long.append(f"C-ROME, {stream} stream: at most {worst:.3g}× the unedited perplexity in {len(rows)} edits")
            short.append(f"C-ROME {stream}: ≤ {worst:.2f}× in {len(rows)} edits")
    for (stream, variant, _), run in runs:
        if variant != "rome":
            continue
        rows, measured = _run_rows(run)
        counts = "collapse-prone" in set(rows["group"])
        hit, hit2 = _first_crossing(rows, measured, factor), _first_crossing(rows, measured, 2.0)
        if counts:
            counted += 1
            over2.append(hit2 is not None)
            collapsed_.append(hit is not None)
        if hit is None:
            last = rows.loc[measured, "ppl_ratio"].iloc[-1]
            long.append(f"ROME, {stream} stream: no collapse in {len(rows)} edits "
                        f"({f'over 2× at edit {int(rows.step[hit2])}' if hit2 is not None else 'within 2×'}; "
                        f"last {last:.3g}×)")
            short.append(f"ROME {stream}: no collapse in {len(rows)} edits")
            continue
        window = _window(rows, measured, hit)
        biggest = window.loc[window["delta_norm"].idxmax()]
        firsts = [int(s) for s, first in zip(window["step"], window["subject_first"]) if bool(first)]
        biggest_first = bool(biggest["subject_first"])
        if counts:
            blamed.append(bool(firsts) and biggest_first)
        at, at2 = rows.loc[hit], rows.loc[hit2]
        long.append(f"ROME, {stream} stream: over 2× at edit {int(at2.step)}, over {factor:g}× at edit {int(at.step)} "
                    f"({at.ppl_ratio:.3g}×); since the previous measurement (edits {int(window.step.iloc[0])}–"
                    f"{int(at.step)}) the subject-first edits are {firsts or 'none'}, the largest ‖ΔW‖ "
                    f"({biggest.delta_norm:.3g}) is edit {int(biggest.step)} ({biggest.group}, ratio {biggest.ratio:.3g})")
        short.append(f"ROME {stream}: over {factor:g}× at edit {int(at.step)} ({at.ppl_ratio:.3g}×), "
                     + (f"subject-first edit {int(biggest.step)} the largest" if biggest_first
                        else f"largest edit {int(biggest.step)} is {biggest.group}"))
    crome_ok = has_crome and crome_ok
    if not counted:
        verdict = "not testable"
    elif crome_ok and all(collapsed_) and all(blamed):
        verdict = "holds"
    elif crome_ok and any(over2):
        verdict = "holds in part"
    else:
        verdict = "does not hold"
    return Judgement([Verdict("sequential", model, "; ".join(short), verdict, setting)],
                     f"**{setting} setting: the claim {verdict}.** {'; '.join(long)}.")


# Notebook 10: does the way v* is set up hold C-ROME's efficacy with a test-time prefix back?
CLAMP_EFFICACY_BAR = 0.9  # efficacy with the prefix a variant must reach on collapse-prone cases
CLAMP_MAX_PPL_RATIO = 2.0  # every edit's perplexity within this many times the unedited one
CLAMP_LOCALITY_SLACK = 0.05  # mean locality may fall at most this far below the baseline's
CLAMP_NORMAL_EFFICACY_SLACK = 0.1  # normal cases' efficacy may fall at most this far below the baseline's


def clamp_checks(study: pd.DataFrame, setting: str, baseline: str | None = None) -> pd.DataFrame:
    """Notebook 10, one setting: one row per v* variant (in the study's order) from ``clamp_study.run_study``'s
    table (one row per setting, variant and case: group, efficacy, efficacy with prefix, locality with prefix,
    ppl_ratio, collapsed, target_prob). Columns: collapse-prone efficacy without and with the test-time prefix,
    normal cases' efficacy, mean locality (with the prefix where one is used), the worst perplexity ratio,
    collapses, v*'s mean target probability on collapse-prone cases, and the conditions ``judge_clamp_study``
    reads: ``intact`` (no collapse, perplexity within ``CLAMP_MAX_PPL_RATIO``×, locality and normal cases'
    efficacy within their slack of the ``baseline`` variant's; default the first, ROME's own v*),
    ``reaches bar`` (efficacy with the prefix at least ``CLAMP_EFFICACY_BAR``) and ``passes`` (both)."""
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
    base = checks.loc[baseline or checks.index[0]]
    checks["intact"] = ((checks["collapsed"] == 0) & (checks["ppl_ratio_max"] <= CLAMP_MAX_PPL_RATIO)
                        & (checks["locality"] >= base["locality"] - CLAMP_LOCALITY_SLACK)
                        & ~(checks["normal efficacy"] < base["normal efficacy"] - CLAMP_NORMAL_EFFICACY_SLACK))
    checks["reaches bar"] = checks["efficacy with prefix"] >= CLAMP_EFFICACY_BAR
    checks["passes"] = checks["intact"] & checks["reaches bar"]
    return checks


def judge_clamp_study(checks: pd.DataFrame, model: str, setting: str, baseline: str | None = None) -> Judgement:
    """Notebook 10: claim ``clamp-study`` in one setting, from ``clamp_checks`` (``baseline``: the variant with
    ROME's own v*, default the first row).

    A variant *restores* C-ROME when it passes: collapse-prone efficacy with the prefix at least
    ``CLAMP_EFFICACY_BAR``, no edit (of either group) collapses or takes perplexity past ``CLAMP_MAX_PPL_RATIO``×,
    mean locality at most ``CLAMP_LOCALITY_SLACK`` below the baseline's and normal cases' efficacy at most
    ``CLAMP_NORMAL_EFFICACY_SLACK`` below it. The claim holds when some variant restores C-ROME; it holds in part
    when a variant reaches the bar at a cost (collapse, perplexity, locality or normal cases' efficacy: the set-up
    is what limits efficacy, but lifting it harms the model) or an intact one lifts efficacy with the prefix by at
    least 0.1; otherwise it does not hold. The variant quoted is the first that passes, else the one with the best
    locality among those reaching the bar, else the one with the highest efficacy with the prefix.
    """
    baseline = baseline or checks.index[0]
    base = checks.loc[baseline]
    passing = list(checks.index[checks["passes"]])
    intact = checks[checks["intact"]]
    best = intact["efficacy with prefix"].idxmax() if len(intact) else baseline
    lift = checks.loc[best, "efficacy with prefix"] - base["efficacy with prefix"]
    verdict = "holds" if passing else "holds in part" if lift >= 0.1 or checks["reaches bar"].any() else "does not hold"
    reaching = checks[checks["reaches bar"]]
    top = passing[0] if passing else reaching["locality"].idxmax() if len(reaching) else \
        checks["efficacy with prefix"].idxmax()
    t = checks.loc[top]
    measured = (f"collapse-prone efficacy with a test-time prefix {base['efficacy with prefix']:.2f} with ROME's v* "
                f"(its target probability {base['target_prob']:.2f}); {top}: {t['efficacy with prefix']:.2f} "
                f"(target probability {t['target_prob']:.2f}) with locality {t['locality']:.2f} vs "
                f"{base['locality']:.2f} and worst perplexity {t['ppl_ratio_max']:.2f}×; "
                f"{len(passing)} of {len(checks) - 1} variants reach {CLAMP_EFFICACY_BAR:g} with locality kept")
    text = f"**{setting} setting: the claim {verdict}.** {measured}; restoring: {', '.join(passing) or 'none'}."
    return Judgement([Verdict("clamp-study", model, measured, verdict, setting)], text)
