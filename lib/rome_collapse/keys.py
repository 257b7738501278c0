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
from .data import CaseError, fill
from .models import Bundle
from .tokens import encode, pad_batch, subject_last_index, subject_token_span, token_ids
from .trace import cache_view, down_proj_inputs, run_base

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


# --------------------------------------------------------------------------------------------
# The one forward that reads keys: rows of token ids, a position in each
# --------------------------------------------------------------------------------------------
@dataclass
class _Row:
    ids: list[int]  # token ids (cut after ``position`` when truncating)
    position: int  # where the key is read


def _in_order(rows: list[_Row], batch_size: int):
    """Rows in their own order, ``batch_size`` at a time."""
    for start in range(0, len(rows), batch_size):
        yield list(range(start, min(start + batch_size, len(rows))))


def _by_length(rows: list[_Row], token_budget: int, max_padding: float = 0.25):
    """Indices of length-sorted rows in batches of at most ``token_budget`` tokens (padding counted), cut
    where padding would exceed ``max_padding`` of a batch (short rows of many lengths: padding would cost more
    than the extra forward calls)."""
    order = sorted(range(len(rows)), key=lambda r: len(rows[r].ids))
    batch: list[int] = []
    real = 0
    for r in order:
        width = len(rows[r].ids)  # the longest so far: rows are sorted
        padded = width * (len(batch) + 1)
        if batch and (padded > token_budget or padded > (1 + max_padding) * (real + width)):
            yield batch
            batch, real = [], 0
        batch.append(r)
        real += width
    if batch:
        yield batch


def _common_prefix(rows: list[_Row], members: list[int]) -> int:
    """Tokens every row of ``members`` starts with, stopping before the earliest key position (the key must
    be computed in the suffix). Compared as token ids, so a tokeniser that merges across the template's end
    only shortens the shared part."""
    first = rows[members[0]].ids
    p = min(rows[r].position for r in members)
    for r in members[1:]:
        ids, q = rows[r].ids, 0
        while q < p and ids[q] == first[q]:
            q += 1
        p = q
    return p


def _forward(bundle: Bundle, layers: list[int], rows: list[_Row], groups: list[list[int]], batches,
             share_prefix: bool) -> tuple[dict[int, torch.Tensor], int]:
    """The keys at every row's position at each of ``layers`` (layer → (len(rows), d), in row order) and the
    number of tokens run. ``batches(rows)`` yields the index lists of one group's rows run together.

    With ``share_prefix`` the rows of a group (one context template's, in the scan) share their first tokens:
    those run once into a key/value cache, and every batch runs only its rows' remaining tokens on top of a view
    of it (``trace.cache_view``), positions and mask continuing."""
    keys: dict[int, torch.Tensor] = {}
    n_tokens = 0
    dev = bundle.device
    for members in groups:
        shared = _common_prefix(rows, members) if share_prefix and len(members) > 1 else 0
        cache = None
        if shared:
            from transformers import DynamicCache

            cache = DynamicCache(config=bundle.model.config)
            prefix = torch.tensor([rows[members[0]].ids[:shared]], device=dev)
            down_proj_inputs(bundle, layers, input_ids=prefix, attention_mask=torch.ones_like(prefix),
                             cache=cache, use_cache=True)
            n_tokens += shared
        suffixes = [_Row(rows[r].ids[shared:], rows[r].position - shared) for r in members]
        for part in batches(suffixes):
            batch = pad_batch(bundle, [suffixes[i].ids for i in part])
            if cache is None:
                captured = down_proj_inputs(bundle, layers, batch)
            else:
                n, width = batch.input_ids.shape
                mask = torch.cat([torch.ones(n, shared, dtype=batch.attention_mask.dtype, device=dev),
                                  batch.attention_mask], 1)
                positions = (shared + torch.arange(width, device=dev)).expand(n, width)
                captured = down_proj_inputs(bundle, layers, input_ids=batch.input_ids, attention_mask=mask,
                                            position_ids=positions, cache=cache_view(cache, repeat=n),
                                            use_cache=True)
            at = torch.arange(len(part), device=dev)
            pos = torch.tensor([suffixes[i].position for i in part], device=dev)
            where = torch.tensor([members[i] for i in part], device=dev)
            for layer in layers:
                if layer not in keys:
                    keys[layer] = captured[layer].new_empty(len(rows), captured[layer].shape[-1])
                keys[layer][where] = captured[layer][at, pos]
            n_tokens += int(batch.attention_mask.sum())
    return keys, n_tokens


def keys_at(bundle: Bundle, layer: int, lookups: list[Lookup], batch_size: int = 64) -> torch.Tensor:
    """Keys at each lookup, float32, shape (n, d)."""
    return keys_at_layers(bundle, [layer], lookups, batch_size)[layer]


def keys_at_layers(bundle: Bundle, layers: list[int], lookups: list[Lookup],
                   batch_size: int = 64) -> dict[int, torch.Tensor]:
    """Keys at each lookup at each of ``layers`` (layer → (n, d)), every layer read from the same forward passes,
    ``batch_size`` lookups at a time in their order."""
    rows = [_Row(token_ids(bundle, lk.text), lk.position) for lk in lookups]
    return _forward(bundle, list(layers), rows, [list(range(len(rows)))], lambda part: _in_order(part, batch_size),
                    share_prefix=False)[0]


