"""The tiny model on a CUDA device: one edit there (statistics, v*, the update, perplexity with it applied) lands
where the same edit on the CPU does, up to float rounding; skipped where there is no CUDA device."""
import pytest
import torch

from conftest import tiny_llama
from rome_collapse import keys, metrics, models, rome, stats
from rome_collapse.data import EditCase
from rome_collapse.values import optimize_values

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="needs a CUDA device (torch.cuda.is_available() is False here)")

CASE = EditCase("darrieux", "The mother tongue of {} is", "Danielle Darrieux", "English", "French")
TEMPLATES = ["{}", "The weather is nice. {}", "I went home. {}"]
PPL_TEXTS = [f"{CASE.text} {CASE.target_new}", "The quick brown fox jumps over the lazy dog."]


def one_edit(tokenizer, texts: list[str], device: torch.device) -> dict:
    """conftest's tiny Llama (the same weights wherever it runs) on ``device``, edited once in ROME's setting."""
    hp = models.default_hparams(layer=1, v_num_grad_steps=8)
    bundle = models.from_model(tiny_llama(tokenizer).to(device), tokenizer, name="tiny-llama", hparams=hp)
    second_moment = stats.second_moment(bundle, texts=texts, cache=False, progress=False)
    value = optimize_values(bundle, [CASE], TEMPLATES)[0]
    case_keys = keys.case_keys(bundle, CASE.prompt, CASE.subject, TEMPLATES)
    edit = rome.make_edit(bundle, CASE, value, case_keys, second_moment, "rome")
    weight = bundle.weight(1).detach().clone()
    with rome.applied(bundle, edit):
        ppl = metrics.perplexity(bundle, PPL_TEXTS).per_text
    assert torch.equal(bundle.weight(1), weight)  # restored on this device too
    assert value.v_star.device == edit.delta.device == bundle.device  # computed there, not on the CPU behind it
    return {"C": second_moment.matrix.cpu(), "v_star": value.v_star.cpu(), "steps": value.steps,
            "delta": edit.delta.cpu(), "ratio": edit.report.ratio, "ppl": ppl}


def test_one_edit_on_cuda_lands_where_the_cpu_edit_does(tiny_tokenizer, curated):
    texts = [c.text for c in curated]  # over a thousand tokens: C (128 × 128) has full rank
    on_cuda = one_edit(tiny_tokenizer, texts, torch.device("cuda"))
    on_cpu = one_edit(tiny_tokenizer, texts, torch.device("cpu"))
    torch.testing.assert_close(on_cuda["C"], on_cpu["C"], rtol=1e-4, atol=1e-4 * on_cpu["C"].abs().max().item())
    assert on_cuda["steps"] == on_cpu["steps"]
    torch.testing.assert_close(on_cuda["v_star"], on_cpu["v_star"], rtol=1e-3, atol=1e-4)
    torch.testing.assert_close(on_cuda["delta"], on_cpu["delta"], rtol=1e-3, atol=1e-4)
    assert on_cuda["ratio"] == pytest.approx(on_cpu["ratio"], rel=1e-3)
    assert on_cuda["ppl"] == pytest.approx(on_cpu["ppl"], rel=1e-3)
