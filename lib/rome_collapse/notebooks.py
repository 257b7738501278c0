"""Executed notebooks as they are committed, and the copies the smoke run (nbval) executes.

``make reproduce`` writes each paper notebook back into ``notebooks/`` with its outputs from the full run,
so that it reads as a finished section when opened. :func:`clean_executed` takes out what would only be
noise there (progress bars, warnings on stderr, papermill's timings, absolute paths) and records where the
outputs came from; :func:`smoke_copy` gives ``make test`` an output-free copy with the notebook's own
parameters, so that a smoke run never runs the full profile nor writes into ``notebooks/``.
"""
from __future__ import annotations

import copy
import os
from pathlib import Path

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
INJECTED = "injected-parameters"  # papermill's tag on the cell holding the parameters it was given


def _scrub(text: str, replacements: dict[str, str]) -> str:
    for old, new in replacements.items():
        text = text.replace(old, new)
    return text


def clean_executed(nb: dict, profile: str, model: str, repo: Path) -> dict:
    """A papermill-executed notebook ready to commit: outputs kept (tables, figures, verdicts), progress bars,
    stderr and volatile metadata dropped, the checkout's and the home directory's paths made relative."""
    nb = copy.deepcopy(nb)
    replacements = {str(repo.resolve()): ".", os.path.expanduser("~"): "~"}
    for cell in nb["cells"]:
        cell.get("metadata", {}).pop("papermill", None)
        cell.get("metadata", {}).pop("execution", None)
        if cell["cell_type"] != "code":
            continue
        kept = []
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream" and out.get("name") == "stderr":
                continue  # tqdm bars and library warnings
            if WIDGET_VIEW in out.get("data", {}):
                continue  # a progress bar's widget: nothing to see without the live kernel
            for key in ("text",):
                if key in out:
                    out[key] = _scrub("".join(out[key]), replacements)
            for mime, value in out.get("data", {}).items():
                if mime.startswith("text/"):
                    out["data"][mime] = _scrub("".join(value), replacements)
            kept.append(out)
        cell["outputs"] = kept
    meta = nb.setdefault("metadata", {})
    parameters = meta.get("papermill", {}).get("parameters", {})
    meta.pop("papermill", None)
    meta.pop("widgets", None)  # the progress bars' widget state: their views are dropped above
    meta["rome_collapse"] = {"profile": profile, "model": model, "parameters": parameters,
                             "executed_by": "make reproduce"}
    return nb


def smoke_copy(nb: dict) -> dict:
    """The notebook as written, for the smoke run: papermill's injected parameters and every output removed."""
    nb = copy.deepcopy(nb)
    nb["cells"] = [c for c in nb["cells"] if INJECTED not in c.get("metadata", {}).get("tags", [])]
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            cell["outputs"], cell["execution_count"] = [], None
    nb.get("metadata", {}).pop("rome_collapse", None)
    return nb


def outputs_profile(nb: dict) -> str | None:
    """The profile a committed notebook's outputs come from (None when it carries no outputs)."""
    has_outputs = any(c.get("outputs") for c in nb["cells"] if c["cell_type"] == "code")
    if not has_outputs:
        return None
    return nb.get("metadata", {}).get("rome_collapse", {}).get("profile", "unknown")
