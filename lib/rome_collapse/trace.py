"""Reading (and writing) the edited MLP's input and output with forward hooks, and skipping blocks.

Every hook in the package is a ``with forward_hook(module, fn):`` block (removed on exit or error).
The forward pass can stop right after the edit layer: statistics and keys never need the
later layers nor the LM head. The v* loop adds δ to the edited projection's output (``output_added``)
and goes the other way too: the blocks before the edit layer never see δ, so their output is
computed once (``block_input``) and handed to the edit layer's block at every step while those
blocks are skipped (``blocks_skipped``).
"""
from __future__ import annotations

import copy
from contextlib import ExitStack, contextmanager

import torch

from .models import Bundle, get_module
from .tokens import Batch


class _StopForward(Exception):
    """Raised inside a hook to end a forward pass once what we need is captured."""


@contextmanager
def forward_hook(module: torch.nn.Module, fn, pre: bool = False, with_kwargs: bool = False):
    """``fn`` as a forward hook of ``module`` (``pre``: a forward pre-hook) inside the block."""
    register = module.register_forward_pre_hook if pre else module.register_forward_hook
    handle = register(fn, with_kwargs=with_kwargs)
    try:
        yield handle
    finally:
        handle.remove()


@contextmanager
def output_added(module: torch.nn.Module, positions: torch.Tensor, delta: torch.Tensor):
    """Inside the block, ``module``'s output gets ``delta[i]`` added at row i, position ``positions[i]`` (the v*
    loop's δ at each prompt's subject), gradients flowing to ``delta``. Yields a dict whose ``"output"`` is the
    output before the addition (detached), from the latest forward."""
    captured = {}

    def add(module, args, output):
        captured["output"] = output.detach()
        rows = torch.arange(positions.shape[0], device=output.device)
        # δ stays float32 for a half-precision model (see values.optimize_values); it enters in the output's dtype,
        # as ROME's in-place `+=` casts it
        return output + torch.zeros_like(output).index_put((rows, positions), delta.to(output.dtype))

    with forward_hook(module, add):
        yield captured


def cache_view(cache, repeat: int = 1):
    """A key/value cache that a forward can append to without changing ``cache`` (None stays None), each row
    repeated ``repeat`` times: a prefix run once serves every batch that continues it (keys.py, value_batch.py).

    transformers' dynamic cache layers replace their tensors on every update (``torch.cat``) and on
    ``batch_repeat_interleave``, never writing into the old ones, so copying the per-layer objects (their public
    ``layers`` list) is enough and no tensor is copied; an unfamiliar cache class is copied whole."""
    if cache is None:
        return None
    if hasattr(cache, "layers"):
        view = copy.copy(cache)
        view.layers = [copy.copy(layer) for layer in cache.layers]
    else:
        view = copy.deepcopy(cache)
    if repeat != 1:
        view.batch_repeat_interleave(repeat)
    return view


def run_base(bundle: Bundle, batch: Batch, **kwargs):
    """The transformer without its LM head (hidden states only)."""
    base = get_module(bundle.model, bundle.spec.base)
    return base(**batch.model_inputs(), use_cache=False, **kwargs)


def down_proj_inputs(bundle: Bundle, layers: list[int], batch: Batch | None = None, stop: bool = True,
                     position_ids: torch.Tensor | None = None, **inputs) -> dict[int, torch.Tensor]:
    """The keys (the edited projection's input) at each of ``layers`` for every token, from one forward pass.

    With ``stop`` the pass ends inside the deepest of ``layers``. ``position_ids`` overrides the positions
    (rotary angles, or rows of a learned position embedding such as GPT-2's). Without a ``batch``, ``inputs``
    go to the base model as they are (a key/value cache, a longer mask).
    """
    if batch is not None:
        inputs = {**batch.model_inputs(), "use_cache": False, **inputs}
    if position_ids is not None:
        inputs["position_ids"] = position_ids
    captured, deepest = {}, max(layers)

    def reader(layer: int):
        def hook(module, args, output):
            captured[layer] = args[0].detach()
            if stop and layer == deepest:
                raise _StopForward
        return hook

    with ExitStack() as hooks, torch.no_grad():
        for layer in set(layers):
            hooks.enter_context(forward_hook(bundle.down_proj(layer), reader(layer)))
        try:
            get_module(bundle.model, bundle.spec.base)(**inputs)
        except _StopForward:
            pass
    return captured


def down_proj_input(bundle: Bundle, layer: int, batch: Batch | None = None, **kwargs) -> torch.Tensor:
    """The keys at one layer for every token (:func:`down_proj_inputs`)."""
    return down_proj_inputs(bundle, [layer], batch, **kwargs)[layer]


def block_input(bundle: Bundle, layer: int, **inputs) -> torch.Tensor:
    """The residual stream entering block ``layer`` for every token (the forward stops there).

    ``inputs`` go to the base model as they are (ids, mask, positions, a key/value cache)."""
    captured = {}

    def hook(module, args, kwargs):
        captured["hidden"] = (args[0] if args else kwargs["hidden_states"]).detach()
        raise _StopForward

    block = get_module(bundle.model, bundle.spec.layers)[layer]
    with forward_hook(block, hook, pre=True, with_kwargs=True), torch.no_grad():
        try:
            get_module(bundle.model, bundle.spec.base)(**inputs)
        except _StopForward:
            pass
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
