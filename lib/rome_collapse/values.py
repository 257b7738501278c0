"""v*: the value that makes the model say target_new (ROME's ``compute_v``), and its disk cache.

``optimize_values`` finds, for each request, δ such that the edited projection writing v* = W kᵘ + b + δ at
the subject's last token makes every context template's prompt predict target_new, with ROME's KL anchor on
"<subject> is a", weight decay and norm clamp ‖δ‖ ≤ clamp_norm_factor·‖W kᵘ + b‖ (``ValueOptions``: this
workbook's alternatives). Several requests run in one batched forward per step; the row bookkeeping
(``_build_rows``) and the prefix split (``_split``) only save work, the numbers are those of one request at a
time. ``values_for`` reads v* from the cache (``cache.py``; keyed by the weights, the layer, the
hyper-parameters but the covariance's, the early-stop loss, the templates and the request) or optimises the
missing ones.
"""
from __future__ import annotations

import contextlib
import copy
import math
from dataclasses import asdict, dataclass

import torch
from tqdm.auto import tqdm

from .cache import digest, entry_path, load_tensors, save_tensors
from .config import CACHE_VERSION
from .data import EditCase, fill
from .models import Bundle, HParams, get_module
from .parallel import map_on_copies
from .tokens import pad_batch, subject_last_index, token_ids
from .trace import block_input, blocks_skipped, lm_logits, output_added

EARLY_STOP_LOSS = 5e-2  # ROME stops optimising v* once the loss is this small (in the v* cache key)


# --------------------------------------------------------------------------------------------
# How v* is set up: ROME's way by default; the alternatives are this workbook's addition
# --------------------------------------------------------------------------------------------
VALUE_REFERENCES = ("unprefixed", "prefixed")
LOSS_TEMPLATES = ("all", "prefixed")


