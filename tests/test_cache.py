"""The one disk-cache helper (cache.py) and the weights' identity that keys every cache (Bundle.weights_id)."""
import logging
from types import SimpleNamespace

import pytest
import torch

from conftest import tiny_llama
from rome_collapse import cache, keys, models, stats, values
from rome_collapse.data import EditCase

CASE = EditCase("paris", "{} is located in", "Paris", "Italy", "France")
KEY = {"model": "some/model@sha256-0123", "layer": 3, "hparams": {"lengths": [[5, 5]]}}


@pytest.fixture
def cache_root(tmp_path, monkeypatch):
    monkeypatch.setenv("ROME_COLLAPSE_CACHE", str(tmp_path))
    return tmp_path


def test_entry_path_layout_and_digest(cache_root):
    path = cache.entry_path("values", KEY, ".safetensors", label="layer3")
    assert path.parent == cache_root / "values" / "some--model@sha256-0123"
    assert path.name == f"layer3-{cache.digest(KEY)}.safetensors" and len(cache.digest(KEY)) == cache.DIGEST_LENGTH
    assert cache.digest(KEY) == cache.digest(dict(reversed(KEY.items())))  # key order does not matter
    assert cache.digest(KEY) != cache.digest({**KEY, "layer": 4})


def test_entries_read_back_bit_for_bit(cache_root):
    tensors = {"a": torch.randn(5, 3, dtype=torch.float64), "b": torch.randn(7).half()}
    path = cache.entry_path("test", KEY, ".safetensors")
    cache.save_tensors(path, KEY, tensors, n_tokens=12, note=None)
    loaded, fields = cache.load_tensors(path, KEY)
    assert all(torch.equal(loaded[k], t) and loaded[k].dtype == t.dtype for k, t in tensors.items())
    assert fields["n_tokens"] == 12 and fields["note"] is None and fields["key"] == KEY
    json_path = cache.entry_path("test", KEY, ".json")
    cache.save_json(json_path, KEY, templates=["{}", "It rained. {}"])
    assert cache.load_json(json_path, KEY)["templates"] == ["{}", "It rained. {}"]
    assert cache.load_tensors(cache_root / "missing.safetensors", KEY) is None  # missing: a miss


def test_an_entry_saved_under_another_key_is_a_miss(cache_root, caplog):
    path = cache.entry_path("test", KEY, ".safetensors")
    cache.save_tensors(path, KEY, {"x": torch.ones(2)})
    other = {**KEY, "layer": 4}
    with caplog.at_level(logging.WARNING, logger="rome_collapse.cache"):
        assert cache.load_tensors(path, other) is None
    assert "another key" in caplog.text
    assert cache.load_tensors(path, KEY) is not None and cache.load_tensors(path, None) is not None
    json_path = cache.entry_path("test", KEY, ".json")
    cache.save_json(json_path, KEY, templates=["{}"])
    assert cache.load_json(json_path, other) is None


@pytest.mark.parametrize("damage", [lambda b: b[:100], lambda b: b"", lambda b: b"\x00" * 64 + b[64:]])
def test_a_corrupt_entry_is_a_miss_with_a_warning(cache_root, caplog, damage):
    path = cache.entry_path("test", KEY, ".safetensors")
    cache.save_tensors(path, KEY, {"x": torch.ones(100)})
    path.write_bytes(damage(path.read_bytes()))
    with caplog.at_level(logging.WARNING, logger="rome_collapse.cache"):
        assert cache.load_tensors(path, KEY) is None
    assert "unreadable" in caplog.text
    json_path = cache.entry_path("test", KEY, ".json")
    json_path.write_text('{"key": ')  # an interrupted write of another tool
    assert cache.load_json(json_path, KEY) is None


