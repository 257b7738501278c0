"""Interventions of the paper's appendix: moving tokens to other positions, and removing the BOS.

Positions are changed through ``position_ids``: for rotary models (Llama, Gemma, GPT-J) they set
the rotation angles, for learned absolute positions (GPT-2) they choose the rows of the position
embedding, so one mechanism serves both kinds.
"""
from __future__ import annotations

import dataclasses

import torch

from .data import EditCase
from .keys import CaseKeys
from .models import Bundle
from .tokens import encode, subject_last_index
from .trace import down_proj_io


def second_to_first(length: int) -> torch.Tensor:
    """Second2First: the first token is given the second position, [1, 1, 2, 3, …]."""
    positions = torch.arange(length)
    positions[0] = 1
    return positions


def token_to_first(length: int, index: int) -> torch.Tensor:
    """First2Second (paper's naming): the token at ``index`` (a subject after other words) takes position 0."""
    positions = torch.arange(length)
    positions[index] = 0
    return positions


def key_with_positions(bundle: Bundle, text: str, lookup: int, position_ids: torch.Tensor,
                       layer: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The key (and W k + b) at ``lookup`` when the text's tokens carry ``position_ids``."""
    layer = bundle.hparams.layer if layer is None else layer
    batch = encode(bundle, [text])
    if position_ids.shape[-1] != batch.input_ids.shape[1]:
        raise ValueError(f"position_ids has {position_ids.shape[-1]} entries for {batch.input_ids.shape[1]} tokens")
    inputs, outputs = down_proj_io(bundle, layer, batch, position_ids=position_ids.view(1, -1).to(bundle.device))
    return inputs[0, lookup], outputs[0, lookup]


def swapped_unprefixed_keys(bundle: Bundle, case: EditCase, keys: CaseKeys, kind: str,
                            layer: int | None = None) -> CaseKeys:
    """The case's keys with kᵘ recomputed under a position swap (k̄ is left as it is).

    ``kind="second2first"``: the first token (a collapse case's subject) gets position 1.
    ``kind="first2second"``: the subject's last token (after other words) gets position 0.
    """
    text = case.text
    lookup = subject_last_index(bundle, case.prompt, case.subject)
    length = encode(bundle, [text]).input_ids.shape[1]
    if kind == "second2first":
        positions = second_to_first(length)
    elif kind == "first2second":
        positions = token_to_first(length, lookup)
    else:
        raise ValueError(f"kind must be 'second2first' or 'first2second', got {kind!r}")
    key, output = key_with_positions(bundle, text, lookup, positions, layer)
    return dataclasses.replace(keys, unprefixed_key=key, unprefixed_output=output)


def without_bos(bundle: Bundle) -> Bundle:
    """The paper's Appendix A.2: the same model with its leading BOS token removed."""
    return bundle.with_bos(False)
