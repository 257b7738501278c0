"""ROME's hyper-parameters for a model and a named setting, all read from ``resources/hparams.yaml``.

:class:`HParams` carries no numbers of its own: the file holds ROME's defaults, the published values of hub
models, the chosen ones of the embedded models, and what each named setting ("paper", "rome") changes.
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
    """ROME's hyper-parameters for one model and setting. The values live in ``resources/hparams.yaml`` (its
    ``defaults``, each model's entry and the two settings); build them with ``hparams_for`` or
    ``default_hparams``, never by hand-written numbers."""
    layer: int
    v_num_grad_steps: int
    v_lr: float
    v_weight_decay: float
    clamp_norm_factor: float
    kl_factor: float
    context_template_length_params: list
    mom2_n_samples: int
    mom2_max_length: int
    # The covariance switch. True: the left vector is C⁻¹k̄ (Meng et al.'s ROME). False: C is the
    # identity and the left vector is k̄ (the paper's runs: every config of the authors sets it off).
    mom2_adjustment: bool

    def replace(self, **changes) -> "HParams":
        return dataclasses.replace(self, **changes)

    @property
    def setting(self) -> str:
        """The named setting these hyper-parameters belong to (see ``SETTINGS``)."""
        return "rome" if self.mom2_adjustment else "paper"


# Two named settings of ROME; resources/hparams.yaml says what each changes.
#   paper: as the paper's authors ran every configuration (mom2_adjustment: false, no C⁻¹)
#   rome:  Meng et al.'s original ROME (C⁻¹ from the keys' second moment over ordinary text)
SETTINGS = ("paper", "rome")
DEFAULT_SETTING = "paper"  # the workbook reproduces the paper; it also needs no statistics


_HUB_ALIASES = {
    "gpt2-xl": "gpt2-xl", "openai-community/gpt2-xl": "gpt2-xl",
    "eleutherai/gpt-j-6b": "gpt-j-6b", "eleutherai/gpt-neox-20b": "gpt-neox-20b",
    "meta-llama/llama-2-7b-hf": "llama-2-7b", "meta-llama/meta-llama-3-8b": "llama-3-8b",
    "mistralai/mistral-7b-v0.1": "mistral-7b",
}


def check_setting(setting: str) -> str:
    if setting not in SETTINGS:
        raise ValueError(f"unknown setting {setting!r}; use one of {', '.join(SETTINGS)}")
    return setting


def _hparams_table() -> dict:
    return yaml.safe_load(resources.files("rome_collapse").joinpath("resources/hparams.yaml").read_text())


def setting_changes(name: str, setting: str) -> dict:
    """What a named setting sets for a model: the setting's common values, then the model's own overrides."""
    check_setting(setting)
    table = _hparams_table()
    key = _HUB_ALIASES.get(name.lower(), name.lower())
    own = table["models"].get(key, {}).get("settings", {}).get(setting, {})
    return {**table["settings"][setting], **own}


def default_hparams(layer: int, **changes) -> HParams:
    """ROME's defaults from ``resources/hparams.yaml`` at ``layer`` (C⁻¹ on, as Meng et al.), with ``changes``."""
    return HParams(**{**_hparams_table()["defaults"], "layer": layer, **changes})


def hparams_for(name: str, num_layers: int | None = None, setting: str = DEFAULT_SETTING) -> HParams:
    """ROME hyper-parameters for a model name and setting (published ones for hub models, chosen ones for
    embedded models), all read from ``resources/hparams.yaml``."""
    table = _hparams_table()
    key = _HUB_ALIASES.get(name.lower(), name.lower())
    if key in table["models"]:
        values = {k: v for k, v in table["models"][key].items() if k != "settings"}
    else:
        # Unknown model: ROME's defaults with an early-middle layer, as in the paper's 7B settings.
        layer = max(1, round(0.17 * num_layers)) if num_layers else 5
        log.warning("no published ROME settings for %s; using defaults with layer %d", name, layer)
        values = {"layer": layer, **table["defaults"]}
    return HParams(**{**values, **setting_changes(name, setting)})
