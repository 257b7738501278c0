"""Reading an EasyEdit ROME hyper-parameter file, as the paper's authors ship them (``hparams/ROME/*.yaml``).

``read(path)`` returns what the file sets: the :class:`~rome_collapse.models.HParams` changes, the setting
(``mom2_adjustment``), and the defaults of the edit variant (``if_c_rome``) and of the test-time prefix
(``if_prefix``). Keys the file lacks are left to the model's own hyper-parameters (``models.hparams_for``);
``models.load_model(..., hparams=path)`` applies them. EasyEdit's plumbing keys (module paths, devices, paths
of statistics, batch sizes) are accepted and ignored: this library finds the modules from the architecture.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import yaml

from .stats import setting_of


class HParamsFileError(ValueError):
    """The file cannot be read as an EasyEdit ROME hyper-parameter file; the message names the file and key."""


# Keys that become HParams fields, with the type each is converted to. PyYAML reads `5e-1` (no dot before
# the e) as a string, so every number is converted here explicitly, as EasyEdit's loader does.
_INT_KEYS = ("v_num_grad_steps", "mom2_n_samples")
_FLOAT_KEYS = ("v_lr", "v_weight_decay", "clamp_norm_factor", "kl_factor")
_BOOL_KEYS = ("mom2_adjustment", "if_c_rome", "if_prefix")
_USED_KEYS = ("layers", "fact_token", "alg_name", "context_template_length_params",
              *_INT_KEYS, *_FLOAT_KEYS, *_BOOL_KEYS)
# EasyEdit's plumbing: where modules and statistics live, devices, batch sizes, what to save. Ignored.
IGNORED_KEYS = frozenset({
    "model_name", "stats_dir", "device", "v_loss_layer", "rewrite_module_tmp", "layer_module_tmp",
    "mlp_module_tmp", "attn_module_tmp", "ln_f_module", "lm_head_module", "mom2_dataset", "mom2_dtype",
    "model_parallel", "ppl_sentence_num", "ppl_batch_size", "save_keys", "save_keys_path", "max_length",
    "batch_size", "fp16"})
KNOWN_KEYS = frozenset(_USED_KEYS) | IGNORED_KEYS


@dataclass(frozen=True)
class EasyEditHParams:
    """What one EasyEdit ROME file sets. ``None`` where the file does not say."""
    path: str
    changes: dict  # HParams fields (layer, v_lr, …) and their values
    setting: str | None  # "paper" (mom2_adjustment false) or "original" (true): stats.covariance's name
    variant: str | None  # "c-rome" (if_c_rome true) or "rome" (false)
    test_prefix: bool | None  # if_prefix


def _number(path: str, key: str, value, kind: type):
    """``value`` as ``kind`` (int or float), or HParamsFileError naming the key."""
    if isinstance(value, bool):  # YAML's true/false are ints to Python; not a number here
        number = None
    else:
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = None
    if number is None or not math.isfinite(number) or (kind is int and not number.is_integer()):
        raise HParamsFileError(f"{path}: {key}: {value!r} is not {'an integer' if kind is int else 'a number'}")
    return kind(number)


def _flag(path: str, key: str, value) -> bool:
    if not isinstance(value, bool):
        raise HParamsFileError(f"{path}: {key}: {value!r} is not true or false")
    return value


def _layer(path: str, value) -> int:
    layers = value if isinstance(value, list) else [value]
    if len(layers) != 1:
        raise HParamsFileError(f"{path}: layers: {value!r}: ROME edits one layer; give a list of one")
    layer = _number(path, "layers", layers[0], int)
    if layer < 0:
        raise HParamsFileError(f"{path}: layers: {layer} is negative")
    return layer


def _template_lengths(path: str, value) -> list:
    """``[[length, count], …]``: how many context templates of each length to generate."""
    if not isinstance(value, list) or not all(isinstance(p, list) and len(p) == 2 for p in value):
        raise HParamsFileError(f"{path}: context_template_length_params: {value!r} is not a list of "
                               "[length, count] pairs")
    return [[_number(path, "context_template_length_params", n, int) for n in pair] for pair in value]


def parse(config, path: str = "<hparams>") -> EasyEditHParams:
    """What a loaded EasyEdit ROME mapping sets (see :func:`read`)."""
    if not isinstance(config, dict):
        raise HParamsFileError(f"{path}: expected a mapping of keys to values, found {type(config).__name__}")
    unknown = sorted(str(k) for k in config if k not in KNOWN_KEYS)
    if unknown:
        raise HParamsFileError(f"{path}: unknown key {unknown[0]!r}" + (f" (and {', '.join(unknown[1:])})"
                               if len(unknown) > 1 else "") + "; not an EasyEdit ROME setting this library reads")
    if "alg_name" in config and str(config["alg_name"]).upper() != "ROME":
        raise HParamsFileError(f"{path}: alg_name: {config['alg_name']!r}; only ROME files are read")
    if config.get("fact_token", "subject_last") != "subject_last":
        raise HParamsFileError(f"{path}: fact_token: {config['fact_token']!r}; only 'subject_last' is supported "
                               "(the key is read at the subject's last token)")
    changes = {}
    if "layers" in config:
        changes["layer"] = _layer(path, config["layers"])
    for keys, kind in ((_INT_KEYS, int), (_FLOAT_KEYS, float)):
        changes.update({k: _number(path, k, config[k], kind) for k in keys if k in config})
    if "context_template_length_params" in config:
        changes["context_template_length_params"] = _template_lengths(path, config["context_template_length_params"])
    flags = {k: _flag(path, k, config[k]) for k in _BOOL_KEYS if k in config}
    return EasyEditHParams(
        path=path, changes=changes,
        setting=None if "mom2_adjustment" not in flags else setting_of(flags["mom2_adjustment"]),
        variant=None if "if_c_rome" not in flags else ("c-rome" if flags["if_c_rome"] else "rome"),
        test_prefix=flags.get("if_prefix"))


def read(path: str | Path) -> EasyEditHParams:
    """Read an EasyEdit ROME YAML file. Raises HParamsFileError (a ValueError) naming the file and the key that
    is unknown or unusable; OSError when the file cannot be opened."""
    try:
        config = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise HParamsFileError(f"{path}: not YAML ({exc.__class__.__name__})") from exc
    return parse(config, str(path))
