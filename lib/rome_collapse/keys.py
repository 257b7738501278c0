"""Context templates and the two keys of the paper.

* ``unprefixed_key`` kᵘ: the edited projection's input at the subject's last token, prompt as given.
* ``prefixed_key`` k̄: the mean of that input over the context templates ("{}" and short texts the
  model wrote itself, each followed by the prompt), as ROME's left vector uses it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import torch

from .cache import entry_path, load_json, save_json
from .config import CACHE_VERSION
from .data import fill
from .models import Bundle
from .tokens import encode, subject_last_index
from .trace import down_proj_inputs, run_base

SEED_WORDS = ("The", "Therefore", "Because", "I", "You")


def _generate(bundle: Bundle, seeds: list[str], max_length: int, generator_seed: int) -> list[str]:
    """Top-5 sampling as ROME's generate_fast, ``max_length`` tokens in all (seed word included)."""
    batch = encode(bundle, seeds)  # seeds are single words: same length, no padding issue
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(generator_seed)
        out = bundle.model.generate(**batch.model_inputs(), do_sample=True, top_k=5, top_p=1.0,
                                    temperature=1.0, max_length=batch.input_ids.shape[1] - 1 + max_length,
                                    pad_token_id=bundle.tokenizer.pad_token_id)
    return bundle.tokenizer.batch_decode(out, skip_special_tokens=True)