def unprefixed_key(bundle: Bundle, prompt: str, subject: str, layer: int | None = None) -> torch.Tensor:
    """kᵘ: the key at the subject's last token of the prompt as given (no prefix)."""
    layer = bundle.edit_layer(layer)
    return keys_at(bundle, layer, subject_lookups(bundle, prompt, subject, ["{}"]))[0]


def prefixed_key(bundle: Bundle, prompt: str, subject: str, templates: list[str],
                 layer: int | None = None) -> torch.Tensor:
    """k̄: the mean key over all context templates (the "{}" template included, as in ROME)."""
    layer = bundle.edit_layer(layer)
    return keys_at(bundle, layer, subject_lookups(bundle, prompt, subject, templates)).mean(0)


# --------------------------------------------------------------------------------------------
# The keys of edit requests: kᵘ and k̄ from every template's key
# --------------------------------------------------------------------------------------------
@dataclass
class CaseKeys:
    """Everything the update needs from the unedited model for one request."""
    unprefixed_key: torch.Tensor
    prefixed_key: torch.Tensor
    template_keys: torch.Tensor  # (n_templates, d): one key per template, first one is kᵘ

    @classmethod
    def of(cls, template_keys: torch.Tensor) -> "CaseKeys":
        """kᵘ is the first template's ("{}") key, k̄ the mean over all templates, as ROME takes them."""
        return cls(template_keys[0], template_keys.mean(0), template_keys)


@dataclass
class KeyBatch:
    """The keys of many requests and what it took: each request's subject span in the prompt as given (first
    and last token, BOS counted), tokens run through the model (padding not counted; a shared opening once) and
    tokens of all (request, template) texts up to where they were cut."""
    keys: dict[int, list[CaseKeys]]  # layer → one per request
    spans: list[tuple[int, int]]
    tokens: int
    text_tokens: int


@dataclass
class _Request:
    case_id: object
    prompt: str
    subject: str


def _case_rows(bundle: Bundle, cases, templates: list[str], truncate: bool) -> tuple[list[_Row], list]:
    """One row per (request, template), request-major, and each request's subject span (template "{}")."""
    if not templates or templates[0] != "{}":
        raise ValueError("the first context template must be '{}' (the unprefixed prompt)")
    rows, spans = [], []
    for case in cases:
        try:
            for j, template in enumerate(templates):
                full_prompt = template.format(case.prompt)
                first, last = subject_token_span(bundle, full_prompt, case.subject)
                ids = token_ids(bundle, fill(full_prompt, case.subject))
                rows.append(_Row(ids[:last + 1] if truncate else ids, last))
                if j == 0:
                    spans.append((first, last))
        except (ValueError, IndexError) as exc:
            if case.case_id is None:
                raise
            raise CaseError(f"case {case.case_id}: {exc}") from exc
    return rows, spans


def key_batch(bundle: Bundle, cases, templates: list[str], layers: list[int], token_budget: int = 8192,
              truncate: bool = True, share_prefix: bool = True, batch_size: int | None = None) -> KeyBatch:
    """Every request's template keys at each of ``layers``, from batched forward passes.

    By default (the scan's way) each text is cut right after the subject's last token (in a causal model nothing
    later changes the key there), each template's opening runs once (``share_prefix``) and rows go in
    length-sorted batches under ``token_budget``. ``batch_size`` instead runs the rows in their order, that
    many at a time (``keys_at``'s batches): :func:`case_keys` does that, untruncated, so its keys are the very
    numbers every edit in the committed outputs was made with; the scan's batching agrees with them to about
    5e-6 relative (a different padding changes the float rounding)."""
    rows, spans = _case_rows(bundle, cases, templates, truncate)
    t = len(templates)
    # rows are request-major (request i, template j at i * t + j); one template's rows share its opening tokens
    groups = [list(range(j, len(rows), t)) for j in range(t)] if share_prefix else [list(range(len(rows)))]
    batches = ((lambda part: _in_order(part, batch_size)) if batch_size
               else (lambda part: _by_length(part, token_budget)))
    by_layer, n_tokens = _forward(bundle, list(layers), rows, groups, batches, share_prefix)
    keys = {layer: [CaseKeys.of(k) for k in v.view(len(cases), t, -1)] for layer, v in by_layer.items()}
    return KeyBatch(keys, spans, n_tokens, sum(len(r.ids) for r in rows))


def case_keys_batch(bundle: Bundle, cases: list, templates: list[str], layer: int | None = None,
                    token_budget: int = 8192, truncate: bool = True, share_prefix: bool = True) -> list[CaseKeys]:
    """:func:`case_keys` for many requests (:func:`key_batch`'s scan way: equal to it up to float rounding).
    A request whose subject cannot be found raises a :class:`~rome_collapse.data.CaseError` naming it."""
    layer = bundle.edit_layer(layer)
    return key_batch(bundle, cases, templates, [layer], token_budget, truncate, share_prefix).keys[layer]


def case_keys(bundle: Bundle, prompt: str, subject: str, templates: list[str], layer: int | None = None) -> CaseKeys:
    """kᵘ and k̄ (and every template's key) of one request, its templates in one forward pass."""
    layer = bundle.edit_layer(layer)
    request = _Request(None, prompt, subject)
    return key_batch(bundle, [request], templates, [layer], truncate=False, share_prefix=False,
                     batch_size=64).keys[layer][0]


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
