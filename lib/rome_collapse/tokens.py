"""Tokenisation with an explicit BOS switch, and where the subject's last token sits."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .data import fill
from .models import Bundle


@dataclass
class Batch:
    """Right-padded token ids with their mask, on the bundle's device."""
    input_ids: torch.Tensor
    attention_mask: torch.Tensor

    @property
    def lengths(self) -> torch.Tensor:
        return self.attention_mask.sum(1)

    def model_inputs(self) -> dict:
        return {"input_ids": self.input_ids, "attention_mask": self.attention_mask}


def token_ids(bundle: Bundle, text: str) -> list[int]:
    """Ids of one text, with the BOS token in front when ``bundle.add_bos``."""
    ids = bundle.tokenizer(text, add_special_tokens=False).input_ids
    return ([bundle.tokenizer.bos_token_id] if bundle.add_bos else []) + ids


def pad_batch(bundle: Bundle, rows: list[list[int]]) -> Batch:
    """Right-pad lists of token ids into one batch on the bundle's device."""
    if any(len(r) == 0 for r in rows):
        raise ValueError("cannot encode an empty text")
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), bundle.tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    return Batch(ids.to(bundle.device), mask.to(bundle.device))


def encode(bundle: Bundle, texts: list[str]) -> Batch:
    """Tokenise texts (BOS per the bundle's switch) into one right-padded batch."""
    return pad_batch(bundle, [token_ids(bundle, t) for t in texts])


def subject_token_span(bundle: Bundle, prompt: str, subject: str) -> tuple[int, int]:
    """(first, last) positions of the subject's tokens in ``fill(prompt, subject)``, BOS counted when on.

    Uses the tokenizer's character offsets, so it is right for multi-token subjects, for
    subjects at the start or in the middle, and for tokenizers that glue a space to the word.
    """
    if prompt.count("{}") != 1:
        raise ValueError(f"prompt must contain exactly one '{{}}': {prompt!r}")
    text = fill(prompt, subject)
    start = prompt.index("{}")
    end = start + len(subject)  # one past the subject's last character
    enc = bundle.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    covering = [i for i, (s, e) in enumerate(enc.offset_mapping) if s < end and e > start]
    if not covering:
        raise ValueError(f"subject {subject!r} not found among the tokens of {text!r}")
    shift = 1 if bundle.add_bos else 0
    return covering[0] + shift, covering[-1] + shift


def subject_last_index(bundle: Bundle, prompt: str, subject: str) -> int:
    """Position of the subject's last token: where ROME reads the key and writes the value."""
    return subject_token_span(bundle, prompt, subject)[1]


def subject_is_first_token(bundle: Bundle, prompt: str, subject: str) -> bool:
    """The collapse-prone kind: the subject is one token and is the very first token the model sees."""
    first, last = subject_token_span(bundle, prompt, subject)
    return first == last == 0
