"""C = E[k kᵀ]: the second moment of the edited projection's input over ordinary text, and the two settings.

A setting of ROME is the C its update divides by, and nothing else (layers and v* are the same in both):

* ``"paper"``: C = I, the left vector is k̄ itself, as the paper's authors ran every configuration
  (``mom2_adjustment: false``); nothing is computed.
* ``"original"``: C⁻¹k̄ with C over ordinary text, as Meng et al.'s ROME (``mom2_adjustment: true``).

The setting is stored once, in the :class:`SecondMoment` an edit is given (``SecondMoment.setting``): reports,
tables and cache keys read it from there. ``covariance(bundle, setting)`` builds it for a named setting.

Accumulated in float64 over every non-padding token, the forward pass stopped inside the edit
layer, and cached on disk (``cache.py``: keyed by the weights, the layer and a digest of the texts used; a
truncated or mismatching entry is recomputed, never unpickled).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from .cache import digest, entry_path, load_tensors, save_tensors
from .config import CACHE_VERSION
from .models import Bundle
from .parallel import map_on_copies
from .tokens import pad_batch, token_ids
from .trace import down_proj_input

log = logging.getLogger(__name__)

SETTINGS = ("paper", "original")  # no C⁻¹ (the paper's runs); C⁻¹ (Meng et al.'s ROME)
DEFAULT_SETTING = "paper"  # the workbook reproduces the paper; it also needs no statistics


def check_setting(setting: str) -> str:
    if setting not in SETTINGS:
        raise ValueError(f"unknown setting {setting!r}; use one of {', '.join(SETTINGS)}")
    return setting


def setting_of(mom2_adjustment: bool) -> str:
    """The setting an EasyEdit/ROME ``mom2_adjustment`` flag names."""
    return "original" if mom2_adjustment else "paper"


@dataclass(frozen=True)
class SecondMoment:
    """What the update's left vector is solved against, and so the setting: the identity ("paper") or C
    ("original")."""
    matrix: torch.Tensor | None  # (d_in, d_in), float64; None stands for the identity (no C⁻¹)
    n_tokens: int
    metadata: dict

    @classmethod
    def identity(cls) -> "SecondMoment":
        """C = I: the left vector is k̄ itself, as in the paper's runs (``mom2_adjustment: false``)."""
        return cls(None, 0, {"mom2_adjustment": False})

    @property
    def is_identity(self) -> bool:
        return self.matrix is None

    @property
    def setting(self) -> str:
        """"paper" for the identity, "original" for a second moment C: the one place a setting is kept."""
        return setting_of(not self.is_identity)

    def solve(self, vectors: torch.Tensor) -> torch.Tensor:
        """C⁻¹ v for a vector or a (n, d) stack, in float64 (v itself for the identity)."""
        if self.matrix is None:
            return vectors.to(torch.float64)
        v = vectors.to(self.matrix.device, torch.float64)
        return torch.linalg.solve(self.matrix, v.T).T if v.ndim == 2 else torch.linalg.solve(self.matrix, v)

    def describe(self) -> str:
        return "no C⁻¹ (identity)" if self.matrix is None else f"C over {self.n_tokens:,} tokens"


def _batches(bundle: Bundle, texts: list[str], max_length: int, token_budget: int):
    """Length-sorted batches of at most ``token_budget`` tokens, so that little is padding."""
    rows = sorted((token_ids(bundle, t)[:max_length] for t in texts if t.strip()), key=len)
    batch: list[list[int]] = []
    for row in rows:
        if batch and len(row) * (len(batch) + 1) > token_budget:
            yield batch
            batch = []
        batch.append(row)
    if batch:
        yield batch


def compute_second_moment(bundle: Bundle, layer: int, texts: list[str], max_length: int = 128,
                          token_budget: int = 4096, stop: bool = True, progress: bool = True,
                          workers: int = 1) -> tuple[torch.Tensor, int]:
    """Σ k kᵀ / n over all tokens of ``texts`` (no cache). ``stop=False`` runs the whole model (for tests).
    ``workers``: threads summing their share of the batches (``parallel.map_on_copies``)."""
    d_in = bundle.weight(layer).shape[1]
    # One running sum per copy of the model (map_on_copies hands a copy to one thread at a time); they add up.
    sums: dict[int, list] = {}

    def accumulate(b: Bundle, rows: list[int]) -> None:
        batch = pad_batch(b, rows)
        keys = down_proj_input(b, layer, batch, stop=stop)
        keys = keys[batch.attention_mask.bool()].to(torch.float64)  # (n_tokens, d_in), padding dropped
        total = sums.setdefault(id(b.model), [torch.zeros(d_in, d_in, dtype=torch.float64, device=b.device), 0])
        total[0].addmm_(keys.T, keys)
        total[1] += keys.shape[0]

    map_on_copies(bundle, accumulate, _batches(bundle, texts, max_length, token_budget), workers,
                  desc=f"C at layer {layer}", progress=progress)
    count = sum(n for _, n in sums.values())
    return sum(total for total, _ in sums.values()) / count, count


def second_moment(bundle: Bundle, layer: int | None = None, texts: list[str] | None = None,
                  corpus: str = "meppl-10k-minus-50", n_samples: int | None = None,
                  max_length: int | None = None, cache: bool = True, progress: bool = True,
                  workers: int = 1) -> SecondMoment:
    """C at ``layer`` (default: the bundle's edit layer) over the first ``n_samples`` of ``texts`` (default: the
    offline corpus), computed on ``workers`` threads when not cached.

    The cache key holds a digest of the texts used, so other texts never read back this C; ``corpus`` only
    labels the entry for a reader.
    """
    from .data import statistics_corpus

    layer = bundle.edit_layer(layer)
    n_samples = n_samples or bundle.hparams.mom2_n_samples
    max_length = max_length or bundle.hparams.mom2_max_length
    texts = (statistics_corpus() if texts is None else texts)[:n_samples]
    metadata = {"model": bundle.weights_id, "layer": layer, "corpus": corpus, "texts": digest(texts),
                "n_samples": n_samples, "max_length": max_length, "add_bos": bundle.add_bos,
                "accumulate": "float64", "code_version": CACHE_VERSION}
    path = entry_path("stats", metadata, ".safetensors", label=f"layer{layer}")
    entry = load_tensors(path, metadata) if cache else None
    if entry is not None:
        tensors, stored = entry
        if "C" in tensors and tensors["C"].shape[0] == bundle.weight(layer).shape[1]:
            return SecondMoment(tensors["C"].to(bundle.device), stored["n_tokens"], metadata)
        log.warning("statistics cache %s does not hold a C of this layer's size; recomputing", path)
    matrix, n_tokens = compute_second_moment(bundle, layer, texts, max_length=max_length, progress=progress,
                                             workers=workers)
    if cache:
        save_tensors(path, metadata, {"C": matrix}, n_tokens=n_tokens)
    return SecondMoment(matrix, n_tokens, metadata)


def covariance(bundle: Bundle, setting: str = DEFAULT_SETTING, layer: int | None = None,
               n_samples: int | None = None, **kwargs) -> SecondMoment:
    """What the update's left vector is solved against in a named ``setting``: C at ``layer`` (``second_moment``,
    cached) in "original", the identity in "paper", with no statistics run."""
    if check_setting(setting) == "paper":
        return SecondMoment.identity()
    return second_moment(bundle, layer=layer, n_samples=n_samples, **kwargs)
