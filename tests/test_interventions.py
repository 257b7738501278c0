import torch

from rome_collapse import experiments, interventions, keys
from rome_collapse.data import EditCase
from rome_collapse.tokens import encode, subject_last_index

PARIS = EditCase("paris", "{} is located in", "Paris", "Italy", "France")
LATE = EditCase("late", "The city of {} is located in", "Paris", "Italy", "France")


def test_position_maps():
    assert interventions.second_to_first(4).tolist() == [1, 1, 2, 3]
    assert interventions.token_to_first(5, 3).tolist() == [0, 1, 2, 0, 4]


def test_identity_positions_give_the_ordinary_key(tiny):
    lookup = subject_last_index(tiny, LATE.prompt, LATE.subject)
    length = encode(tiny, [LATE.text]).input_ids.shape[1]
    key, _ = interventions.key_with_positions(tiny, LATE.text, lookup, torch.arange(length))
    assert torch.allclose(key, keys.unprefixed_key(tiny, LATE.prompt, LATE.subject), atol=1e-5)


def test_first2second_moves_the_unprefixed_key(tiny):
    templates = ["{}", "Some words here. {}"]
    ck = keys.case_keys(tiny, LATE.prompt, LATE.subject, templates)
    swapped = interventions.swapped_unprefixed_keys(tiny, LATE, ck, "first2second")
    assert not torch.allclose(swapped.unprefixed_key, ck.unprefixed_key)  # rotary: position 0 vs 3 differ


def test_case_groups(smol):
    assert experiments.case_group(smol, PARIS) == "collapse-prone"
    assert experiments.case_group(smol, LATE) == "normal"
    assert experiments.case_group(smol, EditCase(1, "{} was born in", "Danielle Darrieux", "a", "b")) == "multi-token-start"
    # with a BOS in front nothing is collapse-prone; a one-token subject at the start is protected by it
    assert experiments.case_group(smol.with_bos(True), PARIS) == "bos-protected"
    assert experiments.case_group(smol.with_bos(True), LATE) == "normal"
    assert experiments.case_group(smol.with_bos(True), EditCase(1, "{} was born in", "Danielle Darrieux", "a", "b")) \
        == "multi-token-start"