@dataclass(frozen=True)
class ValueOptions:
    """Where v* starts, what its norm clamp is measured against, and which prompts its loss reads.

    The defaults are ROME's (and the authors'): v* = W kᵘ + b + δ, with ‖δ‖ ≤ clamp_norm_factor·‖W kᵘ + b‖
    (kᵘ: the unprefixed prompt), the loss over every context template. "prefixed" reads the projection's
    output averaged over the context templates instead, W k̄ + b, the output that C-ROME's update writes
    to. Not the paper's: notebook 10 (the clamp study) tests them. Any non-default option enters the v*
    cache key; the default options leave it as it always was.
    """
    start: str = "unprefixed"  # target_init: W kᵘ + b, or "prefixed": W k̄ + b; ROME's weight decay divides by its norm
    clamp_reference: str = "unprefixed"  # the bound on ‖δ‖ is clamp_norm_factor × ‖W kᵘ + b‖, or × ‖W k̄ + b‖
    loss_templates: str = "all"  # target NLL over all templates, or "prefixed": without the unprefixed prompt

    def __post_init__(self) -> None:
        for name, allowed in (("start", VALUE_REFERENCES), ("clamp_reference", VALUE_REFERENCES),
                              ("loss_templates", LOSS_TEMPLATES)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"ValueOptions.{name} must be one of {allowed}, got {getattr(self, name)!r}")

    @property
    def is_default(self) -> bool:
        return self == ValueOptions()

    def to_dict(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------------------------
# v*: the value that makes the model say target_new
# --------------------------------------------------------------------------------------------
@dataclass
class ValueResult:
    case_id: int | str
    v_star: torch.Tensor  # target_init + delta, in the projection's output space
    delta: torch.Tensor
    target_init: torch.Tensor  # where v* starts: W kᵘ + b at the unprefixed prompt (ROME), or W k̄ + b
    steps: int
    final_loss: float
    target_prob: float  # mean probability of target_new over the loss's templates at the last step
    clamp_bound: float | None = None  # the largest ‖δ‖ allowed (None: not known, e.g. a hand-made value)

    def to_dict(self) -> dict:
        return {"case_id": self.case_id, "steps": self.steps, "final_loss": self.final_loss,
                "target_prob": self.target_prob, "delta_norm": self.delta.norm().item(),
                "target_init_norm": self.target_init.norm().item(), "clamp_bound": self.clamp_bound}


@dataclass
class _Rows:
    """All prompts of K requests in one right-padded batch, with where to read and write."""
    input_ids: torch.Tensor  # (N, T)
    attention_mask: torch.Tensor
    case: torch.Tensor  # (N,) request of each row
    lookup: torch.Tensor  # (N,) subject's last token: where delta is added
    target_row: torch.Tensor  # (M,) one entry per target token to score
    target_pos: torch.Tensor  # position whose logits predict it
    target_tok: torch.Tensor
    target_weight: torch.Tensor  # 1 / (len(target) * n_templates): NLL averaged as in ROME
    kl_row: torch.Tensor  # (K,) the "{} is a" row of each request
    first_row: torch.Tensor  # (K,) the unprefixed rewriting row of each request


def _build_rows(bundle: Bundle, cases: list[EditCase], templates: list[str], loss_templates: str = "all") -> _Rows:
    """``loss_templates="prefixed"``: the unprefixed prompt's row is kept (v* may start there) but not scored."""
    scored = range(len(templates)) if loss_templates == "all" else range(1, len(templates))
    if not scored:
        raise ValueError("loss_templates='prefixed' needs context templates besides '{}'")
    ids, case_of, lookup = [], [], []
    t_row, t_pos, t_tok, t_w, kl_row, first_row = [], [], [], [], [], []
    for k, case in enumerate(cases):
        target = bundle.tokenizer(" " + case.target_new, add_special_tokens=False).input_ids
        if not target:
            raise ValueError(f"case {case.case_id}: target_new tokenises to nothing")
        first_row.append(len(ids))
        for t, template in enumerate(templates):
            prompt = template.format(case.prompt)
            prompt_ids = token_ids(bundle, fill(prompt, case.subject))
            row = len(ids)
            # Teacher forcing: the prompt, then all target tokens but the last.
            ids.append(prompt_ids + target[:-1])
            case_of.append(k)
            lookup.append(subject_last_index(bundle, prompt, case.subject))
            if t not in scored:
                continue
            for j, tok in enumerate(target):
                t_row.append(row)
                t_pos.append(len(prompt_ids) - 1 + j)
                t_tok.append(tok)
                t_w.append(1.0 / (len(target) * len(scored)))
        # KL anchor: keep "<subject> is a" predicting what it did (ROME reads it at the subject).
        kl_row.append(len(ids))
        ids.append(token_ids(bundle, f"{case.subject} is a"))
        case_of.append(k)
        lookup.append(subject_last_index(bundle, "{} is a", case.subject))
    batch = pad_batch(bundle, ids)
    dev = bundle.device
    as_long = lambda xs: torch.tensor(xs, dtype=torch.long, device=dev)
    return _Rows(batch.input_ids, batch.attention_mask, as_long(case_of), as_long(lookup), as_long(t_row),
                 as_long(t_pos), as_long(t_tok), torch.tensor(t_w, device=dev), as_long(kl_row),
                 as_long(first_row))


@dataclass
class _Split:
    """Selected rows cut at the subject's last token s: tokens before s never see delta.

    Their keys and values are computed once (``prefix_cache``); every optimisation step then runs
    only the suffix (positions ≥ s) on top of that cache. The blocks below the edit layer never see
    delta either: their output (``lower_output``, the edit block's input) is computed once too, and
    each step runs the edit layer's block and those above it. Same numbers, far less work.
    """
    suffix_ids: torch.Tensor  # (n, S), right-padded
    attention_mask: torch.Tensor  # (n, P + S): left-padded prefix, then the suffix
    position_ids: torch.Tensor | None  # (n, S): true positions of the suffix tokens
    prefix_cache: object | None
    lower_output: torch.Tensor | None = None  # (n, S, d): input of the edit layer's block

    def inputs(self) -> dict:
        """Keyword arguments of one forward over these rows (a fresh view of the prefix cache)."""
        cache = _fresh_view(self.prefix_cache)
        return {"input_ids": self.suffix_ids, "attention_mask": self.attention_mask,
                "position_ids": self.position_ids, "cache": cache, "use_cache": cache is not None}


def _fresh_view(cache):
    """A cache that a forward can append to without changing ``cache``.

    The dynamic caches concatenate new keys into new tensors and never write into the old ones,
    so copying the per-layer objects (not their tensors) is enough: no tensor is copied."""
    if cache is None:
        return None
    if not hasattr(cache, "layers"):  # an unfamiliar cache class: copy it whole
        return copy.deepcopy(cache)
    view = copy.copy(cache)
    view.layers = [copy.copy(layer) for layer in cache.layers]
    return view


def _split(bundle: Bundle, rows: _Rows, sel: torch.Tensor) -> _Split:
    ids, lengths, cut = rows.input_ids[sel], rows.attention_mask[sel].sum(1), rows.lookup[sel]
    pad, width = bundle.tokenizer.pad_token_id, ids.shape[1]
    n_prefix, n_suffix = int(cut.max()), int((lengths - cut).max())
    suffix_at = cut[:, None] + torch.arange(n_suffix, device=ids.device)
    suffix_valid = suffix_at < lengths[:, None]
    suffix_ids = ids.gather(1, suffix_at.clamp(max=width - 1)).masked_fill(~suffix_valid, pad)
    prefix_at = cut[:, None] - n_prefix + torch.arange(n_prefix, device=ids.device)
    prefix_valid = prefix_at >= 0
    cache = None
    if n_prefix:
        prefix_ids = ids.gather(1, prefix_at.clamp(min=0)).masked_fill(~prefix_valid, pad)
        with torch.no_grad():
            cache = get_module(bundle.model, bundle.spec.base)(
                input_ids=prefix_ids, attention_mask=prefix_valid.long(), position_ids=prefix_at.clamp(min=0),
                use_cache=True).cache
    return _Split(suffix_ids, torch.cat([prefix_valid, suffix_valid], 1).long(),
                  suffix_at.clamp(max=width - 1), cache)


def optimize_values(bundle: Bundle, cases: list[EditCase], templates: list[str], layer: int | None = None,
                    progress: bool = False,
                    prefix_cache: bool = True, skip_lower_blocks: bool = True, on_step=None,
                    options: ValueOptions | None = None) -> list[ValueResult]:
    """v* for each request, optimised together in one batched forward per step.

    Each request has its own delta, loss, norm clamp and early stop; the losses are independent,
    so the result equals optimising one request at a time. Model weights get no gradients, logits
    are computed only where the loss reads them, (``prefix_cache``) the tokens before the subject
    are run once instead of at every step, and (``skip_lower_blocks``) so are the blocks below the
    edit layer. ``on_step(n)``, when given, is called after each step with the number of steps done
    (a widget's progress bar). Both switches exist to measure what each saves; the numbers are the same.
    ``options`` (:class:`ValueOptions`) changes where v* starts, its clamp and its loss; the default is ROME's.
    """
    hp = bundle.hparams
    options = options or ValueOptions()
    layer = bundle.edit_layer(layer)
    if templates[0] != "{}":
        raise ValueError("the first context template must be '{}' (the unprefixed prompt)")
    rows = _build_rows(bundle, cases, templates, options.loss_templates)
    n_cases, dev = len(cases), bundle.device
    # δ in float32 for half-precision models (as ROME's code), in float64 for a float64 model (exact checks).
    real = torch.promote_types(bundle.weight(layer).dtype, torch.float32)
    delta = torch.zeros(n_cases, bundle.weight(layer).shape[0], device=dev, dtype=real, requires_grad=True)
    opt = torch.optim.Adam([delta], lr=hp.v_lr)
    target_init = clamp_norm = kl_init = split = None
    active = torch.ones(n_cases, dtype=torch.bool, device=dev)
    steps, final_loss, target_prob = torch.zeros(n_cases, dtype=torch.long), torch.zeros(n_cases), torch.zeros(n_cases)
    base = get_module(bundle.model, bundle.spec.base)
    # Without the prefix cache, every row starts at position 0 and delta goes in at the lookup.
    start = rows.lookup if prefix_cache else torch.zeros_like(rows.lookup)

    def skipped_below(split: _Split):
        if split.lower_output is None:
            return contextlib.nullcontext()
        return blocks_skipped(bundle, layer, split.lower_output)

    for it in tqdm(range(hp.v_num_grad_steps), desc="v*", disable=not progress, leave=False):
        sel = active[rows.case].nonzero().squeeze(1)  # rows of requests still optimising
        new_index = torch.full_like(rows.case, -1)
        new_index[sel] = torch.arange(sel.shape[0], device=dev)
        sel_case, write_at = rows.case[sel], (rows.lookup - start)[sel]
        if split is None or split.suffix_ids.shape[0] != sel.shape[0]:  # (re)build when requests finish
            if prefix_cache:
                split = _split(bundle, rows, sel)
            else:
                split = _Split(rows.input_ids[sel], rows.attention_mask[sel], None, None)
            if skip_lower_blocks and layer > 0:
                split.lower_output = block_input(bundle, layer, **split.inputs())
        with output_added(bundle.down_proj(layer), write_at, delta[sel_case]) as captured, skipped_below(split):
            hidden = base(**split.inputs()).last_hidden_state
        if target_init is None:  # first step: every request is active, rows in their original order
            first = rows.first_row
            outputs = {"unprefixed": captured["output"][first, (rows.lookup - start)[first]].clone()}  # W kᵘ + b
            if not options.is_default:  # the mean over each request's template rows: W k̄ + b
                template_rows = first[:, None] + torch.arange(len(templates), device=dev)
                outputs["prefixed"] = captured["output"][template_rows, (rows.lookup - start)[template_rows]].mean(1)
            target_init = outputs[options.start]
            clamp_norm = outputs[options.clamp_reference].norm(dim=1)

        # Target NLL, only at the positions that predict target tokens.
        keep = active[rows.case[rows.target_row]]
        t_row = rows.target_row[keep]
        # Losses in δ's dtype: a half-precision model's logits are upcast (a no-op for float32 and float64 models).
        logits = lm_logits(bundle, hidden[new_index[t_row], rows.target_pos[keep] - start[t_row]]).to(real)
        log_probs = torch.log_softmax(logits, -1)
        token_lp = log_probs.gather(1, rows.target_tok[keep, None]).squeeze(1)
        t_case = rows.case[t_row]
        nll = torch.zeros(n_cases, device=dev, dtype=real).index_add(
            0, t_case, (-token_lp * rows.target_weight[keep]).to(real))
        mean_prob = torch.zeros(n_cases, device=dev, dtype=real).index_add(
            0, t_case, (token_lp.detach().exp() * rows.target_weight[keep]).to(real))

        # KL on "<subject> is a" against the unedited model (KL(current ‖ initial), as ROME's kl_div call).
        kl_rows = rows.kl_row[active]
        kl_logits = lm_logits(bundle, hidden[new_index[kl_rows], (rows.lookup - start)[kl_rows]]).to(real)
        kl_lp = torch.log_softmax(kl_logits, -1)
        if kl_init is None:
            kl_init = kl_lp.detach().clone()
        kl = torch.zeros(n_cases, device=dev, dtype=real)
        kl[active] = hp.kl_factor * (kl_lp.exp() * (kl_lp - kl_init[active])).sum(-1)
        decay = hp.v_weight_decay * delta.norm(dim=1) / target_init.norm(dim=1) ** 2
        loss = nll + kl + decay

        idx = active.nonzero().squeeze(1).cpu()
        steps[idx] = it + 1
        final_loss[idx] = loss.detach().cpu()[idx].float()
        target_prob[idx] = mean_prob.cpu()[idx].float()
        if on_step is not None:
            on_step(it + 1)
        still = active & (loss.detach() >= EARLY_STOP_LOSS)
        if it == hp.v_num_grad_steps - 1 or not still.any():
            break
        frozen = delta.detach().clone()
        opt.zero_grad()
        loss[still].sum().backward()
        opt.step()
        with torch.no_grad():
            delta[~still] = frozen[~still]  # finished requests keep the delta they stopped with
            max_norm = hp.clamp_norm_factor * clamp_norm
            scale = (max_norm / delta.norm(dim=1).clamp_min(1e-12)).clamp(max=1.0)
            delta.mul_(torch.where(still, scale, torch.ones_like(scale))[:, None])
        active = still

    delta = delta.detach()
    clamp_bounds = (hp.clamp_norm_factor * clamp_norm).tolist()
    return [ValueResult(c.case_id, target_init[k] + delta[k], delta[k], target_init[k], int(steps[k]),
                        float(final_loss[k]), float(target_prob[k]), clamp_bounds[k]) for k, c in enumerate(cases)]


# --------------------------------------------------------------------------------------------
# The v* cache
# --------------------------------------------------------------------------------------------
def _value_key(bundle: Bundle, case: EditCase, templates: list[str], layer: int, hp: HParams,
               options: ValueOptions | None = None) -> dict:
    # v* does not depend on the covariance (mom2_*), so both settings share one entry.
    v_hparams = {k: v for k, v in asdict(hp).items() if not k.startswith("mom2")}
    key = {"model": bundle.weights_id, "add_bos": bundle.add_bos, "layer": layer, "hparams": v_hparams,
           "early_stop_loss": EARLY_STOP_LOSS, "templates": digest(templates), "prompt": case.prompt,
           "subject": case.subject, "target_new": case.target_new, "code_version": CACHE_VERSION}
    if options is not None and not options.is_default:  # ROME's own options keep the key they always had
        key["value_options"] = options.to_dict()
    return key


def _value_path(key: dict):
    return entry_path("values", key, ".safetensors")


def _load_value(key: dict, case_id) -> ValueResult | None:
    entry = load_tensors(_value_path(key), key)
    if entry is None:
        return None
    t, meta = entry
    return ValueResult(case_id, t["v_star"], t["delta"], t["target_init"], meta["steps"], meta["final_loss"],
                       meta["target_prob"], meta["clamp_bound"])


def _save_value(key: dict, value: ValueResult) -> None:
    save_tensors(_value_path(key), key,
                 {"v_star": value.v_star, "delta": value.delta, "target_init": value.target_init},
                 steps=value.steps, final_loss=value.final_loss, target_prob=value.target_prob,
                 clamp_bound=value.clamp_bound)


def values_for(bundle: Bundle, cases: list[EditCase], templates: list[str], layer: int | None = None,
               batch_size: int = 8, cache: bool = True, progress: bool = True, on_step=None,
               options: ValueOptions | None = None, workers: int = 1) -> list[ValueResult]:
    """v* for each case: from the cache when computed before, else optimised in batches of at most
    ``batch_size``, on ``workers`` threads (``parallel.map_on_copies``; the batches then split evenly between
    them). ``on_step`` and ``options`` go to :func:`optimize_values`."""
    layer = bundle.edit_layer(layer)
    keys = [_value_key(bundle, c, templates, layer, bundle.hparams, options) for c in cases]
    results: list[ValueResult | None] = [None] * len(cases)
    if cache:
        for i, (c, k) in enumerate(zip(cases, keys)):
            results[i] = _load_value(k, c.case_id)
            if results[i] is not None:
                results[i].v_star = results[i].v_star.to(bundle.device)
    todo = [i for i, r in enumerate(results) if r is None]
    # Each request's optimisation is independent of its batch-mates, so any split gives the same v*.
    n_batches = workers * math.ceil(len(todo) / (batch_size * workers))
    size = math.ceil(len(todo) / n_batches) if todo else 1
    chunks = [todo[start:start + size] for start in range(0, len(todo), size)]

    def optimise(b: Bundle, chunk: list[int]) -> list[ValueResult]:
        values = optimize_values(b, [cases[i] for i in chunk], templates, layer, on_step=on_step, options=options)
        if cache:
            for i, value in zip(chunk, values):
                _save_value(keys[i], value)
        return values

    done = map_on_copies(bundle, optimise, chunks, workers, desc="optimising v*", progress=progress)
    for chunk, values in zip(chunks, done):
        for i, value in zip(chunk, values):
            results[i] = value
    return results
