"""The engine against numbers from the authors' own ROME / C-ROME code (../shared/golden, see its README).

The golden file holds the inputs of the authors' run (model, layer, the exact context templates, the
requests, the hyper-parameters, mom2_adjustment off) and its outputs. We feed the same inputs to the engine
and compare every number: keys, v*, its steps, the numerator, the printed denominator, ‖ΔW‖ and the
ME-PPL-50 perplexity after each edit.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
import torch

from rome_collapse import data, keys, metrics, rome, stats
from rome_collapse.config import repo_root
from rome_collapse.values import EARLY_STOP_LOSS, optimize_values

pytestmark = pytest.mark.model

GOLDEN = Path(os.environ.get("ROME_COLLAPSE_GOLDEN", repo_root().parent / "shared" / "golden"
                             / "authors_rome_smollm2.json"))
REL = 1e-3  # norms, denominators (the golden README's tolerance)
PPL_REL = 5e-3  # perplexity: ROME on a subject-first case amplifies float noise


@pytest.fixture(scope="module")
def golden():
    if not GOLDEN.exists():
        pytest.skip(f"golden file {GOLDEN} not found (it lives in this workplace's ../shared/golden)")
    return json.loads(GOLDEN.read_text())


@pytest.fixture(scope="module")
def run(golden, smol):
    """The engine on the golden inputs: v* for all requests in one batch, then both updates, each applied alone."""
    bundle = smol
    hp = golden["hparams"]
    bundle = bundle.with_hparams(
        layer=golden["layer"], v_num_grad_steps=hp["v_num_grad_steps"], v_lr=hp["v_lr"],
        v_weight_decay=hp["v_weight_decay"], clamp_norm_factor=hp["clamp_norm_factor"], kl_factor=hp["kl_factor"])
    assert hp["early_stop_loss"] == EARLY_STOP_LOSS
    templates = keys.check_templates(golden["templates"], "golden templates")
    cases = [data.EditCase(i, r["prompt"], r["subject"], r["target_new"], r["target_true"])
             for i, r in enumerate(golden["requests"])]
    values = optimize_values(bundle, cases, templates)
    covariance = stats.covariance(bundle, stats.setting_of(golden["mom2_adjustment"]))
    assert covariance.setting == "paper" and covariance.is_identity  # the authors' runs: no C⁻¹
    texts = data.meppl("50")
    out = []
    for case, value in zip(cases, values):
        ck = keys.case_keys(bundle, case.prompt, case.subject, templates)
        per_variant = {}
        for variant in rome.VARIANTS:
            edit = rome.make_edit(bundle, case, value, ck, covariance, variant)
            with rome.applied(bundle, edit):
                ppl = metrics.perplexity(bundle, texts).mean
                scores = metrics.evaluate_cases(bundle, [case])[0]
            per_variant[variant] = (edit, ppl, scores)
        out.append((ck, value, per_variant))
    return bundle, out


def test_golden_model_is_the_same_model(golden, smol):
    weight = smol.weight(golden["layer"]).detach().cpu().contiguous()
    assert hashlib.sha256(weight.numpy().tobytes()).hexdigest() == golden["weight_sha256"]


def test_unedited_perplexity(golden, smol):
    assert metrics.perplexity(smol, data.meppl("50")).mean == pytest.approx(golden["ppl_before"], rel=1e-3)


def _cos(a, b) -> float:
    return torch.nn.functional.cosine_similarity(a.double().cpu(), torch.tensor(b, dtype=torch.float64), dim=0).item()


@pytest.mark.parametrize("index", range(4))
def test_keys_and_v_star(golden, run, index):
    request = golden["requests"][index]
    ck, value, _ = run[1][index]
    assert _cos(ck.unprefixed_key, request["unprefixed_key"]) > 0.9999
    assert _cos(ck.prefixed_key, request["prefixed_key"]) > 0.9999
    assert ck.unprefixed_key.norm().item() == pytest.approx(request["unprefixed_key_norm"], rel=REL)
    assert ck.prefixed_key.norm().item() == pytest.approx(request["prefixed_key_norm"], rel=REL)
    assert value.steps == request["v_steps"]
    assert _cos(value.v_star, request["v_star"]) > 0.9999
    assert value.delta.norm().item() == pytest.approx(request["delta_norm"], rel=REL)
    assert value.target_init.norm().item() == pytest.approx(request["target_init_norm"], rel=REL)


@pytest.mark.parametrize("variant", ["rome", "c-rome"])
@pytest.mark.parametrize("index", range(4))
def test_update_and_its_effect(golden, run, index, variant):
    want = golden["requests"][index]["variants"][variant]
    edit, ppl, scores = run[1][index][2][variant]
    assert edit.report.setting == "paper"
    assert edit.report.numerator_norm == pytest.approx(want["numerator_norm"], rel=REL)
    assert edit.report.denominator == pytest.approx(want["denominator_signed"], rel=REL)
    assert edit.report.update_norm == pytest.approx(want["dW_fro"], rel=REL)
    assert ppl == pytest.approx(want["ppl_after"], rel=PPL_REL)
    assert bool(scores.efficacy) == want["prefers_new"]
