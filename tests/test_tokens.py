import pytest

from rome_collapse.tokens import encode, subject_is_first_token, subject_last_index, subject_token_span


def decode_at(bundle, text, position):
    return bundle.tokenizer.decode(encode(bundle, [text]).input_ids[0, position])


@pytest.mark.parametrize("prompt, subject, last_piece", [
    ("{} is located in", "Paris", "Paris"),  # single token at the start
    ("The mother tongue of {} is", "Danielle Darrieux", "ux"),  # multi-token, after words
    ("{} was born in", "Danielle Darrieux", "ux"),  # multi-token at the start
    ("The weather is fine. The mother tongue of {} is", "Danielle Darrieux", "ux"),  # with a prefix
])
def test_subject_last_token(smol, prompt, subject, last_piece):
    text = prompt.format(subject)
    position = subject_last_index(smol, prompt, subject)
    assert decode_at(smol, text, position).strip().endswith(last_piece)
    # the next token is no longer the subject
    assert subject not in decode_at(smol, text, position + 1)


def test_positions_shift_by_one_with_bos(smol):
    with_bos = smol.with_bos(True)
    for prompt, subject in (("{} is located in", "Paris"), ("The mother tongue of {} is", "Danielle Darrieux")):
        assert subject_last_index(with_bos, prompt, subject) == subject_last_index(smol, prompt, subject) + 1
        text = prompt.format(subject)
        pos = subject_last_index(with_bos, prompt, subject)
        assert decode_at(with_bos, text, pos) == decode_at(smol, text, pos - 1)
    assert encode(with_bos, ["Paris"]).input_ids[0, 0].item() == smol.tokenizer.bos_token_id


def test_first_token_classification(smol):
    assert subject_is_first_token(smol, "{} is located in", "Paris")
    assert not subject_is_first_token(smol, "The capital of {} is", "France")
    assert not subject_is_first_token(smol, "{} was born in", "Danielle Darrieux")
    # with a BOS in front the subject is no longer the first token the model sees
    assert not subject_is_first_token(smol.with_bos(True), "{} is located in", "Paris")
    assert subject_token_span(smol, "{} was born in", "Danielle Darrieux")[0] == 0


def test_bad_prompt_is_rejected(smol):
    with pytest.raises(ValueError, match="exactly one"):
        subject_last_index(smol, "no placeholder", "Paris")
