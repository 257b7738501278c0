"""What counts as a collapse: one definition for the measurements and the verdicts (numpy only, no torch).

An edit *collapses* the model when ME-PPL perplexity after it is over ``COLLAPSE_FACTOR`` times the perplexity
before it; a perplexity that is NaN or infinite (non-finite weights) counts as collapsed.
"""
from __future__ import annotations

import numpy as np

COLLAPSE_FACTOR = 10.0


def collapsed(blowup, factor: float = COLLAPSE_FACTOR):
    """Perplexity after / before (a number or an array of them) over ``factor``; NaN or inf count as collapsed.
    A number gives a bool, an array (or a pandas Series) a boolean array."""
    over = ~(np.asarray(blowup, dtype=float) <= factor)
    return bool(over) if over.ndim == 0 else over
