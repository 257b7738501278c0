"""ROME's hyper-parameters for a model, all read from ``resources/hparams.yaml``.

:class:`HParams` carries no numbers of its own: the file holds ROME's defaults, the published values of hub
models and the chosen ones of the embedded models. The setting ("paper" or "original": with or without C⁻¹)
is not a hyper-parameter here: it is the C an edit is given (``stats.covariance``), the one place it is kept.
:mod:`models` re-exports these names.
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from importlib import resources

import yaml

log = logging.getLogger(__name__)


@dataclass
class HParams:
    """ROME's hyper-parameters for one model. The values live in ``resources/hparams.yaml`` (its ``defaults`` and
    each model's entry); build them with ``hparams_for`` or ``default_hparams``, never by hand-written numbers.
    ``mom2_*`` size the statistics of C in the "original" setting (``stats.second_moment``)."""
    layer: int
    v_num_grad_steps: int
    v_lr: float
    v_weight_decay: float
    clamp_norm_factor: float
    kl_factor: float
    context_template_length_params: list
    mom2_n_samples: int
    mom2_max_length: int

    def replace(self, **changes) -> "HParams":
        return dataclasses.replace(self, **changes)


_HUB_ALIASES = {
    "gpt2-xl": "gpt2-xl", "openai-community/gpt2-xl": "gpt2-xl",
    "eleutherai/gpt-j-6b": "gpt-j-6b", "eleutherai/gpt-neox-20b": "gpt-neox-20b",
    "meta-llama/llama-2-7b-hf": "llama-2-7b", "meta-llama/meta-llama-3-8b": "llama-3-8b",
    "mistralai/mistral-7b-v0.1": "mistral-7b",
}


def _hparams_table() -> dict:
    return yaml.safe_load(resources.files("rome_collapse").joinpath("resources/hparams.yaml").read_text())


def default_hparams(layer: int, **changes) -> HParams:
    """ROME's defaults from ``resources/hparams.yaml`` at ``layer``, with ``changes``."""
    return HParams(**{**_hparams_table()["defaults"], "layer": layer, **changes})


def hparams_for(name: str, num_layers: int | None = None) -> HParams:
    """ROME hyper-parameters for a model name (published ones for hub models, chosen ones for embedded models),
    all read from ``resources/hparams.yaml``."""
    table = _hparams_table()
    key = _HUB_ALIASES.get(name.lower(), name.lower())
    if key in table["models"]:
        values = dict(table["models"][key])
    else:
        # Unknown model: ROME's defaults with an early-middle layer, as in the paper's 7B settings.
        layer = max(1, round(0.17 * num_layers)) if num_layers else 5
        log.warning("no published ROME settings for %s; using defaults with layer %d", name, layer)
        values = {"layer": layer, **table["defaults"]}
    return HParams(**values)
