"""The engine against a plain, independent ROME (rome_collapse.reference) on a tiny random model.

The reference shares no code with the engine's v* loop, keys or update: its own tokenisation,
subject positions, full-model loss with logits everywhere, and its own update formula. The batched
engine (several requests in one forward, the prefix cache, the blocks below the edit layer run once)
must give the same v*, keys and ΔW as the reference running one request at a time.

The model runs in float64: Adam's normalised steps amplify float32 rounding (different batch shapes, thread
counts) into relative differences of 1e-4 on a random model, which would hide a real mismatch of that size.
"""
import pytest

from conftest import tiny_llama
from rome_collapse import keys, models, reference, rome, stats
from rome_collapse.data import EditCase
from rome_collapse.values import optimize_values

CASES = [
    EditCase("first", "{} is located in the country of", "Paris", "Italy", "France"),
    EditCase("later", "The mother tongue of {} is", "Danielle Darrieux", "English", "French"),
    EditCase("middle", "The maker of the {} phone is", "iPhone", "Nokia", "Apple"),
]
TEXTS = ["The quick brown fox jumps over the lazy dog.", "Paris is the capital and largest city of France.",
         "I like apples and oranges very much, you know."] * 4


def rel(a, b) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


@pytest.fixture(scope="module")
def tiny(tiny_tokenizer):
    """The tiny random Llama of conftest, in float64."""
    hp = models.default_hparams(layer=1, v_num_grad_steps=8, context_template_length_params=[[5, 5]])
    return models.from_model(tiny_llama(tiny_tokenizer).double(), tiny_tokenizer, name="tiny-llama-f64", hparams=hp)


@pytest.fixture(scope="module")
def setup(tiny):
    templates = keys.context_templates(tiny, seed=0, cache=False)
    engine_values = optimize_values(tiny, CASES, templates)  # all three requests in one batch
    return templates, engine_values


@pytest.mark.parametrize("index", range(len(CASES)))
def test_batched_v_star_equals_the_plain_one_request_loop(tiny, setup, index):
    templates, engine_values = setup
    v_star, steps = reference.value(tiny, CASES[index], templates, tiny.hparams.layer, tiny.hparams)
    assert engine_values[index].steps == steps
    assert rel(engine_values[index].v_star, v_star) < 1e-7


@pytest.mark.parametrize("index", range(len(CASES)))
def test_keys_equal_one_full_forward_per_prompt(tiny, setup, index):
    templates, _ = setup
    case = CASES[index]
    found = keys.case_keys(tiny, case.prompt, case.subject, templates)
    k_u, k_bar = reference.keys(tiny, case, templates, tiny.hparams.layer)
    assert rel(found.unprefixed_key, k_u) < 1e-10
    assert rel(found.prefixed_key, k_bar) < 1e-10


def test_statistics_equal_the_full_forward_reference(tiny):
    engine, n_engine = stats.compute_second_moment(tiny, tiny.hparams.layer, TEXTS, progress=False)
    plain, n_plain = reference.second_moment(tiny, tiny.hparams.layer, TEXTS)
    assert n_engine == n_plain
    assert rel(engine, plain) < 1e-10


@pytest.mark.parametrize("variant", rome.VARIANTS)
@pytest.mark.parametrize("with_covariance", [False, True])
def test_delta_w_equals_the_reference(tiny, setup, variant, with_covariance):
    templates, engine_values = setup
    layer = tiny.hparams.layer
    bundle = tiny
    C = stats.SecondMoment(reference.second_moment(tiny, layer, TEXTS)[0], 0, {}) if with_covariance \
        else stats.SecondMoment.identity()
    for case, value in zip(CASES, engine_values):
        found = keys.case_keys(bundle, case.prompt, case.subject, templates)
        edit = rome.make_edit(bundle, case, value, found, C, variant)
        v_star, _ = reference.value(tiny, case, templates, layer, tiny.hparams)
        k_u, k_bar = reference.keys(tiny, case, templates, layer)
        expected = reference.update(tiny.weight(layer), rome._bias(tiny, layer),
                                    C.matrix if with_covariance else None, k_u, k_bar, v_star, variant)
        assert rel(edit.delta, expected) < 1e-7, (case.case_id, variant)
