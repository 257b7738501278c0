import copy
import hashlib
import json

import pytest

from rome_collapse import config, data, metrics
from rome_collapse.tokens import subject_is_first_token, subject_token_span

GOOD = {
    "case_id": 7,
    "requested_rewrite": {"prompt": "The mother tongue of {} is", "subject": "Danielle Darrieux",
                          "relation_id": "P103", "target_new": {"str": "English"}, "target_true": {"str": "French"}},
    "paraphrase_prompts": ["Danielle Darrieux, a native"],
    "neighborhood_prompts": ["The mother tongue of Léon Blum is"],
}


def broken(path, value):
    record = copy.deepcopy(GOOD)
    node = record
    *parents, last = path.split(".")
    for p in parents:
        node = node[p]
    if value is KeyError:
        del node[last]
    else:
        node[last] = value
    return record


def test_good_record_parses():
    case = data.parse_case(GOOD)
    assert case.text == "The mother tongue of Danielle Darrieux is"
    assert case.target_new == "English" and case.relation_id == "P103"
    assert data.load_cases([case.to_counterfact()])[0] == case


@pytest.mark.parametrize("path, value, field", [
    ("requested_rewrite.prompt", "The mother tongue of Danielle Darrieux is", "requested_rewrite.prompt"),  # no {}
    ("requested_rewrite.prompt", "{} and {}", "requested_rewrite.prompt"),
    ("requested_rewrite.subject", "", "requested_rewrite.subject"),
    ("requested_rewrite.subject", KeyError, "requested_rewrite.subject"),
    ("requested_rewrite.target_new.str", "  ", "requested_rewrite.target_new.str"),
    ("requested_rewrite.target_true", {"id": "Q150"}, "requested_rewrite.target_true.str"),
    ("requested_rewrite.target_new.str", 42, "requested_rewrite.target_new.str"),  # wrong type
    ("requested_rewrite.target_new.str", "French", "requested_rewrite.target_new.str"),  # same as true
    ("paraphrase_prompts", "not a list", "paraphrase_prompts"),
    ("neighborhood_prompts", ["ok", 3], "neighborhood_prompts"),
])
def test_bad_record_names_case_and_field(path, value, field):
    with pytest.raises(data.CaseError) as err:
        data.parse_case(broken(path, value))
    assert "case 7" in str(err.value) and field in str(err.value)


def test_duplicate_ids_and_non_objects_are_rejected(tmp_path):
    with pytest.raises(data.CaseError, match="case 7: field 'case_id'"):
        data.load_cases([GOOD, GOOD])
    with pytest.raises(data.CaseError, match="record #1"):
        data.load_cases([GOOD, "oops"])
    path = tmp_path / "subset.json"
    path.write_text(json.dumps([GOOD]))
    assert data.load_cases(path)[0].case_id == 7


@pytest.mark.model
def test_curated_set_shape(smol, curated):
    assert len(curated) >= 150
    assert len({c.relation_id for c in curated}) >= 8
    assert all(len(c.paraphrase_prompts) == 2 and len(c.neighborhood_prompts) >= 5 for c in curated)
    first_single = [c for c in curated if subject_is_first_token(smol, c.prompt, c.subject)]
    after_words = [c for c in curated if not c.prompt.startswith("{}")]
    multi_at_start = [c for c in curated if c.prompt.startswith("{}")
                      and subject_token_span(smol, c.prompt, c.subject)[1] > 0]
    assert len(first_single) >= 50 and len(after_words) >= 50 and len(multi_at_start) >= 5


@pytest.mark.model
def test_curated_facts_are_known_by_the_default_model(smol, curated):
    nll_true = metrics.target_nll(smol, [c.text for c in curated], [c.target_true for c in curated])
    nll_new = metrics.target_nll(smol, [c.text for c in curated], [c.target_new for c in curated])
    unknown = [c.case_id for c, t, n in zip(curated, nll_true, nll_new) if not t < n]
    assert unknown == []


@pytest.mark.parametrize("name, count", [("50", 50), ("1k", 1000), ("10k", 10000)])
def test_meppl_loads_and_matches_published_hash(name, count):
    path = data.meppl_path(name)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == data.MEPPL_FILES[name][1]
    texts = data.meppl(name)
    assert len(texts) == count and all(isinstance(t, str) for t in texts)


def test_statistics_corpus_excludes_perplexity_sentences():
    corpus = data.statistics_corpus()
    assert not set(corpus) & set(data.meppl("50"))
    assert len(corpus) > 9000