def test_a_failed_write_leaves_no_partial_file(cache_root, monkeypatch):
    path = cache.entry_path("test", KEY, ".safetensors")
    cache.save_tensors(path, KEY, {"x": torch.ones(3)})
    before = path.read_bytes()

    def write_half_then_fail(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(cache, "save_file", write_half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        cache.save_tensors(path, KEY, {"x": torch.zeros(3)})
    assert path.read_bytes() == before  # the old entry, whole
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temporary file left
    with pytest.raises(OSError, match="disk full"):
        cache.save_tensors(cache.entry_path("test", {**KEY, "layer": 9}, ".safetensors"), KEY, {"x": torch.ones(1)})
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no new entry, no temporary file


def test_a_corrupt_v_star_entry_is_recomputed_and_rewritten(tiny, cache_root, caplog, monkeypatch):
    templates = ["{}", "It rained. {}"]
    first = values.values_for(tiny, [CASE], templates, progress=False)[0]
    (path,) = (cache_root / "values").rglob("*.safetensors")
    path.write_bytes(path.read_bytes()[:50])
    with caplog.at_level(logging.WARNING, logger="rome_collapse.cache"):
        again = values.values_for(tiny, [CASE], templates, progress=False)[0]
    assert "unreadable" in caplog.text and torch.equal(first.v_star, again.v_star)
    monkeypatch.setattr(values, "optimize_values", lambda *a, **k: pytest.fail("not read from the rewritten entry"))
    third = values.values_for(tiny, [CASE], templates, progress=False)[0]
    assert torch.equal(third.v_star, first.v_star) and third.clamp_bound == first.clamp_bound


def test_corrupt_templates_are_regenerated(tiny, cache_root, caplog):
    first = keys.context_templates(tiny, seed=0)
    (path,) = (cache_root / "templates").rglob("*.json")
    path.write_text("not json")
    with caplog.at_level(logging.WARNING, logger="rome_collapse.cache"):
        assert keys.context_templates(tiny, seed=0) == first
    assert "unreadable" in caplog.text


# ---- the weights' identity ------------------------------------------------------------------
def _custom(tokenizer, seed: int):
    return models.from_model(tiny_llama(tokenizer, layers=2, seed=seed), tokenizer,
                             hparams=models.default_hparams(layer=1, v_num_grad_steps=2))


def test_from_model_bundles_are_keyed_by_their_weights(tiny_tokenizer, cache_root, monkeypatch):
    a, a_again, b = _custom(tiny_tokenizer, 0), _custom(tiny_tokenizer, 0), _custom(tiny_tokenizer, 1)
    assert a.name == b.name == "custom"
    assert a.weights_id == a_again.weights_id != b.weights_id and a.weights_id.startswith("custom@sha256-")
    templates = ["{}"]

    def value_path(bundle):
        return values._value_path(values._value_key(bundle, CASE, templates, 1, bundle.hparams))

    assert value_path(a) == value_path(a_again) != value_path(b)

    calls = []
    real = values.optimize_values
    monkeypatch.setattr(values, "optimize_values", lambda *args, **kw: calls.append(1) or real(*args, **kw))
    from_a = values.values_for(a, [CASE], templates, progress=False)[0]
    values.values_for(a_again, [CASE], templates, progress=False)  # the same weights: read back
    from_b = values.values_for(b, [CASE], templates, progress=False)[0]  # other weights: optimised
    assert len(calls) == 2 and not torch.equal(from_a.v_star, from_b.v_star)
    assert len(list((cache_root / "values").rglob("*.safetensors"))) == 2


def test_an_edited_copy_of_the_weights_gets_another_id(tiny_tokenizer):
    model = tiny_llama(tiny_tokenizer, layers=2, seed=0)
    before = models.weights_digest(model)
    with torch.no_grad():
        model.model.layers[1].mlp.down_proj.weight[0, 0] += 1.0
    assert models.weights_digest(model) != before
    assert models.from_model(model, tiny_tokenizer, weights_id="mine").weights_id == "mine"


def test_statistics_and_templates_are_keyed_by_the_weights(tiny_tokenizer, cache_root):
    a, b = _custom(tiny_tokenizer, 0), _custom(tiny_tokenizer, 1)
    texts = ["The quick brown fox jumps over the lazy dog.", "Paris is the capital of France."]
    for bundle in (a, b):
        stats.second_moment(bundle, texts=texts, corpus="test", n_samples=2, progress=False)
        keys.context_templates(bundle, seed=0, length_params=[[3, 5]])
    assert {p.parent.name for p in (cache_root / "stats").rglob("*.safetensors")} == {
        a.weights_id.replace("/", "--"), b.weights_id.replace("/", "--")}
    assert len(list((cache_root / "templates").rglob("*.json"))) == 2


def test_the_early_stop_loss_is_in_the_v_star_key(monkeypatch):
    bundle = SimpleNamespace(weights_id="some/model@sha256-0123", add_bos=False)  # all that the key reads
    hp = models.default_hparams(layer=1)

    def key():
        return values._value_key(bundle, CASE, ["{}"], 1, hp)

    default = key()
    assert default["early_stop_loss"] == values.EARLY_STOP_LOSS
    monkeypatch.setattr(values, "EARLY_STOP_LOSS", values.EARLY_STOP_LOSS / 10)
    assert key() != default and values._value_path(key()) != values._value_path(default)
