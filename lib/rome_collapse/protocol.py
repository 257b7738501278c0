"""The paper's protocol on real CounterFact: screen every record, edit the flagged ones and a random sample of the rest,
and let the measured collapses speak (the way the paper's HardCF set was found: by editing).

* :func:`counterfact_records`: the shared CounterFact splits (EasyEdit's flat format), with each record's split.
* :func:`scan_records`: the pre-flight ratio of every record (``scan.scan_cases``), on ``workers`` threads, cached on
  disk under a key naming the weights, layer, setting, BOS switch, templates, records and C. One row per record.
* :func:`edit_groups`: *collapse-prone* = a seeded sample of the records the scan flags (ratio below the threshold),
  *normal* = a seeded random sample of the unflagged ones (multi-token subject-first records included, as the paper
  samples its 1,000). Both groups are edited, so "ROME collapses the collapse-prone cases" is measured, not defined.
* :func:`collapse_rates`: collapses per group and stratum with one-sided Clopper–Pearson bounds;
  :func:`observation`: the paper's §3.3 observation tested on the measured collapses.
* :func:`period_subjects`: the records whose subject ends in a period (the paper's Table 3 on Llama-2).
"""
from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import asdict, dataclass

import pandas as pd

from . import cache, data
from .collapse import RISK_THRESHOLD, lower_bound, upper_bound
from .data import EditCase
from .models import Bundle
from .parallel import map_on_copies
from .samples import sample_records
from .scan import COUNTERFACT_CASES, scan_cases
from .stats import SecondMoment
from .strata import FIRST_SINGLE, STRATA

log = logging.getLogger(__name__)

SPLITS = ("edit", "train")  # the shared folder's two disjoint splits, 10,000 records each
PRONE, NORMAL = "collapse-prone", "normal"
SCAN_VERSION = 1  # bump when a scan row's meaning changes
_PART = 250  # records per work item of a parallel scan (small enough for a moving progress bar)


def counterfact_records(splits: tuple[str, ...] = SPLITS, download: bool = True) -> tuple[list[EditCase], dict]:
    """The records of the shared CounterFact ``splits`` (each SHA256-checked, validated) and case_id → split.

    Where the shared splits are missing (a user outside this workplace) and ``download``: ROME's own
    ``counterfact.json`` (all 21,919 records, ROME's format; ``data.counterfact``: downloaded once, hash-checked), every
    record in split "all"."""
    records, split_of = [], {}
    try:
        for name in splits:
            part = data.counterfact_split(name)
            records += part
            split_of.update({c.case_id: name for c in part})
    except FileNotFoundError as exc:
        if not download:
            raise
        log.warning("%s; reading ROME's counterfact.json instead", exc)
        records = data.counterfact()
        return records, {c.case_id: "all" for c in records}
    if len(split_of) != len(records):
        raise ValueError(f"CounterFact splits {splits} share case_ids; they must be disjoint")
    return records, split_of


def _records_digest(cases: list[EditCase]) -> str:
    return cache.digest([[c.case_id, c.prompt, c.subject] for c in cases])


def _second_moment_id(second_moment: SecondMoment) -> str:
    """What identifies C in a cache key: "identity", or a digest of the matrix itself."""
    if second_moment.is_identity:
        return "identity"
    matrix = second_moment.matrix.detach().to("cpu", copy=True).contiguous()
    return hashlib.sha256(matrix.numpy().tobytes()).hexdigest()[:cache.DIGEST_LENGTH]


