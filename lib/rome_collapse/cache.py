"""One way to keep a computed result on disk, for every cache of the workbook (C, templates, v*, edit streams).

An entry is named by a digest of its *key*, a JSON-able dict that names everything the result depends on:
``"model"`` (the weights' identity, ``Bundle.weights_id``), the layer, the hyper-parameters,
``config.CACHE_VERSION`` … The key is stored inside the entry and checked when it is read. A missing entry
is a miss; so is one saved under another key or one that cannot be read (both with a logged warning), and
the caller recomputes it and writes it again. Writes are atomic (a temporary file in the entry's folder,
then ``os.replace``): a reader finds the old entry or the whole new one, never part of one.

Layout: ``<cache>/<kind>/<model>/[<label>-]<digest><suffix>``, ``<model>`` the weights' identity with "/"
as "--". Two formats, nothing ever unpickled: safetensors (tensors, with the key and the other fields as
JSON in the header) and JSON (the key and the other fields).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .config import cache_dir

log = logging.getLogger(__name__)

DIGEST_LENGTH = 24  # hex characters of sha256 in every cache key digest
_HEADER = "rome_collapse"  # the safetensors header field that holds the key and the other fields
# What reading a damaged or foreign entry raises (json.JSONDecodeError and UnicodeDecodeError are ValueErrors).
_UNREADABLE = (SafetensorError, OSError, KeyError, TypeError, ValueError)


def digest(obj) -> str:
    """The one digest of a key (or of any JSON-able value: templates, texts, cases): sha256 of its
    canonical JSON, ``DIGEST_LENGTH`` hex characters."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:DIGEST_LENGTH]


def _as_stored(key: dict) -> dict:
    """The key as it reads back from an entry (tuples as lists, other objects as their str)."""
    return json.loads(json.dumps(key, default=str))


def entry_path(kind: str, key: dict, suffix: str, label: str = "") -> Path:
    """Where the entry with this key lives: ``<cache>/<kind>/<key["model"]>/[<label>-]<digest><suffix>``."""
    name = f"{label}-{digest(key)}" if label else digest(key)
    return cache_dir(kind, str(key["model"]).replace("/", "--")) / f"{name}{suffix}"


def _fields(path: Path, key: dict | None, stored) -> dict | None:
    """The entry's fields when it was saved under ``key`` (any key for None), else None with a warning."""
    if not isinstance(stored, dict) or "key" not in stored:
        raise ValueError("no key stored in the entry")
    if key is not None and stored["key"] != _as_stored(key):
        log.warning("cache entry %s was saved under another key; recomputing it", path)
        return None
    return stored


def _unreadable(path: Path, exc: Exception) -> None:
    log.warning("cache entry %s is unreadable (%s: %s); recomputing it", path, type(exc).__name__, exc)


def load_tensors(path: Path, key: dict | None) -> tuple[dict[str, torch.Tensor], dict] | None:
    """(tensors, fields) of a safetensors entry saved under ``key`` (``key=None``: under any key), on the CPU;
    None when it is missing, unreadable or saved under another key. ``fields`` holds the stored ``"key"``."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        with safe_open(str(path), "pt") as f:
            fields = _fields(path, key, json.loads(f.metadata()[_HEADER]))
            if fields is None:
                return None
            return {name: f.get_tensor(name) for name in f.keys()}, fields  # noqa: SIM118
    except _UNREADABLE as exc:
        _unreadable(path, exc)
        return None


def save_tensors(path: Path, key: dict, tensors: dict[str, torch.Tensor], **fields) -> None:
    """Write a safetensors entry atomically: the tensors (moved to the CPU), the key and ``fields`` (JSON)."""
    header = {_HEADER: json.dumps({"key": key, **fields}, default=str)}
    tensors = {name: t.detach().cpu().contiguous() for name, t in tensors.items()}
    _write_atomically(Path(path), lambda tmp: save_file(tensors, tmp, metadata=header))


def load_json(path: Path, key: dict | None) -> dict | None:
    """The fields of a JSON entry saved under ``key``; None when missing, unreadable or saved under another key."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        return _fields(path, key, json.loads(path.read_text(encoding="utf-8")))
    except _UNREADABLE as exc:
        _unreadable(path, exc)
        return None


def save_json(path: Path, key: dict, **fields) -> None:
    """Write a JSON entry atomically: the key and ``fields``."""
    text = json.dumps({"key": key, **fields}, indent=1, default=str)
    _write_atomically(Path(path), lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def _write_atomically(path: Path, write: Callable[[str], None]) -> None:
    """``write(tmp)`` to a temporary file next to ``path``, then rename it to ``path``; on any error the
    temporary file is removed and ``path`` is left as it was."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
