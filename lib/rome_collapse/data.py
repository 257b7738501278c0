"""Edit cases (CounterFact's ROME format or EasyEdit's flat format, validated on load) and the texts for statistics
and perplexity."""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

from .config import DATA_ENV, cache_dir, checkout_root


class CaseError(ValueError):
    """A bad edit record; the message names its case_id and the field."""


def fill(template: str, subject: str) -> str:
    """``template`` with its "{}" replaced by ``subject``. Not ``str.format``: real prompts hold other braces
    (CounterFact has "{|" in rephrase prompts), which ``format`` would choke on."""
    head, sep, tail = template.partition("{}")
    if not sep:
        raise ValueError(f"template {template!r} has no '{{}}' for the subject")
    return head + subject + tail


@dataclass(frozen=True)
class EditCase:
    """One fact to rewrite: ``fill(prompt, subject)`` should now be completed by ``target_new``."""
    case_id: int | str
    prompt: str  # holds one "{}" where the subject goes
    subject: str
    target_new: str  # without the leading space; the engine adds it
    target_true: str
    relation_id: str = ""
    paraphrase_prompts: tuple[str, ...] = ()  # full texts, never formatted
    neighborhood_prompts: tuple[str, ...] = ()  # full texts (EasyEdit: its one locality_prompt)
    locality_target: str | None = None  # what locality teacher-forces after them; None: target_true (ROME format)

    @property
    def text(self) -> str:
        return fill(self.prompt, self.subject)

    def to_dict(self) -> dict:
        return asdict(self)

    def to_counterfact(self) -> dict:
        return {
            "case_id": self.case_id,
            "requested_rewrite": {
                "prompt": self.prompt, "subject": self.subject, "relation_id": self.relation_id,
                "target_new": {"str": self.target_new}, "target_true": {"str": self.target_true},
            },
            "paraphrase_prompts": list(self.paraphrase_prompts),
            "neighborhood_prompts": list(self.neighborhood_prompts),
        }


def _field(record: dict, path: str, case_id, kind=str):
    """Read a dotted field, raising a CaseError that names the record and the field."""
    value = record
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            raise CaseError(f"case {case_id}: missing field '{path}'")
        value = value[part]
    if not isinstance(value, kind):
        raise CaseError(f"case {case_id}: field '{path}' must be {getattr(kind, '__name__', kind)}, "
                        f"got {type(value).__name__}")
    return value


def parse_case(record: dict, index: int | None = None) -> EditCase:
    """Validate one CounterFact-format record and turn it into an EditCase."""
    if not isinstance(record, dict):
        raise CaseError(f"record #{index}: must be a JSON object, got {type(record).__name__}")
    case_id = record.get("case_id", f"#{index}")
    if not isinstance(case_id, (int, str)) or isinstance(case_id, bool):
        raise CaseError(f"record #{index}: field 'case_id' must be int or str")
    prompt = _field(record, "requested_rewrite.prompt", case_id)
    subject = _field(record, "requested_rewrite.subject", case_id)
    target_new = _field(record, "requested_rewrite.target_new.str", case_id)
    target_true = _field(record, "requested_rewrite.target_true.str", case_id)
    if prompt.count("{}") != 1:
        raise CaseError(f"case {case_id}: field 'requested_rewrite.prompt' must contain exactly one '{{}}'")
    if not subject.strip():
        raise CaseError(f"case {case_id}: field 'requested_rewrite.subject' is empty")
    for name, value in (("target_new.str", target_new), ("target_true.str", target_true)):
        if not value.strip():
            raise CaseError(f"case {case_id}: field 'requested_rewrite.{name}' is empty")
    if target_new.strip() == target_true.strip():
        raise CaseError(f"case {case_id}: field 'requested_rewrite.target_new.str' equals target_true")
    lists = {}
    for name in ("paraphrase_prompts", "neighborhood_prompts"):
        value = record.get(name, [])
        if not isinstance(value, list) or not all(isinstance(p, str) and p.strip() for p in value):
            raise CaseError(f"case {case_id}: field '{name}' must be a list of non-empty strings")
        lists[name] = tuple(value)
    relation = record["requested_rewrite"].get("relation_id", "")
    return EditCase(case_id=case_id, prompt=prompt, subject=subject, target_new=target_new.strip(),
                    target_true=target_true.strip(), relation_id=str(relation or ""), **lists)


