"""Where caches, data and outputs live. Each has one environment variable that overrides it.

The package may run from a checkout (``lib/rome_collapse`` inside the repository, installed editable or put on
``PYTHONPATH``) or installed into site-packages. Outputs (figures, tables, claim verdicts) go to
``$ROME_COLLAPSE_OUTPUT``, else the checkout, else the working directory: never inside the package's install
folder.
"""
from __future__ import annotations

import os
from pathlib import Path

import platformdirs

CACHE_ENV = "ROME_COLLAPSE_CACHE"
DATA_ENV = "ROME_COLLAPSE_DATA"
OUTPUT_ENV = "ROME_COLLAPSE_OUTPUT"

# Bumped when a change in the code changes what a cache entry holds (2: entries keyed by the weights'
# identity, Bundle.weights_id, through cache.py).
CACHE_VERSION = 2


def cache_dir(*parts: str) -> Path:
    """The cache directory (``$ROME_COLLAPSE_CACHE`` or the platform's user cache), created on demand."""
    root = Path(os.environ.get(CACHE_ENV) or platformdirs.user_cache_dir("rome-collapse"))
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def package_dir() -> Path:
    """The folder this package's modules are in (``lib/rome_collapse`` in a checkout, else in site-packages)."""
    return Path(__file__).resolve().parent


def checkout_root(package: Path | None = None) -> Path | None:
    """The checkout the package at ``package`` (default: this one) runs from, or None when it is installed.

    A checkout is the folder two levels above the package that holds both ``pyproject.toml`` and ``notebooks/``:
    site-packages' parent has neither."""
    package = package_dir() if package is None else Path(package)
    root = package.resolve().parents[1]
    return root if (root / "pyproject.toml").is_file() and (root / "notebooks").is_dir() else None


def repo_root() -> Path:
    """The checkout this package runs from; an installed package has none (use :func:`output_root` to write)."""
    root = checkout_root()
    if root is None:
        raise RuntimeError(f"rome_collapse runs from {package_dir()}, not from a checkout of the repository")
    return root


def output_root(package: Path | None = None) -> Path:
    """The folder that holds ``figures/`` and ``build/``: ``$ROME_COLLAPSE_OUTPUT`` when set, else the checkout
    when the package runs from one, else the working directory. A folder inside the package's install folder
    (site-packages, or ``lib/`` of a checkout) is refused, whichever way it was chosen."""
    package = package_dir() if package is None else Path(package)
    named = os.environ.get(OUTPUT_ENV)
    checkout = checkout_root(package)
    root = Path(named).expanduser() if named else checkout if checkout is not None else Path.cwd()
    install = package.resolve().parent
    if root.resolve().is_relative_to(install):
        where = f"{OUTPUT_ENV}={named}" if named else f"the working directory {root}"
        raise ValueError(f"{where} is inside the package's install folder {install}; set {OUTPUT_ENV} to the "
                         "folder that should hold figures/ and build/")
    return root
