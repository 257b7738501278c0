"""Reading (and writing) the edited MLP's input and output with forward hooks, and skipping blocks.

The forward pass can stop right after the edit layer: statistics and keys never need the
later layers nor the LM head. The v* loop goes the other way: the blocks before the edit layer
never see δ, so their output is computed once (``block_input``) and handed to the edit layer's
block at every step while those blocks are skipped (``blocks_skipped``).
"""
from __future__ import annotations

from contextlib import contextmanager

import torch

from .models import Bundle, get_module
from .tokens import Batch


class _StopForward(Exception):
    """Raised inside a hook to end a forward pass once what we need is captured."""


@contextmanager
def forward_hook(module: torch.nn.Module, fn):
    handle = module.register_forward_hook(fn)
    try:
        yield handle
    finally:
        handle.remove()


def run_base(bundle: Bundle, batch: Batch, **kwargs):
    """The transformer without its LM head (hidden states only)."""
    base = get_module(bundle.model, bundle.spec.base)
    return base(**batch.model_inputs(), use_cache=False, **kwargs)


def down_proj_io(bundle: Bundle, layer: int, batch: Batch | None = None, stop: bool = True,
                 position_ids: torch.Tensor | None = None, **inputs) -> tuple[torch.Tensor, torch.Tensor]:
    """Input (the keys k) and output (W k + b) of the edited projection for every token of the batch.

    With ``stop`` the forward pass ends inside the edit layer. ``position_ids`` overrides the
    positions (rotary angles, or rows of a learned position embedding such as GPT-2's). Without a
    ``batch``, ``inputs`` go to the base model as they are (a key/value cache, a longer mask).
    """
    if batch is not None:
        inputs = {**batch.model_inputs(), "use_cache": False, **inputs}
    if position_ids is not None:
        inputs["position_ids"] = position_ids
    captured = {}

    def hook(module, args, output):
        captured["input"], captured["output"] = args[0].detach(), output.detach()
        if stop:
            raise _StopForward

    with forward_hook(bundle.down_proj(layer), hook), torch.no_grad():
        try:
            get_module(bundle.model, bundle.spec.base)(**inputs)
        except _StopForward:
            pass
    return captured["input"], captured["output"]


def block_input(bundle: Bundle, layer: int, **inputs) -> torch.Tensor:
    """The residual stream entering block ``layer`` for every token (the forward stops there).

    ``inputs`` go to the base model as they are (ids, mask, positions, a key/value cache)."""
    captured = {}

    def hook(module, args, kwargs):
        captured["hidden"] = (args[0] if args else kwargs["hidden_states"]).detach()
        raise _StopForward

    block = get_module(bundle.model, bundle.spec.layers)[layer]
    handle = block.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        with torch.no_grad():
            get_module(bundle.model, bundle.spec.base)(**inputs)
    except _StopForward:
        pass
    finally:
        handle.remove()
    return captured["hidden"]


class _GivenHidden(torch.nn.Module):
    """Stands in for a skipped block: returns the hidden states it was given, whatever its input."""

    def __init__(self, hidden: torch.Tensor):
        super().__init__()
        self.hidden = hidden

    def forward(self, *args, **kwargs) -> torch.Tensor:
        return self.hidden


@contextmanager
def blocks_skipped(bundle: Bundle, below: int, hidden: torch.Tensor):
    """Blocks 0 … below−1 are not run: block ``below`` receives ``hidden`` as its input.

    ``hidden`` must be what those blocks would give (``block_input``) for the same tokens. Their
    key/value cache is neither read nor written; the caller's cache still holds their prefix.
    """
    blocks = get_module(bundle.model, bundle.spec.layers)
    originals = [blocks[i] for i in range(below)]
    try:
        for i in range(below):
            blocks[i] = _GivenHidden(hidden)
        yield
    finally:
        for i, block in enumerate(originals):
            blocks[i] = block


def lm_logits(bundle: Bundle, hidden: torch.Tensor) -> torch.Tensor:
    """The LM head on chosen final hidden states only (losses read a few positions, not all)."""
    logits = get_module(bundle.model, bundle.spec.lm_head)(hidden)
    cap = getattr(bundle.model.config, "final_logit_softcapping", None)
    return torch.tanh(logits / cap) * cap if cap else logits