def test_offline_without_copy_says_where_to_put_files(monkeypatch, tmp_path):
    monkeypatch.setattr(data, "meppl_dir", lambda: None)
    monkeypatch.setenv("ROME_COLLAPSE_CACHE", str(tmp_path))

    def no_network(*args, **kwargs):
        raise ConnectionError("offline")

    import pooch
    monkeypatch.setattr(pooch, "retrieve", no_network)
    with pytest.raises(FileNotFoundError, match="ROME_COLLAPSE_DATA"):
        data.meppl("50")
    with pytest.raises(ValueError, match="unknown ME-PPL"):
        data.meppl("5")


def test_meppl_first_sentences_of_a_set():
    from rome_collapse.data import meppl

    assert meppl("50:10") == meppl("50")[:10] and len(meppl("50:10")) == 10
    for bad in ("50:0", "50:x", "50:-3"):
        with pytest.raises(ValueError, match="whole number"):
            meppl(bad)


FLAT = {"case_id": 0, "prompt": "The mother tongue of Danielle Darrieux is", "target_new": "English",
        "subject": "Danielle Darrieux", "ground_truth": "French",
        "rephrase_prompt": "Where Danielle Darrieux is from, people speak the language of",
        "locality_prompt": "Michel Rocard is a native speaker of", "locality_ground_truth": "French"}


def test_a_flat_easyedit_record_becomes_an_edit_case():
    case = data.load_cases([FLAT])[0]
    assert (case.prompt, case.subject, case.target_new, case.target_true) == (
        "The mother tongue of {} is", "Danielle Darrieux", "English", "French")
    assert case.text == FLAT["prompt"]
    assert case.paraphrase_prompts == (FLAT["rephrase_prompt"],)
    assert case.neighborhood_prompts == (FLAT["locality_prompt"],) and case.locality_target == "French"
    braces = data.load_cases([{**FLAT, "prompt": "In {| Danielle Darrieux speaks", "rephrase_prompt": "a {| b"}])[0]
    assert braces.text == "In {| Danielle Darrieux speaks" and braces.paraphrase_prompts == ("a {| b",)


@pytest.mark.parametrize("change, message", [
    ({"subject": 3}, "case 0: field 'subject' must be str"),
    ({"ground_truth": None}, "case 0: field 'ground_truth' must be str"),
    ({"target_new": " "}, "case 0: field 'target_new' is empty"),
    ({"prompt": "Danielle Darrieux, Danielle Darrieux is"}, "case 0: field 'prompt' holds the subject"),
    ({"prompt": "Somebody speaks"}, "case 0: field 'prompt' holds the subject 'Danielle Darrieux' 0 times"),
    ({"target_new": "French"}, "case 0: field 'target_new' equals ground_truth"),
    ({"locality_ground_truth": None}, "case 0: field 'locality_ground_truth' must come with 'locality_prompt'"),
    ({"rephrase_prompt": ""}, "case 0: field 'rephrase_prompt' must be a non-empty string"),
])
def test_a_bad_flat_record_names_its_case_and_field(change, message):
    good = {**FLAT, "case_id": 1}
    with pytest.raises(data.CaseError, match=message.replace("(", r"\(")):
        data.load_cases([good, {**FLAT, **change}])  # nothing half-loaded: the good record is not returned either


def test_the_shared_counterfact_files_load(tmp_path):
    root = config.repo_root().parent / "shared" / "data" / "CounterFact"
    if not root.exists():
        pytest.skip("the shared CounterFact files are not beside this checkout")
    cases = data.load_cases(root / "counterfact-edit.json")
    assert len(cases) == 10000 and all(c.neighborhood_prompts and c.paraphrase_prompts for c in cases)


# --------------------------------------------------------------------------------------------
# The data root ($ROME_COLLAPSE_DATA: one folder holding ME-PPL/ and CounterFact/)
# --------------------------------------------------------------------------------------------
def test_the_data_variable_names_the_root_holding_meppl(monkeypatch, tmp_path):
    (tmp_path / "ME-PPL").mkdir()
    (tmp_path / "ME-PPL" / "ME-PPL_50.json").write_text("[]")
    monkeypatch.setenv("ROME_COLLAPSE_DATA", str(tmp_path))
    assert data.data_root() == tmp_path
    assert data.meppl_dir() == tmp_path / "ME-PPL"
    (tmp_path / "ME-PPL" / "ME-PPL_50.json").unlink()
    assert data.meppl_dir() is None  # a root without ME-PPL: downloaded instead


