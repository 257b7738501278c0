"""v*: the value that makes the model say target_new (ROME's ``compute_v``), and its disk cache.

``optimize_values`` finds, for each request, δ such that the edited projection writing v* = W kᵘ + b + δ at
the subject's last token makes every context template's prompt predict target_new, with ROME's KL anchor on
"<subject> is a", weight decay and norm clamp ‖δ‖ ≤ clamp_norm_factor·‖W kᵘ + b‖ (``ValueOptions``: this
workbook's alternatives). The objective of one step is :func:`rome_loss`. Several requests run in one batched
forward per step; the row bookkeeping and the prefix split (``value_batch``) only save work, the numbers are
those of one request at a time. ``values_for`` reads v* from the cache (``cache.py``; keyed by the weights, the
layer, the hyper-parameters but the covariance's, the early-stop loss, the templates and the request) or
optimises the missing ones.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import asdict, dataclass

import torch
from tqdm.auto import tqdm

from .cache import digest, entry_path, load_tensors, save_tensors
from .config import CACHE_VERSION
from .data import EditCase
from .hparams import HParams
from .models import Bundle, get_module
from .parallel import map_on_copies
from .trace import block_input, blocks_skipped, lm_logits, output_added
from .value_batch import Rows, Split, build_rows, split_at_subject

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
class ScoredTokens:
    """The target tokens that a step's loss reads, of the requests still optimising."""
    hidden: torch.Tensor  # (M, d): the final hidden state at the position that predicts each token
    token: torch.Tensor  # (M,)
    weight: torch.Tensor  # 1 / (len(target) * n_templates): NLL averaged as in ROME
    case: torch.Tensor  # (M,) its request


def rome_loss(bundle: Bundle, delta: torch.Tensor, target_init: torch.Tensor, scored: ScoredTokens,
              kl_hidden: torch.Tensor, kl_before: torch.Tensor | None, active: torch.Tensor):
    """ROME's objective at one step, one loss per request (EasyEdit's ``compute_v``), the sum of:

    - the NLL of target_new, teacher-forced, averaged over its tokens and the context templates (``scored``);
    - kl_factor · KL(now ‖ before) of the next-token distribution after "<subject> is a", read at the subject
      (``kl_hidden``: one row per active request; ``kl_before``: those of the first step, None at the first step);
    - weight decay: v_weight_decay · ‖δ‖ / ‖target_init‖².

    Requests no longer ``active`` get no NLL and no KL. Returns the losses, the scored tokens' log-probabilities
    and the KL rows' log-probabilities."""
    hp, n_cases, real = bundle.hparams, delta.shape[0], delta.dtype
    # Losses in δ's dtype: a half-precision model's logits are upcast (a no-op for float32 and float64 models).
    logits = lm_logits(bundle, scored.hidden).to(real)
    token_lp = torch.log_softmax(logits, -1).gather(1, scored.token[:, None]).squeeze(1)
    nll = torch.zeros(n_cases, device=delta.device, dtype=real).index_add(
        0, scored.case, (-token_lp * scored.weight).to(real))
    kl_lp = torch.log_softmax(lm_logits(bundle, kl_hidden).to(real), -1)
    before = kl_lp.detach() if kl_before is None else kl_before[active]
    kl = torch.zeros(n_cases, device=delta.device, dtype=real)
    kl[active] = hp.kl_factor * (kl_lp.exp() * (kl_lp - before)).sum(-1)
    decay = hp.v_weight_decay * delta.norm(dim=1) / target_init.norm(dim=1) ** 2
    return nll + kl + decay, token_lp, kl_lp


def _start_and_clamp_norm(output: torch.Tensor, rows: Rows, at: torch.Tensor, n_templates: int,
                          options: ValueOptions) -> tuple[torch.Tensor, torch.Tensor]:
    """Where each request's v* starts and the norm its clamp is measured against, from the projection's output
    (before δ) of the first step, when every request is active and the rows are in their original order:
    W kᵘ + b at the unprefixed prompt (ROME), or W k̄ + b, the mean over the request's template rows."""
    first = rows.first_row
    outputs = {"unprefixed": output[first, at[first]].clone()}  # W kᵘ + b
    if not options.is_default:
        template_rows = first[:, None] + torch.arange(n_templates, device=first.device)
        outputs["prefixed"] = output[template_rows, at[template_rows]].mean(1)
    return outputs[options.start], outputs[options.clamp_reference].norm(dim=1)


def optimize_values(bundle: Bundle, cases: list[EditCase], templates: list[str], layer: int | None = None,
                    progress: bool = False,
                    prefix_cache: bool = True, skip_lower_blocks: bool = True, on_step=None,
                    options: ValueOptions | None = None) -> list[ValueResult]:
    """v* for each request, optimised together in one batched forward per step.

    Each request has its own delta, loss (:func:`rome_loss`), norm clamp and early stop; the losses are
    independent, so the result equals optimising one request at a time. Model weights get no gradients, logits
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
    rows = build_rows(bundle, cases, templates, options.loss_templates)
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

    def skipped_below(split: Split):
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
                split = split_at_subject(bundle, rows, sel)
            else:
                split = Split(rows.input_ids[sel], rows.attention_mask[sel], None, None)
            if skip_lower_blocks and layer > 0:
                split.lower_output = block_input(bundle, layer, **split.inputs())
        with output_added(bundle.down_proj(layer), write_at, delta[sel_case]) as captured, skipped_below(split):
            hidden = base(**split.inputs()).last_hidden_state
        if target_init is None:
            target_init, clamp_norm = _start_and_clamp_norm(captured["output"], rows, rows.lookup - start,
                                                            len(templates), options)

        # Where the loss reads, in this step's rows: the positions that predict target tokens, the KL anchors.
        keep = active[rows.case[rows.target_row]]
        t_row = rows.target_row[keep]
        scored = ScoredTokens(hidden[new_index[t_row], rows.target_pos[keep] - start[t_row]], rows.target_tok[keep],
                              rows.target_weight[keep], rows.case[t_row])
        kl_rows = rows.kl_row[active]
        loss, token_lp, kl_lp = rome_loss(bundle, delta, target_init, scored,
                                          hidden[new_index[kl_rows], (rows.lookup - start)[kl_rows]], kl_init, active)
        if kl_init is None:
            kl_init = kl_lp.detach().clone()
        mean_prob = torch.zeros(n_cases, device=dev, dtype=real).index_add(
            0, scored.case, (token_lp.detach().exp() * scored.weight).to(real))

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