def context_templates(bundle: Bundle, seed: int = 0, length_params: list | None = None,
                      cache: bool = True) -> list[str]:
    """``["{}", "<generated text>. {}", …]`` as ROME builds them; deterministic for a seed, cached per model."""
    length_params = length_params or bundle.hparams.context_template_length_params
    key = {"model": bundle.weights_id, "add_bos": bundle.add_bos, "seed": seed, "length_params": length_params,
           "code_version": CACHE_VERSION}
    path = entry_path("templates", key, ".json")
    stored = load_json(path, key) if cache else None
    if stored is not None and isinstance(stored.get("templates"), list):
        return stored["templates"]
    templates = ["{}"]
    for i, (length, n_gen) in enumerate(length_params):
        seeds = [w for w in SEED_WORDS for _ in range(n_gen // len(SEED_WORDS))]
        for text in _generate(bundle, seeds, length, generator_seed=seed * 1000 + i):
            # Braces would break str.format; ROME strips them the same way.
            templates.append(text.replace("{", " ").replace("}", " ").strip() + ". {}")
    if cache:
        save_json(path, key, templates=templates)
    return templates


def check_templates(templates, source: str = "templates") -> list[str]:
    """Validate context templates given from outside (a file, another run): a list of strings, the first
    one exactly "{}" (the unprefixed prompt), each with one "{}" where the prompt goes."""
    if not isinstance(templates, list) or not templates or not all(isinstance(t, str) for t in templates):
        raise ValueError(f"{source}: expected a non-empty JSON list of strings")
    if templates[0] != "{}":
        raise ValueError(f"{source}: the first template must be '{{}}' (the unprefixed prompt), got {templates[0]!r}")
    for i, t in enumerate(templates):
        if t.count("{}") != 1 or t.replace("{}", "").count("{") or t.replace("{}", "").count("}"):
            raise ValueError(f"{source}: template {i} ({t!r}) must hold exactly one '{{}}' and no other braces")
    return templates


def load_templates(path) -> list[str]:
    """Context templates from a JSON file: a list of strings, or an object with a "templates" list (as the
    golden file and the template cache store them)."""
    with open(path, encoding="utf-8") as f:
        stored = json.load(f)
    if isinstance(stored, dict):
        stored = stored.get("templates")
    return check_templates(stored, str(path))


@dataclass
class Lookup:
    """A text and the position whose key is read (the subject's last token)."""
    text: str
    position: int


def subject_lookups(bundle: Bundle, prompt: str, subject: str, templates: list[str]) -> list[Lookup]:
    """One lookup per template: ``template.format(prompt).format(subject)`` at the subject's last token."""
    lookups = []
    for template in templates:
        full_prompt = template.format(prompt)
        lookups.append(Lookup(fill(full_prompt, subject), subject_last_index(bundle, full_prompt, subject)))
    return lookups


def keys_at(bundle: Bundle, layer: int, lookups: list[Lookup], batch_size: int = 64) -> torch.Tensor:
    """Keys at each lookup, float32, shape (n, d)."""
    return keys_at_layers(bundle, [layer], lookups, batch_size)[layer]


def keys_at_layers(bundle: Bundle, layers: list[int], lookups: list[Lookup],
                   batch_size: int = 64) -> dict[int, torch.Tensor]:
    """Keys at each lookup at each of ``layers`` (layer → (n, d)), every layer read from the same forward passes."""
    keys: dict[int, list[torch.Tensor]] = {layer: [] for layer in layers}
    for start in range(0, len(lookups), batch_size):
        chunk = lookups[start:start + batch_size]
        captured = down_proj_inputs(bundle, layers, encode(bundle, [lk.text for lk in chunk]))
        rows = torch.arange(len(chunk), device=bundle.device)
        positions = torch.tensor([lk.position for lk in chunk], device=bundle.device)
        for layer in layers:
            keys[layer].append(captured[layer][rows, positions])
    return {layer: torch.cat(k) for layer, k in keys.items()}


def unprefixed_key(bundle: Bundle, prompt: str, subject: str, layer: int | None = None) -> torch.Tensor:
    """kᵘ: the key at the subject's last token of the prompt as given (no prefix)."""
    layer = bundle.edit_layer(layer)
    return keys_at(bundle, layer, subject_lookups(bundle, prompt, subject, ["{}"]))[0]


def prefixed_key(bundle: Bundle, prompt: str, subject: str, templates: list[str],
                 layer: int | None = None) -> torch.Tensor:
    """k̄: the mean key over all context templates (the "{}" template included, as in ROME)."""
    layer = bundle.edit_layer(layer)
    return keys_at(bundle, layer, subject_lookups(bundle, prompt, subject, templates)).mean(0)


@dataclass
class CaseKeys:
    """Everything the update needs from the unedited model for one request."""
    unprefixed_key: torch.Tensor
    prefixed_key: torch.Tensor
    template_keys: torch.Tensor  # (n_templates, d): one key per template, first one is kᵘ


def case_keys(bundle: Bundle, prompt: str, subject: str, templates: list[str], layer: int | None = None) -> CaseKeys:
    """kᵘ and k̄ (and every template's key) from one batched, truncated forward pass."""
    layer = bundle.edit_layer(layer)
    if templates[0] != "{}":
        raise ValueError("the first context template must be '{}' (the unprefixed prompt)")
    keys = keys_at(bundle, layer, subject_lookups(bundle, prompt, subject, templates))
    return CaseKeys(keys[0], keys.mean(0), keys)


def hidden_states_at(bundle: Bundle, texts: list[str], positions: list[int]) -> torch.Tensor:
    """Residual-stream representation of the token at ``positions[i]`` of ``texts[i]`` at every layer.

    Returns (n_layers + 1, n_texts, d_model): index 0 is the embedding output.
    """
    batch = encode(bundle, texts)
    with torch.no_grad():
        out = run_base(bundle, batch, output_hidden_states=True)
    rows = torch.arange(len(texts), device=batch.input_ids.device)
    pos = torch.tensor(positions, device=batch.input_ids.device)
    return torch.stack([h[rows, pos] for h in out.hidden_states])


def token_keys(bundle: Bundle, texts: list[str], position: int, layer: int | None = None) -> torch.Tensor:
    """The key of the token at ``position`` (e.g. 0: the first token) of each text, at the edit layer."""
    layer = bundle.edit_layer(layer)
    return keys_at(bundle, layer, [Lookup(t, position) for t in texts])
