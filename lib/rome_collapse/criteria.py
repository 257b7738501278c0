"""Every threshold a verdict uses, in one table, and how the parts of a claim combine into its verdict.

A claim of the paper is split into the parts it states ("collapse cases have a tiny denominator", "numerators are
alike", …). Each part is one row of :data:`CRITERIA`: the claim, the part's id, the part in words, the quantity that
is measured, a comparison and a threshold. A rule (``rules/``) measures each part's quantity and calls
:func:`check`; :func:`combine` turns the parts into the claim's verdict:

* *holds*: every part was testable and passed;
* *holds in part*: some parts passed, others failed or could not be tested (the verdict names them);
* *does not hold*: no testable part passed;
* *not testable*: no part could be tested on this model (the model cannot tell, e.g. a swap that leaves the key
  unchanged; say why in the part's note).

The overview notebook and README show :func:`criteria_table`, so every threshold a reader meets is written once.
numpy/pandas only, no torch.
"""
from __future__ import annotations

import math
import operator
from dataclasses import asdict, dataclass

import pandas as pd

OPERATORS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}


@dataclass(frozen=True)
class Criterion:
    """One part of one claim: ``quantity`` ``op`` ``threshold`` must be true for the part to hold."""
    claim_id: str
    part: str  # short id, unique within the claim
    statement: str  # the part of the claim, in words
    quantity: str  # what is measured, in words
    op: str  # one of OPERATORS
    threshold: float

    @property
    def rule(self) -> str:
        return f"{self.quantity} {self.op} {self.threshold:g}"


def _c(claim_id, part, statement, quantity, op, threshold) -> Criterion:
    return Criterion(claim_id, part, statement, quantity, op, float(threshold))


