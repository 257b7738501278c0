import pytest

from conftest import build_tiny_tokenizer
from rome_collapse.keys import SEED_WORDS
from rome_collapse.models import tokenizer_adds_bos
from rome_collapse.tokens import encode, subject_is_first_token, subject_last_index, subject_token_span


@pytest.fixture(params=[pytest.param("smol", marks=pytest.mark.model), "tiny"])
def bundle(request):
    """SmolLM2's own tokenizer, and the tiny model's byte-level one (no model package needed)."""
    return request.getfixturevalue(request.param)


def decode_at(bundle, text, position):
    return bundle.tokenizer.decode(encode(bundle, [text]).input_ids[0, position])


@pytest.mark.parametrize("prompt, subject, last_piece", [
    ("{} is located in", "Paris", "Paris"),  # single token at the start
    ("The mother tongue of {} is", "Danielle Darrieux", "ux"),  # multi-token, after words
    ("{} was born in", "Danielle Darrieux", "ux"),  # multi-token at the start
    ("The weather is fine. The mother tongue of {} is", "Danielle Darrieux", "ux"),  # with a prefix
])
def test_subject_last_token(bundle, prompt, subject, last_piece):
    text = prompt.format(subject)
    position = subject_last_index(bundle, prompt, subject)
    assert decode_at(bundle, text, position).strip().endswith(last_piece)
    # the next token is no longer the subject
    assert subject not in decode_at(bundle, text, position + 1)


def test_positions_shift_by_one_with_bos(bundle):
    with_bos = bundle.with_bos(True)
    for prompt, subject in (("{} is located in", "Paris"), ("The mother tongue of {} is", "Danielle Darrieux")):
        assert subject_last_index(with_bos, prompt, subject) == subject_last_index(bundle, prompt, subject) + 1
        text = prompt.format(subject)
        pos = subject_last_index(with_bos, prompt, subject)
        assert decode_at(with_bos, text, pos) == decode_at(bundle, text, pos - 1)
    assert encode(with_bos, ["Paris"]).input_ids[0, 0].item() == bundle.tokenizer.bos_token_id


def test_first_token_classification(bundle):
    assert subject_is_first_token(bundle, "{} is located in", "Paris")
    assert not subject_is_first_token(bundle, "The capital of {} is", "France")
    assert not subject_is_first_token(bundle, "{} was born in", "Danielle Darrieux")
    # with a BOS in front the subject is no longer the first token the model sees
    assert not subject_is_first_token(bundle.with_bos(True), "{} is located in", "Paris")
    assert subject_token_span(bundle, "{} was born in", "Danielle Darrieux")[0] == 0


def test_bad_prompt_is_rejected(bundle):
    with pytest.raises(ValueError, match="exactly one"):
        subject_last_index(bundle, "no placeholder", "Paris")


def test_the_tiny_tokenizer_adds_no_bos_and_is_the_same_on_every_build(tiny_tokenizer):
    assert not tokenizer_adds_bos(tiny_tokenizer) and tiny_tokenizer.bos_token_id is not None
    assert build_tiny_tokenizer().get_vocab() == tiny_tokenizer.get_vocab()  # caches are keyed by the weights alone
    assert all(len(tiny_tokenizer(w).input_ids) == 1 for w in SEED_WORDS)  # the templates' seeds: one token each
    text = "Zwölf Boxkämpfer jagen Viktor quer über den großen Sylter Deich."  # words it never saw: bytes
    assert tiny_tokenizer.decode(tiny_tokenizer(text).input_ids) == text
