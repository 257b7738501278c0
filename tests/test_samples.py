"""The seeded samples: case groups, texts cut at word boundaries, later positions."""
import random

import pytest

from rome_collapse import samples
from rome_collapse.data import EditCase
from rome_collapse.tokens import token_ids

PARIS = EditCase("paris", "{} is located in", "Paris", "Italy", "France")
LATE = EditCase("late", "The city of {} is located in", "Paris", "Italy", "France")
DARRIEUX = EditCase(1, "{} was born in", "Danielle Darrieux", "a", "b")
TEXTS = ["The quick brown fox jumps over the lazy dog.", "The capital of France is Paris, a large city.",
         "The rain stopped and the match went on after all.", "The best apples grow on old trees in the north.",
         "A", "Yes."]


@pytest.mark.model
def test_case_groups(smol):
    assert samples.case_group(smol, PARIS) == "collapse-prone"
    assert samples.case_group(smol, LATE) == "normal"
    assert samples.case_group(smol, DARRIEUX) == "multi-token-start"
    # with a BOS in front nothing is collapse-prone; a one-token subject at the start is protected by it
    assert samples.case_group(smol.with_bos(True), PARIS) == "bos-protected"
    assert samples.case_group(smol.with_bos(True), LATE) == "normal"
    assert samples.case_group(smol.with_bos(True), DARRIEUX) == "multi-token-start"


def test_select_cases_draws_per_group_with_its_seed(tiny):
    cases = [PARIS, LATE, DARRIEUX] + [EditCase(f"n{i}", f"Word {i} and {{}} is", "Paris", "a", "b") for i in range(6)]
    picked = samples.select_cases(tiny, cases, 3, seed=1)
    assert list(picked) == ["collapse-prone", "normal"]
    assert picked["collapse-prone"] == [PARIS]  # fewer than asked: all of them
    assert len(picked["normal"]) == 3 and all(samples.case_group(tiny, c) == "normal" for c in picked["normal"])
    assert picked == samples.select_cases(tiny, cases, 3, seed=1)
    assert any(samples.select_cases(tiny, cases, 3, seed=s)["normal"] != picked["normal"] for s in range(2, 6))


def test_sample_texts_excludes_and_cuts_at_word_boundaries():
    texts = ["a b c d e", "f g", "  ", "h i j k"]
    assert sorted(samples.sample_texts(texts, 10, max_words=3)) == ["a b c", "f g", "h i j"]  # the blank one left out
    assert samples.sample_texts(texts, 10, exclude={"f g"}, max_chars=6, seed=3) == \
        [t if len(t) <= 6 else t[:t.rfind(" ", 0, 6)] for t in random.Random(3).sample(["a b c d e", "h i j k"], 2)]
    assert samples.sample_texts(["abcdefgh"], 1, max_chars=4) == ["abcd"]  # no space: cut at the limit
    # the cut does not change which texts are drawn
    whole = samples.sample_texts(texts, 2, seed=5)
    assert samples.sample_texts(texts, 2, seed=5, max_words=1) == [t.split()[0] for t in whole]


def test_later_lookups_are_seeded_in_range_and_draw_as_randint_for_one_per_text(tiny):
    lengths = [len(token_ids(tiny, t)) for t in TEXTS]
    found = samples.later_lookups(tiny, TEXTS, per_text=3, start=2, max_position=8, seed=1)
    assert found == samples.later_lookups(tiny, TEXTS, per_text=3, start=2, max_position=8, seed=1)
    for text, n in zip(TEXTS, lengths):
        mine = [lk.position for lk in found if lk.text == text]
        assert mine == sorted(mine) and all(2 <= p < min(n, 8) for p in mine)
        assert len(mine) == min(3, max(0, min(n, 8) - 2))  # fewer (or none) where the text is short
    assert found != samples.later_lookups(tiny, TEXTS, per_text=3, start=2, max_position=8, seed=2)
    # one per text: the draws of random.Random(seed).randint(start, length - 1), text by text
    long = [t for t, n in zip(TEXTS, lengths) if n > 2]
    rng = random.Random(7)
    expected = [rng.randint(2, len(token_ids(tiny, t)) - 1) for t in long]
    assert [lk.position for lk in samples.later_lookups(tiny, long, start=2, seed=7)] == expected
    # default start: right after the first real token (1 without a BOS, 2 with one)
    assert min(lk.position for lk in samples.later_lookups(tiny, TEXTS[:4], per_text=20, seed=0)) == 1
    assert min(lk.position for lk in samples.later_lookups(tiny.with_bos(True), TEXTS[:4], per_text=20, seed=0)) == 2


RECORDS = [EditCase(i, "{} is in", f"Place{i}", "Italy", "France") for i in range(50)]


def test_sample_records_is_seeded_and_keeps_the_files_order():
    first = samples.sample_records(RECORDS, 10, seed=1)
    assert first == samples.sample_records(RECORDS, 10, seed=1)  # the same seed, the same records
    assert {c.case_id for c in first} != {c.case_id for c in samples.sample_records(RECORDS, 10, seed=2)}
    ids = [c.case_id for c in first]
    assert len(set(ids)) == 10 and ids == sorted(ids)  # in the order of the file
    assert set(ids) <= set(c.case_id for c in samples.sample_records(RECORDS, 20, seed=1))  # nested in n


def test_sample_records_leaves_out_the_excluded_and_gives_all_when_asked_for_more():
    excluded = {c.case_id for c in RECORDS[:45]}
    rest = samples.sample_records(RECORDS, 10, seed=0, exclude=excluded)
    assert rest == RECORDS[45:]  # only 5 left: all of them, in the file's order
    assert samples.sample_records(RECORDS, 100, seed=3) == RECORDS
    assert samples.sample_records(RECORDS, 0, seed=3) == []
    with pytest.raises(ValueError):
        samples.sample_records(RECORDS, -1)
