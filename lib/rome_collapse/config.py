"""Where caches and data live. One cache directory, overridable by an environment variable."""
from __future__ import annotations

import os
from pathlib import Path

import platformdirs

CACHE_ENV = "ROME_COLLAPSE_CACHE"
DATA_ENV = "ROME_COLLAPSE_DATA"

# Bumped when a change in the code changes what a cache entry holds (2: entries keyed by the weights'
# identity, Bundle.weights_id, through cache.py).
CACHE_VERSION = 2


def cache_dir(*parts: str) -> Path:
    """The cache directory (``$ROME_COLLAPSE_CACHE`` or the platform's user cache), created on demand."""
    root = Path(os.environ.get(CACHE_ENV) or platformdirs.user_cache_dir("rome-collapse"))
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def repo_root() -> Path:
    """The checkout this package is installed from (editable install: lib/rome_collapse/ -> repo)."""
    return Path(__file__).resolve().parents[2]
