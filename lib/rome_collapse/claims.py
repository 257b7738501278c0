"""The claims table: every notebook records its verdicts here, the overview collects them.

Each claim of the paper has a fixed id (``CLAIMS``) with what the paper says. A notebook ends with
``claims.save([claims.Verdict(...)], notebook=..., run_model=..., profile=...)``: one CSV per notebook
and run under ``<figures>/claims/``. ``claims.load`` reads them all back and ``claims.overview``
turns them into one row per claim with a column per model.

A verdict is made from the parts of its claim (``Verdict.from_parts``): every part's rule and threshold is a row of
``criteria.CRITERIA``, and the rules that measure them live in ``rules/`` (one module per group of notebooks), each
returning a ``Judgement`` (the verdicts, the findings in words and the measured parts).

The paper's column is its finding in words (on GPT-2-XL, GPT-J and Llama2-7b): the paper's tables could not
be read where this workbook was written, so compare the direction and size of the effects, not digits.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path

import pandas as pd

from . import criteria
from .plots import figures_dir

VERDICTS = ("holds", "holds in part", "does not hold", "not testable")
# Which setting of ROME a verdict's numbers come from: "paper" (no C⁻¹, as the authors ran), "original" (C⁻¹, as
# Meng et al.), or "any" where the claim does not involve C (keys, positions, first-token statistics).
SETTING_ORDER = ("paper", "original", "any")
# Which cases a verdict's numbers come from: the curated set this project wrote (cases grouped by construction) or
# real CounterFact records (the paper's protocol, notebooks 11 and 12: groups found by the scan and by editing).
DATA_ORDER = ("curated", "CounterFact")


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
    "observation": Claim(
        "§3.3", "Nearly every collapse case has a one-token subject that is the very first token of the prompt (tested "
        "on the collapses measured by editing CounterFact)",
        "almost all HardCF cases (the CounterFact edits that collapsed the model) have a single-token subject at the "
        "start of the prompt"),
    "period-subjects": Claim(
        "Table 3", "Subjects ending in a period (Llama-2's few collapse cases) collapse the model with a BOS "
        "(Llama-2) but not those without one (GPT-2-XL, GPT-J)",
        "Llama2-7b's collapse cases have subjects ending in '.'; editing them does not collapse GPT-2-XL or GPT-J"),
    "key-mismatch": Claim(
        "Figure 2", "Collapse cases' kᵘ lie apart from their k̄ and C⁻¹k̄; normal cases' do not",
        "t-SNE: collapse cases' kᵘ form a separate cluster, normal cases' kᵘ overlap their k̄"),
    "first-token": Claim(
        "Figure 3", "First tokens of ordinary text sit with collapse cases' kᵘ; a prefix moves those back",
        "first-token keys cluster with collapse kᵘ; prefixed collapse keys join the normal ones"),
    "first-token-bos": Claim(
        "Figure 3 / App. A.2", "With a BOS the subject-first keys sit with later tokens; with the BOS removed they "
        "sit with first tokens",
        "(Llama2-7b, BOS) no collapse on collapse cases; without its BOS the first-token behaviour returns"),
    "bos": Claim(
        "App. A.2", "A BOS protects a model; removing the BOS brings the collapse back",
        "Llama2-7b (BOS) does not collapse on collapse cases; without its BOS it does"),
    "encoder": Claim(
        "App. A.3", "In a bidirectional model the first word is not special; in a causal one it is (compared like "
        "with like: the first word behind a special token, MiniLM's [CLS] and the causal model's BOS)",
        "T5-3B's encoder is much less affected: its first token is not special (Figure 6, across layers)"),
    "position": Claim(
        "App. A.4", "Position codes contribute to the collapse on some models but are not its whole cause "
        "(Second2First / First2Second swaps)",
        "Second2First mitigates the collapse on GPT-2-XL but is completely ineffective on GPT-J and Llama2-7b; "
        "First2Second leads to partial collapse on GPT-2-XL and Llama2-7b, while every edited GPT-J stays stable"),
    "concentration": Claim(
        "App. A.5", "First tokens' MLP keys become markedly more concentrated than later tokens' as the layers "
        "progress (mean distance to their centroid, Eq. 4)",
        "so on GPT-2-XL and GPT-J (no BOS); not on the Llama family, whose BOS takes position 0"),
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
        "Beyond the paper", "The pre-flight denominator ratio (keys only, no v*) tells which ROME edits collapse, "
        "better than simpler signs (subject first, cos(kᵘ, k̄), ‖kᵘ‖)",
        "not studied: the paper explains the collapse by the small denominator, measured after editing"),
    "clamp-study": Claim(
        "Beyond the paper", "C-ROME's efficacy with a test-time prefix on subject-first cases is held back by ROME's "
        "clamp on v* (‖δ‖ ≤ 4‖W kᵘ + b‖, at the first token's small output); the same clamp at the prefixed output "
        "(‖δ‖ ≤ 4‖W k̄ + b‖) restores it to at least 0.9 without collapse or loss of locality",
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
    parts: str = ""  # each part's value against its rule (criteria.PartResult.describe), " | "-separated
    data: str = "curated"  # one of DATA_ORDER

    @classmethod
    def from_parts(cls, claim_id: str, model: str, measured: str, parts: list[criteria.PartResult],
                   setting: str = "any", data: str = "curated") -> "Verdict":
        """The verdict that ``criteria.combine`` gives the measured parts. Every part of the claim in
        ``criteria.CRITERIA`` must be there, once: a rule cannot leave one out."""
        wanted = [c.part for c in criteria.parts_of(claim_id)]
        got = [p.part for p in parts]
        if sorted(got) != sorted(wanted) or any(p.claim_id != claim_id for p in parts):
            raise ValueError(f"claim {claim_id!r}: parts {got} given, the criteria table has {wanted}")
        order = {name: i for i, name in enumerate(wanted)}
        parts = sorted(parts, key=lambda p: order[p.part])
        unmet = criteria.unmet(parts)
        return cls(claim_id, model, measured + (f" [{unmet}]" if unmet else ""), criteria.combine(parts), setting,
                   " | ".join(p.describe() for p in parts), data)

    def on(self, data: str) -> "Verdict":
        """This verdict, its numbers from ``data`` (a rule written for the curated set run on CounterFact groups)."""
        return replace(self, data=data)

    def __post_init__(self) -> None:
        if self.claim_id not in CLAIMS:
            raise ValueError(f"unknown claim_id {self.claim_id!r}; known: {', '.join(CLAIMS)}")
        if self.setting not in SETTING_ORDER:
            raise ValueError(f"claim {self.claim_id!r}: setting {self.setting!r} is not one of {SETTING_ORDER}")
        if self.verdict not in VERDICTS:
            raise ValueError(f"claim {self.claim_id!r}: verdict {self.verdict!r} is not one of {VERDICTS}")
        if self.data not in DATA_ORDER:
            raise ValueError(f"claim {self.claim_id!r}: data {self.data!r} is not one of {DATA_ORDER}")
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


COLUMNS = ["notebook", "run_model", "profile", "claim_id", "model", "measured", "verdict", "setting", "parts", "data"]


def load(profile: str = "full") -> pd.DataFrame:
    """Every recorded verdict of a profile. A claim judged on the same model by two runs (notebook 03 judges
    the BOS claim on the BOS model whichever model it runs on) keeps the row of the run on that model."""
    files = sorted(claims_dir(profile).glob("*.csv"))
    if not files:
        return pd.DataFrame(columns=COLUMNS)
    table = pd.concat([pd.read_csv(f, dtype=str, keep_default_na=False) for f in files], ignore_index=True)
    if "setting" not in table.columns:
        raise ValueError(f"claims files under {claims_dir(profile)} have no 'setting' column: run their notebooks again")
    table["parts"] = table["parts"].fillna("") if "parts" in table.columns else ""  # files from before the parts
    table["data"] = table["data"].replace("", "curated") if "data" in table.columns else "curated"  # and the data
    unknown = sorted(set(table["claim_id"]) - set(CLAIMS))
    if unknown:
        raise ValueError(f"claims files under {claims_dir(profile)} name unknown claims: {unknown}")
    own_run = table["run_model"] == table["model"]
    table = pd.concat([table[~own_run], table[own_run]], ignore_index=True)
    return table.drop_duplicates(["claim_id", "model", "setting", "data"], keep="last").reset_index(drop=True)[COLUMNS]


def _with_defaults(verdicts: pd.DataFrame) -> pd.DataFrame:
    defaults = {"setting": "any", "data": "curated"}  # rows written before either column, or without it
    return verdicts.assign(**{c: verdicts[c].fillna(v).replace("", v) if c in verdicts.columns else v
                              for c, v in defaults.items()})


def _rows(verdicts: pd.DataFrame) -> list[tuple[str, str, str]]:
    """(claim_id, setting, data) in the paper's order: one per setting and data that judged the claim, (id, "", "")
    if none did."""
    verdicts = _with_defaults(verdicts)
    rows = []
    for claim_id in CLAIMS:
        mine = verdicts[verdicts["claim_id"] == claim_id]
        judged = set(zip(mine["setting"], mine["data"]))
        rows += [(claim_id, s, d) for d in DATA_ORDER for s in SETTING_ORDER if (s, d) in judged] or [(claim_id, "", "")]
    return rows


def _hit(verdicts: pd.DataFrame, claim_id: str, setting: str, data: str, model: str) -> pd.DataFrame:
    v = _with_defaults(verdicts)
    return v[(v["claim_id"] == claim_id) & (v["setting"] == setting) & (v["data"] == data) & (v["model"] == model)]


def overview(verdicts: pd.DataFrame, models: list[str] | None = None) -> pd.DataFrame:
    """One row per claim, setting and data that judged it (in the paper's order): source, claim, the paper's finding,
    the setting, the data, and for each model "<verdict>: <measured>" (empty where no run judged it)."""
    models = models or list(dict.fromkeys(verdicts["model"]))
    rows = []
    for claim_id, setting, data in _rows(verdicts):
        c = CLAIMS[claim_id]
        row = {"claim_id": claim_id, "source": c.source, "claim": c.claim, "paper": c.paper, "setting": setting,
               "data": data}
        for m in models:
            hit = _hit(verdicts, claim_id, setting, data, m)
            row[m] = f"{hit['verdict'].iloc[0]}: {hit['measured'].iloc[0]}" if len(hit) else ""
        rows.append(row)
    return pd.DataFrame(rows)


def verdict_grid(verdicts: pd.DataFrame, models: list[str] | None = None) -> pd.DataFrame:
    """(claim, setting, data) × models of verdicts ("" where not judged), for a picture of the whole table."""
    models = models or list(dict.fromkeys(verdicts["model"]))
    rows = _rows(verdicts)
    index = pd.MultiIndex.from_tuples(rows, names=["claim_id", "setting", "data"])
    grid = pd.DataFrame("", index=index, columns=models)
    for claim_id, setting, data in rows:
        for m in models:
            hit = _hit(verdicts, claim_id, setting, data, m)
            if len(hit):
                grid.loc[(claim_id, setting, data), m] = hit["verdict"].iloc[0]
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
    parts: tuple = ()  # the criteria.PartResult behind the verdicts (criteria.parts_frame shows them)