FLAT_FIELDS = ("prompt", "subject", "target_new", "ground_truth", "rephrase_prompt", "locality_prompt",
               "locality_ground_truth")


def parse_flat_record(record: dict, index: int | None = None) -> EditCase:
    """Validate one record of EasyEdit's flat CounterFact format (the prompt with the subject written out, one
    rephrase and one locality prompt) and turn it into an EditCase. Prompts are literal text: the subject's one
    occurrence in ``prompt`` becomes the "{}" (as EasyEdit's ROME does), nothing is ``format``-ed."""
    if not isinstance(record, dict):
        raise CaseError(f"record #{index}: must be a JSON object, got {type(record).__name__}")
    case_id = record.get("case_id", f"#{index}")
    if not isinstance(case_id, (int, str)) or isinstance(case_id, bool):
        raise CaseError(f"record #{index}: field 'case_id' must be int or str")
    values = {name: _field(record, name, case_id) for name in FLAT_FIELDS[:4]}
    for name, value in values.items():
        if not value.strip():
            raise CaseError(f"case {case_id}: field '{name}' is empty")
    optional = {}
    for name in FLAT_FIELDS[4:]:
        value = record.get(name)
        if value is not None and not (isinstance(value, str) and value.strip()):
            raise CaseError(f"case {case_id}: field '{name}' must be a non-empty string")
        optional[name] = value
    if (optional["locality_prompt"] is None) != (optional["locality_ground_truth"] is None):
        raise CaseError(f"case {case_id}: field 'locality_ground_truth' must come with 'locality_prompt'")
    prompt, subject = values["prompt"], values["subject"]
    times = prompt.count(subject)
    if times != 1:
        raise CaseError(f"case {case_id}: field 'prompt' holds the subject {subject!r} {times} times; ROME needs it "
                        "exactly once")
    if values["target_new"].strip() == values["ground_truth"].strip():
        raise CaseError(f"case {case_id}: field 'target_new' equals ground_truth")
    return EditCase(
        case_id=case_id, prompt=prompt.replace(subject, "{}"), subject=subject,
        target_new=values["target_new"].strip(), target_true=values["ground_truth"].strip(),
        paraphrase_prompts=(optional["rephrase_prompt"],) if optional["rephrase_prompt"] else (),
        neighborhood_prompts=(optional["locality_prompt"],) if optional["locality_prompt"] else (),
        locality_target=optional["locality_ground_truth"].strip() if optional["locality_ground_truth"] else None)


def parse_record(record, index: int | None = None) -> EditCase:
    """One record of either format: ROME's (``requested_rewrite``) or EasyEdit's flat one (``prompt``,
    ``subject``, ``target_new``, ``ground_truth``, …)."""
    if isinstance(record, dict) and "requested_rewrite" not in record and "prompt" in record:
        return parse_flat_record(record, index)
    return parse_case(record, index)


def load_cases(source: str | Path | list) -> list[EditCase]:
    """Edit cases from a JSON file (or an already-parsed list) in CounterFact's ROME format or EasyEdit's flat
    format; every record validated, and nothing returned unless all are good."""
    records = source if isinstance(source, list) else json.loads(Path(source).read_text(encoding="utf-8"))
    if not isinstance(records, list):
        raise CaseError(f"{source}: expected a JSON list of records")
    cases = [parse_record(r, i) for i, r in enumerate(records)]
    ids = [c.case_id for c in cases]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise CaseError(f"case {dup}: field 'case_id' is not unique")
    return cases


def curated_cases() -> list[EditCase]:
    """The edit cases shipped with this project (real facts the default model knows)."""
    path = resources.files("rome_collapse").joinpath("resources/curated_cases.json")
    return load_cases(json.loads(path.read_text(encoding="utf-8")))