@dataclass
class ScanResult:
    """One row per record (``scan.ScanRow``'s columns and ``split``; ``at_risk`` at ``threshold``) and how long the
    scan took when it ran (``seconds``, on ``workers`` threads; read back from the cache when ``cached``)."""
    table: pd.DataFrame
    threshold: float
    seconds: float
    workers: int
    cached: bool

    @property
    def cases_per_s(self) -> float:
        return len(self.table) / self.seconds if self.seconds > 0 else float("inf")

    def describe(self) -> str:
        when = "read from the cache; it took" if self.cached else "took"
        return (f"{len(self.table):,} records scanned ({when} {self.seconds / 60:.1f} min on {self.workers} "
                f"thread(s): {self.cases_per_s:.1f} records/s; all {COUNTERFACT_CASES:,} of CounterFact would take "
                f"{COUNTERFACT_CASES / self.cases_per_s / 60:.1f} min); {int(self.table['at_risk'].sum())} at risk "
                f"(ratio < {self.threshold:g})")


def scan_records(bundle: Bundle, cases: list[EditCase], templates: list[str], second_moment: SecondMoment,
                 split_of: dict | None = None, threshold: float = RISK_THRESHOLD, workers: int = 1,
                 use_cache: bool = True, progress: bool = True) -> ScanResult:
    """Every record's pre-flight ratio in ``second_moment``'s setting (no v*): ``scan.scan_cases`` on ``workers`` threads
    (one torch thread each), cached. The cache holds the ratios; ``at_risk`` is recomputed at ``threshold``."""
    key = {"model": bundle.weights_id, "kind": "counterfact-scan", "version": SCAN_VERSION,
           "layer": bundle.hparams.layer, "setting": second_moment.setting, "bos": bundle.add_bos,
           "templates": cache.digest(templates), "records": _records_digest(cases),
           "second_moment": _second_moment_id(second_moment)}
    path = cache.entry_path("scans", key, ".json", label=f"{len(cases)}-records")
    stored = cache.load_json(path, key) if use_cache else None
    if stored is not None:
        table, seconds, used, cached = pd.DataFrame(stored["rows"]), stored["seconds"], stored["workers"], True
    else:
        parts = [cases[at:at + _PART] for at in range(0, len(cases), _PART)]
        start = time.perf_counter()
        rows = map_on_copies(bundle, lambda b, part: scan_cases(b, part, templates, second_moment, threshold,
                                                                 threads=1, progress=False)[0],
                             parts, workers, desc="scanning CounterFact", progress=progress)
        seconds, used, cached = time.perf_counter() - start, min(workers, len(parts)), False
        table = pd.DataFrame([r.to_dict() for part in rows for r in part])
        if use_cache:
            cache.save_json(path, key, rows=table.to_dict("records"), seconds=seconds, workers=used)
    table["split"] = table["case_id"].map(split_of) if split_of else ""
    table["at_risk"] = table["ratio"] < threshold
    return ScanResult(table, threshold, seconds, used, cached)


def stratum_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per stratum (``strata.STRATA``, in order): records, at risk, their share, and the ratio's quartiles."""
    rows = []
    for name in STRATA:
        part = table[table["stratum"] == name]
        q = part["ratio"].quantile([0.05, 0.25, 0.5, 0.75]) if len(part) else pd.Series([float("nan")] * 4)
        rows.append({"stratum": name, "records": len(part), "at_risk": int(part["at_risk"].sum()),
                     "at_risk_share": part["at_risk"].mean() if len(part) else float("nan"),
                     "ratio_p05": q.iloc[0], "ratio_p25": q.iloc[1], "ratio_median": q.iloc[2], "ratio_p75": q.iloc[3]})
    return pd.DataFrame(rows)


def edit_groups(table: pd.DataFrame, cases: list[EditCase], n_flagged: int | None, n_normal: int,
                seed: int = 0) -> dict[str, list[EditCase]]:
    """The records to edit: ``n_flagged`` of the at-risk ones (all when None) and ``n_normal`` of the others, both
    seeded samples (``samples.sample_records``: nested across sizes, in the records' order)."""
    flagged = set(table.loc[table["at_risk"], "case_id"])
    scanned = set(table["case_id"])
    at_risk = [c for c in cases if c.case_id in flagged]
    unflagged = [c for c in cases if c.case_id in scanned and c.case_id not in flagged]
    prone = at_risk if n_flagged is None else sample_records(at_risk, n_flagged, seed)
    return {PRONE: prone, NORMAL: sample_records(unflagged, n_normal, seed)}


