"""ROME's edit: the rank-one update in both key conventions, the pre-flight risk check, and applying edits.

The update (paper, Eq. 3), with C the keys' second moment and k̄ the prefixed key::

    ΔW = Λ (C⁻¹k̄)ᵀ,   Λ = (v* − W k) / ((C⁻¹k̄)ᵀ k)

``variant="rome"`` is the official code: k = kᵘ (the unprefixed key) in the numerator and the
denominator. ``variant="c-rome"`` is the paper's fix: k = k̄ everywhere. Both start from the same v*.

C is what ``stats.covariance(bundle, setting)`` gives, and it is the setting (``SecondMoment.setting``, read by
every report): the keys' second moment in Meng et al.'s ROME ("original"), the identity in the paper's runs
("paper", ``mom2_adjustment: false``), where the left vector is k̄ itself and ROME's denominator is kᵘ·k̄.
v* comes from ``values.py`` (optimised, cached).

* :func:`rank_one_update`, :func:`make_edit`: ΔW and its report (:class:`EditReport`, :func:`denominator_ratio`).
* :func:`compute_edits`, :func:`edit`: v*, the keys and the update for many requests (or one).
* :func:`collapse_risk`: how small ROME's denominator would be, from the keys alone (no v*).
* :func:`applied`, :class:`EditSession`, :func:`add_to_weight`: edits in the model, restored bit for bit.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

import torch

from . import values
from .collapse import RISK_THRESHOLD
from .data import EditCase
from .keys import CaseKeys, case_keys
from .models import Bundle
from .stats import SecondMoment

VARIANTS = ("rome", "c-rome")


class CollapseRiskError(RuntimeError):
    """Raised instead of applying an edit whose denominator ratio is below the allowed minimum."""


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
    setting: str  # the C's: "paper" (C = I) or "original" (C⁻¹)
    layer: int
    numerator_norm: float  # ‖v* − W k − b‖
    denominator: float  # k · u
    ratio: float
    update_norm: float  # ‖ΔW‖ (Frobenius)
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
    value: values.ValueResult | None = None


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
             "ratio": float(_ratio(k_u, k_bar, left)), "update_norm": delta.norm().item(),
             "unprefixed_key_norm": k_u.norm().item(), "prefixed_key_norm": k_bar.norm().item(),
             "key_distance": (k_u - k_bar).norm().item()}
    return delta, parts


def _bias(bundle: Bundle, layer: int) -> torch.Tensor | None:
    return getattr(bundle.down_proj(layer), "bias", None)


def make_edit(bundle: Bundle, case: EditCase, value: values.ValueResult, keys: CaseKeys,
              second_moment: SecondMoment, variant: str = "rome", layer: int | None = None) -> Edit:
    layer = bundle.edit_layer(layer)
    delta, parts = rank_one_update(bundle.weight(layer), second_moment, keys.unprefixed_key, keys.prefixed_key,
                                   value.v_star, variant, _bias(bundle, layer))
    report = EditReport(case_id=case.case_id, variant=variant, setting=second_moment.setting, layer=layer,
                        **parts)
    return Edit(case, layer, delta.to(bundle.weight(layer).dtype), report, value)


# --------------------------------------------------------------------------------------------
# The whole pipeline for many requests: v* (values.py, cached), the keys, the update
# --------------------------------------------------------------------------------------------
def compute_edits(bundle: Bundle, cases: list[EditCase], templates: list[str], second_moment: SecondMoment,
                  variants: tuple[str, ...] = VARIANTS, layer: int | None = None, batch_size: int = 8,
                  cache: bool = True, progress: bool = True,
                  value_options: values.ValueOptions | None = None, workers: int = 1,
                  on_step=None) -> dict[str, list[Edit]]:
    """For every case and variant, the edit (ΔW and its report). v* is shared between the variants
    (``values.values_for``, cached unless ``cache=False``, optimised on ``workers`` threads; ``value_options``:
    see :class:`values.ValueOptions`, the default is ROME's; ``on_step(n)`` after each optimisation step, not
    called for a v* read from the cache)."""
    layer = bundle.edit_layer(layer)
    v_stars = values.values_for(bundle, cases, templates, layer, batch_size=batch_size, cache=cache,
                                progress=progress, on_step=on_step, options=value_options, workers=workers)
    edits = {v: [] for v in variants}
    for case, value in zip(cases, v_stars):
        keys = case_keys(bundle, case.prompt, case.subject, templates, layer)
        for variant in variants:
            edits[variant].append(make_edit(bundle, case, value, keys, second_moment, variant, layer))
    return edits


def edit(bundle: Bundle, case: EditCase, templates: list[str], second_moment: SecondMoment,
         variant: str = "rome", cache: bool = True, value_options: values.ValueOptions | None = None,
         on_step=None) -> Edit:
    """One edit, end to end (v* cached; ``on_step(n)`` after each step of its optimisation, e.g. a progress bar)."""
    return compute_edits(bundle, [case], templates, second_moment, (variant,), cache=cache, progress=False,
                         value_options=value_options, on_step=on_step)[variant][0]


# --------------------------------------------------------------------------------------------
# Pre-flight check, without optimising v*
# --------------------------------------------------------------------------------------------
@dataclass
class RiskReport:
    case_id: int | str
    setting: str  # the C's: "paper" (C = I) or "original" (C⁻¹)
    ratio: float  # (kᵘ·C⁻¹k̄)/(k̄·C⁻¹k̄)
    subject_first_token: bool
    key_distance: float
    at_risk: bool

    def to_dict(self) -> dict:
        return asdict(self)


def collapse_risk(bundle: Bundle, case: EditCase, templates: list[str], second_moment: SecondMoment,
                  threshold: float = RISK_THRESHOLD, layer: int | None = None) -> RiskReport:
    """How small ROME's denominator would be for this request, from the keys alone (no v*)."""
    from .tokens import subject_is_first_token

    keys = case_keys(bundle, case.prompt, case.subject, templates, layer)
    ratio = denominator_ratio(second_moment, keys.unprefixed_key, keys.prefixed_key)
    return RiskReport(case.case_id, second_moment.setting, ratio,
                      subject_is_first_token(bundle, case.prompt, case.subject),
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
