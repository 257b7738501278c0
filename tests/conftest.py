"""Shared fixtures: a tiny random Llama (fast, exact checks) and the real default model."""
from __future__ import annotations

import os

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from rome_collapse import data, keys, models, stats
from rome_collapse.profiles import get_profile

# Two threads (this workplace's CPU), or what OMP_NUM_THREADS asks for when jobs share the machine.
torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))

SMOKE = get_profile("smoke")


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


def layer_output(bundle: models.Bundle, key: torch.Tensor) -> torch.Tensor:
    """W k + b from the edited projection's own forward (GPT-2's Conv1D included): what ROME writes v* over."""
    with torch.no_grad():
        return bundle.down_proj(bundle.hparams.layer)(key)


def tiny_llama(tokenizer, layers: int = 4, seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=256)
    return LlamaForCausalLM(config)


@pytest.fixture(scope="session")
def tiny(smol_tokenizer):
    """A 4-layer random Llama with SmolLM2's tokenizer: the math must hold on any weights."""
    hp = models.default_hparams(layer=1, v_num_grad_steps=8, context_template_length_params=[[5, 5]])
    return models.from_model(tiny_llama(smol_tokenizer), smol_tokenizer, name="tiny-llama", hparams=hp)


@pytest.fixture(scope="session")
def curated():
    return data.curated_cases()