# The one table of thresholds. Edit a number here and every notebook, test and README table follows.
CRITERIA: tuple[Criterion, ...] = (
    # Table 1 (notebook 01)
    _c("denominator", "small-denominator", "collapse cases' ROME denominator is tiny",
       "median denominator ratio (kᵘ·C⁻¹k̄)/(k̄·C⁻¹k̄) of collapse-prone ROME edits", "<", 0.1),
    _c("denominator", "orders-of-magnitude", "orders of magnitude below normal cases'",
       "median |denominator| of collapse-prone / of normal ROME edits", "<=", 0.1),
    _c("denominator", "similar-numerators", "numerators are alike",
       "larger / smaller of the two groups' median numerator ‖v* − W kᵘ − b‖", "<=", 2.0),
    # Table 2 (notebook 01)
    _c("rome-collapses", "collapse-prone-collapse", "ROME collapses the model on collapse cases",
       "share of collapse-prone ROME edits with ME-PPL over 10× the unedited", ">=", 0.5),
    _c("rome-collapses", "normal-safe", "but not on normal cases",
       "share of normal ROME edits with ME-PPL over 10× the unedited", "<=", 0.1),
    _c("c-rome-safe", "no-collapse", "C-ROME collapses no edit",
       "C-ROME edits with ME-PPL over 10× the unedited", "<=", 0),
    _c("c-rome-safe", "perplexity-kept", "perplexity stays at the unedited level",
       "largest ME-PPL after / before of a C-ROME edit", "<=", 2.0),
    # §3.3 (notebook 11): the observation, on the ROME edits of CounterFact that collapsed the model (paper setting)
    _c("observation", "collapses-single-token-first", "(nearly) every collapse has a one-token subject at the start",
       "share of the measured ROME collapses whose subject is one token at the start", ">=", 0.9),
    _c("observation", "single-token-first-collapse", "and such subjects collapse the model",
       "share of edited one-token-first records whose ROME edit collapsed the model", ">=", 0.5),
    # Table 3 (notebook 12): CounterFact records whose subject ends in a period, ROME edits, ME-PPL as the model is
    # used (with its BOS where it has one). Each model tests the part that concerns it; the other is not testable.
    _c("period-subjects", "no-bos-safe", "they do not collapse a model without a BOS",
       "share of period-subject ROME edits that collapse a model without a BOS", "<=", 0.1),
    _c("period-subjects", "bos-collapses", "they collapse the model with a BOS",
       "share of period-subject ROME edits that collapse a model with its BOS", ">=", 0.5),
    # Figure 2 (notebook 02)
    _c("key-mismatch", "collapse-apart", "collapse cases' kᵘ lie apart from their k̄",
       "mean cos(kᵘ, k̄) of collapse-prone cases", "<", 0.5),
    _c("key-mismatch", "normal-together", "normal cases' kᵘ lie with their k̄",
       "mean cos(kᵘ, k̄) of normal cases", ">=", 0.5),
    # Figure 3 (notebook 03, model without a BOS)
    _c("first-token", "collapse-near-first", "collapse cases' kᵘ sit with first tokens of ordinary text",
       "share of collapse-prone kᵘ nearest the first-token centroid", ">=", 0.5),
    _c("first-token", "normal-near-later", "normal cases' kᵘ sit with later tokens",
       "share of normal kᵘ nearest the later-token centroid", ">=", 0.5),
    _c("first-token", "prefix-moves-back", "a prefix moves collapse cases' keys to later tokens",
       "share of prefixed collapse-prone kᵘ nearest the later-token centroid", ">=", 0.5),
    # Figure 3 / App. A.2 on a model with a BOS (notebook 03): position 0 is the BOS, the subject is never first, so
    # the claim becomes "the BOS protects, removing it exposes" (its own claim: different quantities).
    _c("first-token-bos", "bos-protects-keys", "with the BOS, subject-first cases' kᵘ sit with later tokens",
       "share of subject-first kᵘ (BOS in front) nearest the later-token centroid", ">=", 0.5),
    _c("first-token-bos", "normal-near-later", "normal cases' kᵘ sit with later tokens",
       "share of normal kᵘ nearest the later-token centroid", ">=", 0.5),
    _c("first-token-bos", "removal-exposes", "with the BOS removed, they sit with the first tokens of BOS-free text",
       "share of subject-first kᵘ without the BOS nearest the BOS-free first-token centroid", ">=", 0.5),
    # Appendix A.2 (notebook 03, the BOS model). Collapse is judged against C-ROME's edit of the same case on the
    # same model: without its BOS the unedited model itself is far off its usual perplexity, so a factor over the
    # unedited perplexity says nothing there; C-ROME shares v* and differs only in the key, the paper's point.
    _c("bos", "bos-keeps-denominator", "with the BOS, ROME's denominator is sound",
       "median ROME denominator ratio of subject-first edits with the BOS", ">=", 0.5),
    _c("bos", "bos-protects", "with the BOS, ROME does not collapse the model",
       "share of subject-first ROME edits with the BOS whose ME-PPL is over 10× C-ROME's on the same case", "<=", 0),
    _c("bos", "removal-shrinks-denominator", "without the BOS, ROME's denominator becomes tiny",
       "median ROME denominator ratio of subject-first edits without the BOS", "<", 0.1),
    _c("bos", "removal-collapses", "without the BOS, ROME collapses the model",
       "share of subject-first ROME edits without the BOS whose ME-PPL is over 10× C-ROME's on the same case",
       ">=", 0.5),
    # Appendix A.3 (notebook 05). Like with like: the first word behind a special token in both models
    # (MiniLM's [CLS], the causal model's BOS); ratios of the raw mean distance of the MLP keys to their centroid
    # (Eq. 4), first word / later tokens, at every layer.
    _c("encoder", "encoder-first-not-special", "the bidirectional model's first word is not concentrated",
       "share of the encoder's layers where its first word's key spread is under ½ of later tokens'", "<=", 0.5),
    _c("encoder", "causal-first-special", "the causal model's first word, behind its BOS, is (the contrast)",
       "share of the causal model's layers where its first word's key spread is under ½ of later tokens'", ">", 0.5),
    # Appendix A.4 (notebook 04): the paper finds position codes a contributing factor on some models, not the
    # whole cause. Second2First gives a collapse case's first token the second position (testable only where that
    # changes the update: not on a rotary model); First2Second gives normal cases' subject the first position.
    _c("position", "second2first-not-whole-cause", "Second2First does not remove every collapse",
       "share of collapse-prone ROME edits (collapsing, kᵘ moved over 1e-4 relative by the swap) still collapsing after "
       "Second2First", ">", 0),
    _c("position", "first2second-contributes", "First2Second pushes some normal edits over the collapse line",
       "share of normal ROME edits (not collapsing) that collapse after First2Second", ">", 0),
    _c("position", "first2second-partial", "but not all (a partial collapse: position is not the whole cause)",
       "share of normal ROME edits (not collapsing) that collapse after First2Second", "<", 1),
    # Appendix A.5 (notebook 05): Eq. 4, the raw mean distance of the MLP keys to their centroid, at every layer;
    # the first token is the first of the text (after the BOS where the model has one).
    _c("concentration", "first-concentrated", "first tokens' MLP keys are concentrated",
       "share of layers where the first token's mean key distance is under ½ of later tokens'", ">", 0.5),
    _c("concentration", "grows-with-depth", "markedly more so as the layers progress",
       "median ratio (first / later) over the last third of layers ÷ over the first third", "<", 0.5),
    # Table 4 (notebook 06), the paper's (EasyEdit) metrics
    _c("c-rome-normal", "no-collapse", "C-ROME collapses no edit",
       "C-ROME edits with ME-PPL over 10× the unedited", "<=", 0),
    _c("c-rome-normal", "efficacy-kept", "efficacy on normal cases on par with ROME",
       "ROME's − C-ROME's mean rewrite accuracy on normal cases", "<=", 0.1),
    _c("c-rome-normal", "generalization-kept", "generalisation on par with ROME",
       "ROME's − C-ROME's mean rephrase accuracy on normal cases", "<=", 0.1),
    _c("c-rome-normal", "locality-kept", "locality on par with ROME",
       "ROME's − C-ROME's mean locality on normal cases", "<=", 0.1),
    # Tables 4–5 (notebook 06)
    _c("test-prefix", "low-without", "C-ROME's efficacy on collapse cases is low",
       "C-ROME's mean rewrite accuracy on collapse-prone cases", "<", 0.5),
    _c("test-prefix", "prefix-restores", "a test-time prefix restores it",
       "C-ROME's mean rewrite accuracy on collapse-prone cases with an editing prefix (mean over the prefixes)",
       ">=", 0.8),
    # Beyond the paper: notebook 08. Collapse: ME-PPL over 10× the unedited; milder blow-ups: over 2×. Where the
    # best simpler sign's AUC is above 1 − 0.01, the ratio cannot beat it by the margin: beats-simpler is then
    # not testable on those cases (no room left), not "holds".
    _c("predict-collapse", "separates", "the pre-flight ratio tells collapsing ROME edits from harmless ones",
       "AUC of the ratio for collapse (over 10×)", ">=", 0.95),
    _c("predict-collapse", "few-false-refusals", "at a threshold that catches every collapse",
       "share of harmless edits refused by the ratio's catch-all threshold (collapse over 10×)", "<=", 0.1),
    _c("predict-collapse", "separates-mild", "it tells milder blow-ups too",
       "AUC of the ratio for blow-ups over 2×", ">=", 0.95),
    _c("predict-collapse", "beats-simpler", "better than simpler signs (subject first, cos, ‖kᵘ‖)",
       "AUC of the ratio − best AUC of a simpler sign (collapse over 10×)", ">", 0.01),
    # Beyond the paper: notebook 09
    _c("sequential", "c-rome-stays", "C-ROME stays safe over a stream",
       "C-ROME streams that go over 10× the unedited ME-PPL", "<=", 0),
    _c("sequential", "rome-collapses", "ROME collapses within the stream",
       "share of ROME streams with a subject-first edit that go over 10×", ">=", 1),
    _c("sequential", "at-subject-first", "at a subject-first edit",
       "share of those collapses whose window's largest ‖ΔW‖ is a subject-first edit", ">=", 1),
    # Beyond the paper: notebook 10. The question names ROME's clamp, ‖δ‖ ≤ 4‖W kᵘ + b‖: the variant that answers
    # it is the same clamp measured at the prefixed output, ‖δ‖ ≤ 4‖W k̄ + b‖.
    _c("clamp-study", "clamp-limits", "the clamp holds efficacy back",
       "rise of collapse-prone efficacy with the prefix, prefixed clamp − ROME's clamp", ">=", 0.1),
    _c("clamp-study", "restores", "the prefixed clamp restores efficacy",
       "collapse-prone efficacy with the prefix under the prefixed clamp", ">=", 0.9),
    _c("clamp-study", "no-collapse", "without collapse",
       "largest ME-PPL after / before under the prefixed clamp", "<=", 2.0),
    _c("clamp-study", "locality-kept", "without loss of locality",
       "ROME's clamp's − the prefixed clamp's mean locality", "<=", 0.05),
    _c("clamp-study", "enough-cases", "on enough cases to say so",
       "collapse-prone cases in the study", ">=", 6),
)