def test_the_old_form_of_the_data_variable_is_refused_with_what_to_set(monkeypatch, tmp_path):
    meppl = tmp_path / "ME-PPL"
    meppl.mkdir()
    (meppl / "ME-PPL_50.json").write_text("[]")
    monkeypatch.setenv("ROME_COLLAPSE_DATA", str(meppl))
    with pytest.raises(ValueError, match="ME-PPL folder .* data root .*ME-PPL/ and CounterFact/") as error:
        data.meppl_dir()
    assert str(tmp_path) in str(error.value)  # says which folder to name instead
    monkeypatch.setenv("ROME_COLLAPSE_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="no such folder"):
        data.data_root()


def test_without_the_variable_the_root_is_shared_data_beside_the_checkout_else_beside_cwd(monkeypatch, tmp_path):
    monkeypatch.delenv("ROME_COLLAPSE_DATA", raising=False)
    beside_checkout, beside_cwd = tmp_path / "a" / "shared" / "data", tmp_path / "b" / "shared" / "data"
    for folder in (beside_checkout, beside_cwd, tmp_path / "b" / "notebooks"):
        folder.mkdir(parents=True)
    monkeypatch.setattr(data, "checkout_root", lambda: tmp_path / "a" / "checkout")
    monkeypatch.chdir(tmp_path / "b" / "notebooks")
    assert data.data_root() == beside_checkout
    beside_checkout.rmdir()
    assert data.data_root() == beside_cwd
    beside_cwd.rmdir()
    assert data.data_root() is None


def test_an_installed_package_looks_only_beside_the_working_directory(monkeypatch, tmp_path):
    monkeypatch.delenv("ROME_COLLAPSE_DATA", raising=False)
    site = tmp_path / "venv" / "lib" / "site-packages"  # an installed package: no checkout above it
    beside_site, beside_cwd = site.parent / "shared" / "data", tmp_path / "b" / "shared" / "data"
    for folder in (beside_site, beside_cwd, tmp_path / "b" / "work"):
        folder.mkdir(parents=True)
    monkeypatch.setattr(data, "checkout_root", lambda: config.checkout_root(site / "rome_collapse"))
    monkeypatch.chdir(tmp_path / "b" / "work")
    assert data.data_root() == beside_cwd  # not the folder beside site-packages
    beside_cwd.rmdir()
    assert data.data_root() is None


def write_split(root, name="counterfact-edit.json", records=None):
    folder = root / "CounterFact"
    folder.mkdir(parents=True, exist_ok=True)
    body = json.dumps(records if records is not None else [FLAT]).encode()
    (folder / name).write_bytes(body)
    (folder / "SHA256SUMS").write_text(f"{hashlib.sha256(body).hexdigest()}  {name}\n")
    return folder / name


def test_a_counterfact_split_is_read_from_the_root_and_checked_against_its_sums(monkeypatch, tmp_path):
    path = write_split(tmp_path)
    monkeypatch.setenv("ROME_COLLAPSE_DATA", str(tmp_path))
    assert data.counterfact_split_path("edit") == path
    assert [c.subject for c in data.counterfact_split("edit")] == ["Danielle Darrieux"]
    with pytest.raises(ValueError, match="unknown CounterFact split"):
        data.counterfact_split("val")
    with pytest.raises(FileNotFoundError, match="counterfact-train.json.*ROME_COLLAPSE_DATA"):
        data.counterfact_split("train")
    path.write_bytes(path.read_bytes().replace(b"English", b"Spanish"))
    with pytest.raises(ValueError, match="does not match .* SHA256SUMS"):
        data.counterfact_split("edit")
    (path.parent / "SHA256SUMS").write_text("0123  counterfact-train.json\n")
    with pytest.raises(ValueError, match="no line for counterfact-edit.json"):
        data.counterfact_split("edit")


def test_the_shared_splits_match_their_sums_and_are_disjoint(monkeypatch):
    monkeypatch.delenv("ROME_COLLAPSE_DATA", raising=False)
    if not (config.repo_root().parent / "shared" / "data" / "CounterFact").exists():
        pytest.skip("the shared CounterFact files are not beside this checkout")
    edit, train = data.counterfact_split("edit"), data.counterfact_split("train")
    assert len(edit) == len(train) == 10000
    assert not {c.case_id for c in edit} & {c.case_id for c in train}