def with_strata(per_edit: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    """``per_edit`` with each record's ``stratum``, ``split`` and scan ``scan_ratio`` (the paper setting's) beside it."""
    scan = table[["case_id", "stratum", "split", "ratio", "subject_tokens"]].rename(columns={"ratio": "scan_ratio"})
    scan = scan.assign(case_id=scan["case_id"].astype(str))
    out = per_edit.assign(case_id=per_edit["case_id"].astype(str)).drop(
        columns=[c for c in ("stratum", "split", "scan_ratio", "subject_tokens") if c in per_edit], errors="ignore")
    return out.merge(scan, on="case_id", how="left")


def collapse_rates(per_edit: pd.DataFrame, table: pd.DataFrame | None = None, confidence: float = 0.95,
                   by: tuple[str, ...] = ("setting", "variant", "group", "stratum")) -> pd.DataFrame:
    """Collapses (``collapse.collapsed``, as measured) per ``by`` cell, with one-sided Clopper–Pearson bounds at
    ``confidence``; with the scan ``table``, ``records``: how many scanned records the cell's group stands for
    (the at-risk ones of that stratum for collapse-prone, the others for normal)."""
    rows = []
    for cell, part in per_edit.groupby(list(by), sort=False):
        k, n = int(part["collapsed"].astype(bool).sum()), len(part)
        row = dict(zip(by, cell if isinstance(cell, tuple) else (cell,)))
        row.update(edits=n, collapsed=k, rate=k / n, lower=lower_bound(k, n, confidence),
                   upper=upper_bound(k, n, confidence))
        if table is not None and {"group", "stratum"} <= set(row):
            flagged = table["at_risk"] if row["group"] == PRONE else ~table["at_risk"]
            row["records"] = int((flagged & (table["stratum"] == row["stratum"])).sum())
        rows.append(row)
    order = {name: i for i, name in enumerate(STRATA)}
    out = pd.DataFrame(rows)
    return out.sort_values(list(by), key=lambda s: s.map(order) if s.name == "stratum" else s).reset_index(drop=True)


@dataclass
class Observation:
    """§3.3 on what was measured: of the ROME edits that collapsed the model (any group), how many have a one-token
    subject at the very start (stratum ``strata.FIRST_SINGLE``), and which collapses do not."""
    setting: str
    collapses: int
    single_token_first: int
    others: list[dict]  # case_id, subject, stratum, subject_tokens, ppl_ratio of each other collapse

    @property
    def share(self) -> float:
        return self.single_token_first / self.collapses if self.collapses else float("nan")

    def to_dict(self) -> dict:
        return {**asdict(self), "share": self.share}


def observation(per_edit: pd.DataFrame, setting: str = "paper") -> Observation:
    """The §3.3 observation tested on the measured ROME collapses of ``setting`` (``per_edit`` with strata)."""
    rome = per_edit[(per_edit["variant"] == "rome") & (per_edit["setting"] == setting)]
    hits = rome[rome["collapsed"].astype(bool)]
    others = hits[hits["stratum"] != FIRST_SINGLE]
    return Observation(setting, len(hits), int((hits["stratum"] == FIRST_SINGLE).sum()), [
        {"case_id": r.case_id, "subject": r.subject, "stratum": r.stratum, "subject_tokens": int(r.subject_tokens),
         "ppl_ratio": r.ppl_after / r.ppl_before} for r in others.itertuples()])


def period_subjects(cases: list[EditCase]) -> list[EditCase]:
    """The records whose subject ends in a period (e.g. "Apple Inc."): the paper's Table 3 cases on Llama-2."""
    return [c for c in cases if c.subject.rstrip().endswith(".")]
