"""Shared fixtures: a tiny random Llama with its own small tokenizer (fast, exact checks, no model package needed)
and the real default model (tests that use it are marked ``model``: ``pytest -m "not model"`` runs without it)."""
from __future__ import annotations

import contextlib
import os

import pytest
import torch
from tokenizers import Tokenizer, decoders, models as bpe_models, pre_tokenizers, processors, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from rome_collapse import data, embedded, keys, models, stats
from rome_collapse.profiles import get_profile

# Two threads (this workplace's CPU), or what OMP_NUM_THREADS asks for when jobs share the machine.
torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))

SMOKE = get_profile("smoke")

# The fixtures that load a real model: a test that asks for one (directly or through another fixture) must carry
# @pytest.mark.model (checked at collection below).
REAL_MODEL_FIXTURES = frozenset({"smol", "smol_tokenizer", "smol_stats", "smol_templates", "minilm"})


@pytest.fixture(scope="session")
def smol():
    """The default embedded model, SmolLM2-135M (no BOS)."""
    return models.load_model("smollm2-135m", device="cpu")


@pytest.fixture(scope="session")
def smol_tokenizer(smol):
    return smol.tokenizer


@pytest.fixture(scope="session")
def smol_stats(smol):
    return stats.second_moment(smol, n_samples=SMOKE.stats_samples, progress=False)


@pytest.fixture(scope="session")
def smol_templates(smol):
    return keys.context_templates(smol, seed=SMOKE.template_seed)


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.path.suffix == ".ipynb":  # nbval's notebook cells (make test) run the real models
            item.add_marker(pytest.mark.model)
    unmarked = [item.nodeid for item in items
                if REAL_MODEL_FIXTURES & set(getattr(item, "fixturenames", ()))
                and item.get_closest_marker("model") is None]
    if unmarked:
        raise pytest.UsageError("these tests use a real model's fixture but lack @pytest.mark.model (so "
                                "`-m 'not model'` would load the model): " + ", ".join(unmarked))


@pytest.fixture(autouse=True)
def _no_real_model_unless_marked(request, monkeypatch):
    """A test without the ``model`` marker that loads an embedded model (or the MiniLM encoder) itself fails
    here at once, instead of passing only where the model packages are installed."""
    if request.node.get_closest_marker("model") is not None:
        return

    def refuse(name, *args, **kwargs):
        raise AssertionError(f"{request.node.nodeid} loads the real model {name!r}: mark it @pytest.mark.model")

    monkeypatch.setattr(embedded, "float32_checkpoint", refuse)
    monkeypatch.setattr(models, "load_encoder", refuse)


def layer_output(bundle: models.Bundle, key: torch.Tensor) -> torch.Tensor:
    """W k + b from the edited projection's own forward (GPT-2's Conv1D included): what ROME writes v* over."""
    with torch.no_grad():
        return bundle.down_proj(bundle.hparams.layer)(key)


class _ReadEnough(Exception):
    """Raised by projection_inputs' hook once the projection's input is read: nothing above it is computed."""


def projection_inputs(bundle: models.Bundle, layer: int, texts: list[str]) -> torch.Tensor:
    """The edited projection's input at every token of ``texts``, read by a hook of the tests' own, one text at a
    time (no padding, no batch): (n_tokens, d_in), float64. Another computation than C's length-sorted batches; the
    forward stops at the projection (the hook raises), so no block above it and no logits are computed."""
    inputs = []

    def read(module, args):
        inputs.append(args[0][0].detach())
        raise _ReadEnough

    hook = bundle.down_proj(layer).register_forward_pre_hook(read)
    try:
        for text in texts:
            with torch.no_grad(), contextlib.suppress(_ReadEnough):
                bundle.model(torch.tensor([bundle.tokenizer(text, add_special_tokens=False).input_ids]))
    finally:
        hook.remove()
    return torch.cat(inputs).double()


# Sentences the tests feed the tiny models, besides the curated cases: their words become whole tokens.
TOKENIZER_SENTENCES = [
    "The quick brown fox jumps over the lazy dog.", "Paris is the capital and largest city of France.",
    "I like apples and oranges very much, you know.", "Because it rained, the match was cancelled.",
    "The rain stopped and the match went on after all.", "The best apples grow on old trees in the north.",
    "The mother tongue of Danielle Darrieux is French.", "Danielle Darrieux was born in Bordeaux.",
    "Danielle Darrieux spoke French. Léon Blum spoke French.", "The maker of the iPhone phone is Apple, not Nokia.",
    "The weather is nice. I went home. Some words here. It rained all day. Another short text.",
    "Water boils at one hundred degrees.", "She wrote a letter to her old friend.", "It was a sunny day.",
]


def build_tiny_tokenizer(vocab_size: int = 8192) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer learnt in a fraction of a second from the curated cases and the tests' sentences:
    no download, no GGUF, the same vocabulary on every run.

    Byte-level like SmolLM2's and GPT-2's: any text encodes, the space is glued to the next word, the character
    offsets (``return_offsets_mapping``) give the subject's tokens. ``vocab_size`` is above what the corpus needs,
    so every word of it is one token ("Paris" at the start is a one-token subject, "Danielle Darrieux" two) and
    other words fall apart into pieces. No BOS unless a bundle asks for one (``with_bos(True)``), as SmolLM2."""
    # keys.SEED_WORDS start the context templates' texts: one token each, as keys._generate assumes (no padding)
    corpus = [*keys.SEED_WORDS, *TOKENIZER_SENTENCES]
    for case in data.curated_cases():
        corpus += [case.text, *case.paraphrase_prompts, *case.neighborhood_prompts,
                   f"{case.text} {case.target_new}", f"{case.text} {case.target_true}"]
    tokenizer = Tokenizer(bpe_models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=1, special_tokens=["<|endoftext|>", "<s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(corpus, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="<|endoftext|>",
                                   pad_token="<|endoftext|>")


@pytest.fixture(scope="session")
def tiny_tokenizer():
    return build_tiny_tokenizer()


def tiny_llama(tokenizer, layers: int = 4, seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=256)
    return LlamaForCausalLM(config)


@pytest.fixture(scope="session")
def tiny(tiny_tokenizer):
    """A 4-layer random Llama with the tiny tokenizer: the math must hold on any weights."""
    hp = models.default_hparams(layer=1, v_num_grad_steps=8, context_template_length_params=[[5, 5]])
    return models.from_model(tiny_llama(tiny_tokenizer), tiny_tokenizer, name="tiny-llama", hparams=hp)


@pytest.fixture(scope="session")
def curated():
    return data.curated_cases()
