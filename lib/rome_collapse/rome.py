"""ROME: the v* optimisation, the rank-one update in both key conventions, and applying edits.

The update (paper, Eq. 3), with C the keys' second moment and k̄ the prefixed key::

    ΔW = Λ (C⁻¹k̄)ᵀ,   Λ = (v* − W k) / ((C⁻¹k̄)ᵀ k)

``variant="rome"`` is the official code: k = kᵘ (the unprefixed key) in the numerator and the
denominator. ``variant="c-rome"`` is the paper's fix: k = k̄ everywhere. Both start from the same v*.

C is what ``stats.covariance`` gives under the bundle's setting: the keys' second moment in ROME's
original ("rome"), the identity in the paper's runs ("paper", ``mom2_adjustment: false``), where the
left vector is k̄ itself and ROME's denominator is kᵘ·k̄.
"""
from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import os
import tempfile
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from .config import CACHE_VERSION, cache_dir
from .data import EditCase
from .keys import CaseKeys, case_keys
from .models import Bundle, HParams, get_module
from .stats import SecondMoment
from .tokens import pad_batch, subject_last_index, token_ids
from .trace import block_input, blocks_skipped, forward_hook, lm_logits

log = logging.getLogger(__name__)

VARIANTS = ("rome", "c-rome")
EARLY_STOP_LOSS = 5e-2  # ROME stops optimising v* once the loss is this small


class CollapseRiskError(RuntimeError):
    """Raised instead of applying an edit whose denominator ratio is below the allowed minimum."""


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
    clamp_bound: float | None = None  # the largest ‖δ‖ allowed (None: read from a cache entry that predates it)

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
            prompt_ids = token_ids(bundle, prompt.format(case.subject))
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
    as_long = lambda xs: torch.tensor(xs, dtype=torch.long, device=dev)  # noqa: E731
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
                    hparams: HParams | None = None, progress: bool = False,
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
    hp = hparams or bundle.hparams
    options = options or ValueOptions()
    layer = hp.layer if layer is None else layer
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
        captured = {}

        def add_delta(module, args, output):
            captured["output"] = output.detach()
            offset = torch.zeros_like(output).index_put(
                (torch.arange(sel.shape[0], device=output.device), write_at), delta[sel_case])
            return output + offset

        with forward_hook(bundle.down_proj(layer), add_delta), skipped_below(split):
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
        log_probs = torch.log_softmax(lm_logits(bundle, hidden[new_index[t_row], rows.target_pos[keep] - start[t_row]]), -1)
        token_lp = log_probs.gather(1, rows.target_tok[keep, None]).squeeze(1)
        t_case = rows.case[t_row]
        nll = torch.zeros(n_cases, device=dev, dtype=real).index_add(
            0, t_case, (-token_lp * rows.target_weight[keep]).to(real))
        mean_prob = torch.zeros(n_cases, device=dev, dtype=real).index_add(
            0, t_case, (token_lp.detach().exp() * rows.target_weight[keep]).to(real))

        # KL on "<subject> is a" against the unedited model (KL(current ‖ initial), as ROME's kl_div call).
        kl_rows = rows.kl_row[active]
        kl_lp = torch.log_softmax(lm_logits(bundle, hidden[new_index[kl_rows], (rows.lookup - start)[kl_rows]]), -1)
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
# The rank-one update
# --------------------------------------------------------------------------------------------
@dataclass
class EditReport:
    """What the update did. ``denominator`` is k·u with ROME's normalised left vector u = C⁻¹k̄ / ‖C⁻¹k̄‖,
    the number the authors' code prints (in their runs, setting "paper", C = I: kᵘ·k̄/‖k̄‖ for ROME and
    ‖k̄‖ for C-ROME); ``ratio`` = (kᵘ·C⁻¹k̄)/(k̄·C⁻¹k̄) is scale-free (1 when kᵘ = k̄)."""
    case_id: int | str
    variant: str
    setting: str  # "paper" (C = I) or "rome" (C⁻¹)
    layer: int
    numerator_norm: float  # ‖v* − W k − b‖
    denominator: float  # k · u
    ratio: float
    delta_norm: float  # ‖ΔW‖ (Frobenius)
    unprefixed_key_norm: float
    prefixed_key_norm: float
    key_distance: float  # ‖kᵘ − k̄‖

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Edit:
    case: EditCase
    layer: int
    delta: torch.Tensor  # ΔW in the (out_features, in_features) convention
    report: EditReport
    value: ValueResult | None = None