_BY_KEY = {(c.claim_id, c.part): c for c in CRITERIA}
if len(_BY_KEY) != len(CRITERIA):  # pragma: no cover - a typo in the table above
    raise RuntimeError("CRITERIA has two rows with the same claim and part")


def criterion(claim_id: str, part: str) -> Criterion:
    try:
        return _BY_KEY[(claim_id, part)]
    except KeyError:
        known = ", ".join(c.part for c in CRITERIA if c.claim_id == claim_id) or "none"
        raise KeyError(f"no criterion {part!r} for claim {claim_id!r} (its parts: {known})") from None


def parts_of(claim_id: str) -> list[Criterion]:
    """The parts of a claim, in the table's order."""
    return [c for c in CRITERIA if c.claim_id == claim_id]


@dataclass(frozen=True)
class PartResult:
    """One part measured: its value, whether it passed (None: not testable on this model) and a note."""
    claim_id: str
    part: str
    value: float | None
    passed: bool | None
    note: str = ""

    @property
    def status(self) -> str:
        return "not testable" if self.passed is None else "holds" if self.passed else "fails"

    def describe(self) -> str:
        c = criterion(self.claim_id, self.part)
        shown = "—" if self.value is None else f"{self.value:.3g}"
        note = f" ({self.note})" if self.note else ""
        return f"{self.part}: {shown} {c.op} {c.threshold:g} → {self.status}{note}"

    def to_dict(self) -> dict:
        return asdict(self)


