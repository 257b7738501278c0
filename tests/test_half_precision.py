"""v* on a half-precision model (bfloat16 and float16 both run on the CPU): δ and the loss stay in float32, as in
ROME's code, while the model runs in its own dtype."""
import pytest
import torch

from conftest import tiny_llama
from rome_collapse import models
from rome_collapse.data import EditCase
from rome_collapse.values import optimize_values

CASES = [EditCase("paris", "{} is located in", "Paris", "Italy", "France"),
         EditCase("darrieux", "The mother tongue of {} is", "Danielle Darrieux", "English", "French")]
TEMPLATES = ["{}", "The weather is nice. {}", "I went home. {}"]


def tiny_in(tokenizer, dtype: torch.dtype) -> models.Bundle:
    """conftest's tiny Llama (the same weights for every dtype), cast to ``dtype``.

    On random weights the logits are nearly flat and ‖W kᵘ + b‖ is about 0.03, so ROME's clamp (4 × that) leaves δ
    too small to move them: the clamp is lifted and the weight decay left out, so that the optimiser can be seen
    to work."""
    hp = models.default_hparams(layer=1, v_num_grad_steps=20, clamp_norm_factor=1e4, v_weight_decay=0.0)
    return models.from_model(tiny_llama(tokenizer).to(dtype), tokenizer, name=f"tiny-llama-{dtype}", hparams=hp)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bfloat16", "float16"])
def test_v_star_in_half_precision_is_finite_lowers_its_loss_and_is_near_float32(tiny_tokenizer, dtype):
    half = tiny_in(tiny_tokenizer, dtype)
    assert half.weight(1).dtype == dtype
    # With one step the loop stops before its first update: the loss and probability at δ = 0.
    start = optimize_values(half.with_hparams(v_num_grad_steps=1), CASES, TEMPLATES)
    found = optimize_values(half, CASES, TEMPLATES)
    reference = optimize_values(tiny_in(tiny_tokenizer, torch.float32), CASES, TEMPLATES)
    for before, value, full in zip(start, found, reference):
        assert value.v_star.dtype == value.delta.dtype == torch.float32
        assert torch.isfinite(value.v_star).all() and value.delta.norm() > 0
        assert value.steps == half.hparams.v_num_grad_steps  # no early stop: every step ran
        assert value.final_loss < before.final_loss - 0.05 and value.target_prob > before.target_prob
        # the same optimisation as in float32, up to the half-precision forward's rounding
        assert value.final_loss == pytest.approx(full.final_loss, rel=1e-2)
        assert (value.v_star - full.v_star).norm() < 0.05 * full.v_star.norm()