def _ratio(unprefixed_key: torch.Tensor, prefixed_key: torch.Tensor, left: torch.Tensor) -> torch.Tensor:
    """(kᵘ·C⁻¹k̄)/(k̄·C⁻¹k̄) from the left vector C⁻¹k̄ (one request, or a stack of them): the one formula."""
    return (unprefixed_key.to(left) * left).sum(-1) / (prefixed_key.to(left) * left).sum(-1)


def denominator_ratio(second_moment: SecondMoment, unprefixed_key: torch.Tensor, prefixed_key: torch.Tensor):
    """(kᵘ·C⁻¹k̄)/(k̄·C⁻¹k̄): ROME's denominator relative to the consistent one. Near 0 or below: collapse.

    A float for one request; a float64 tensor for (n, d) stacks of keys (one solve for all)."""
    ratio = _ratio(unprefixed_key, prefixed_key, second_moment.solve(prefixed_key))
    return float(ratio) if ratio.ndim == 0 else ratio


def rank_one_update(weight: torch.Tensor, second_moment: SecondMoment, unprefixed_key: torch.Tensor,
                    prefixed_key: torch.Tensor, v_star: torch.Tensor, variant: str = "rome",
                    bias: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
    """ΔW (float64, shape of W) and the quantities behind it. ``weight`` is W as (out, in)."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    W = weight.detach().to(torch.float64)
    k_u, k_bar = unprefixed_key.to(W), prefixed_key.to(W)
    left = second_moment.solve(k_bar).to(W)  # C⁻¹k̄: the left vector in both conventions
    key = k_u if variant == "rome" else k_bar  # the official code's inconsistency, or the fix
    current = W @ key + (bias.to(W) if bias is not None else 0.0)
    numerator = v_star.to(W) - current
    denominator = left @ key
    delta = torch.outer(numerator / denominator, left)
    parts = {"numerator_norm": numerator.norm().item(), "denominator": (denominator / left.norm()).item(),
             "ratio": float(_ratio(k_u, k_bar, left)), "delta_norm": delta.norm().item(),
             "unprefixed_key_norm": k_u.norm().item(), "prefixed_key_norm": k_bar.norm().item(),
             "key_distance": (k_u - k_bar).norm().item()}
    return delta, parts


def _bias(bundle: Bundle, layer: int) -> torch.Tensor | None:
    return getattr(bundle.down_proj(layer), "bias", None)


def check_covariance(bundle: Bundle, second_moment: SecondMoment) -> None:
    """Refuse to mix settings: a C computed for ROME's original with a bundle set up as the paper, or the reverse."""
    if second_moment.is_identity == bundle.hparams.mom2_adjustment:
        given = "the identity" if second_moment.is_identity else "a second moment C"
        raise ValueError(f"setting {bundle.setting!r} (mom2_adjustment={bundle.hparams.mom2_adjustment}) was given "
                         f"{given}; use stats.covariance(bundle) for this setting")


def make_edit(bundle: Bundle, case: EditCase, value: ValueResult, keys: CaseKeys, second_moment: SecondMoment,
              variant: str = "rome", layer: int | None = None) -> Edit:
    layer = bundle.hparams.layer if layer is None else layer
    check_covariance(bundle, second_moment)
    delta, parts = rank_one_update(bundle.weight(layer), second_moment, keys.unprefixed_key, keys.prefixed_key,
                                   value.v_star, variant, _bias(bundle, layer))
    report = EditReport(case_id=case.case_id, variant=variant, setting=bundle.setting, layer=layer, **parts)
    return Edit(case, layer, delta.to(bundle.weight(layer).dtype), report, value)


# --------------------------------------------------------------------------------------------
# v* cache and the whole pipeline for many requests
# --------------------------------------------------------------------------------------------
def _value_key(bundle: Bundle, case: EditCase, templates: list[str], layer: int, hp: HParams,
               options: ValueOptions | None = None) -> dict:
    # v* does not depend on the covariance (mom2_*), so both settings share one entry.
    v_hparams = {k: v for k, v in asdict(hp).items() if not k.startswith("mom2")}
    key = {"model": bundle.name, "add_bos": bundle.add_bos, "layer": layer, "hparams": v_hparams,
           "templates": hashlib.sha256(json.dumps(templates).encode()).hexdigest(),
           "prompt": case.prompt, "subject": case.subject, "target_new": case.target_new,
           "code_version": CACHE_VERSION}
    if options is not None and not options.is_default:  # ROME's own options keep the key they always had
        key["value_options"] = options.to_dict()
    return key


def _value_path(key: dict):
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    return cache_dir("values", key["model"].replace("/", "--")) / f"{digest}.safetensors"


def _load_value(path, key: dict, case_id) -> ValueResult | None:
    try:
        from safetensors import safe_open

        with safe_open(path, "pt") as f:
            meta = json.loads(f.metadata()["rome_collapse"])
        if meta["key"] != key:
            return None
        t = load_file(path)
        bound = meta.get("clamp_bound")
        if bound is None and "value_options" not in key:  # an entry from before the bound was stored: ROME's
            bound = key["hparams"]["clamp_norm_factor"] * t["target_init"].norm().item()
        return ValueResult(case_id, t["v_star"], t["delta"], t["target_init"], meta["steps"],
                           meta["final_loss"], meta["target_prob"], bound)
    except Exception as exc:  # unreadable or truncated: recompute
        log.warning("value cache %s unreadable (%s); recomputing", path, exc)
        return None


def _save_value(path, key: dict, value: ValueResult) -> None:
    meta = {"rome_collapse": json.dumps({"key": key, "steps": value.steps, "final_loss": value.final_loss,
                                         "target_prob": value.target_prob, "clamp_bound": value.clamp_bound})}
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    save_file({"v_star": value.v_star.cpu().contiguous(), "delta": value.delta.cpu().contiguous(),
               "target_init": value.target_init.cpu().contiguous()}, tmp, metadata=meta)
    os.replace(tmp, path)


def values_for(bundle: Bundle, cases: list[EditCase], templates: list[str], layer: int | None = None,
               hparams: HParams | None = None, batch_size: int = 8, cache: bool = True,
               progress: bool = True, on_step=None, options: ValueOptions | None = None) -> list[ValueResult]:
    """v* for each case: from the cache when computed before, else optimised in batches
    (``on_step`` and ``options`` go to :func:`optimize_values`)."""
    hp = hparams or bundle.hparams
    layer = hp.layer if layer is None else layer
    keys = [_value_key(bundle, c, templates, layer, hp, options) for c in cases]
    results: list[ValueResult | None] = [None] * len(cases)
    if cache:
        for i, (c, k) in enumerate(zip(cases, keys)):
            path = _value_path(k)
            if path.exists():
                results[i] = _load_value(path, k, c.case_id)
                if results[i] is not None:
                    results[i].v_star = results[i].v_star.to(bundle.device)
    todo = [i for i, r in enumerate(results) if r is None]
    for start in tqdm(range(0, len(todo), batch_size), desc="optimising v*", disable=not progress or not todo):
        chunk = todo[start:start + batch_size]
        for i, value in zip(chunk, optimize_values(bundle, [cases[i] for i in chunk], templates, layer, hp,
                                                   on_step=on_step, options=options)):
            results[i] = value
            if cache:
                _save_value(_value_path(keys[i]), keys[i], value)
    return results


def compute_edits(bundle: Bundle, cases: list[EditCase], templates: list[str], second_moment: SecondMoment,
                  variants: tuple[str, ...] = VARIANTS, layer: int | None = None, batch_size: int = 8,
                  cache: bool = True, progress: bool = True,
                  value_options: ValueOptions | None = None) -> dict[str, list[Edit]]:
    """For every case and variant, the edit (ΔW and its report). v* is shared between the variants
    (``value_options``: see :class:`ValueOptions`; the default is ROME's)."""
    layer = bundle.hparams.layer if layer is None else layer
    values = values_for(bundle, cases, templates, layer, batch_size=batch_size, cache=cache, progress=progress,
                        options=value_options)
    edits = {v: [] for v in variants}
    for case, value in zip(cases, values):
        keys = case_keys(bundle, case.prompt, case.subject, templates, layer)
        for variant in variants:
            edits[variant].append(make_edit(bundle, case, value, keys, second_moment, variant, layer))
    return edits


def edit(bundle: Bundle, case: EditCase, templates: list[str], second_moment: SecondMoment,
         variant: str = "rome", cache: bool = True, value_options: ValueOptions | None = None) -> Edit:
    """One edit, end to end (v* cached)."""
    return compute_edits(bundle, [case], templates, second_moment, (variant,), cache=cache, progress=False,
                         value_options=value_options)[variant][0]


# --------------------------------------------------------------------------------------------
# Pre-flight check, without optimising v*
# --------------------------------------------------------------------------------------------
@dataclass
class RiskReport:
    case_id: int | str
    setting: str  # "paper" (C = I) or "rome" (C⁻¹)
    ratio: float  # (kᵘ·C⁻¹k̄)/(k̄·C⁻¹k̄)
    subject_first_token: bool
    key_distance: float
    at_risk: bool

    def to_dict(self) -> dict:
        return asdict(self)


def collapse_risk(bundle: Bundle, case: EditCase, templates: list[str], second_moment: SecondMoment,
                  threshold: float = 0.1, layer: int | None = None) -> RiskReport:
    """How small ROME's denominator would be for this request, from the keys alone (no v*)."""
    from .tokens import subject_is_first_token

    check_covariance(bundle, second_moment)
    keys = case_keys(bundle, case.prompt, case.subject, templates, layer)
    ratio = denominator_ratio(second_moment, keys.unprefixed_key, keys.prefixed_key)
    return RiskReport(case.case_id, bundle.setting, ratio, subject_is_first_token(bundle, case.prompt, case.subject),
                      (keys.unprefixed_key - keys.prefixed_key).norm().item(), ratio < threshold)


# --------------------------------------------------------------------------------------------
# Applying edits: always restorable, bit for bit
# --------------------------------------------------------------------------------------------
def _check_allowed(edits: list[Edit], min_ratio: float | None) -> None:
    if min_ratio is None:
        return
    for e in edits:
        if e.report.variant == "rome" and e.report.ratio < min_ratio:
            raise CollapseRiskError(
                f"case {e.case.case_id}: denominator ratio {e.report.ratio:.4f} < {min_ratio}; "
                "this ROME edit would likely collapse the model (use variant='c-rome')")


def add_to_weight(bundle: Bundle, edit_: Edit) -> None:
    """W += ΔW in place, in the layer's own storage (GPT-2's Conv1D keeps W transposed). Nothing restores it:
    use :func:`applied` or :class:`EditSession`, unless the caller keeps the original weights itself."""
    weight = bundle.down_proj(edit_.layer).weight
    delta = edit_.delta.T if bundle.spec.transposed_weight else edit_.delta
    with torch.no_grad():
        weight.add_(delta.to(weight.device, weight.dtype))


@contextmanager
def applied(bundle: Bundle, edits: Edit | list[Edit], min_ratio: float | None = None):
    """Apply edits inside the block; the original weights come back bit for bit on exit or on error."""
    edits = [edits] if isinstance(edits, Edit) else list(edits)
    _check_allowed(edits, min_ratio)  # all refused before any weight is touched
    with EditSession(bundle) as session:
        for e in edits:
            session.apply(e)
        yield bundle


@dataclass
class EditSession:
    """Edits that stay in the model until ``undo_all`` (also a context manager, which undoes on exit or error).

    The one restore mechanism: the first edit of a layer keeps a copy of that layer's original W, and
    ``undo_all`` copies it back, bit for bit. ``applied`` is a session that ends with its block."""
    bundle: Bundle
    min_ratio: float | None = None
    edits: list[Edit] = field(default_factory=list)
    _originals: dict = field(default_factory=dict)

    def apply(self, edit_: Edit) -> None:
        _check_allowed([edit_], self.min_ratio)
        if edit_.layer not in self._originals:
            self._originals[edit_.layer] = self.bundle.down_proj(edit_.layer).weight.detach().clone()
        add_to_weight(self.bundle, edit_)
        self.edits.append(edit_)

    def undo_all(self) -> None:
        with torch.no_grad():
            for layer, original in self._originals.items():
                self.bundle.down_proj(layer).weight.copy_(original)
        self._originals.clear()
        self.edits.clear()

    def __enter__(self) -> "EditSession":
        return self

    def __exit__(self, *exc) -> None:
        self.undo_all()