# --------------------------------------------------------------------------------------------
# Downloads (pooch, hash-checked) for users outside this workplace
# --------------------------------------------------------------------------------------------
COUNTERFACT_URL = "https://rome.baulab.info/data/dsets/counterfact.json"
# Published alongside public copies of the file; checked by pooch on download.
COUNTERFACT_SHA256 = "d017056125178a13728594e66a801357a8db9ed7973a7425554bb4271de9fc6f"


def counterfact(path: str | Path | None = None, known_hash: str | None = COUNTERFACT_SHA256) -> list[EditCase]:
    """The official CounterFact set: from ``path`` when given, else downloaded once (hash-checked)."""
    if path is None:
        import pooch

        path = pooch.retrieve(COUNTERFACT_URL, known_hash=known_hash, fname="counterfact.json",
                              path=cache_dir("data"), progressbar=True)
    return load_cases(path)


COUNTERFACT_SPLITS = {"edit": "counterfact-edit.json", "train": "counterfact-train.json"}  # EasyEdit's flat format


def checksums(folder: Path) -> dict[str, str]:
    """File name -> sha256 from ``folder/SHA256SUMS`` (``sha256sum``'s format: digest, space(s), name)."""
    sums = folder / "SHA256SUMS"
    if not sums.exists():
        raise FileNotFoundError(f"{sums}: missing; the files in {folder} cannot be checked without it")
    found = {}
    for line in sums.read_text(encoding="utf-8").splitlines():
        digest, _, name = line.strip().partition(" ")
        if digest:
            found[name.strip().lstrip("*")] = digest.lower()
    return found


def verified(path: Path) -> Path:
    """``path``, after checking its digest against the SHA256SUMS beside it (a clear error on a mismatch)."""
    import hashlib

    expected = checksums(path.parent).get(path.name)
    if expected is None:
        raise ValueError(f"{path.parent / 'SHA256SUMS'} has no line for {path.name}")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != expected:
        raise ValueError(f"{path}: sha256 {digest} does not match {expected} in SHA256SUMS (a changed or "
                         "truncated copy)")
    return path


def counterfact_split_path(name: str) -> Path:
    """The shared CounterFact split ``name`` ("edit" or "train": 10,000 records each, disjoint) under
    ``<data root>/CounterFact/``, checked against that folder's SHA256SUMS."""
    if name not in COUNTERFACT_SPLITS:
        raise ValueError(f"unknown CounterFact split {name!r}; use one of {', '.join(COUNTERFACT_SPLITS)}")
    root = data_root()
    path = None if root is None else root / "CounterFact" / COUNTERFACT_SPLITS[name]
    if path is None or not path.exists():
        where = "no data root found" if root is None else f"{root / 'CounterFact'} has no {COUNTERFACT_SPLITS[name]}"
        raise FileNotFoundError(f"CounterFact split {name!r}: {where}. Set {DATA_ENV} to the folder that holds "
                                "CounterFact/, or use data.counterfact() for ROME's own counterfact.json "
                                "(downloaded, hash-checked)")
    return verified(path)


def counterfact_split(name: str) -> list[EditCase]:
    """The records of a shared CounterFact split (:func:`counterfact_split_path`), validated."""
    return load_cases(counterfact_split_path(name))


MEPPL_BASE_URL = "https://raw.githubusercontent.com/WanliYoung/Collapse-in-Model-Editing/main/data/ME-PPL/"
MEPPL_FILES = {  # name -> (file, sha256 from the authors' SHA256SUMS)
    "50": ("ME-PPL_50.json", "55f3b951d2c4287b90d9e511f256efb9d47461f0da408a17dac5ffcef685c4e4"),
    "1k": ("ME-PPL_1k.json", "71e29fc5daf443b35ec16c8a9e91e1f4398b5b84ca7c25393639c066b65b5afb"),
    "10k": ("ME-PPL.json", "c09b3d8191ffad954bf3b5e96dac84a7caf83d57c15e262b1d81ef6590742fb4"),
}