def check(claim_id: str, part: str, value: float | None, note: str = "", testable: bool = True) -> PartResult:
    """Compare ``value`` with the part's threshold. ``testable=False`` (or a value of None or NaN): not testable,
    with ``note`` saying why."""
    c = criterion(claim_id, part)
    if not testable or value is None or (isinstance(value, float) and math.isnan(value)):
        return PartResult(claim_id, part, None if value is None else float(value), None, note)
    return PartResult(claim_id, part, float(value), bool(OPERATORS[c.op](float(value), c.threshold)), note)


def combine(parts: list[PartResult]) -> str:
    """The claim's verdict from its parts (see the module's docstring)."""
    if not parts:
        raise ValueError("a verdict needs at least one part")
    tested = [p for p in parts if p.passed is not None]
    if not tested:
        return "not testable"
    passed = sum(p.passed for p in tested)
    if passed == len(parts):
        return "holds"
    return "holds in part" if passed else "does not hold"


def unmet(parts: list[PartResult]) -> str:
    """The parts that keep a claim from holding, in words ("" when every part holds)."""
    failed = [p.part for p in parts if p.passed is False]
    untested = [p.part for p in parts if p.passed is None]
    out = []
    if failed:
        out.append("fails: " + ", ".join(failed))
    if untested:
        out.append("not testable: " + ", ".join(untested))
    return "; ".join(out)


def criteria_table(claim_ids: list[str] | None = None) -> pd.DataFrame:
    """The table of every part and threshold (of ``claim_ids``, default all), for the overview and README."""
    rows = [{"claim_id": c.claim_id, "part": c.part, "statement": c.statement, "rule": c.rule}
            for c in CRITERIA if claim_ids is None or c.claim_id in claim_ids]
    return pd.DataFrame(rows)


def parts_frame(parts: list[PartResult]) -> pd.DataFrame:
    """Measured parts as a table (what a notebook shows under its verdict)."""
    rows = []
    for p in parts:
        c = criterion(p.claim_id, p.part)
        rows.append({"claim_id": p.claim_id, "part": p.part, "statement": c.statement, "rule": c.rule,
                     "value": p.value, "status": p.status, "note": p.note})
    return pd.DataFrame(rows)