def data_root() -> Path | None:
    """The one data root, holding ``ME-PPL/`` and ``CounterFact/``: ``$ROME_COLLAPSE_DATA`` when set, else
    ``../shared/data`` beside the checkout (only when the package runs from one), else the working directory's
    ``../shared/data``; None when none is there. The variable once named the ME-PPL folder itself: that form is
    refused with a message saying what to set instead."""
    named = os.environ.get(DATA_ENV)
    if named:
        root = Path(named)
        if (root / MEPPL_FILES["50"][0]).exists():
            raise ValueError(
                f"{DATA_ENV}={named} is an ME-PPL folder (it holds {MEPPL_FILES['50'][0]} directly); {DATA_ENV} "
                f"now names the data root that holds ME-PPL/ and CounterFact/: set it to {root.resolve().parent} "
                f"if that folder holds them, or move the ME-PPL files into {root / 'ME-PPL'}")
        if not root.is_dir():
            raise FileNotFoundError(f"{DATA_ENV}={named}: no such folder (it names the data root that holds "
                                    "ME-PPL/ and CounterFact/)")
        return root
    checkout = checkout_root()
    beside_checkout = [] if checkout is None else [checkout.parent / "shared" / "data"]
    for candidate in [*beside_checkout, Path.cwd().parent / "shared" / "data"]:
        if candidate.is_dir():
            return candidate
    return None


def meppl_dir() -> Path | None:
    """A local copy of ME-PPL: ``ME-PPL/`` under :func:`data_root`, when it holds the files."""
    root = data_root()
    if root is not None and (root / "ME-PPL" / MEPPL_FILES["50"][0]).exists():
        return root / "ME-PPL"
    return None


def meppl_path(name: str) -> Path:
    if name not in MEPPL_FILES:
        raise ValueError(f"unknown ME-PPL set {name!r}; use one of {', '.join(MEPPL_FILES)}")
    filename, sha256 = MEPPL_FILES[name]
    local = meppl_dir()
    if local is not None and (local / filename).exists():
        return local / filename
    import pooch

    try:
        return Path(pooch.retrieve(MEPPL_BASE_URL + filename, known_hash=f"sha256:{sha256}",
                                   fname=filename, path=cache_dir("data", "ME-PPL")))
    except Exception as exc:  # offline: say where the files go
        raise FileNotFoundError(
            f"ME-PPL file {filename} is not available locally and could not be downloaded ({exc}). "
            f"Put the ME-PPL files in <root>/ME-PPL/ and set {DATA_ENV} to <root>.") from exc


def meppl(name: str = "50") -> list[str]:
    """ME-PPL sentences (``50``, ``1k`` or ``10k``), as the paper's perplexity script reads them; ``"50:10"``: the
    first 10 of a set (the smoke profile's, to keep its many perplexities short)."""
    name, _, first = name.partition(":")
    if first and not (first.isdigit() and int(first) > 0):
        raise ValueError(f"ME-PPL set {name}:{first}: after ':' comes how many sentences to take (a whole number > 0)")
    records = json.loads(meppl_path(name).read_text(encoding="utf-8"))
    texts = [r["Text"] for r in records]
    return texts[:int(first)] if first else texts


def statistics_corpus(n: int | None = None) -> list[str]:
    """Ordinary text for the key statistics when offline: ME-PPL 10k minus the 50 perplexity sentences."""
    held_out = set(meppl("50"))
    texts = [t for t in meppl("10k") if t not in held_out and t.strip()]
    return texts[:n] if n else texts


def wikipedia_corpus(n: int, seed: int = 0) -> list[str]:
    """Wikipedia articles, as ROME uses for its statistics (needs `datasets` and a connection)."""
    try:
        import datasets
    except ImportError as exc:
        raise ImportError("wikipedia statistics need `pip install datasets`") from exc
    ds = datasets.load_dataset("wikimedia/wikipedia", "20231101.en", split="train", streaming=True)
    return [row["text"] for row, _ in zip(ds.shuffle(seed=seed), range(n))]
